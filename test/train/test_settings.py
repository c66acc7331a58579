"""A run's algorithm settings: the `swfp:` parameters of a learner parameter file, then `--set` overrides; each
refusal blames the file or the override that caused it (the CLI's own table covers the common cases end to end)."""
import pytest

from swfp_ros.train.settings import SettingsError, load_swfp_config

PARAMS = '/**:\n  ros__parameters:\n    swfp:\n      warmup_steps: 100\n      block: {delta: 0.2}\n'


def params_file(tmp_path, text=PARAMS):
    path = tmp_path / 'learner.yaml'
    path.write_text(text)
    return path


def test_the_file_then_the_overrides_in_order(tmp_path):
    cfg = load_swfp_config(params_file(tmp_path), ['block.delta=0.3', 'critic.gamma=0.95', 'block.delta=0.25'])
    assert (cfg.warmup_steps, cfg.block.delta, cfg.critic.gamma) == (100, 0.25, 0.95)
    # spaces around the key, as in a quoted --set 'critic.gamma = 0.9', are not part of it
    assert load_swfp_config(params_file(tmp_path), [' critic.gamma = 0.9']).critic.gamma == 0.9
    assert load_swfp_config().to_dict() == load_swfp_config(None, []).to_dict()   # the package's learner.yaml


@pytest.mark.parametrize('text,problem', [
    ('swfp: {utd: 1}\n', 'not a ROS parameter file (no <node>: ros__parameters: section)'),
    ('/**:\n  ros__parameters:\n    policy: {}\n', 'no swfp: section under ros__parameters'),
    ('/**: [unclosed\n', 'invalid YAML'),
    (PARAMS.replace('delta: 0.2', 'delta: -1'), 'swfp.block.delta: must be > 0, got -1.0'),   # the file's own value
])
def test_a_bad_file_is_blamed(tmp_path, text, problem):
    path = params_file(tmp_path, text)
    with pytest.raises(SettingsError) as e:
        load_swfp_config(path)
    assert str(e.value).startswith(f'{path}: ') and problem in str(e.value)


@pytest.mark.parametrize('item,message', [
    ('block.delta=-1', '--set block.delta=-1: must be > 0, got -1.0'),
    ('warmup_steps.x=1', '--set warmup_steps.x=1: warmup_steps is a single setting, not a group'),
    ('block.delta.x.y=1', '--set block.delta.x.y=1: block.delta is a single setting, not a group'),
    ('block=7', '--set block=7: expected a mapping of block settings, got 7'),
    ('=1', '--set =1: expected KEY=VALUE'),
])
def test_a_bad_override_is_blamed(tmp_path, item, message):
    with pytest.raises(SettingsError) as e:
        load_swfp_config(params_file(tmp_path), [item])
    assert str(e.value).startswith(message)


def test_the_override_at_fault_is_blamed_wherever_it_is_in_the_list(tmp_path):
    with pytest.raises(SettingsError, match=r"^--set block\.delta=-1: must be > 0, got -1\.0$"):
        load_swfp_config(params_file(tmp_path), ['block.delta=-1', 'critic.gamma=0.9'])


def test_a_group_override_is_blamed_for_a_setting_inside_it_unless_a_later_one_set_that_setting(tmp_path):
    with pytest.raises(SettingsError, match=r"^--set block=\{delta: 0\}: block\.delta: must be > 0, got 0\.0$"):
        load_swfp_config(params_file(tmp_path), ['block={delta: 0}'])
    with pytest.raises(SettingsError, match=r"^--set block\.delta=-1: must be > 0, got -1\.0$"):
        load_swfp_config(params_file(tmp_path), ['block={delta: 0}', 'block.delta=-1'])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SettingsError, match=r'missing\.yaml: no such file$'):
        load_swfp_config(tmp_path / 'missing.yaml')
