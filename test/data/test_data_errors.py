"""Clear errors (bag, topic, field, type), custom types from the bag's definitions, corrupt bags, metadata fallback."""
import shutil
import tempfile
import warnings
from pathlib import Path

import apsw
import numpy as np
import pytest
import yaml
from data_synth import RATE, SCALE, expected_obs, float_array, joint_state

from swfp_ros.data import (BagError, BagReadError, BagRecorder, BagWarning, EpisodeRecord, IngestError, SpecError,
                           default_panda_spec, default_panda_spec_dict, ingest, ingest_bag, load_spec, write_demo_bag)
from swfp_ros.data.bag_writer import standard_typestore
from swfp_ros.data.reader import BagSource
from swfp_ros.data.inspect import inspect_bag
from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS

GRIPPER_MSG = 'float64 width\nfloat64[] forces\ngeometry_msgs/Point tip\n'
GRIPPER = 'swfp_test_msgs/msg/Gripper'


@pytest.fixture
def demo_bag(tmp_path, episodes):
    bag = tmp_path / 'demo'
    write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    return bag


def only_error(bag, spec):
    with pytest.raises(IngestError) as ei:
        ingest([bag], spec, progress=False)
    (msg,) = ei.value.report.errors.values()
    assert str(bag) in msg
    return msg


def test_missing_topic_names_bag_and_topic(demo_bag):
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'].append({'source': 'pose', 'topic': '/ee_pose'})
    msg = only_error(demo_bag, d)
    assert "'/ee_pose'" in msg and 'observation[3]' in msg and '/joint_states' in msg   # lists what the bag has


def test_ingest_bag_errors_carry_the_bag_topic_field_and_type(demo_bag, tmp_path):
    """For a caller of ingest_bag, the error's attributes say what its message says."""
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'].append({'source': 'pose', 'topic': '/ee_pose'})
    with pytest.raises(BagError) as ei:
        ingest_bag(demo_bag, d)
    assert (ei.value.bag, ei.value.topic) == (str(demo_bag), '/ee_pose')
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'].append({'source': 'field', 'topic': '/joint_states', 'fields': ['header.stamp.millisec']})
    with pytest.raises(BagError) as ei:
        ingest_bag(demo_bag, d)
    assert (ei.value.bag, ei.value.topic, ei.value.msgtype) == (str(demo_bag), '/joint_states',
                                                               'sensor_msgs/msg/JointState')
    assert 'millisec' in ei.value.field
    stray = tmp_path / 'notes.txt'
    stray.write_text('not a bag')
    with pytest.raises(BagReadError, match='not a rosbag2 storage file') as ei:
        ingest_bag(stray, d)
    assert ei.value.bag == str(stray)


def test_a_missing_episode_topic_is_refused_naming_it(demo_bag):
    """Not as 'no steps could be made (dropped: before_first_episode ...)', which leaves the user to guess."""
    d = default_panda_spec_dict(action_scale=SCALE)
    d['episodes'] = {'episode_topic': '/robot/episode'}
    msg = only_error(demo_bag, d)
    assert "'/robot/episode' (needed by spec episodes.episode_topic) is not in the bag" in msg, msg


def test_episodes_shorter_than_the_minimum_are_dropped_and_counted(demo_bag):
    lengths = [len(e) for e in ingest([demo_bag], default_panda_spec(action_scale=SCALE), progress=False)]
    shortest = min(lengths)
    d = default_panda_spec_dict(action_scale=SCALE)
    d['min_episode_steps'] = shortest + 1
    ds = ingest([demo_bag], d, progress=False)
    assert [len(e) for e in ds] == [n for n in lengths if n > shortest]
    assert ds.report.bags[0].dropped == {'short_episode_steps': shortest}
    assert ds.report.bags[0].steps == sum(lengths) - shortest       # the steps kept, not every step made


def test_a_bag_with_no_steps_says_why_and_no_bags_is_refused(demo_bag):
    d = default_panda_spec_dict(action_scale=SCALE)
    d['min_episode_steps'] = 10 ** 6
    msg = only_error(demo_bag, d)
    assert msg.startswith(f"{demo_bag}: no steps could be made (dropped: {{'short_episode_steps': ")
    with pytest.raises(ValueError, match='no bags given'):
        ingest([], d, progress=False)


