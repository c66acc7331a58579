"""Simulated expert demos -> real rosbag2 (MCAP and sqlite3) -> ingest with the shipped spec -> the same arrays."""
import numpy as np
import pytest

from swfp_ros.data import ingest, write_demo_bag
from swfp_ros.paths import config_path
from swfp_ros.sim import make_env
from swfp_ros.sim.tasks import ACTION_SCALE
from swfp_ros.train.demos import collect_demos


@pytest.mark.parametrize('task,storage', [('panda_reach', 'mcap'), ('panda_push', 'sqlite3')])
def test_recorded_demos_ingest_back_to_the_dataset(tmp_path, task, storage):
    dataset, records = collect_demos(task, episodes=3, noise_std=0.3, epsilon=0.05, seed=7, progress=False)
    base = make_env(task).unwrapped
    write_demo_bag(tmp_path / 'bag', records, joint_names=base.joint_names, task_labels=base.task_labels,
                   control_rate_hz=base.control_rate_hz, storage=storage)

    ingested = ingest([tmp_path / 'bag'], config_path(f'ingest_{task}.yaml'))

    assert len(ingested) == len(dataset)
    for got, want in zip(ingested, dataset):
        np.testing.assert_allclose(got.obs, want.obs, atol=1e-5)
        # Targets were clipped to the joint limits, so the delta comes back exactly only away from the limits.
        np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)
        np.testing.assert_allclose(got.rewards, want.rewards, atol=1e-5)
        assert got.success == want.success


def test_shipped_spec_uses_the_env_action_scale():
    from swfp_ros.data import load_spec
    for task in ('panda_reach', 'panda_push'):
        spec = load_spec(config_path(f'ingest_{task}.yaml'))
        assert np.allclose(spec.action.scale, ACTION_SCALE)
