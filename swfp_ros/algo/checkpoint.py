"""One-file checkpoints: a policy (after BC) or a whole learner (resume). Written atomically, loaded defensively."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

import swfp_ros

from .blocks import Cascade
from .learner import Learner
from .normalize import ObsNormalizer
from .runtime import PolicyRuntime
from .serialize import BlockUpdate, UpdateRejected

FORMAT = 'swfp-checkpoint'
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file."""


def _write_atomic(path: str, obj: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.ckpt-', dir=d)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        os.unlink(tmp)
        raise


def _header(kind: str) -> dict:
    return {'format': FORMAT, 'format_version': FORMAT_VERSION, 'kind': kind, 'package_version': swfp_ros.__version__,
            'torch_version': torch.__version__}


def save_policy(path: str, cascade: Cascade, normalizer: ObsNormalizer, version: int = 0, extra: dict | None = None):
    """A policy-only checkpoint (e.g. the BC result)."""
    snap = BlockUpdate.from_policy(version, cascade, normalizer)
    _write_atomic(path, {**_header('policy'), 'policy': {'meta': snap.meta, 'tensors': snap.tensors,
                                                         'obs_dim': snap.obs_dim, 'act_dim': snap.act_dim},
                         'version': version, 'extra': extra or {}})


def save_learner(path: str, learner: Learner, include_replay: bool = True) -> None:
    _write_atomic(path, {**_header('learner'), 'learner': learner.state_dict(include_replay),
                         'numpy_global_rng': np.random.get_state()})


def _read(path: str) -> dict:
    try:
        d = torch.load(path, map_location='cpu', weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {path}: no such file') from None
    except Exception as e:  # torch/pickle/zip raise many types on corrupt or truncated files
        raise CheckpointError(f'checkpoint {path}: unreadable (corrupt or truncated?): {type(e).__name__}: {e}') \
            from e
    if not isinstance(d, dict) or d.get('format') != FORMAT:
        raise CheckpointError(f'checkpoint {path}: not an SWFP checkpoint')
    if d.get('format_version') != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {d.get('format_version')}, this code reads "
                              f'{FORMAT_VERSION}')
    return d


def _policy_payload(path: str, d: dict) -> tuple[dict, int]:
    if d['kind'] == 'policy':
        return d['policy'], d['version']
    return d['learner']['policy'], d['learner']['counters']['version']


def load_policy(path: str, device: str = 'auto', seed: int | None = None) -> PolicyRuntime:
    """A PolicyRuntime from a policy or a learner checkpoint."""
    d = _read(path)
    try:
        p, version = _policy_payload(path, d)
        upd = BlockUpdate(version, 'base', p['obs_dim'], p['act_dim'], p['meta'], p['tensors'])
        upd.validate()
        cascade, norm = upd.build_policy()
    except (KeyError, TypeError, UpdateRejected) as e:
        raise CheckpointError(f'checkpoint {path}: bad policy data: {e}') from e
    return PolicyRuntime(cascade, norm, version, device, seed)


def load_learner(path: str, device: str = 'cpu', demo_transitions=None, learner_cls: type = Learner) -> Learner:
    """A learner resumed from its checkpoint; ``learner_cls`` picks the update rule (e.g. the naive baseline)."""
    d = _read(path)
    if d['kind'] != 'learner':
        raise CheckpointError(f"checkpoint {path}: holds a {d['kind']!r}, not a learner")
    try:
        learner = learner_cls.from_state_dict(d['learner'], device, demo_transitions)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f'checkpoint {path}: does not match this code/config: {type(e).__name__}: {e}') from e
    np.random.set_state(d['numpy_global_rng'])
    return learner