def test_missing_joint_names_bag_topic_and_field(demo_bag):
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'][0]['joints'] = ['panda_joint1', 'fr3_joint9']
    msg = only_error(demo_bag, d)
    assert "'/joint_states'" in msg and 'fr3_joint9' in msg


def test_missing_field_path_and_label(demo_bag):
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'].append({'source': 'field', 'topic': '/joint_states', 'fields': ['header.stamp.millisec']})
    msg = only_error(demo_bag, d)
    assert "'/joint_states'" in msg and 'header.stamp.millisec' in msg and 'millisec' in msg
    d = default_panda_spec_dict(action_scale=SCALE, task_labels=['ee_x', 'obstacle_x'])
    msg = only_error(demo_bag, d)
    assert "'/swfp/task'" in msg and 'obstacle_x' in msg


def test_wrong_type_for_source(demo_bag):
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'].append({'source': 'joint_state', 'topic': '/swfp/task', 'joints': ['a']})
    msg = only_error(demo_bag, d)
    assert "'/swfp/task'" in msg and 'Float64MultiArray' in msg and 'JointState' in msg


def _gripper_bag(path, storage, n=12):
    ts = standard_typestore()
    with BagRecorder(path, storage=storage, msgdefs={GRIPPER: GRIPPER_MSG}) as rec:
        G, P = rec.typestore.types[GRIPPER], ts.types['geometry_msgs/msg/Point']
        A = ts.types['std_msgs/msg/Float64MultiArray']
        L = ts.types['std_msgs/msg/MultiArrayLayout']
        for k in range(n):
            t = 10**12 + k * 100_000_000
            rec.write('/gripper', GRIPPER, G(width=0.01 * k, forces=np.array([k, 2.0 * k]), tip=P(x=-k, y=0, z=1)), t)
            rec.write('/cmd', 'std_msgs/msg/Float64MultiArray', A(layout=L(dim=[], data_offset=0),
                                                                   data=np.array([0.1 * k])), t)
    return path


def _gripper_spec():
    return {'control_rate_hz': 10.0, 'episodes': {'per_bag': True},
            'observation': [{'source': 'field', 'topic': '/gripper', 'fields': ['width', 'forces[1]', 'tip.x']}],
            'action': {'source': 'array', 'topic': '/cmd', 'indices': [0]}}


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_custom_type_from_bag_definitions(tmp_path, storage):
    bag = _gripper_bag(tmp_path / 'g', storage)
    ds = ingest([bag], _gripper_spec(), progress=False)
    k = np.arange(12)
    np.testing.assert_allclose(ds[0].obs, np.stack([0.01 * k, 2.0 * k, -k], 1), atol=1e-6)
    assert ds.obs_labels == ['/gripper:width', '/gripper:forces[1]', '/gripper:tip.x']
    assert {t.topic: t.msgtype for t in inspect_bag(bag).topics}['/gripper'] == GRIPPER


@pytest.mark.parametrize('source, message', [
    ({'observation': [{'source': 'field', 'topic': '/gripper', 'fields': ['forces[5]']}]},
     "field 'forces[5]': index 5 out of range (2 elements)"),
    ({'observation': [{'source': 'field', 'topic': '/gripper', 'fields': ['forces']}]},
     "field 'forces' is an array of 2 elements; index it like forces[0]"),
    ({'observation': [{'source': 'field', 'topic': '/gripper', 'fields': ['tip']}]},
     "field 'tip' is a geometry_msgs/msg/Point, not a number"),
    ({'action': {'source': 'array', 'topic': '/cmd', 'indices': [0, 5]}},
     "field 'data[5]' out of range: data has 1 elements"),
])
def test_a_field_that_is_not_one_number_per_label_is_refused_for_what_it_is(tmp_path, source, message):
    bag = _gripper_bag(tmp_path / 'g', 'mcap')
    msg = only_error(bag, {**_gripper_spec(), **source})
    assert message in msg, msg


