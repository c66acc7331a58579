"""Expert demonstrations: noisy scripted-expert rollouts, kept as a DemoDataset and, on request, a real rosbag2.

The same rollout feeds both outputs, so a bag ingested with the default Panda spec gives back these arrays. Bag
records exist for the joint-position (Panda) tasks only: the OGBench task's actions are end-effector deltas, which the
bag layout (absolute joint targets on /swfp/action) does not carry.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..data import DemoDataset, Episode, EpisodeRecord
from ..sim import PandaTaskEnv, make_env
from ..sim.experts import make_expert


def collect_demos(task: str, episodes: int, noise_std: float, epsilon: float, seed: int = 0,
                  progress: bool | None = True) -> tuple[DemoDataset, list[EpisodeRecord]]:
    """Roll out the scripted expert; episode i uses env seed ``seed + i``. The records (for a rosbag) are empty for a
    task that is not joint-position controlled."""
    env = make_env(task)
    base = env.unwrapped
    joint_task = isinstance(base, PandaTaskEnv)
    expert = make_expert(env, noise_std=noise_std, epsilon=epsilon, seed=seed)
    dataset = DemoDataset(task=task, obs_labels=base.obs_labels, action_labels=list(base.action_labels),
                          control_rate_hz=base.control_rate_hz,
                          provenance=[{'source': 'simulator', 'task': task, 'expert_noise_std': noise_std,
                                       'expert_epsilon': epsilon, 'seed': seed, 'episodes': episodes}])
    records = []
    for i in tqdm(range(episodes), desc=f'demos {task}', disable=None if progress is None else not progress):
        obs, _ = env.reset(seed=seed + i)
        steps = {'obs': [], 'actions': [], 'rewards': [], 'time': [], 'targets': []}
        done, info = False, {}
        while not done:
            action = expert(obs)
            steps['time'].append(base.sim_time)
            steps['obs'].append(obs)
            if joint_task:
                steps['targets'].append(base.joint_targets_for(action))
            steps['actions'].append(action)
            obs, reward, terminated, truncated, info = env.step(action)
            steps['rewards'].append(reward)
            done = terminated or truncated
        success = bool(info['is_success'])
        obs_arr = np.asarray(steps['obs'])
        dataset.add_episode(Episode(obs=obs_arr, actions=np.asarray(steps['actions']), rewards=steps['rewards'],
                                    success=success, timestamps=np.asarray(steps['time'])))
        if joint_task:
            records.append(EpisodeRecord(time=np.asarray(steps['time']), joint_pos=obs_arr[:, :7],
                                         joint_vel=obs_arr[:, 7:14], task=obs_arr[:, 14:],
                                         action_target=np.asarray(steps['targets']),
                                         action_delta=np.asarray(steps['actions']),
                                         reward=np.asarray(steps['rewards']), success=success))
    return dataset, records
