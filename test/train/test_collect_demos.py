"""The scripted expert's demonstrations: episode i on env seed seed + i, each ending where the episode ends."""
import numpy as np

from swfp_ros.sim import make_env
from swfp_ros.train.demos import collect_demos


def test_episode_i_runs_on_env_seed_seed_plus_i_and_ends_at_its_success():
    dataset, records = collect_demos('panda_reach', episodes=2, noise_std=0.0, epsilon=0.0, seed=5, progress=False)
    env = make_env('panda_reach')
    for i, episode in enumerate(dataset):
        first_obs, _ = env.reset(seed=5 + i)
        np.testing.assert_array_equal(episode.obs[0], first_obs)
        assert episode.success and len(episode) < env.spec.max_episode_steps    # not run on to the time limit
    assert [len(r) for r in records] == [len(e) for e in dataset]