def test_joint_states_without_the_field_the_spec_reads_are_refused_naming_it(tmp_path):
    """Arms that publish positions only send empty velocity arrays: a spec that reads velocities says so, rather than
    indexing past them."""
    with BagRecorder(tmp_path / 'arm', storage='mcap') as rec:
        for k in range(5):
            t = 10**12 + k * 100_000_000
            rec.write('/joint_states', 'sensor_msgs/msg/JointState',
                      joint_state(t, ['j1', 'j2'], [0.1 * k, 0.2], velocity=[]), t)
            rec.write('/cmd', 'std_msgs/msg/Float64MultiArray', float_array([0.1 * k]), t)
    spec = {'control_rate_hz': 10.0, 'episodes': {'per_bag': True},
            'observation': [{'source': 'joint_state', 'topic': '/joint_states', 'joints': ['j1', 'j2'],
                             'field': 'velocity'}],
            'action': {'source': 'array', 'topic': '/cmd', 'indices': [0]}}
    msg = only_error(tmp_path / 'arm', spec)
    assert "field 'velocity' has 0 values for 2 joint names" in msg, msg


# A custom type's definition as rosbag2 records it when the type comes from an .idl file: each file whole, behind a
# separator line and "IDL: <type>", its #include lines and rosidl's comments and annotations left in.
GRIPPER_IDL = '\n'.join(['=' * 80, f'IDL: {GRIPPER}', """// generated from rosidl_adapter/resource/msg.idl.em
// with input from swfp_test_msgs/msg/Gripper.msg
// generated code does not contain a copyright notice

#include "geometry_msgs/msg/Point.idl"

module swfp_test_msgs {
  module msg {
    @verbatim (language="comment", text=
      "Finger opening and what the tip measures")
    struct Gripper {
      double width;

      sequence<double> forces;

      geometry_msgs::msg::Point tip;
    };
  };
};""", '=' * 80, 'IDL: geometry_msgs/msg/Point', """// generated from rosidl_adapter/resource/msg.idl.em
module geometry_msgs {
  module msg {
    struct Point {
      double x;
      double y;
      double z;
    };
  };
};
"""])


def test_custom_type_from_an_idl_definition_as_rosbag2_records_it(tmp_path):
    bag = _gripper_bag(tmp_path / 'g', 'sqlite3')
    con = apsw.Connection(str(bag / 'g.db3'))
    con.execute("UPDATE message_definitions SET encoding='ros2idl', encoded_message_definition=? WHERE topic_type=?",
                (GRIPPER_IDL, GRIPPER))
    con.close()
    with warnings.catch_warnings():
        warnings.simplefilter('error', BagWarning)    # parsed, not replaced by the standard store's guess
        ds = ingest([bag], _gripper_spec(), progress=False)
    k = np.arange(12)
    np.testing.assert_allclose(ds[0].obs, np.stack([0.01 * k, 2.0 * k, -k], 1), atol=1e-6)


def test_unknown_type_without_definition(tmp_path):
    bag = _gripper_bag(tmp_path / 'g', 'sqlite3')
    con = apsw.Connection(str(bag / 'g.db3'))
    con.execute("UPDATE message_definitions SET encoded_message_definition='' WHERE topic_type=?", (GRIPPER,))
    con.close()
    msg = only_error(bag, _gripper_spec())
    assert "'/gripper'" in msg and GRIPPER in msg and 'unknown' in msg


