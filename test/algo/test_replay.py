"""The replay ring buffer and the draws from it: overwrite order, copies out, resume, and the demo/online split of
critic minibatches and of a block's state pool."""
import numpy as np
import pytest

from swfp_ros.algo.replay import FIELDS, ReplayBuffer, batch_indices, pool_indices, split_sizes


def rows(first: int, n: int) -> dict[str, np.ndarray]:
    """n transitions whose every field carries its index (first, first + 1, ...)."""
    i = np.arange(first, first + n)
    return {'obs': np.repeat(i[:, None], 2, 1).astype(np.float32), 'action': i[:, None].astype(np.float32),
            'reward': i.astype(np.float32), 'next_obs': np.repeat(i[:, None] + 1, 2, 1).astype(np.float32),
            'terminated': i % 2 == 0, 'n_steps': i.astype(np.int32)}


def test_ring_overwrites_the_oldest_and_reports_the_slots_written():
    buf = ReplayBuffer(obs_dim=2, act_dim=1, capacity=5)
    assert buf.add(rows(0, 3)).tolist() == [0, 1, 2] and len(buf) == 3
    assert buf.add(rows(3, 4)).tolist() == [3, 4, 0, 1] and len(buf) == 5 and buf.ptr == 2
    assert buf.get(np.arange(5))['reward'].tolist() == [5, 6, 2, 3, 4]
    got = buf.get(np.array([[0, 1], [2, 3]]), fields=('obs', 'terminated'))
    assert set(got) == {'obs', 'terminated'} and got['obs'].shape == (2, 2, 2)
    got['obs'][:] = -1                                        # a copy: the buffer is not changed through it
    assert buf.get(np.array([0]))['obs'].tolist() == [[5.0, 5.0]]


def test_capacity_must_be_positive():
    for capacity in (0, -3):
        with pytest.raises(ValueError, match='capacity must be positive'):
            ReplayBuffer(2, 1, capacity)


def test_state_dict_round_trip_after_wrapping_and_capacity_checked():
    buf = ReplayBuffer(2, 1, 4)
    buf.add(rows(0, 6))
    again = ReplayBuffer(2, 1, 4)
    again.load_state_dict(buf.state_dict())
    assert (again.ptr, again.size) == (buf.ptr, buf.size) == (2, 4)
    for k in FIELDS:
        np.testing.assert_array_equal(again.data[k], buf.data[k])
    with pytest.raises(ValueError, match='replay capacity mismatch: checkpoint 4, config 8'):
        ReplayBuffer(2, 1, 8).load_state_dict(buf.state_dict())


def test_split_sizes():
    assert split_sizes(256, 0.25, online_size=10, demo_size=10) == (192, 64)
    assert split_sizes(10, 0.27, 10, 10) == (7, 3)            # rounded to the nearest: 2.7 -> 3 demo
    assert split_sizes(5, 0.5, 10, 10) == (3, 2)              # round half to even: 2.5 -> 2 demo
    assert split_sizes(256, 0.5, online_size=10, demo_size=0) == (256, 0)
    assert split_sizes(256, 0.5, online_size=0, demo_size=10) == (0, 256)


def test_minibatch_slots_stay_in_range_at_the_ratio():
    rng = np.random.default_rng(0)
    online, demo = batch_indices(online_size=7, demo_size=3, batches=50, batch_size=8, demo_ratio=0.25, rng=rng)
    assert online.shape == (50, 6) and demo.shape == (50, 2)
    assert set(online.ravel().tolist()) == set(range(7)) and set(demo.ravel().tolist()) == set(range(3))
    online, demo = batch_indices(7, 0, 4, 8, 0.25, rng)
    assert online.shape == (4, 8) and demo.shape == (4, 0)


def test_pool_draws_distinct_slots_and_shrinks_to_keep_the_ratio():
    rng = np.random.default_rng(0)
    online, demo = pool_indices(online_size=100, demo_size=100, n=40, demo_ratio=0.25, rng=rng)
    assert (len(online), len(demo)) == (30, 10)
    assert len(set(online.tolist())) == 30 and len(set(demo.tolist())) == 10
    online, demo = pool_indices(online_size=15, demo_size=100, n=40, demo_ratio=0.25, rng=rng)
    assert (len(online), len(demo)) == (15, 5)                # half the online wanted: half of each
    assert sorted(online.tolist()) == list(range(15))
    online, demo = pool_indices(online_size=100, demo_size=4, n=40, demo_ratio=0.25, rng=rng)
    assert (len(online), len(demo)) == (12, 4)
    online, demo = pool_indices(online_size=100, demo_size=0, n=40, demo_ratio=0.25, rng=rng)
    assert (len(online), len(demo)) == (40, 0)
