"""One-file checkpoints: a policy (after BC) or a whole learner (resume). Written atomically; loading executes
nothing from the file.

Format 2 is a safetensors file (https://github.com/huggingface/safetensors): a JSON header followed by raw tensor
bytes, which can only ever be read back as numbers. Its metadata holds

    format          'swfp-checkpoint'
    format_version  '2'
    header          JSON: kind ('policy' | 'learner'), package/torch versions, creation time, and ``extra`` (task,
                    observation/action labels, control rate, provenance, BC settings: what ``swfp inspect`` shows)
    tree            JSON: the payload (a learner's state_dict, or a policy's meta) with every tensor and numpy array
                    replaced by a reference to a named tensor of the file (see :func:`encode_tree`)
    sha256          digest of header, tree and every tensor's bytes: damage is reported, never loaded

Format 1 files were pickles (``torch.save``); they and any other pickle are refused unread, since unpickling can run
code from the file.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np
import safetensors
import safetensors.torch
import torch

import swfp_ros

from ..files import atomic_path
from .blocks import Cascade
from .learner import Learner
from .normalize import ObsNormalizer
from .runtime import PolicyRuntime
from .serialize import BlockUpdate, UpdateRejected

FORMAT = 'swfp-checkpoint'
FORMAT_VERSION = 2
KINDS = ('policy', 'learner')
_PICKLE_MAGICS = (b'\x80\x02', b'\x80\x03', b'\x80\x04', b'\x80\x05')   # raw pickles (torch.save before 1.6)
_ZIP_MAGIC = b'PK\x03\x04'                                                   # torch.save since 1.6, also .npz
_READ_ATTEMPTS = 3                       # reads of a file that a writer keeps replacing, before giving up


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and says why."""


# --- payload trees <-> JSON + named tensors --------------------------------------------------------------------
# JSON markers; a dict whose keys are not all strings, or that uses a marker as a key, is stored as a pair list.
_TENSOR, _TUPLE, _DICT, _NUMPY_SCALAR, _FLOAT = '__tensor__', '__tuple__', '__dict__', '__numpy__', '__float__'
_MARKERS = {_TENSOR, _TUPLE, _DICT, _NUMPY_SCALAR, _FLOAT}


