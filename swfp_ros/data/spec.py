"""Declarative ingest spec: how topics and message fields of a rosbag2 become observation and action vectors.

YAML form (every key is validated; errors name the offending key path)::

    version: 1
    task: panda_reach
    control_rate_hz: 20.0
    max_staleness: 0.1          # s; an action whose latest observation (any source) is older is dropped
    timeline: action            # action: one step per action message (decimated to the control rate)
                                # grid:   a fixed grid at the control rate, latest action and observation as of each tick
    observation:                # concatenated in this order
      - source: joint_state     # sensor_msgs/JointState, joints BY NAME (never by index)
        topic: /joint_states
        field: position         # position | velocity | effort
        joints: [panda_joint1, panda_joint2]
      - source: array           # std_msgs/*MultiArray: by index, by layout label, or all elements
        topic: /swfp/task
        labels: [ee_x, ee_y, ee_z]      # or indices: [0, 1, 2]   or all: true
      - source: trajectory      # trajectory_msgs/JointTrajectory: joints by name
        topic: /arm/joint_trajectory
        joints: [panda_joint1]
        field: positions        # positions | velocities | accelerations
        point: first            # or time_from_start: 0.1 (linear interpolation between points)
      - source: pose            # geometry_msgs Pose / PoseStamped / PoseWithCovariance(Stamped) / Point / Transform(Stamped)
        topic: /ee_pose
        components: [x, y, z]   # x y z qx qy qz qw
      - source: field           # any numeric field by dotted path, with [i] indexing
        topic: /wrench
        fields: [wrench.force.x, wrench.force.z]
    action:
      source: array             # any source kind; gives ABSOLUTE targets
      topic: /swfp/action
      indices: [0, 1]
      representation: delta     # absolute: a = (target - offset) / scale;  delta: a = (target - reference) / scale
      reference: {source: joint_state, topic: /joint_states, field: position, joints: [panda_joint1, panda_joint2]}
      scale: 0.1                # scalar or one per dimension; a is clipped to [-1, 1] when clip: true
      clip: true
    episodes:                   # exactly one of:
      episode_topic: /swfp/episode   # a message marks an episode start
      # time_gap: 0.5                # a gap (s) between consecutive steps starts a new episode
      # per_bag: true                # each bag is one episode
    min_episode_steps: 1
    reward:  {source: array, topic: /swfp/reward, indices: [0]}                  # optional; the latest value after
                                                                                  # each step's action
    success: {source: array, topic: /swfp/reward, indices: [1], threshold: 0.5}  # optional; any value > threshold

Every source accepts ``names: [...]`` to override the labels it contributes.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

SPEC_VERSION = 1
SOURCE_KINDS = ('joint_state', 'array', 'trajectory', 'pose', 'field')
JOINT_FIELDS = ('position', 'velocity', 'effort')
TRAJ_FIELDS = ('positions', 'velocities', 'accelerations', 'effort')
POSE_COMPONENTS = ('x', 'y', 'z', 'qx', 'qy', 'qz', 'qw')
PANDA_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
REACH_TASK_LABELS = ('ee_x', 'ee_y', 'ee_z', 'goal_x', 'goal_y', 'goal_z')
# The message types each source kind accepts (None: any type with the fields asked for).
SOURCE_TYPES = {
    'joint_state': ('sensor_msgs/msg/JointState',),
    'trajectory': ('trajectory_msgs/msg/JointTrajectory',),
    'array': None, 'pose': None, 'field': None,
}


class SpecError(ValueError):
    """An invalid ingest spec; the message names the key path (e.g. ``observation[1].joints``)."""


@dataclass
class Source:
    """One contiguous block of a vector, read from one topic."""

    kind: str
    topic: str
    field: str | None = None                 # joint_state / trajectory field
    joints: list[str] | None = None
    indices: list[int] | None = None         # array
    labels: list[str] | None = None          # array: select by layout label
    all: bool = False                        # array: every element (dimension fixed by the first message)
    point: str | None = None                 # trajectory: 'first'
    time_from_start: float | None = None     # trajectory
    components: list[str] | None = None      # pose
    fields: list[str] | None = None          # field: dotted paths
    names: list[str] | None = None           # label override
    threshold: float | None = None           # success only
    where: str = ''                          # key path in the spec, for messages

    @property
    def dim(self) -> int | None:
        """Number of elements, or None for ``array`` with ``all: true`` before data was seen."""
        if self.kind in ('joint_state', 'trajectory'):
            return len(self.joints)
        if self.kind == 'array':
            return None if self.all else len(self.indices if self.indices is not None else self.labels)
        if self.kind == 'pose':
            return len(self.components)
        return len(self.fields)

    def default_labels(self) -> list[str] | None:
        if self.names is not None:
            return list(self.names)
        if self.kind == 'joint_state':
            return [f'{j}.{self.field}' for j in self.joints]
        if self.kind == 'trajectory':
            return [f'{j}.traj_{self.field}' for j in self.joints]
        if self.kind == 'array':
            if self.labels is not None:
                return list(self.labels)
            if self.indices is not None:
                return [f'{self.topic}[{i}]' for i in self.indices]
            return None
        if self.kind == 'pose':
            return [f'{self.topic}.{c}' for c in self.components]
        return [f'{self.topic}:{p}' for p in self.fields]


@dataclass
class ActionSpec:
    source: Source
    representation: str = 'absolute'       # absolute | delta
    scale: list[float] | float = 1.0
    offset: list[float] | float = 0.0
    reference: Source | None = None
    clip: bool = True


@dataclass
class EpisodeSpec:
    mode: str                              # episode_topic | time_gap | per_bag
    topic: str | None = None
    gap: float | None = None


@dataclass
class IngestSpec:
    task: str
    control_rate_hz: float
    max_staleness: float
    observation: list[Source]
    action: ActionSpec
    episodes: EpisodeSpec
    timeline: str = 'action'
    reward: Source | None = None
    success: Source | None = None
    min_episode_steps: int = 1
    raw: dict = field(default_factory=dict)   # the validated dict form (stored in the dataset as its schema)

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate_hz

    def all_sources(self) -> list[Source]:
        out = list(self.observation) + [self.action.source]
        for s in (self.action.reference, self.reward, self.success):
            if s is not None:
                out.append(s)
        return out

    def topics(self) -> list[str]:
        """Every topic the spec reads, in first-use order."""
        seen: list[str] = []
        for s in self.all_sources():
            if s.topic not in seen:
                seen.append(s.topic)
        if self.episodes.mode == 'episode_topic' and self.episodes.topic not in seen:
            seen.append(self.episodes.topic)
        return seen

    def to_dict(self) -> dict:
        return copy.deepcopy(self.raw)

    def to_yaml(self) -> str:
        class _NoAliases(yaml.SafeDumper):
            def ignore_aliases(self, data):
                return True
        return yaml.dump(self.to_dict(), Dumper=_NoAliases, sort_keys=False, default_flow_style=None, width=120)


# ---------------------------------------------------------------------------------------------------- parsing
def _req(d: dict, key: str, where: str):
    if key not in d or d[key] is None:
        raise SpecError(f'ingest spec: {where}{"." if where else ""}{key} is required')
    return d[key]


def _str_list(v, where: str, nonempty: bool = True) -> list[str]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise SpecError(f'ingest spec: {where} must be a list of non-empty strings, got {v!r}')
    if nonempty and not v:
        raise SpecError(f'ingest spec: {where} must not be empty')
    if len(set(v)) != len(v):
        raise SpecError(f'ingest spec: {where} has duplicates: {v!r}')
    return list(v)


def _number(v, where: str, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(f'ingest spec: {where} must be a number, got {v!r}')
    if positive and not v > 0:
        raise SpecError(f'ingest spec: {where} must be > 0, got {v!r}')
    if nonneg and v < 0:
        raise SpecError(f'ingest spec: {where} must be >= 0, got {v!r}')
    return float(v)


def _topic(v, where: str) -> str:
    if not isinstance(v, str) or not v.startswith('/') or len(v) < 2:
        raise SpecError(f'ingest spec: {where} must be an absolute topic name like "/joint_states", got {v!r}')
    return v


_SOURCE_KEYS = {
    'joint_state': {'field', 'joints'},
    'array': {'indices', 'labels', 'all'},
    'trajectory': {'field', 'joints', 'point', 'time_from_start'},
    'pose': {'components'},
    'field': {'fields'},
}


def parse_source(d: Any, where: str, scalar: bool = False, allow_threshold: bool = False) -> Source:
    if not isinstance(d, dict):
        raise SpecError(f'ingest spec: {where} must be a mapping with "source" and "topic", got {d!r}')
    kind = _req(d, 'source', where)
    if kind not in SOURCE_KINDS:
        raise SpecError(f'ingest spec: {where}.source must be one of {list(SOURCE_KINDS)}, got {kind!r}')
    allowed = _SOURCE_KEYS[kind] | {'source', 'topic', 'names'} | ({'threshold'} if allow_threshold else set())
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise SpecError(f'ingest spec: {where} has unknown key(s) {unknown} for source {kind!r} '
                        f'(allowed: {sorted(allowed)})')
    s = Source(kind=kind, topic=_topic(_req(d, 'topic', where), f'{where}.topic'), where=where)
    if kind == 'joint_state':
        s.field = d.get('field', 'position')
        if s.field not in JOINT_FIELDS:
            raise SpecError(f'ingest spec: {where}.field must be one of {list(JOINT_FIELDS)}, got {s.field!r}')
        s.joints = _str_list(_req(d, 'joints', where), f'{where}.joints')
    elif kind == 'trajectory':
        s.field = d.get('field', 'positions')
        if s.field not in TRAJ_FIELDS:
            raise SpecError(f'ingest spec: {where}.field must be one of {list(TRAJ_FIELDS)}, got {s.field!r}')
        s.joints = _str_list(_req(d, 'joints', where), f'{where}.joints')
        if 'time_from_start' in d and 'point' in d:
            raise SpecError(f'ingest spec: {where}: give either point or time_from_start, not both')
        if 'time_from_start' in d:
            s.time_from_start = _number(d['time_from_start'], f'{where}.time_from_start', nonneg=True)
        else:
            s.point = d.get('point', 'first')
            if s.point != 'first':
                raise SpecError(f'ingest spec: {where}.point must be "first" (or use time_from_start), '
                                f'got {s.point!r}')
    elif kind == 'array':
        given = [k for k in ('indices', 'labels', 'all') if d.get(k) not in (None, False)]
        if len(given) != 1:
            raise SpecError(f'ingest spec: {where} needs exactly one of indices, labels or all: true (got {given})')
        if 'indices' in given:
            idx = d['indices']
            if (not isinstance(idx, list) or not idx
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx)):
                raise SpecError(f'ingest spec: {where}.indices must be a non-empty list of integers >= 0, got {idx!r}')
            s.indices = list(idx)
        elif 'labels' in given:
            s.labels = _str_list(d['labels'], f'{where}.labels')
        else:
            if d['all'] is not True:
                raise SpecError(f'ingest spec: {where}.all must be true or absent')
            s.all = True
    elif kind == 'pose':
        comps = d.get('components', ['x', 'y', 'z'])
        s.components = _str_list(comps, f'{where}.components')
        bad = [c for c in s.components if c not in POSE_COMPONENTS]
        if bad:
            raise SpecError(f'ingest spec: {where}.components {bad} not in {list(POSE_COMPONENTS)}')
    else:
        s.fields = _str_list(_req(d, 'fields', where), f'{where}.fields')
        for p in s.fields:
            try:
                parse_path(p)
            except ValueError as err:
                raise SpecError(f'ingest spec: {where}.fields: {err}') from None
    if 'names' in d:
        s.names = _str_list(d['names'], f'{where}.names')
        if s.dim is not None and len(s.names) != s.dim:
            raise SpecError(f'ingest spec: {where}.names has {len(s.names)} entries for {s.dim} elements')
    if scalar and s.dim != 1:
        raise SpecError(f'ingest spec: {where} must select exactly one element (got {s.dim or "all"})')
    if allow_threshold:
        s.threshold = _number(d.get('threshold', 0.5), f'{where}.threshold')
    return s


def parse_path(path: str) -> list[str | int]:
    """``'pose.position.x'`` -> ``['pose', 'position', 'x']``; ``'data[3]'`` -> ``['data', 3]``."""
    out: list[str | int] = []
    if not isinstance(path, str) or not path:
        raise ValueError(f'bad field path {path!r}')
    for part in path.split('.'):
        name, _, rest = part.partition('[')
        if not name.isidentifier():
            raise ValueError(f'bad field path {path!r} (component {part!r})')
        out.append(name)
        while rest:
            num, sep, rest = rest.partition(']')
            if not sep or not num.lstrip('-').isdigit():
                raise ValueError(f'bad field path {path!r} (index in {part!r})')
            out.append(int(num))
            if rest:
                if not rest.startswith('['):
                    raise ValueError(f'bad field path {path!r} (after index in {part!r})')
                rest = rest[1:]
    return out


_TOP_KEYS = {'version', 'task', 'control_rate_hz', 'max_staleness', 'timeline', 'observation', 'action', 'episodes',
             'reward', 'success', 'min_episode_steps', 'description'}


def parse_spec(d: Any) -> IngestSpec:
    """Validate a spec dict (as loaded from YAML) and build an :class:`IngestSpec`."""
    if not isinstance(d, dict):
        raise SpecError(f'ingest spec must be a mapping, got {type(d).__name__}')
    unknown = sorted(set(d) - _TOP_KEYS)
    if unknown:
        raise SpecError(f'ingest spec: unknown top-level key(s) {unknown} (allowed: {sorted(_TOP_KEYS)})')
    ver = d.get('version', SPEC_VERSION)
    if ver != SPEC_VERSION:
        raise SpecError(f'ingest spec: version {ver!r} is not supported (this code reads version {SPEC_VERSION})')
    task = d.get('task', '')
    if not isinstance(task, str):
        raise SpecError(f'ingest spec: task must be a string, got {task!r}')
    rate = _number(_req(d, 'control_rate_hz', ''), 'control_rate_hz', positive=True)
    stale = _number(d.get('max_staleness', 2.0 / rate), 'max_staleness', positive=True)
    timeline = d.get('timeline', 'action')
    if timeline not in ('action', 'grid'):
        raise SpecError(f'ingest spec: timeline must be "action" or "grid", got {timeline!r}')
    obs = _req(d, 'observation', '')
    if not isinstance(obs, list) or not obs:
        raise SpecError('ingest spec: observation must be a non-empty list of sources')
    observation = [parse_source(o, f'observation[{i}]') for i, o in enumerate(obs)]

    a = _req(d, 'action', '')
    if not isinstance(a, dict):
        raise SpecError('ingest spec: action must be a mapping')
    a_src = {k: v for k, v in a.items() if k not in ('representation', 'reference', 'scale', 'offset', 'clip')}
    src = parse_source(a_src, 'action')
    rep = a.get('representation', 'absolute')
    if rep not in ('absolute', 'delta'):
        raise SpecError(f'ingest spec: action.representation must be "absolute" or "delta", got {rep!r}')
    ref = None
    if rep == 'delta':
        if 'reference' not in a:
            raise SpecError('ingest spec: action.reference (the observed joint positions) is required for '
                            'representation: delta')
        ref = parse_source(a['reference'], 'action.reference')
        if src.dim is not None and ref.dim is not None and ref.dim != src.dim:
            raise SpecError(f'ingest spec: action.reference has {ref.dim} elements but the action has {src.dim}')
    elif 'reference' in a:
        raise SpecError('ingest spec: action.reference is only used with representation: delta')
    scale = _vec(a.get('scale', 1.0), 'action.scale', src.dim, positive=True)
    offset = _vec(a.get('offset', 0.0), 'action.offset', src.dim)
    if rep == 'delta' and 'offset' in a:
        raise SpecError('ingest spec: action.offset is only used with representation: absolute')
    clip = a.get('clip', True)
    if not isinstance(clip, bool):
        raise SpecError(f'ingest spec: action.clip must be true or false, got {clip!r}')
    action = ActionSpec(src, rep, scale, offset, ref, clip)

    e = _req(d, 'episodes', '')
    if not isinstance(e, dict) or len(e) != 1 or next(iter(e)) not in ('episode_topic', 'time_gap', 'per_bag'):
        raise SpecError(f'ingest spec: episodes must have exactly one of episode_topic, time_gap, per_bag; got {e!r}')
    mode, val = next(iter(e.items()))
    if mode == 'episode_topic':
        episodes = EpisodeSpec(mode, topic=_topic(val, 'episodes.episode_topic'))
    elif mode == 'time_gap':
        episodes = EpisodeSpec(mode, gap=_number(val, 'episodes.time_gap', positive=True))
    else:
        if val is not True:
            raise SpecError('ingest spec: episodes.per_bag must be true')
        episodes = EpisodeSpec(mode)
    reward = parse_source(d['reward'], 'reward', scalar=True) if d.get('reward') is not None else None
    success = (parse_source(d['success'], 'success', scalar=True, allow_threshold=True)
               if d.get('success') is not None else None)
    mes = d.get('min_episode_steps', 1)
    if isinstance(mes, bool) or not isinstance(mes, int) or mes < 1:
        raise SpecError(f'ingest spec: min_episode_steps must be an integer >= 1, got {mes!r}')
    raw = copy.deepcopy(d)
    raw['version'] = SPEC_VERSION
    return IngestSpec(task=task, control_rate_hz=rate, max_staleness=stale, observation=observation, action=action,
                      episodes=episodes, timeline=timeline, reward=reward, success=success, min_episode_steps=mes,
                      raw=raw)


def _vec(v, where: str, dim: int | None, positive: bool = False) -> list[float] | float:
    if isinstance(v, (list, tuple)):
        vals = [_number(x, f'{where}[{i}]', positive=positive) for i, x in enumerate(v)]
        if dim is not None and len(vals) != dim:
            raise SpecError(f'ingest spec: {where} has {len(vals)} entries but the action has {dim} elements')
        return vals
    return _number(v, where, positive=positive)


def load_spec(spec: 'str | os.PathLike | dict | IngestSpec') -> IngestSpec:
    """An :class:`IngestSpec` from a YAML file path, a YAML string, a dict, or an IngestSpec (returned as is)."""
    if isinstance(spec, IngestSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    is_path = isinstance(spec, str) and '\n' not in spec and spec.endswith(('.yaml', '.yml'))
    if isinstance(spec, os.PathLike) or is_path:
        p = Path(spec)
        if not p.is_file():
            raise SpecError(f'ingest spec {p}: no such file')
        text, origin = p.read_text(), str(p)
    elif isinstance(spec, str):
        text, origin = spec, '<string>'
    else:
        raise SpecError(f'cannot make an ingest spec from {type(spec).__name__}')
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f'ingest spec {origin}: invalid YAML ({" ".join(str(err).split())})') from None
    try:
        return parse_spec(d)
    except SpecError as err:
        raise SpecError(f'{origin}: {err}') from None


# ---------------------------------------------------------------------------------------------------- defaults
def default_panda_spec_dict(task: str = 'panda_reach', *, joint_names: Sequence[str] = PANDA_JOINTS,
                            task_labels: Sequence[str] | None = None, control_rate_hz: float = 20.0,
                            action_scale: float | Sequence[float] = 0.1, include_velocity: bool = True) -> dict:
    """The spec (as a dict) for the project's own demo bags (written by :func:`bag_writer.write_demo_bag` or recorded
    live from the sim graph): joint positions [+ velocities] by name, the labelled task vector, and the action as the
    delta of the absolute targets on ``/swfp/action`` from the observed joint positions, divided by ``action_scale``.
    """
    joints = list(joint_names)
    obs: list[dict] = [{'source': 'joint_state', 'topic': '/joint_states', 'field': 'position', 'joints': joints}]
    if include_velocity:
        obs.append({'source': 'joint_state', 'topic': '/joint_states', 'field': 'velocity', 'joints': joints})
    obs.append({'source': 'array', 'topic': '/swfp/task', 'labels': list(task_labels)} if task_labels is not None
               else {'source': 'array', 'topic': '/swfp/task', 'all': True})
    scale = list(action_scale) if isinstance(action_scale, (list, tuple)) else float(action_scale)
    return {
        'version': SPEC_VERSION,
        'task': task,
        'control_rate_hz': float(control_rate_hz),
        'max_staleness': 2.0 / float(control_rate_hz),
        'timeline': 'action',
        'observation': obs,
        'action': {'source': 'array', 'topic': '/swfp/action', 'indices': list(range(len(joints))),
                   'names': joints, 'representation': 'delta',
                   'reference': {'source': 'joint_state', 'topic': '/joint_states', 'field': 'position',
                                 'joints': joints},
                   'scale': scale, 'clip': True},
        'episodes': {'episode_topic': '/swfp/episode'},
        'reward': {'source': 'array', 'topic': '/swfp/reward', 'indices': [0]},
        'success': {'source': 'array', 'topic': '/swfp/reward', 'indices': [1], 'threshold': 0.5},
    }


def default_panda_spec(task: str = 'panda_reach', **kwargs) -> IngestSpec:
    """:func:`default_panda_spec_dict`, validated. For ``panda_reach`` the task labels default to
    ``ee_x, ee_y, ee_z, goal_x, goal_y, goal_z``; other tasks take every element of ``/swfp/task``."""
    if 'task_labels' not in kwargs and task == 'panda_reach':
        kwargs['task_labels'] = REACH_TASK_LABELS
    return parse_spec(default_panda_spec_dict(task, **kwargs))
