"""Demonstrations -> replay transitions: the same n-step windows as online data, chunks zero-padded at episode ends."""
import numpy as np
import pytest

from swfp_ros.algo.config import CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.data import DemoDataset, Episode
from swfp_ros.train.finetune import demo_transitions


def dataset():
    """Episode 0 succeeds after 5 steps (rewards 0..4); episode 1 is cut by the time limit after 3 (rewards 0..2)."""
    rng = np.random.default_rng(0)
    eps = [Episode(obs=rng.normal(size=(T, 4)), actions=rng.uniform(-1, 1, (T, 2)), rewards=np.arange(T, dtype=float),
                   success=s) for T, s in [(5, True), (3, False)]]
    return DemoDataset(eps, task='panda_reach', obs_labels=['a', 'b', 'c', 'd'], action_labels=['u', 'v'],
                       control_rate_hz=20.0)


def config(n_step, chunk=1):
    return SwfpConfig(flow=FlowConfig(chunk=chunk), critic=CriticConfig(n_step=n_step, gamma=0.5))


def by_start(t, ds, episode, step):
    """The transition starting at (episode, step)."""
    i = np.flatnonzero((t['obs'] == ds[episode].obs[step]).all(1))
    assert len(i) == 1
    return {k: v[i[0]] for k, v in t.items()}


def test_one_step_and_n_step_windows():
    ds = dataset()
    one = demo_transitions(ds, config(1))
    assert len(one['obs']) == 5 + 2                       # the truncated episode's last step has no next observation
    assert one['terminated'].sum() == 1 and by_start(one, ds, 0, 4)['terminated']
    np.testing.assert_array_equal(by_start(one, ds, 0, 0)['next_obs'], ds[0].obs[1])

    three = demo_transitions(ds, config(3))
    first = by_start(three, ds, 0, 0)
    np.testing.assert_allclose(first['reward'], 0 + 0.5 * 1 + 0.25 * 2)
    np.testing.assert_array_equal(first['next_obs'], ds[0].obs[3])
    assert first['n_steps'] == 3 and not first['terminated']
    end = by_start(three, ds, 0, 3)                        # runs into the successful end: terminal, 2 steps
    np.testing.assert_allclose([end['reward'], end['terminated'], end['n_steps']], [3 + 0.5 * 4, 1, 2])
    cut = by_start(three, ds, 1, 0)                        # ends at the truncated episode's last observation
    np.testing.assert_allclose([cut['reward'], cut['terminated'], cut['n_steps']], [0 + 0.5 * 1, 0, 2])
    np.testing.assert_array_equal(cut['next_obs'], ds[1].obs[2])


def test_chunks_start_at_every_step_and_are_padded_at_the_end():
    ds = dataset()
    t = demo_transitions(ds, config(1, chunk=2))
    assert t['action'].shape[1] == 4 and len(t['obs']) == 5 + 2
    last = by_start(t, ds, 0, 4)                           # one action left: padded with zeros, 1 step
    np.testing.assert_array_equal(last['action'], [*ds[0].actions[4], 0, 0])
    assert last['n_steps'] == 1 and last['terminated']
    mid = by_start(t, ds, 0, 1)
    np.testing.assert_array_equal(mid['action'], ds[0].actions[1:3].reshape(-1))
    np.testing.assert_allclose(mid['reward'], 1 + 0.5 * 2)
    np.testing.assert_array_equal(mid['next_obs'], ds[0].obs[3])
    # two chunks joined into one window: 4 env steps, discounted by env steps
    joined = by_start(demo_transitions(ds, config(2, chunk=2)), ds, 0, 0)
    np.testing.assert_allclose(joined['reward'], 0 + 0.5 * 1 + 0.25 * 2 + 0.125 * 3)
    assert joined['n_steps'] == 4


def test_a_dataset_without_transitions_is_an_error():
    ds = DemoDataset([Episode(obs=np.zeros((1, 4)), actions=np.zeros((1, 2)), success=False)], task='panda_reach',
                     obs_labels=['a', 'b', 'c', 'd'], action_labels=['u', 'v'], control_rate_hz=20.0)
    with pytest.raises(ValueError, match='no transitions'):
        demo_transitions(ds, config(3))
