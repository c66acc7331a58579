"""MuJoCo Franka Panda tasks (gymnasium), scripted experts and offscreen rendering: mujoco + gymnasium only.

Importing this package registers the environments ``swfp/PandaReach-v0`` and ``swfp/PandaPush-v0``.
"""
import os

# MuJoCo chooses its GL backend when first imported: default to headless EGL unless the user chose one.
os.environ.setdefault('MUJOCO_GL', 'egl')

import gymnasium as gym  # noqa: E402

from .tasks import PandaPushEnv, PandaReachEnv, PandaTaskEnv  # noqa: E402

# Task name (CLI, config, ROS parameter) -> (gymnasium id, env class, episode limit in control steps).
TASKS = {
    'panda_reach': ('swfp/PandaReach-v0', PandaReachEnv, 50),
    'panda_push': ('swfp/PandaPush-v0', PandaPushEnv, 100),
}

for _env_id, _cls, _limit in TASKS.values():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=f'{_cls.__module__}:{_cls.__name__}', max_episode_steps=_limit)


def make_env(task: str, **kwargs) -> gym.Env:
    """A registered task by its short name (``panda_reach`` | ``panda_push``), with its time limit."""
    if task not in TASKS:
        raise ValueError(f'unknown task {task!r}; choose one of {sorted(TASKS)}')
    return gym.make(TASKS[task][0], **kwargs)


__all__ = ['TASKS', 'make_env', 'PandaTaskEnv', 'PandaReachEnv', 'PandaPushEnv']
