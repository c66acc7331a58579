"""The public Python API, re-exported at the package top (``swfp_ros.load_policy`` …): load a policy and act with it,
make a task environment, load demonstrations, score a policy. Everything else lives in the sub-packages."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .algo.checkpoint import CheckpointInfo, checkpoint_info
from .algo.checkpoint import load_policy as _load_runtime
from .algo.runtime import PolicyRuntime


class Policy:
    """A policy loaded from a checkpoint, with what the checkpoint says about it.

    ``act(obs)`` returns one decision as ``(chunk, action_size)`` actions in [-1, 1] (``chunk`` = 1 unless the policy
    was trained on action chunks): execute them in order. The policy is also a callable ``obs -> actions``, the form
    :func:`evaluate` takes. ``runtime`` is the underlying :class:`~swfp_ros.algo.runtime.PolicyRuntime` (updates,
    devices, noise control).
    """

    def __init__(self, runtime: PolicyRuntime, info: CheckpointInfo):
        self.runtime, self.info = runtime, info
        self.chunk = int(info.flow.get('chunk', 1))
        self.action_size = runtime.act_dim // self.chunk

    @property
    def task(self) -> str | None:
        """The task it was trained for (None when the checkpoint does not say)."""
        return self.info.task

    @property
    def obs_labels(self) -> list[str] | None:
        """One label per observation entry, in order."""
        return self.info.obs_labels

    @property
    def action_labels(self) -> list[str] | None:
        """One label per action entry of one step, in order."""
        return self.info.action_labels

    @property
    def control_rate_hz(self) -> float | None:
        return self.info.control_rate_hz

    @property
    def obs_dim(self) -> int:
        return self.runtime.obs_dim

    @property
    def version(self) -> int:
        """The policy version: 0 for BC, +1 per accepted refinement block or compaction."""
        return self.runtime.version

    def act(self, obs, deterministic: bool = False) -> np.ndarray:
        """Raw observation ``[obs_dim]`` -> actions ``(chunk, action_size)``; a batch ``[B, obs_dim]`` ->
        ``(B, chunk, action_size)``. Stochastic by default (fresh noise per decision); deterministic decodes zero
        noise. Raises ValueError on a wrongly sized or non-finite observation."""
        actions = self.runtime.act(obs, deterministic=deterministic)
        return actions.reshape(*actions.shape[:-1], self.chunk, self.action_size)

    def __call__(self, obs) -> np.ndarray:
        return self.act(obs)

    def __repr__(self) -> str:
        return (f'Policy(task={self.task!r}, obs_dim={self.obs_dim}, chunk={self.chunk}, '
                f'action_size={self.action_size}, version={self.version}, path={self.info.path!r})')


def load_policy(path: str | os.PathLike, device: str = 'cpu', seed: int | None = None) -> Policy:
    """A policy from a checkpoint of ``swfp pretrain`` (BC), ``swfp finetune`` or the learner node (``learner.pt``).
    Raises :class:`~swfp_ros.algo.checkpoint.CheckpointError` on a missing, corrupt or foreign file."""
    path = str(path)
    return Policy(_load_runtime(path, device=device, seed=seed), checkpoint_info(path))


def make_env(task: str, **kwargs):
    """A gymnasium environment of a task by its short name (``panda_reach``, ``panda_push``, ``cube_single``), with
    its episode limit; ``render_mode='rgb_array'`` for frames."""
    from .sim import make_env as make
    return make(task, **kwargs)


def load_dataset(path: str | os.PathLike | Iterable[str | os.PathLike], spec=None):
    """Demonstrations as a :class:`~swfp_ros.data.DemoDataset`: a ``.npz`` from ``swfp demos`` / ``swfp ingest``,
    or rosbag2 recordings (a directory, ``.mcap`` or ``.db3``; one or a list) read through an ingest ``spec`` (a YAML
    path such as ``config/ingest_panda_reach.yaml``, a dict or an IngestSpec)."""
    from .data import DemoDataset, ingest
    single = isinstance(path, (str, os.PathLike))
    if single and Path(path).suffix == '.npz':
        if spec is not None:
            raise ValueError(f'{path} is a dataset; a spec is only for rosbags')
        return DemoDataset.load(path)
    if spec is None:
        raise ValueError(f'{path if single else list(path)}: rosbags need an ingest spec '
                         '(e.g. spec="config/ingest_panda_reach.yaml")')
    return ingest(path, spec)


def evaluate(env, policy, episodes: int = 10, seed: int = 0):
    """Success rate, mean return and length of ``policy`` (any ``obs -> action(s)`` callable) over ``episodes``
    episodes seeded ``seed, seed + 1, …``; an :class:`~swfp_ros.train.evaluate.EvalResult`."""
    from .train.evaluate import evaluate as run
    return run(env, policy, episodes=episodes, seed=seed)
