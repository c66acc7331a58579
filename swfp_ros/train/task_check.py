"""Does a checkpoint or a dataset fit a task? Checked from what the file itself records (its task and observation
labels) before anything runs, so a mismatch is one clear sentence instead of a shape error deep in a rollout."""
from __future__ import annotations

from typing import Sequence


def task_spaces(task: str) -> tuple[list[str], int]:
    """(observation labels, action size) of a simulated task, e.g. ``(['panda_joint1.position', ..., 'goal_z'], 7)``."""
    from ..sim import make_env
    env = make_env(task)
    try:
        return list(env.unwrapped.obs_labels), int(env.action_space.shape[0])
    finally:
        env.close()


def observation_mismatch(what: str, task: str, task_labels: Sequence[str], their_task: str | None,
                         their_labels: Sequence[str] | None, their_obs_dim: int, hint: str) -> str | None:
    """Why ``what`` (a checkpoint or dataset that records ``their_task`` / ``their_labels``, either possibly None)
    does not fit ``task`` with observations ``task_labels``, ending with ``hint`` (what to do); None when it fits."""
    if their_task and their_task != task:
        return (f'{what} is for task {their_task}, not {task} ({their_obs_dim} observations, the task has '
                f'{len(task_labels)}); {hint}')
    if their_labels is not None and list(their_labels) != list(task_labels):
        extra = [x for x in their_labels if x not in task_labels]
        missing = [x for x in task_labels if x not in their_labels]
        detail = (f'it has {_first_three(extra)} that the task lacks' if extra else '') + \
                 (' and ' if extra and missing else '') + (f'lacks {_first_three(missing)}' if missing else '')
        return (f'{what} observes {len(their_labels)} values that differ from task {task}\'s {len(task_labels)} '
                f'({detail or "same labels in another order"}); {hint}')
    if their_labels is None and their_obs_dim != len(task_labels):
        return (f'{what} takes {their_obs_dim} observations but task {task} gives {len(task_labels)} '
                f'(the file records no task); {hint}')
    return None


def _first_three(labels: list[str]) -> str:
    return f'{labels[:3]}' + (f' and {len(labels) - 3} more' if len(labels) > 3 else '')