@pytest.mark.parametrize('storage,suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_corrupt_bag_named_and_good_bag_still_ingests(tmp_path, episodes, storage, suffix):
    good, bad = tmp_path / 'good', tmp_path / 'bad'
    write_demo_bag(good, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage=storage)
    write_demo_bag(bad, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage=storage)
    f = bad / f'bad{suffix}'
    data = bytearray(f.read_bytes())
    if storage == 'mcap':
        f.write_bytes(bytes(data[:60]))                       # cut inside its first chunk: nothing whole to read
    else:
        for i in range(0, len(data), 512):                  # garbled pages
            data[i + 16:i + 64] = b'\xa5' * 48
        f.write_bytes(bytes(data))
    ds = ingest([bad, good], default_panda_spec(action_scale=SCALE), progress=False)
    assert len(ds) == len(episodes)
    np.testing.assert_allclose(ds[0].obs, expected_obs(episodes[0]), atol=1e-5)
    assert [b.ok for b in ds.report.bags] == [False, True]
    assert str(f) in ds.report.bags[0].error
    with pytest.raises(IngestError) as ei:
        ingest([bad], default_panda_spec(action_scale=SCALE), progress=False)
    assert str(f) in str(ei.value)


def test_a_directory_without_metadata_or_storage_files_is_not_a_bag(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagReadError, match='empty: has no metadata.yaml and holds no .mcap or .db3 storage files'):
        ingest_bag(tmp_path / 'empty', default_panda_spec(action_scale=SCALE))


def test_missing_bag_is_reported(tmp_path, demo_bag):
    ds = ingest([tmp_path / 'nope', demo_bag], default_panda_spec(action_scale=SCALE), progress=False)
    assert f"{tmp_path / 'nope'}: no such rosbag2 bag" in ds.report.bags[0].error and ds.report.bags[1].ok


def _edit_metadata(bag, fn):
    p = bag / 'metadata.yaml'
    meta = yaml.safe_load(p.read_text())
    fn(meta['rosbag2_bagfile_information'])
    p.write_text(yaml.safe_dump(meta))


METADATA_PROBLEMS = {
    'missing_file': (lambda m: m.update(relative_file_paths=['demo_0.mcap', 'demo_1.mcap']),
                     r"metadata.yaml lists storage file\(s\) that do not exist: \['demo_0.mcap', 'demo_1.mcap'\]"),
    'wrong_counts': (lambda m: m.update(message_count=3), 'metadata.yaml says 3 messages but the storage files hold'),
    'malformed_counts': (lambda m: m.update(message_count='many'), 'metadata.yaml has malformed message counts'),
    'future_version': (lambda m: m.update(version=10), 'metadata.yaml has unsupported version 10'),
    'version_0': (lambda m: m.update(version=0), 'metadata.yaml has unsupported version 0'),
    'other_storage': (lambda m: m.update(storage_identifier='rosbag_v2'),
                      "metadata.yaml has unsupported storage_identifier 'rosbag_v2'"),
    'no_metadata': (None, 'has no metadata.yaml; falling back'),
    'garbage': (None, r'metadata.yaml is unreadable \(.*\); falling back'),
}


@pytest.mark.parametrize('problem', sorted(METADATA_PROBLEMS))
def test_metadata_mismatch_falls_back_with_warning(demo_bag, episodes, problem):
    """A metadata.yaml that does not describe its bag: the storage files are read instead, with a warning that says
    what is wrong with it; the format version then comes from the files themselves."""
    edit, warning = METADATA_PROBLEMS[problem]
    if edit is not None:
        _edit_metadata(demo_bag, edit)
    elif problem == 'no_metadata':
        (demo_bag / 'metadata.yaml').unlink()
    else:
        (demo_bag / 'metadata.yaml').write_text(':: not yaml [')
    with pytest.warns(BagWarning, match=warning):
        ds = ingest([demo_bag], default_panda_spec(action_scale=SCALE), progress=False)
    assert len(ds) == len(episodes)
    np.testing.assert_allclose(ds[-1].obs, expected_obs(episodes[-1]), atol=1e-5)
    assert ds.report.bags[0].warnings
    summary = inspect_bag(demo_bag)
    assert summary.format_version == 9 and summary.warnings


def test_split_bag_two_storage_files_merge_in_time_order(tmp_path, episodes):
    """Storage files of one bag are merged in time order (the fallback path reads every file in the directory)."""
    a, b = tmp_path / 'a', tmp_path / 'b'
    write_demo_bag(a, episodes[:1], PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    write_demo_bag(b, episodes[1:], PANDA_JOINTS, REACH_TASK_LABELS, RATE, start_time_ns=1_800_000_000 * 10**9)
    shutil.move(str(b / 'b.mcap'), str(a / 'b.mcap'))
    (a / 'metadata.yaml').unlink()
    with pytest.warns(BagWarning):
        ds = ingest([a], default_panda_spec(action_scale=SCALE), progress=False)
    assert [len(e) for e in ds] == [len(e) for e in episodes]
    summary = inspect_bag(a)                         # spans both files: first message of one, last of the other
    with pytest.warns(BagWarning), BagSource(a) as bag:
        times = [t for _topic, _type, t, _raw in bag.messages()]
    assert summary.files == ['a.mcap', 'b.mcap'] and (summary.start_ns, summary.end_ns) == (min(times), max(times))


def test_a_failed_bag_keeps_the_warnings_read_before_its_error(tmp_path, episodes):
    bag = tmp_path / 'b'
    write_demo_bag(bag, episodes[:1], PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    (bag / 'metadata.yaml').unlink()                  # read by listing its files: a BagWarning
    d = default_panda_spec_dict(action_scale=SCALE)
    d['observation'].append({'source': 'pose', 'topic': '/ee_pose'})
    with pytest.warns(BagWarning), pytest.raises(IngestError) as ei:
        ingest([bag], d, progress=False)
    (failed,) = ei.value.report.bags
    assert not failed.ok and "'/ee_pose'" in failed.error and any('metadata.yaml' in w for w in failed.warnings)


def _with_trajectory(**keys):
    """A spec edit adding a fourth observation source: a JointTrajectory topic with ``keys``."""
    return lambda d: d['observation'].append({'source': 'trajectory', 'topic': '/traj', 'joints': ['j'], **keys})


@pytest.mark.parametrize('mutate,needle', [
    (lambda d: d.pop('control_rate_hz'), 'control_rate_hz'),
    (lambda d: d['observation'][0].update(source='jointstate'), 'observation[0].source'),
    (lambda d: d['observation'][0].pop('joints'), 'observation[0].joints'),
    (lambda d: d['observation'][2].update(indices=[0]), 'observation[2]'),
    (lambda d: d['action'].update(scale=[1, 2]), 'action.scale'),
    (lambda d: d['action'].pop('reference'), 'action.reference'),
    (lambda d: d.update(episodes={'time_gap': 1, 'per_bag': True}), 'episodes'),
    (lambda d: d.update(timeline='ticks'), 'timeline'),
    (lambda d: d['observation'].append({'source': 'field', 'topic': '/x', 'fields': ['a..b']}), 'observation[3]'),
    (lambda d: d['observation'][0].update(topic='joint_states'), 'observation[0].topic'),
    (lambda d: d.update(colour='red'), 'colour'),
    (lambda d: d['observation'][0].update(joints='panda_joint1'),
     "observation[0].joints must be a list of non-empty strings, got 'panda_joint1'"),
    (lambda d: d['observation'][0].update(joints=['panda_joint1', '']), 'observation[0].joints must be a list of non-'),
    (lambda d: d['observation'][0].update(joints=[]), 'observation[0].joints must not be empty'),
    (lambda d: d['observation'][0].update(joints=['a', 'b', 'a']),
     "observation[0].joints has duplicates: ['a', 'b', 'a']"),
    (lambda d: d.update(control_rate_hz='fast'), "control_rate_hz must be a number, got 'fast'"),
    (lambda d: d.update(control_rate_hz=True), 'control_rate_hz must be a number, got True'),
    (lambda d: d.update(control_rate_hz=0), 'control_rate_hz must be > 0, got 0'),
    (lambda d: d.update(max_staleness=-0.1), 'max_staleness must be > 0, got -0.1'),
    (lambda d: d['observation'][0].update(topic='/'), 'observation[0].topic must be an absolute topic name'),
    (lambda d: d['observation'].append('/joint_states'), 'observation[3] must be a mapping with "source" and "topic"'),
    (lambda d: d['observation'][0].update(indices=[0]), "observation[0] has unknown key(s) ['indices'] for source"),
    (lambda d: d['observation'][0].update(field='positions'), "observation[0].field must be one of ['position', "),
    (_with_trajectory(field='position'), "observation[3].field must be one of ['positions', "),
    (_with_trajectory(time_from_start=-0.05), 'observation[3].time_from_start must be >= 0'),
    (_with_trajectory(point='first', time_from_start=0.05), 'give either point or time_from_start, not both'),
    (_with_trajectory(point='last'), 'observation[3].point must be "first"'),
    (lambda d: d['action'].update(indices=[]), 'action.indices must be a non-empty list of integers >= 0, got []'),
    (lambda d: d['action'].update(indices=[0, -1]), 'action.indices must be a non-empty list of integers >= 0'),
    (lambda d: d['action'].update(indices=[0, True]), 'action.indices must be a non-empty list of integers >= 0'),
    (lambda d: d.update(version=2), 'version 2 is not supported (this code reads version 1)'),
    (lambda d: d.update(task=5), 'task must be a string, got 5'),
    (lambda d: d.update(observation=[]), 'observation must be a non-empty list of sources'),
    (lambda d: d.update(observation={'source': 'array', 'topic': '/x'}), 'observation must be a non-empty list of'),
    (lambda d: d.update(action='/swfp/action'), 'action must be a mapping'),
    (lambda d: d['action'].update(representation='relative'),
     'action.representation must be "absolute" or "delta", got \'relative\''),
    (lambda d: d['action']['reference'].update(joints=['panda_joint1', 'panda_joint2']),
     'action.reference has 2 elements but the action has 7'),
    (lambda d: d['action'].update(representation='absolute'),
     'action.reference is only used with representation: delta'),
    (lambda d: d['action'].update(offset=0.1), 'action.offset is only used with representation: absolute'),
    (lambda d: d['action'].update(scale=0), 'action.scale must be > 0, got 0'),
    (lambda d: d['action'].update(clip='yes'), "action.clip must be true or false, got 'yes'"),
    (lambda d: d.update(episodes={'time_gap': 0}), 'episodes.time_gap must be > 0, got 0'),
    (lambda d: d.update(episodes={'per_bag': False}), 'episodes.per_bag must be true'),
    (lambda d: d['reward'].update(indices=[0, 1]), 'reward must select exactly one element (got 2)'),
    (lambda d: d['success'].update(indices=[0, 1]), 'success must select exactly one element (got 2)'),
    (lambda d: d.update(min_episode_steps=0), 'min_episode_steps must be an integer >= 1, got 0'),
    (lambda d: d.update(min_episode_steps=True), 'min_episode_steps must be an integer >= 1, got True'),
])
def test_spec_validation_names_the_key(mutate, needle):
    d = default_panda_spec_dict()
    mutate(d)
    with pytest.raises(SpecError) as ei:
        load_spec(d)
    assert needle in str(ei.value)


def test_spec_yaml_round_trip(tmp_path):
    spec = default_panda_spec()
    p = tmp_path / 'ingest_panda_reach.yaml'
    p.write_text(spec.to_yaml())
    again = load_spec(p)
    assert again.to_dict() == spec.to_dict() and again.action.representation == 'delta'
    assert again.topics()[:2] == ['/joint_states', '/swfp/task']


@pytest.mark.parametrize('field, columns, message', [
    ('joint_pos', 6, 'episode 1: joint_pos has 6 columns, 7 joint names given'),
    ('joint_vel', 8, 'episode 1: joint_vel has 8 columns, 7 joint names given'),
    ('action_target', 6, 'episode 1: action_target has 6 columns, 7 joint names given'),
    ('joint_effort', 1, 'episode 1: joint_effort has 1 columns, 7 joint names given'),
    ('task', 5, 'episode 1: task has 5 columns, 6 labels given'),
])
def test_the_demo_writer_refuses_an_episode_that_does_not_match_its_names(tmp_path, episodes, field, columns, message):
    """The refusal reaches the caller (the recorder's context manager closes the bag and re-raises, never swallows)."""
    bad = episodes[1]
    setattr(bad, field, np.resize(bad.joint_pos, (len(bad), columns)))
    with pytest.raises(ValueError, match=message):
        write_demo_bag(tmp_path / 'bag', episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)


def test_a_recorder_closes_once_and_an_aborted_bag_has_no_metadata(tmp_path):
    ts = standard_typestore()
    B = ts.types['std_msgs/msg/Bool']
    for end in ('close', 'abort'):
        rec = BagRecorder(tmp_path / end)
        rec.write('/estop', B.__msgtype__, B(data=True), 10)      # the first write opens the bag
        assert rec.is_open
        getattr(rec, end)()
        assert not rec.is_open
        rec.close(), rec.abort()                           # both are no-ops on a finished recorder
        assert (tmp_path / end / 'metadata.yaml').is_file() == (end == 'close')


def test_an_episode_record_refuses_arrays_that_are_not_one_row_per_step(episodes):
    ep = episodes[0]
    T = len(ep)
    fields = dict(time=ep.time, joint_pos=ep.joint_pos, joint_vel=ep.joint_vel, task=ep.task,
                  action_target=ep.action_target, reward=ep.reward)
    for change, message in [
        (dict(joint_pos=ep.joint_pos[0]), rf'joint_pos must have shape \(T={T}, n\), got \(7,\)'),
        (dict(task=ep.task[:-1]), rf'task must have shape \(T={T}, n\), got \({T - 1}, 6\)'),
        (dict(reward=ep.reward[:-1]), f'reward must have {T} entries, got {T - 1}'),
        (dict(time=np.r_[ep.time[:1], ep.time[:-1]]), 'time must be strictly increasing'),   # one step repeated
    ]:
        with pytest.raises(ValueError, match=message):
            EpisodeRecord(**{**fields, **change})


def _drop_definition(bag, msgtype):
    """What rosbag2 records for a type whose .msg / .idl it cannot find: an empty definition of encoding ''."""
    (db,) = bag.glob('*.db3')
    con = apsw.Connection(str(db))
    con.execute("UPDATE message_definitions SET encoding = '', encoded_message_definition = '' WHERE topic_type = ?",
                (msgtype,))
    assert con.changes() == 1
    con.close()
    return db


def _copies_left():
    return set(Path(tempfile.gettempdir()).glob('swfp-bag-copies-*'))


def test_a_standard_type_recorded_without_its_definition_decodes_with_the_standard_one(tmp_path, episodes):
    """rosbags refuses a sqlite3 file holding a definition of encoding '' (the whole bag, as 'truncated or corrupt?'):
    it is read through a copy with that definition marked empty, the recording itself untouched."""
    write_demo_bag(tmp_path / 'whole', episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage='sqlite3')
    shutil.copytree(tmp_path / 'whole', tmp_path / 'stripped')
    db = _drop_definition(tmp_path / 'stripped', 'sensor_msgs/msg/JointState')
    recorded, copies_before = db.read_bytes(), _copies_left()
    summary = inspect_bag(tmp_path / 'stripped')
    (warning,) = summary.warnings
    assert 'stored no message definition for sensor_msgs/msg/JointState' in warning and str(db) in warning
    counts = {t.topic: t.count for t in inspect_bag(tmp_path / 'whole').topics}
    assert {t.topic: t.count for t in summary.topics} == counts
    spec = default_panda_spec(action_scale=SCALE)
    with pytest.warns(BagWarning, match='stored no message definition'):
        stripped = ingest([tmp_path / 'stripped'], spec, progress=False)
    whole = ingest([tmp_path / 'whole'], spec, progress=False)
    assert len(stripped) == len(whole) == len(episodes)
    for a, b in zip(stripped, whole):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.actions, b.actions)
    assert db.read_bytes() == recorded and _copies_left() == copies_before


def test_a_custom_type_recorded_without_its_definition_is_refused_naming_it(tmp_path):
    bag = _gripper_bag(tmp_path / 'g', 'sqlite3')
    _drop_definition(bag, GRIPPER)
    with pytest.warns(BagWarning, match=f'stored no message definition for {GRIPPER}'):
        msg = only_error(bag, _gripper_spec())
    assert GRIPPER in msg and "'/gripper'" in msg, msg