def encode_tree(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """A nested structure of dicts / lists / tuples, torch tensors, numpy arrays and scalars, and plain JSON values
    -> (a JSON-serialisable tree, {name: tensor}). Tensors are named by their path in the tree ('critic/q1.0.weight').
    Anything else (a module, a set, an object) is a ``TypeError`` naming its path: nothing is stored as code."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def tensor_ref(t: torch.Tensor, path: list, is_numpy: bool) -> dict:
        t = t.detach().cpu().contiguous()                   # safetensors stores contiguous tensors only
        if t.untyped_storage().data_ptr() in storages:     # ... and refuses two that share memory
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        name = base = '/'.join(map(str, path)) or 'root'
        n = 1
        while name in tensors:
            name, n = f'{base}#{n}', n + 1
        tensors[name] = t
        return {_TENSOR: name, 'numpy': is_numpy}

    def enc(x, path):
        if isinstance(x, torch.Tensor):
            return tensor_ref(x, path, False)
        if isinstance(x, np.ndarray):
            if x.dtype.kind not in 'biuf':
                raise TypeError(f'checkpoint: cannot store {"/".join(map(str, path))}: numpy dtype {x.dtype}')
            # np.ascontiguousarray makes a 0-d array 1-d: keep the shape
            return tensor_ref(torch.from_numpy(np.ascontiguousarray(x).reshape(x.shape)), path, True)
        if isinstance(x, np.generic):
            if x.dtype.kind not in 'biuf':
                raise TypeError(f'checkpoint: cannot store {"/".join(map(str, path))}: numpy dtype {x.dtype}')
            return {_NUMPY_SCALAR: x.dtype.str, 'value': enc(x.item(), path)}
        if isinstance(x, float) and not math.isfinite(x):
            return {_FLOAT: repr(x)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, tuple):
            return {_TUPLE: [enc(v, path + [i]) for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, path + [i]) for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x) and not _MARKERS & set(x):
                return {k: enc(v, path + [k]) for k, v in x.items()}
            for k in x:
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise TypeError(f'checkpoint: cannot store {"/".join(map(str, path))}: dict key {k!r}')
            return {_DICT: [[k, enc(v, path + [k])] for k, v in x.items()]}
        raise TypeError(f'checkpoint: cannot store {"/".join(map(str, path)) or "the payload"}: '
                        f'{type(x).__name__} is not a tensor, array, container or plain value')

    return enc(tree, []), tensors


def decode_tree(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_tree` (numpy arrays come back as numpy, tuples as tuples). ``ValueError`` on a
    malformed tree."""
    def dec(x):
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if _TENSOR in x:
            t = tensors.get(x[_TENSOR]) if isinstance(x[_TENSOR], str) else None
            if t is None:
                raise ValueError(f'reference to a tensor {x[_TENSOR]!r} the file does not hold')
            return t.numpy() if x.get('numpy') else t
        if _TUPLE in x:
            return tuple(dec(v) for v in _list(x[_TUPLE]))
        if _DICT in x:
            pairs = _list(x[_DICT])
            if not all(isinstance(p, list) and len(p) == 2 and not isinstance(p[0], (dict, list)) for p in pairs):
                raise ValueError('malformed key/value pairs')
            return {k: dec(v) for k, v in pairs}
        if _NUMPY_SCALAR in x:
            return np.dtype(x[_NUMPY_SCALAR]).type(dec(x['value']))
        if _FLOAT in x:
            if x[_FLOAT] not in ('nan', 'inf', '-inf'):
                raise ValueError(f'bad float {x[_FLOAT]!r}')
            return float(x[_FLOAT])
        return {k: dec(v) for k, v in x.items()}

    return dec(tree)


def _list(v) -> list:
    if not isinstance(v, list):
        raise ValueError(f'expected a list, got {type(v).__name__}')
    return v


def _digest(header: str, tree: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for text in (header, tree):
        h.update(len(text).to_bytes(8, 'little') + text.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode() + b'\0' + str(t.dtype).encode() + b'\0' + str(list(t.shape)).encode() + b'\0')
        if t.numel():
            flat = t.reshape(-1)
            if flat.stride(0) != 1:   # a one-element tensor may carry stride 0, which clone() keeps
                flat = flat.new_empty(flat.shape).copy_(flat)
            h.update(memoryview(flat.view(torch.uint8).numpy()))
    return h.hexdigest()


# --- files --------------------------------------------------------------------------------------------------------
def write_checkpoint(path: str, kind: str, payload: dict, extra: dict | None = None) -> None:
    """Write ``payload`` (any tree :func:`encode_tree` takes) as a checkpoint of ``kind``, atomically: readers see
    the old file or the new one, never half of one, and a failed write leaves no temporary file behind."""
    tree, tensors = encode_tree(payload)
    extra_tree, extra_tensors = encode_tree(extra or {})
    if extra_tensors:
        raise TypeError(f'checkpoint extra holds arrays ({sorted(extra_tensors)}); it is for plain values only')
    header = json.dumps({'kind': kind, 'package_version': swfp_ros.__version__, 'torch_version': torch.__version__,
                         'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                         'extra': extra_tree}, allow_nan=False)
    tree_json = json.dumps(tree, allow_nan=False)
    metadata = {'format': FORMAT, 'format_version': str(FORMAT_VERSION), 'header': header, 'tree': tree_json,
                'sha256': _digest(header, tree_json, tensors)}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)


def _open_metadata(path: str) -> dict[str, str]:
    """The safetensors metadata of ``path`` after refusing pickles and foreign files (nothing is executed)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(9)
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {path}: no such file') from None
    except IsADirectoryError:
        raise CheckpointError(f'checkpoint {path}: is a directory, not a checkpoint file') from None
    except OSError as e:
        raise CheckpointError(f'checkpoint {path}: cannot read it ({e.strerror})') from None
    if head.startswith(_ZIP_MAGIC) and not _zip_holds_pickle(path):
        raise CheckpointError(f'checkpoint {path}: a zip archive (a .npz dataset?), not an SWFP checkpoint')
    if head.startswith(_PICKLE_MAGICS + (_ZIP_MAGIC,)):
        raise CheckpointError(f'checkpoint {path}: a pickle (torch.save) file, refused unread because loading a '
                              f'pickle can run code from it; swfp_ros checkpoints before format {FORMAT_VERSION} '
                              f'were pickles: re-create it with this version (swfp pretrain, or a new fine-tuning '
                              f'run from its BC checkpoint)')
    if len(head) < 9 or head[8:9] != b'{':
        raise CheckpointError(f'checkpoint {path}: not an SWFP checkpoint (not a safetensors file)')
    try:
        with safetensors.safe_open(path, framework='pt') as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - the Rust reader raises SafetensorError and friends
        raise CheckpointError(f'checkpoint {path}: unreadable (truncated or corrupt?): {e}') from None
    if meta.get('format') != FORMAT:
        raise CheckpointError(f'checkpoint {path}: a safetensors file but not an SWFP checkpoint (no '
                              f'format: {FORMAT} in its metadata); swfp loads only checkpoints it wrote')
    if meta.get('format_version') != str(FORMAT_VERSION):
        raise CheckpointError(f"checkpoint {path}: format version {meta.get('format_version')}, this code reads "
                              f'{FORMAT_VERSION}')
    return meta


def _zip_holds_pickle(path: str) -> bool:
    """Whether a zip archive has a pickle member (torch.save's data.pkl); only its member list is read."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith('.pkl') for name in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return True    # unreadable: refused as a possible pickle all the same


def _parse_json(path: str, meta: dict, key: str) -> Any:
    try:
        return json.loads(meta.get(key, ''))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f'checkpoint {path}: corrupt metadata ({key} is not JSON: {e})') from None


def read_checkpoint(path: str) -> tuple[dict, Any]:
    """(header, payload) of a checkpoint, integrity-checked; ``CheckpointError`` naming the file on any problem.

    The metadata and the tensors are read by separate opens, so a writer replacing the file in between (a learner
    checkpointing while a policy node loads that checkpoint) yields pieces of two files, which fail the digest. That
    is not damage: the read is repeated on the file now at ``path``."""
    for _ in range(_READ_ATTEMPTS):
        with _held_open(path) as held:
            try:
                return _read_checkpoint_once(path)
            except CheckpointError:
                if held is None or _is_same_file(path, held):
                    raise
    raise CheckpointError(f'checkpoint {path}: replaced {_READ_ATTEMPTS} times while being read (is something '
                          f'writing it continuously?)')


@contextlib.contextmanager
def _held_open(path: str) -> Iterator[os.stat_result | None]:
    """The identity of the file at ``path``, kept open meanwhile so that no later file can reuse its inode; None if
    it cannot be opened (the read then reports why)."""
    try:
        f = open(path, 'rb')
    except OSError:
        yield None
        return
    with f:
        yield os.fstat(f.fileno())


def _is_same_file(path: str, held: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _read_checkpoint_once(path: str) -> tuple[dict, Any]:
    meta = _open_metadata(path)
    try:
        tensors = safetensors.torch.load_file(path, device='cpu')
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f'checkpoint {path}: unreadable (truncated or corrupt?): {e}') from None
    if _digest(meta.get('header', ''), meta.get('tree', ''), tensors) != meta.get('sha256'):
        raise CheckpointError(f'checkpoint {path}: damaged (its sha256 does not match the content)')
    header = _parse_json(path, meta, 'header')
    try:
        payload = decode_tree(_parse_json(path, meta, 'tree'), tensors)
        header['extra'] = decode_tree(header.get('extra') or {}, {})
    except (ValueError, TypeError, AttributeError, RecursionError) as e:
        raise CheckpointError(f'checkpoint {path}: malformed payload: {e}') from None
    if header.get('kind') not in KINDS:
        raise CheckpointError(f"checkpoint {path}: unknown kind {header.get('kind')!r}")
    return header, payload


# --- what a checkpoint holds, without loading its tensors ------------------------------------------------------
@dataclass
class CheckpointInfo:
    """Everything ``swfp inspect`` shows about a checkpoint (read from its metadata only)."""
    path: str
    kind: str
    format_version: int
    package_version: str | None
    torch_version: str | None
    created: str | None
    obs_dim: int
    act_dim: int
    policy_version: int
    flow: dict                                   # the base flow's FlowConfig
    blocks: int                                  # refinement blocks in the cascade
    tensor_count: int
    task: str | None = None                      # None: the checkpoint does not say (e.g. a learner node's)
    obs_labels: list[str] | None = None
    action_labels: list[str] | None = None
    control_rate_hz: float | None = None
    provenance: list = field(default_factory=list)
    bc: dict | None = None                       # BC settings and final loss (policies from `swfp pretrain`)
    config: dict | None = None                   # the SwfpConfig (learner checkpoints)
    counters: dict | None = None                 # learner counters (learner checkpoints)
    replay_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def checkpoint_info(path: str) -> CheckpointInfo:
    meta = _open_metadata(path)
    header, tree = _parse_json(path, meta, 'header'), _parse_json(path, meta, 'tree')
    try:
        extra = decode_tree(header.get('extra') or {}, {})
        if header['kind'] == 'policy':
            policy, version, learner = tree['policy'], tree['version'], None
        else:
            learner = tree['learner']
            policy, version = learner['policy'], learner['counters']['version']
        with safetensors.safe_open(path, framework='pt') as f:
            tensor_count = len(f.keys())
        replay = learner.get('replay') if learner else None
        return CheckpointInfo(
            path=str(path), kind=header['kind'], format_version=FORMAT_VERSION,
            package_version=header.get('package_version'), torch_version=header.get('torch_version'),
            created=header.get('created'), obs_dim=int(policy['obs_dim']), act_dim=int(policy['act_dim']),
            policy_version=int(version), flow=dict(policy['meta']['flow']), blocks=len(policy['meta']['blocks']),
            tensor_count=tensor_count, task=extra.get('task') or None, obs_labels=extra.get('obs_labels'),
            action_labels=extra.get('action_labels'), control_rate_hz=extra.get('control_rate_hz'),
            provenance=list(extra.get('provenance') or []), bc=extra.get('bc'),
            config=decode_tree(learner['config'], {}) if learner else None,
            counters=decode_tree(learner['counters'], {}) if learner else None,
            replay_size=int(replay['size']) if isinstance(replay, dict) and 'size' in replay else None)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f'checkpoint {path}: malformed payload ({type(e).__name__}: {e})') from None


def format_checkpoint_info(info: CheckpointInfo) -> str:
    """A human-readable summary, like ``swfp inspect`` prints for a bag."""
    def labels(xs):
        return ', '.join(xs) if xs else '(not recorded)'
    flow = ', '.join(f'{k} {v}' for k, v in info.flow.items())
    lines = [f'Checkpoint:     {info.path}',
             f'Kind:           {info.kind} (format {info.format_version}, written by swfp_ros {info.package_version}'
             f', torch {info.torch_version}, {info.created})',
             f'Task:           {info.task or "(not recorded)"}',
             f'Observations:   {info.obs_dim}: {labels(info.obs_labels)}',
             f'Actions:        {info.act_dim}: {labels(info.action_labels)}',
             f'Control rate:   {info.control_rate_hz if info.control_rate_hz else "(not recorded)"} Hz',
             f'Policy:         version {info.policy_version}, {info.blocks} refinement block(s); flow: {flow}']
    if info.bc:
        lines.append('BC:             ' + ', '.join(f'{k} {v}' for k, v in info.bc.items()))
    if info.config is not None:
        lines.append(f'Config:         {json.dumps(info.config)}')
    if info.counters is not None:
        lines.append('Counters:       ' + ', '.join(f'{k} {v}' for k, v in info.counters.items())
                     + (f'; replay {info.replay_size} transitions' if info.replay_size is not None else ''))
    for p in info.provenance:
        if not isinstance(p, dict):
            lines.append(f'Provenance:     {p}')
            continue
        lines.append(f"Provenance:     {p.get('bag') or p.get('source') or '?'}"
                     + (f" ({p.get('episodes')} episodes, {p.get('steps')} steps)" if 'steps' in p else ''))
    return '\n'.join(lines)


# --- policies and learners ----------------------------------------------------------------------------------------
def save_policy(path: str, cascade: Cascade, normalizer: ObsNormalizer, version: int = 0, extra: dict | None = None):
    """A policy-only checkpoint (e.g. the BC result); ``extra`` holds the task, labels and provenance."""
    snap = BlockUpdate.from_policy(version, cascade, normalizer)
    write_checkpoint(path, 'policy', {'policy': {'meta': snap.meta, 'tensors': snap.tensors, 'obs_dim': snap.obs_dim,
                                                 'act_dim': snap.act_dim}, 'version': version}, extra)


def save_learner(path: str, learner: Learner, extra: dict | None = None) -> None:
    """The learner's whole state (resume); ``extra`` as for :func:`save_policy` (the BC checkpoint's, passed on)."""
    write_checkpoint(path, 'learner', {'learner': learner.state_dict()}, extra)


def carried_info(path: str) -> dict:
    """What a checkpoint made from the one at ``path`` carries on (``extra`` of :func:`save_learner`): its task,
    labels, control rate and provenance, so that a learner's checkpoint still says what it was trained for."""
    info = checkpoint_info(path)
    return {'task': info.task, 'obs_labels': info.obs_labels, 'action_labels': info.action_labels,
            'control_rate_hz': info.control_rate_hz, 'provenance': info.provenance}


def _policy_payload(kind: str, d: dict) -> tuple[dict, int]:
    if kind == 'policy':
        return d['policy'], d['version']
    return d['learner']['policy'], d['learner']['counters']['version']


def load_policy(path: str, device: str = 'auto', seed: int | None = None) -> PolicyRuntime:
    """A PolicyRuntime from a policy or a learner checkpoint."""
    header, d = read_checkpoint(path)
    try:
        p, version = _policy_payload(header['kind'], d)
        upd = BlockUpdate(int(version), 'base', int(p['obs_dim']), int(p['act_dim']), p['meta'], p['tensors'])
        upd.validate()
        cascade, norm = upd.build_policy()
    except (KeyError, TypeError, ValueError, AttributeError) as e:   # UpdateRejected is a ValueError
        raise CheckpointError(f'checkpoint {path}: bad policy data: {e}') from e
    return PolicyRuntime(cascade, norm, version, device, seed)


def load_learner(path: str, device: str = 'cpu', demo_transitions=None, learner_cls: type = Learner) -> Learner:
    """A learner resumed from its checkpoint; ``learner_cls`` picks the update rule (e.g. the naive baseline)."""
    header, d = read_checkpoint(path)
    if header['kind'] != 'learner':
        raise CheckpointError(f"checkpoint {path}: holds a {header['kind']!r}, not a learner")
    try:
        learner = learner_cls.from_state_dict(d['learner'], device, demo_transitions)
    except (KeyError, TypeError, ValueError, RuntimeError, UpdateRejected) as e:
        raise CheckpointError(f'checkpoint {path}: does not match this code/config: {type(e).__name__}: {e}') from e
    return learner
