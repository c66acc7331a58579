"""The project's versioned demonstration dataset (BC pre-training, replay seeding, ``swfp demos``).

On disk a dataset is ONE ``.npz`` file (no pickles) holding the steps of all episodes concatenated, plus a JSON
metadata string::

    obs           (N, obs_dim) float32     observation at each control step
    actions       (N, act_dim) float32     normalised action in [-1, 1]
    rewards       (N,)         float32
    timestamps    (N,)         float64     seconds (bag time or sim time); NaN where unknown
    ep_lengths    (E,)         int64       steps per episode, in order (sum = N)
    ep_success    (E,)         bool
    metadata      ()           str         JSON: format_version, task, obs_labels, action_labels, control_rate_hz,
                                           provenance (list of dicts), schema (ingest spec or null), episode_info

``load`` checks the format version, the presence, dtypes and shapes of every array and raises ``DatasetError`` (a
``ValueError``) naming the file on any mismatch.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..files import atomic_path

FORMAT_NAME = 'swfp_demo_dataset'
FORMAT_VERSION = 1


class DatasetError(ValueError):
    """A file that is not a valid dataset; the message names the file and says why."""


_ARRAYS = ('obs', 'actions', 'rewards', 'timestamps', 'ep_lengths', 'ep_success', 'metadata')


@dataclass
class Episode:
    """One demonstration episode: per-step arrays of equal length T."""

    obs: np.ndarray                      # (T, obs_dim) float32
    actions: np.ndarray                  # (T, act_dim) float32 in [-1, 1]
    rewards: np.ndarray | None = None    # (T,) float32; zeros when None
    success: bool = False
    timestamps: np.ndarray | None = None  # (T,) float64 seconds
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.obs = np.asarray(self.obs, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        if self.obs.ndim != 2 or self.actions.ndim != 2:
            raise ValueError(f'episode obs and actions must be 2-D, got {self.obs.shape} and {self.actions.shape}')
        n = len(self.obs)
        if len(self.actions) != n:
            raise ValueError(f'episode has {n} observations but {len(self.actions)} actions')
        self.rewards = (np.zeros(n, np.float32) if self.rewards is None
                        else np.asarray(self.rewards, dtype=np.float32).reshape(-1))
        if len(self.rewards) != n:
            raise ValueError(f'episode has {n} steps but {len(self.rewards)} rewards')
        if self.timestamps is not None:
            self.timestamps = np.asarray(self.timestamps, dtype=np.float64).reshape(-1)
            if len(self.timestamps) != n:
                raise ValueError(f'episode has {n} steps but {len(self.timestamps)} timestamps')
        self.success = bool(self.success)

    def __len__(self) -> int:
        return len(self.obs)


class DemoDataset:
    """A list of :class:`Episode` plus dataset-level metadata (labels, rate, provenance, schema)."""

    def __init__(self, episodes: Sequence[Episode] = (), *, task: str = '', obs_labels: Sequence[str] | None = None,
                 action_labels: Sequence[str] | None = None, control_rate_hz: float | None = None,
                 provenance: list[dict] | None = None, schema: dict | None = None,
                 format_version: int = FORMAT_VERSION):
        self.episodes: list[Episode] = []
        self.task = str(task)
        self.obs_labels = list(obs_labels) if obs_labels is not None else None
        self.action_labels = list(action_labels) if action_labels is not None else None
        self.control_rate_hz = float(control_rate_hz) if control_rate_hz is not None else None
        self.provenance = list(provenance or [])
        self.schema = schema
        self.format_version = int(format_version)
        for ep in episodes:
            self.add_episode(ep)

    # ------------------------------------------------------------------ construction
    def add_episode(self, episode: Episode | None = None, **kwargs) -> Episode:
        """Append an episode (an :class:`Episode`, or its fields as keyword arguments); checks dimensions."""
        ep = episode if episode is not None else Episode(**kwargs)
        if self.episodes:
            if ep.obs.shape[1] != self.obs_dim or ep.actions.shape[1] != self.act_dim:
                raise ValueError(f'episode dims ({ep.obs.shape[1]}, {ep.actions.shape[1]}) differ from the dataset '
                                 f'({self.obs_dim}, {self.act_dim})')
        if self.obs_labels is not None and len(self.obs_labels) != ep.obs.shape[1]:
            raise ValueError(f'{len(self.obs_labels)} obs_labels but obs_dim is {ep.obs.shape[1]}')
        if self.action_labels is not None and len(self.action_labels) != ep.actions.shape[1]:
            raise ValueError(f'{len(self.action_labels)} action_labels but act_dim is {ep.actions.shape[1]}')
        self.episodes.append(ep)
        return ep

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self) -> Iterator[Episode]:
        return iter(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    @property
    def num_steps(self) -> int:
        return int(sum(len(ep) for ep in self.episodes))

    @property
    def obs_dim(self) -> int:
        if self.episodes:
            return int(self.episodes[0].obs.shape[1])
        if self.obs_labels is not None:
            return len(self.obs_labels)
        raise ValueError('empty dataset without obs_labels has no obs_dim')

    @property
    def act_dim(self) -> int:
        if self.episodes:
            return int(self.episodes[0].actions.shape[1])
        if self.action_labels is not None:
            return len(self.action_labels)
        raise ValueError('empty dataset without action_labels has no act_dim')

    @property
    def successes(self) -> np.ndarray:
        return np.array([ep.success for ep in self.episodes], dtype=bool)

    @property
    def success_rate(self) -> float:
        return float(self.successes.mean()) if self.episodes else 0.0

    def __repr__(self) -> str:
        return (f'DemoDataset(task={self.task!r}, episodes={len(self)}, steps={self.num_steps}, '
                f'obs_dim={self.obs_dim if self.episodes else "?"}, act_dim={self.act_dim if self.episodes else "?"}, '
                f'success_rate={self.success_rate:.2f})')

    # ------------------------------------------------------------------ views for learning
    def stack(self, chunk: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(obs, actions) of every step, concatenated: the behaviour-cloning training set.

        ``chunk`` H > 1: each step's target is its next H actions, flattened ``(N, H * act_dim)``; near an episode's
        end the chunk is padded by repeating the last action (the arm holds its course rather than learning to stop).
        """
        if not self.episodes:
            raise ValueError('empty dataset')
        if chunk < 1:
            raise ValueError(f'chunk must be >= 1, got {chunk}')
        targets = []
        for ep in self.episodes:
            idx = np.minimum(np.arange(len(ep))[:, None] + np.arange(chunk)[None, :], len(ep) - 1)
            targets.append(ep.actions[idx].reshape(len(ep), -1))
        return np.concatenate([ep.obs for ep in self.episodes]), np.concatenate(targets)

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        return {'format': FORMAT_NAME, 'format_version': self.format_version, 'task': self.task,
                'obs_labels': self.obs_labels, 'action_labels': self.action_labels,
                'control_rate_hz': self.control_rate_hz, 'provenance': self.provenance, 'schema': self.schema,
                'episode_info': [ep.info for ep in self.episodes]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the dataset to one ``.npz`` file atomically (a temporary file, then rename). Returns the path."""
        path = Path(path)
        if path.suffix != '.npz':
            path = path.with_name(path.name + '.npz')
        if not self.episodes:
            raise ValueError('refusing to save an empty dataset')
        obs, actions = self.stack()
        arrays = {
            'obs': obs.astype(np.float32), 'actions': actions.astype(np.float32),
            'rewards': np.concatenate([ep.rewards for ep in self.episodes]).astype(np.float32),
            'timestamps': np.concatenate([ep.timestamps if ep.timestamps is not None
                                          else np.full(len(ep), np.nan) for ep in self.episodes]),
            'ep_lengths': np.array([len(ep) for ep in self.episodes], np.int64),
            'ep_success': self.successes,
            'metadata': np.array(json.dumps(self.metadata(), default=_json_default)),
        }
        with atomic_path(path) as tmp, open(tmp, 'wb') as f:
            np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'DemoDataset':
        """Read a dataset written by :meth:`save`; ``ValueError`` naming the file when it is not a valid one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'{path}: no such dataset file')

        def bad(why: str) -> DatasetError:
            return DatasetError(f'{path}: not a valid {FORMAT_NAME} file: {why} (datasets come from swfp demos or '
                                f'swfp ingest)')

        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _ARRAYS if k not in z.files]
                if missing:
                    raise bad(f'missing arrays {missing}')
                arr = {k: z[k] for k in _ARRAYS}
        except ValueError as err:
            if str(err).startswith(str(path)):
                raise
            raise bad(str(err)) from err
        except (OSError, zipfile.BadZipFile, EOFError, KeyError) as err:
            raise bad(f'{type(err).__name__}: {err}') from err
        try:
            meta = json.loads(str(arr['metadata']))
        except json.JSONDecodeError as err:
            raise bad(f'metadata is not JSON ({err})') from err
        if meta.get('format') != FORMAT_NAME:
            raise bad(f'format is {meta.get("format")!r}')
        if meta.get('format_version') != FORMAT_VERSION:
            raise bad(f'format_version {meta.get("format_version")!r} is not supported (this code reads '
                      f'version {FORMAT_VERSION})')
        obs, act, rew, ts, lens, succ = (arr[k] for k in _ARRAYS[:-1])
        if obs.ndim != 2 or act.ndim != 2:
            raise bad(f'obs {obs.shape} and actions {act.shape} must be 2-D')
        n = len(obs)
        if lens.ndim != 1 or int(lens.sum()) != n or (lens < 0).any():
            raise bad(f'episode lengths sum to {int(lens.sum())} but there are {n} steps')
        for name, a in (('actions', act), ('rewards', rew), ('timestamps', ts)):
            if len(a) != n:
                raise bad(f'shape mismatch: {name} has {len(a)} rows, obs has {n}')
        if len(succ) != len(lens):
            raise bad(f'shape mismatch: {len(succ)} success flags for {len(lens)} episodes')
        for key, dim in (('obs_labels', obs.shape[1]), ('action_labels', act.shape[1])):
            if meta.get(key) is not None and len(meta[key]) != dim:
                raise bad(f'{len(meta[key])} {key} for dimension {dim}')
        ds = cls(task=meta.get('task', ''), obs_labels=meta.get('obs_labels'), action_labels=meta.get('action_labels'),
                 control_rate_hz=meta.get('control_rate_hz'), provenance=meta.get('provenance'),
                 schema=meta.get('schema'), format_version=meta['format_version'])
        infos = meta.get('episode_info') or [{}] * len(lens)
        start = 0
        for i, T in enumerate(lens.tolist()):
            sl = slice(start, start + T)
            t = ts[sl]
            ds.episodes.append(Episode(obs[sl], act[sl], rew[sl], bool(succ[i]),
                                       None if np.isnan(t).all() else t, dict(infos[i]) if i < len(infos) else {}))
            start += T
        return ds


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f'{type(o).__name__} is not JSON serialisable')
