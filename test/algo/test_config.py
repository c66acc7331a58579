"""The typed configuration: every setting checked for its type and range when it is made, an int accepted (and stored
as a float) where a number is wanted, and each refusal naming the dotted key it came from (YAML, `--set`, parameters)."""
import pytest
import torch

from swfp_ros.algo.config import BlockConfig, ConfigError, SwfpConfig, resolve_device


@pytest.mark.parametrize('given,key,problem', [
    ({'flow': {'hidden': 2.5}}, 'flow.hidden', 'expected an integer, got 2.5'),
    ({'seed': 1.0}, 'seed', 'expected an integer, got 1.0'),
    ({'block': {'delta': True}}, 'block.delta', 'expected a number, got True'),
    ({'critic': {'batch_size': False}}, 'critic.batch_size', 'expected an integer, got False'),
    ({'block': {'delta': '0.1'}}, 'block.delta', "expected a number, got '0.1'"),
    ({'critic': {'soft_target': 1}}, 'critic.soft_target', 'expected bool, got 1'),
    ({'block': {'q_scale': 3}}, 'block.q_scale', 'expected str, got 3'),
    ({'block': {'q_scale': 'mean_abs'}}, 'block.q_scale', "must be 'grad_norm' or 'none', got 'mean_abs'"),
    ({'critic': {'gamma': 1.0}}, 'critic.gamma', 'must be in (0, 1), got 1.0'),
    ({'critic': {'gamma': 0}}, 'critic.gamma', 'must be in (0, 1), got 0.0'),
    ({'critic': {'polyak': 0}}, 'critic.polyak', 'must be in (0, 1], got 0.0'),
    ({'critic': {'ensemble': 1}}, 'critic.ensemble', 'must be >= 2, got 1'),
    ({'flow': {'time_embed_dim': 3}}, 'flow.time_embed_dim', 'must be even and >= 2, got 3'),
    ({'flow': {'time_embed_dim': 0}}, 'flow.time_embed_dim', 'must be even and >= 2, got 0'),
    ({'utd': 0}, 'utd', 'must be > 0, got 0.0'),
    ({'warmup_steps': -1}, 'warmup_steps', 'must be >= 0, got -1'),
    ({'demo_ratio': 1.5}, 'demo_ratio', 'must be in [0, 1], got 1.5'),
    ({'flow': [64]}, 'flow', 'expected a mapping of flow settings, got [64]'),
])
def test_a_bad_setting_is_refused_by_its_dotted_key(given, key, problem):
    with pytest.raises(ConfigError) as e:
        SwfpConfig.from_dict(given)
    assert (e.value.key, e.value.problem, str(e.value)) == (key, problem, f'{key}: {problem}')
    assert isinstance(e.value, ValueError)


def test_an_unknown_setting_is_refused_with_the_closest_valid_one():
    with pytest.raises(ConfigError) as e:
        SwfpConfig.from_dict({'critic': {'gama': 0.9}})
    assert e.value.key == 'critic.gama'
    assert e.value.problem.startswith('unknown setting (did you mean critic.gamma? valid critic settings: hidden, ')
    with pytest.raises(ConfigError, match=r'^warmup: unknown setting \(did you mean warmup_steps\? valid top-level'):
        SwfpConfig.from_dict({'warmup': 10})


def test_ints_are_accepted_and_stored_as_floats_where_a_number_is_wanted():
    cfg = SwfpConfig.from_dict({'utd': 1, 'block': {'delta': 1}, 'critic': {'polyak': 1}})
    assert (cfg.utd, cfg.block.delta, cfg.critic.polyak) == (1.0, 1.0, 1.0)
    assert all(type(v) is float for v in (cfg.utd, cfg.block.delta, cfg.critic.polyak))
    assert type(BlockConfig(hidden=64).hidden) is int
    assert SwfpConfig.from_dict({'flow': {'time_embed_dim': 2}}).flow.time_embed_dim == 2   # the smallest allowed
    assert [SwfpConfig(demo_ratio=r).demo_ratio for r in (0, 1)] == [0.0, 1.0]              # both bounds included


def test_auto_device_is_cuda_only_where_there_is_one():
    assert resolve_device('auto') == torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    assert resolve_device('cuda:1') == torch.device('cuda', 1) and resolve_device('cpu') == torch.device('cpu')
    assert resolve_device(torch.device('cpu')) == torch.device('cpu')
