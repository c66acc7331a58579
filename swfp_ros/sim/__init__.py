"""MuJoCo tasks (gymnasium), scripted experts and offscreen rendering.

Importing this package registers the environments ``swfp/PandaReach-v0`` and ``swfp/PandaPush-v0`` (mujoco +
gymnasium only) and ``swfp/CubeSingle-v0`` (OGBench's cube-single task; needs the ``ogbench`` extra when made).
"""
import os

# MuJoCo chooses its GL backend when first imported: default to headless EGL unless the user chose one.
os.environ.setdefault('MUJOCO_GL', 'egl')

import gymnasium as gym  # noqa: E402

from .ogbench_tasks import CubeSingleEnv  # noqa: E402
from .tasks import PandaPushEnv, PandaReachEnv, PandaTaskEnv  # noqa: E402

# Task name (CLI, config, ROS parameter) -> (gymnasium id, env class, episode limit in control steps).
TASKS = {
    'panda_reach': ('swfp/PandaReach-v0', PandaReachEnv, 50),
    'panda_push': ('swfp/PandaPush-v0', PandaPushEnv, 100),
    'cube_single': ('swfp/CubeSingle-v0', CubeSingleEnv, 200),   # OGBench's cube-single-singletask time limit
}

# The tasks the ROS sim bridge serves: joint-target actions, the policy node's command contract. cube_single commands
# end-effector deltas through OGBench's own IK, so it runs in-process only.
BRIDGE_TASKS = tuple(name for name, (_, cls, _) in TASKS.items() if issubclass(cls, PandaTaskEnv))

for _env_id, _cls, _limit in TASKS.values():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=f'{_cls.__module__}:{_cls.__name__}', max_episode_steps=_limit)


def make_env(task: str, **kwargs) -> gym.Env:
    """A registered task by its short name (``panda_reach`` | ``panda_push`` | ``cube_single``), with its limit."""
    if task not in TASKS:
        raise ValueError(f'unknown task {task!r}; choose one of {sorted(TASKS)}')
    return gym.make(TASKS[task][0], **kwargs)


__all__ = ['TASKS', 'BRIDGE_TASKS', 'make_env', 'PandaTaskEnv', 'PandaReachEnv', 'PandaPushEnv', 'CubeSingleEnv']
