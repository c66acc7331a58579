"""An ingest spec's sources, defaults and modes (its refusals are in test_data_errors.py's table): each source kind's
size and the labels its values get in the dataset, unless ``names`` gives them."""
import pytest

from swfp_ros.data import SpecError, default_panda_spec, default_panda_spec_dict, load_spec
from swfp_ros.data.spec import REACH_TASK_LABELS, parse_source


@pytest.mark.parametrize('source,dim,labels', [
    ({'source': 'joint_state', 'topic': '/joint_states', 'joints': ['a', 'b'], 'field': 'velocity'}, 2,
     ['a.velocity', 'b.velocity']),
    ({'source': 'trajectory', 'topic': '/traj', 'joints': ['a']}, 1, ['a.traj_positions']),
    ({'source': 'array', 'topic': '/t', 'indices': [2, 0]}, 2, ['/t[2]', '/t[0]']),
    ({'source': 'array', 'topic': '/t', 'labels': ['gx']}, 1, ['gx']),
    ({'source': 'array', 'topic': '/t', 'all': True}, None, None),    # fixed by the first message
    ({'source': 'pose', 'topic': '/ee', 'components': ['x', 'qw']}, 2, ['/ee.x', '/ee.qw']),
    ({'source': 'field', 'topic': '/f', 'fields': ['a.b', 'c']}, 2, ['/f:a.b', '/f:c']),
    ({'source': 'pose', 'topic': '/ee', 'components': ['x', 'y'], 'names': ['ee_x', 'ee_y']}, 2, ['ee_x', 'ee_y']),
])
def test_each_source_kind_has_its_size_and_labels(source, dim, labels):
    s = parse_source(source, 'observation[0]')
    assert (s.dim, s.default_labels()) == (dim, labels)


@pytest.mark.parametrize('source,count', [
    ({'source': 'pose', 'topic': '/ee', 'components': ['x', 'y'], 'names': ['ee_x']}, 1),
    ({'source': 'field', 'topic': '/f', 'fields': ['a', 'b'], 'names': ['p', 'q', 'r']}, 3),
])
def test_names_must_match_the_source_size(source, count):
    with pytest.raises(SpecError, match=rf'observation\[0\]\.names has {count} entries for 2 elements'):
        parse_source(source, 'observation[0]')


def test_spec_defaults_and_the_other_episode_modes():
    d = default_panda_spec_dict()
    for key in ('task', 'max_staleness', 'timeline', 'version'):
        d.pop(key)
    d['action'].pop('clip')
    spec = load_spec(d)
    assert (spec.task, spec.timeline, spec.min_episode_steps, spec.action.clip) == ('', 'action', 1, True)
    assert spec.raw['version'] == 1                   # the stored schema says which version it was read as
    assert spec.max_staleness == pytest.approx(2 / spec.control_rate_hz)   # two control periods
    d['action'].update(scale=[0.1] * 7, representation='absolute', offset=[0.0] * 6 + [0.5])
    d['action'].pop('reference')
    assert (load_spec(d).action.scale, load_spec(d).action.offset) == ([0.1] * 7, [0.0] * 6 + [0.5])
    d.update(episodes={'time_gap': 1.5})
    assert (load_spec(d).episodes.mode, load_spec(d).episodes.gap) == ('time_gap', 1.5)
    d.update(episodes={'per_bag': True})
    assert load_spec(d).episodes.mode == 'per_bag'
    with pytest.raises(SpecError, match='ingest spec must be a mapping, got list'):
        load_spec('- a\n- b\n')


def test_a_spec_loads_from_a_path_a_yaml_string_a_dict_or_a_spec(tmp_path):
    spec = default_panda_spec()
    path = tmp_path / 'reach.yaml'
    path.write_text(spec.to_yaml())
    assert '&' not in spec.to_yaml() and '*' not in spec.to_yaml()   # a shared joint list written out, no alias
    for given in (path, str(path), spec.to_yaml(), spec.to_dict()):
        assert load_spec(given).to_dict() == spec.to_dict()
    assert load_spec(spec) is spec
    with pytest.raises(SpecError, match=r'^ingest spec \S*missing\.yml: no such file$'):
        load_spec(str(tmp_path / 'missing.yml'))
    with pytest.raises(SpecError, match=r'^ingest spec <string>: invalid YAML'):
        load_spec('observation: [1,\n')
    with pytest.raises(SpecError, match='^cannot make an ingest spec from int$'):
        load_spec(5)
    path.write_text(spec.to_yaml().replace('version: 1', 'version: 2'))
    with pytest.raises(SpecError, match=rf'^{path}: ingest spec: version 2 is not supported'):   # says which file
        load_spec(path)


def test_topics_in_first_use_order_and_the_episode_topic_only_when_it_is_used():
    spec = default_panda_spec()
    assert spec.topics() == ['/joint_states', '/swfp/task', '/swfp/action', '/swfp/reward', '/swfp/episode']
    assert spec.period == pytest.approx(0.05)
    d = default_panda_spec_dict()
    d.update(episodes={'per_bag': True})
    assert load_spec(d).topics() == ['/joint_states', '/swfp/task', '/swfp/action', '/swfp/reward']


def test_the_default_panda_spec_by_task_and_options():
    assert default_panda_spec().observation[2].labels == list(REACH_TASK_LABELS)   # reach: the task vector by label
    assert default_panda_spec().action.clip                                        # actions clipped to [-1, 1]
    assert default_panda_spec('panda_push').observation[2].all                     # other tasks: all of it
    slow = default_panda_spec(include_velocity=False, control_rate_hz=10)
    assert [o.field for o in slow.observation[:1]] == ['position'] and len(slow.observation) == 2
    assert slow.max_staleness == pytest.approx(0.2)                               # two control periods
