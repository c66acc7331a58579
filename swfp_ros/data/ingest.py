"""Ingest rosbag2 recordings into a :class:`DemoDataset`, driven by an :class:`IngestSpec`.

Streaming: messages of the topics the spec reads are iterated once, in time order; only the latest raw message per
observation topic is kept (decoded lazily, at most once), so memory does not grow with the bag.

Time alignment (all times are the bag's receive timestamps):

* ``timeline: action`` — each message on the action topic is a step (decimated to the control rate: an action
  closer than 0.75 periods to the previous kept one on the control grid is skipped and counted);
  ``timeline: grid`` — steps on a fixed grid at the control rate, anchored at the first action of each episode,
  each taking the latest action at or before the tick (the grid pauses when the latest action is stale).
* A step at time t is paired with the latest message of every observation source at time <= t — never a later one,
  ties included (a step is finalised only once the stream has moved past t). If any source's latest message is older
  than ``max_staleness`` (or there is none yet) the step is dropped and counted.
* Reward of a step: the latest reward message after the step and up to the next step. Success of an episode: any
  success value above its threshold during the episode.

A bag that cannot be read (truncated, corrupt) or that lacks what the spec needs gives a :class:`BagError` naming the
bag (and topic / field / type); in a multi-bag ingest the other bags still ingest, the errors are collected in the
:class:`IngestReport`, and only an ingest where nothing was read raises.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .dataset import DemoDataset, Episode
from .reader import BagError, BagReadError, BagSource, BagWarning
from .spec import SOURCE_TYPES, IngestSpec, Source, load_spec, parse_path

DECIMATION_TOLERANCE = 0.25   # fraction of a control period an action may come early and still count


class IngestError(RuntimeError):
    """Nothing could be ingested; ``report`` holds the per-bag errors."""

    def __init__(self, message: str, report: 'IngestReport'):
        super().__init__(message)
        self.report = report


class FieldError(ValueError):
    """A field could not be extracted from a message (the caller adds bag and topic)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class BagReport:
    bag: str
    ok: bool = False
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    messages: int = 0
    steps: int = 0
    episodes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)   # reason -> count
    time_range: tuple[float, float] | None = None
    seconds: float = 0.0

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


@dataclass
class IngestReport:
    bags: list[BagReport] = field(default_factory=list)

    @property
    def ok(self) -> list[BagReport]:
        return [b for b in self.bags if b.ok]

    @property
    def failed(self) -> list[BagReport]:
        return [b for b in self.bags if not b.ok]

    @property
    def errors(self) -> dict[str, str]:
        return {b.bag: b.error for b in self.failed}

    @property
    def messages(self) -> int:
        return sum(b.messages for b in self.bags)

    def __str__(self) -> str:
        lines = [f'ingested {len(self.ok)}/{len(self.bags)} bag(s)']
        for b in self.bags:
            if b.ok:
                drops = ', '.join(f'{k}: {v}' for k, v in sorted(b.dropped.items())) or 'none'
                lines.append(f'  OK   {b.bag}: {b.episodes} episodes, {b.steps} steps from {b.messages} messages '
                             f'in {b.seconds:.2f} s; dropped {drops}')
            else:
                lines.append(f'  FAIL {b.bag}: {b.error}')
            lines += [f'       warning: {w}' for w in b.warnings]
        return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------- extractors
def _fields_of(obj) -> list[str]:
    return [f for f in getattr(type(obj), '__dataclass_fields__', {}) if not f.startswith('__')]


def _walk(msg, path: Sequence[str | int], text: str):
    obj = msg
    for part in path:
        if isinstance(part, int):
            try:
                obj = obj[part]
            except (IndexError, TypeError, KeyError):
                n = len(obj) if hasattr(obj, '__len__') else 'no'
                raise FieldError(f'field {text!r}: index {part} out of range ({n} elements)', text) from None
        else:
            if not hasattr(obj, part) or part.startswith('__'):
                raise FieldError(f'field {text!r}: {getattr(obj, "__msgtype__", type(obj).__name__)} has no field '
                                 f'{part!r} (fields: {_fields_of(obj)})', text)
            obj = getattr(obj, part)
    return obj


def _scalar(v, text: str) -> float:
    if isinstance(v, (bool, int, float, np.number)):
        return float(v)
    if isinstance(v, np.ndarray) or isinstance(v, (list, tuple)):
        raise FieldError(f'field {text!r} is an array of {len(v)} elements; index it like {text}[0]', text)
    raise FieldError(f'field {text!r} is a {getattr(v, "__msgtype__", type(v).__name__)}, not a number; '
                     f'give a path to a numeric leaf (fields: {_fields_of(v)})', text)


def _layout_labels(msg) -> list[str] | None:
    dims = getattr(getattr(msg, 'layout', None), 'dim', None) or []
    if not dims:
        return None
    labels = dims[0].label.split(',') if dims[0].label else []
    if labels and (len(labels) == dims[0].size or len(dims) == 1):
        return [x.strip() for x in labels]
    if len(dims) > 1 and all(d.size == 1 for d in dims):
        return [d.label for d in dims]
    return None


class Extractor:
    """Turns one message into the float64 vector a :class:`Source` asks for. Labels may resolve at first use."""

    def __init__(self, src: Source):
        self.src = src
        self.labels = src.default_labels()
        self._fn: Callable[[Any], np.ndarray] = getattr(self, f'_x_{src.kind}')
        self._key = None
        self._idx = None
        self._paths = None

    def __call__(self, msg) -> np.ndarray:
        return self._fn(msg)

    def _x_joint_state(self, msg) -> np.ndarray:
        s = self.src
        names = tuple(msg.name)
        if names != self._key:
            pos = {n: i for i, n in enumerate(names)}
            missing = [j for j in s.joints if j not in pos]
            if missing:
                raise FieldError(f'joint(s) {missing} not in the message\'s name list {list(names)}',
                                 f'name[{missing[0]}]')
            self._idx, self._key = np.array([pos[j] for j in s.joints]), names
        arr = getattr(msg, s.field)
        if len(arr) != len(names):
            raise FieldError(f'field {s.field!r} has {len(arr)} values for {len(names)} joint names', s.field)
        return np.asarray(arr, np.float64)[self._idx]

    def _array_data(self, msg) -> np.ndarray:
        if not hasattr(msg, 'data'):
            raise FieldError(f'{getattr(msg, "__msgtype__", "message")} has no field \'data\' '
                             f'(fields: {_fields_of(msg)})', 'data')
        data = np.asarray(msg.data, np.float64)
        off = int(getattr(getattr(msg, 'layout', None), 'data_offset', 0) or 0)
        return data[off:] if off else data

    def _x_array(self, msg) -> np.ndarray:
        s = self.src
        data = self._array_data(msg)
        if s.all:
            if self.labels is None:
                lab = _layout_labels(msg)
                self.labels = lab if lab and len(lab) == len(data) else [f'{s.topic}[{i}]' for i in range(len(data))]
            if len(data) != len(self.labels):
                raise FieldError(f'field \'data\' has {len(data)} elements but earlier messages had '
                                 f'{len(self.labels)}', 'data')
            return data
        if s.indices is not None:
            if max(s.indices) >= len(data):
                raise FieldError(f'field \'data[{max(s.indices)}]\' out of range: data has {len(data)} elements',
                                 f'data[{max(s.indices)}]')
            return data[s.indices]
        key = tuple(_layout_labels(msg) or ())
        if key != self._key:
            pos = {n: i for i, n in enumerate(key)}
            missing = [x for x in s.labels if x not in pos]
            if missing:
                raise FieldError(f'label(s) {missing} not in the layout labels {list(key)} '
                                 f'(layout.dim[0].label)', f'layout.label:{missing[0]}')
            self._idx, self._key = np.array([pos[x] for x in s.labels]), key
        if self._idx.max() >= len(data):
            raise FieldError(f'layout labels {list(key)} exceed data length {len(data)}', 'data')
        return data[self._idx]

    def _x_trajectory(self, msg) -> np.ndarray:
        s = self.src
        names = tuple(_walk(msg, ['joint_names'], 'joint_names'))
        if names != self._key:
            pos = {n: i for i, n in enumerate(names)}
            missing = [j for j in s.joints if j not in pos]
            if missing:
                raise FieldError(f'joint(s) {missing} not in joint_names {list(names)}', f'joint_names[{missing[0]}]')
            self._idx, self._key = np.array([pos[j] for j in s.joints]), names
        pts = msg.points
        if not len(pts):
            raise FieldError('trajectory has no points', 'points')

        def vals(p):
            v = np.asarray(getattr(p, s.field), np.float64)
            if len(v) != len(names):
                raise FieldError(f'points[].{s.field} has {len(v)} values for {len(names)} joints',
                                 f'points.{s.field}')
            return v[self._idx]
        if s.time_from_start is None:
            return vals(pts[0])
        times = np.array([p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in pts])
        tq = s.time_from_start
        if tq <= times[0] or len(pts) == 1:
            return vals(pts[0])
        if tq >= times[-1]:
            return vals(pts[-1])
        k = int(np.searchsorted(times, tq, side='right'))
        w = (tq - times[k - 1]) / max(times[k] - times[k - 1], 1e-12)
        return (1 - w) * vals(pts[k - 1]) + w * vals(pts[k])

    _POSE_PATHS = {'x': ('position', 'x'), 'y': ('position', 'y'), 'z': ('position', 'z'),
                   'qx': ('orientation', 'x'), 'qy': ('orientation', 'y'), 'qz': ('orientation', 'z'),
                   'qw': ('orientation', 'w')}

    def _x_pose(self, msg) -> np.ndarray:
        if self._paths is None:
            prefix: list[str] = []
            obj = msg
            for _ in range(4):
                f = set(_fields_of(obj))
                if {'position', 'orientation'} <= f:
                    mp = self._POSE_PATHS
                    break
                if {'translation', 'rotation'} <= f:
                    mp = {k: ({'position': 'translation', 'orientation': 'rotation'}[a], b)
                          for k, (a, b) in self._POSE_PATHS.items()}
                    break
                if {'x', 'y', 'z'} <= f and 'w' not in f:
                    mp = {k: (b,) for k, (a, b) in self._POSE_PATHS.items() if a == 'position'}
                    break
                nxt = next((n for n in ('pose', 'transform', 'point') if n in f), None)
                if nxt is None:
                    raise FieldError(f'{getattr(msg, "__msgtype__", "message")} is not a pose, point or transform '
                                     f'(fields: {_fields_of(msg)})', 'pose')
                prefix.append(nxt)
                obj = getattr(obj, nxt)
            else:
                raise FieldError('no pose found in the message', 'pose')
            bad = [c for c in self.src.components if c not in mp]
            if bad:
                raise FieldError(f'component(s) {bad} do not exist in a {getattr(obj, "__msgtype__", "")}',
                                 '.'.join(prefix + [bad[0]]))
            self._paths = [prefix + list(mp[c]) for c in self.src.components]
        return np.array([_scalar(_walk(msg, p, '.'.join(p)), '.'.join(p)) for p in self._paths], np.float64)

    def _x_field(self, msg) -> np.ndarray:
        if self._paths is None:
            self._paths = [(parse_path(p), p) for p in self.src.fields]
        return np.array([_scalar(_walk(msg, p, text), text) for p, text in self._paths], np.float64)


# ---------------------------------------------------------------------------------------------------- per-bag state
class _TopicState:
    __slots__ = ('t', 'raw', 'msgtype', 'msg', 'values')

    def __init__(self):
        self.t = None
        self.raw = None
        self.msgtype = None
        self.msg = None
        self.values: dict[int, np.ndarray] = {}


class _BagIngest:
    def __init__(self, bag: BagSource, spec: IngestSpec, report: BagReport, pbar=None):
        self.bag, self.spec, self.report, self.pbar = bag, spec, report, pbar
        self.name = str(bag.path)
        self.stale_ns = int(round(spec.max_staleness * 1e9))
        self.period_ns = int(round(1e9 / spec.control_rate_hz))
        self.topics = spec.topics()
        self.state: dict[str, _TopicState] = {t: _TopicState() for t in self.topics}
        a = spec.action
        self.obs_ex = [Extractor(s) for s in spec.observation]
        self.act_ex = Extractor(a.source)
        self.ref_ex = Extractor(a.reference) if a.reference is not None else None
        self.rew_ex = Extractor(spec.reward) if spec.reward is not None else None
        self.suc_ex = Extractor(spec.success) if spec.success is not None else None
        self.scale = np.asarray(a.scale, np.float64)
        self.offset = np.asarray(a.offset, np.float64)
        self.obs_topics = {s.topic for s in spec.observation}
        if a.reference is not None:
            self.obs_topics.add(a.reference.topic)
        self.episodes: list[Episode] = []
        self._new_episode()
        self.started = spec.episodes.mode != 'episode_topic'
        self.pending = None          # (t, raw, msgtype) of the action awaiting finalisation
        self.due = None              # decimation: next grid time an action is due
        self.grid_next = None        # grid timeline: next tick
        self.t_first = self.t_last = None

    # -------------------------------------------------------------- checks
    def check(self) -> None:
        topics = self.bag.topics
        spec = self.spec
        roles: list[tuple[str, Source | None]] = [(s.where, s) for s in spec.all_sources()]
        if spec.episodes.mode == 'episode_topic':
            roles.append(('episodes.episode_topic', None))
        ts_needed = []
        for where, s in roles:
            topic = s.topic if s is not None else spec.episodes.topic
            conns = topics.get(topic)
            if not conns:
                raise BagError(f'{self.name}: topic {topic!r} (needed by spec {where}) is not in the bag; '
                               f'the bag has {sorted(topics)}', bag=self.name, topic=topic)
            if not sum(c.msgcount for c in conns):
                raise BagError(f'{self.name}: topic {topic!r} (needed by spec {where}) has no messages',
                               bag=self.name, topic=topic)
            types = {c.msgtype for c in conns}
            if len(types) > 1:
                raise BagError(f'{self.name}: topic {topic!r} carries several types {sorted(types)}',
                               bag=self.name, topic=topic)
            msgtype = types.pop()
            formats = {c.serialization_format for c in conns} - {'cdr'}
            if formats:
                raise BagError(f'{self.name}: topic {topic!r} is serialized as {" and ".join(sorted(formats))}; '
                               f'only CDR (what rosbag2 records from ROS 2) can be decoded', bag=self.name,
                               topic=topic, msgtype=msgtype)
            allowed = SOURCE_TYPES.get(s.kind) if s is not None else None
            if allowed is not None and msgtype not in allowed:
                raise BagError(f'{self.name}: topic {topic!r} has type {msgtype}, but spec {where} '
                               f'(source: {s.kind}) needs {" or ".join(allowed)}', bag=self.name, topic=topic,
                               msgtype=msgtype)
            ts_needed.append((topic, msgtype))
        self.typestore = self.bag.typestore(t for _, t in ts_needed)
        for topic, msgtype in ts_needed:
            if msgtype not in self.typestore.types:
                raise BagError(f'{self.name}: topic {topic!r}: message type {msgtype!r} is unknown: the bag carries '
                               f'no definition for it and it is not a standard ROS 2 type', bag=self.name,
                               topic=topic, msgtype=msgtype)

    # -------------------------------------------------------------- decoding
    def _decode(self, st: _TopicState, topic: str):
        if st.msg is None:
            try:
                st.msg = self.typestore.deserialize_cdr(st.raw, st.msgtype)
            except Exception as err:  # noqa: BLE001
                raise BagError(f'{self.name}: topic {topic!r}: cannot deserialize a {st.msgtype} message at '
                               f'{st.t} ns ({type(err).__name__}: {err})', bag=self.name, topic=topic,
                               msgtype=st.msgtype) from err
        return st.msg

    def _value(self, ex: Extractor, st: _TopicState) -> np.ndarray:
        v = st.values.get(id(ex))
        if v is None:
            msg = self._decode(st, ex.src.topic)
            try:
                v = ex(msg)
            except FieldError as err:
                raise BagError(f'{self.name}: topic {ex.src.topic!r} ({st.msgtype}), spec {ex.src.where}: '
                               f'field {err.field!r}: {err}', bag=self.name, topic=ex.src.topic,
                               field=err.field, msgtype=st.msgtype) from None
            st.values[id(ex)] = v
        return v

    def _value_of_raw(self, ex: Extractor, t: int, raw, msgtype: str) -> np.ndarray:
        st = _TopicState()
        st.t, st.raw, st.msgtype = t, raw, msgtype
        return self._value(ex, st)

    # -------------------------------------------------------------- episodes
    def _new_episode(self):
        self.ep_obs, self.ep_act, self.ep_t, self.ep_rew = [], [], [], []
        self.ep_success = False
        self.grid_next = None
        self.due = None

    def _close_episode(self):
        n = len(self.ep_obs)
        if n:
            if n < self.spec.min_episode_steps:
                self.report.drop('short_episode_steps', n)
            else:
                self.episodes.append(Episode(
                    obs=np.asarray(self.ep_obs, np.float32), actions=np.asarray(self.ep_act, np.float32),
                    rewards=np.asarray(self.ep_rew, np.float32), success=self.ep_success,
                    timestamps=np.asarray(self.ep_t, np.float64) * 1e-9,
                    info={'bag': self.name, 'index_in_bag': len(self.episodes),
                          't_start': self.ep_t[0] * 1e-9, 't_end': self.ep_t[-1] * 1e-9}))
        self._new_episode()

    # -------------------------------------------------------------- steps
    def _finalize(self, t: int, raw, msgtype: str) -> None:
        """One step at time t with the action message (raw, msgtype)."""
        if not self.started:
            self.report.drop('before_first_episode')
            return
        parts = []
        for ex in self.obs_ex:
            value = self._fresh_value(ex, t)
            if value is None:
                return
            parts.append(value)
        target = self._value_of_raw(self.act_ex, t, raw, msgtype)
        if self.ref_ex is not None:
            ref = self._fresh_value(self.ref_ex, t)
            if ref is None:
                return
            if ref.shape != target.shape:
                raise BagError(f'{self.name}: spec action.reference gives {ref.shape[0]} values but the action '
                               f'on {self.act_ex.src.topic!r} has {target.shape[0]}', bag=self.name,
                               topic=self.act_ex.src.topic)
            a = (target - ref) / self.scale
        else:
            a = (target - self.offset) / self.scale
        if self.spec.action.clip:
            a = np.clip(a, -1.0, 1.0)
        if self.spec.episodes.mode == 'time_gap' and self.ep_t and \
                (t - self.ep_t[-1]) > self.spec.episodes.gap * 1e9:
            self._close_episode()
        self.ep_obs.append(np.concatenate(parts) if len(parts) > 1 else parts[0])
        self.ep_act.append(a)
        self.ep_t.append(t)
        self.ep_rew.append(0.0)
        self.report.steps += 1

    def _fresh_value(self, ex, t: int):
        """The latest value of ``ex``'s source as of t, or None (and the step's drop counted) if absent or stale."""
        st = self.state[ex.src.topic]
        if st.t is None:
            self.report.drop('no_observation_yet')
            return None
        if t - st.t > self.stale_ns:
            self.report.drop('stale_observation')
            return None
        return self._value(ex, st)

    def _advance(self, t: int) -> None:
        """The stream reached time t: finalise everything strictly before t."""
        if self.spec.timeline == 'action':
            if self.pending is not None and self.pending[0] < t:
                self._finalize(*self.pending)
                self.pending = None
        else:
            while self.grid_next is not None and self.grid_next < t:
                tick = self.grid_next
                la = self.pending
                if la is None or tick - la[0] > self.stale_ns:
                    self.grid_next = None        # no fresh action: pause the grid until the next action
                    self.report.drop('grid_no_fresh_action')
                    break
                self._finalize(tick, la[1], la[2])
                self.grid_next = tick + self.period_ns

    def _on_action(self, t: int, raw, msgtype: str) -> None:
        if self.spec.timeline == 'grid':
            self.pending = (t, raw, msgtype)
            if self.grid_next is None:
                self.grid_next = t
            return
        if self.pending is not None:          # same timestamp as a previous action: the later one wins, same step
            self.report.drop('duplicate_action_timestamp')
            self.pending = (t, raw, msgtype)
            return
        if self.due is not None and t < self.due - DECIMATION_TOLERANCE * self.period_ns:
            self.report.drop('decimated_to_control_rate')
            return
        self.pending = (t, raw, msgtype)
        self.due = (self.due if self.due is not None else t) + self.period_ns
        if self.due < t - DECIMATION_TOLERANCE * self.period_ns:
            self.due = t + self.period_ns

    # -------------------------------------------------------------- main loop
    def run(self) -> list[Episode]:
        spec = self.spec
        act_topic = spec.action.source.topic
        rew_topic = spec.reward.topic if spec.reward is not None else None
        suc_topic = spec.success.topic if spec.success is not None else None
        ep_topic = spec.episodes.topic if spec.episodes.mode == 'episode_topic' else None
        obs_topics = self.obs_topics
        state = self.state
        n = 0
        pbar = self.pbar
        last_t = None
        for topic, msgtype, t, raw in self.bag.messages(self.topics):
            n += 1
            if pbar is not None and not n % 2000:
                pbar.update(2000)
            if last_t is not None and t < last_t:
                raise BagError(f'{self.name}: messages are not in time order ({topic!r} at {t} after {last_t})',
                               bag=self.name, topic=topic)
            if self.t_first is None:
                self.t_first = t
            last_t = t
            if (self.pending is not None and self.pending[0] < t) or self.grid_next is not None:
                self._advance(t)
            if topic in obs_topics:
                st = state[topic]
                st.t, st.raw, st.msgtype, st.msg = t, raw, msgtype, None
                st.values.clear()
            if topic == ep_topic:
                self._close_episode()              # the grid pauses until the new episode's first action
                self.started = True
            if topic == act_topic:
                self._on_action(t, raw, msgtype)
            if topic == rew_topic or topic == suc_topic:
                st = _TopicState()            # one decode serves both reward and success on a shared topic
                st.t, st.raw, st.msgtype = t, raw, msgtype
                if topic == rew_topic and self.ep_t and self.ep_t[-1] < t:
                    self.ep_rew[-1] = float(self._value(self.rew_ex, st)[0])
                if topic == suc_topic:               # one before an episode is reset when the episode starts
                    if float(self._value(self.suc_ex, st)[0]) > spec.success.threshold:
                        self.ep_success = True
        if pbar is not None:
            pbar.update(n % 2000)
        self.t_last = last_t
        self._advance(2 ** 63 - 1) if self.spec.timeline == 'action' else self._advance_grid_end()
        self._close_episode()
        self.report.messages = n
        return self.episodes

    def _advance_grid_end(self):
        if self.pending is not None and self.grid_next is not None:
            # ticks up to the last message time, as long as the last action is fresh
            end = self.t_last if self.t_last is not None else self.pending[0]
            self._advance(end + 1)


# ---------------------------------------------------------------------------------------------------- API
def _labels(spec: IngestSpec, ing: _BagIngest) -> tuple[list[str], list[str]]:
    obs: list[str] = []
    for ex in ing.obs_ex:
        if ex.labels is None:
            raise BagError(f'{ing.name}: labels of {ex.src.where} ({ex.src.topic}) unresolved (no step was made)')
        obs += ex.labels
    a = ing.act_ex.labels
    if a is None:
        a = [f'{spec.action.source.topic}[{i}]' for i in range(len(ing.scale) if ing.scale.ndim else 0)] or None
    suffix = '.delta' if spec.action.representation == 'delta' else ''
    return obs, [f'{x}{suffix}' for x in (a or [])]


def ingest_bag(path: str | os.PathLike, spec, *, progress: bool | None = None) -> tuple[list[Episode], dict, BagReport,
                                                                                        tuple[list[str], list[str]]]:
    """Ingest one bag; raises :class:`BagError` (naming the bag) on failure. Returns
    ``(episodes, provenance, report, (obs_labels, action_labels))``."""
    spec = load_spec(spec)
    report = BagReport(bag=str(path))
    t0 = time.perf_counter()
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', BagWarning)
            with BagSource(path) as bag:
                ing = _BagIngest(bag, spec, report)
                ing.check()
                total = sum(c.msgcount for c in bag.connections.values() if c.topic in set(ing.topics))
                pbar = None
                if progress is not False:
                    from tqdm import tqdm
                    pbar = tqdm(total=total, unit='msg', desc=Path(path).name, disable=None if progress is None else False,
                                leave=False)
                ing.pbar = pbar
                try:
                    episodes = ing.run()
                finally:
                    if pbar is not None:
                        pbar.close()
                prov = {'source': 'rosbag2', 'bag': str(Path(path).resolve()), 'storage': bag.storage_id,
                        'format_version': bag.version, 'files': [f.name for f in bag.files],
                        'topics': {t: sorted({c.msgtype for c in bag.topics.get(t, [])}) for t in ing.topics},
                        'time_range': [ing.t_first * 1e-9 if ing.t_first is not None else None,
                                       ing.t_last * 1e-9 if ing.t_last is not None else None],
                        'episodes': len(episodes), 'steps': sum(len(e) for e in episodes),
                        'messages_read': report.messages, 'dropped': dict(report.dropped)}
                labels = _labels(spec, ing) if episodes else ([], [])
    except Exception as err:
        err.bag_warnings = [str(w.message) for w in caught if issubclass(w.category, BagWarning)]
        raise
    finally:
        for w in caught:
            if issubclass(w.category, BagWarning):
                report.warnings.append(str(w.message))
                warnings.warn(w.message, BagWarning, stacklevel=2)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    report.ok = True
    report.steps = sum(len(e) for e in episodes)
    report.episodes = len(episodes)
    report.time_range = tuple(prov['time_range'])
    report.seconds = time.perf_counter() - t0
    return episodes, prov, report, labels


def ingest(bags: 'str | os.PathLike | Iterable[str | os.PathLike]', spec, *, progress: bool | None = None,
           return_report: bool = False):
    """Ingest one or more rosbag2 recordings (directories or single ``.mcap`` / ``.db3`` files) into a
    :class:`DemoDataset`.

    Per-bag failures are collected (``dataset.report``, an :class:`IngestReport`) and the other bags still ingest;
    :class:`IngestError` is raised only when no bag yields a single step. With ``return_report=True`` the result is
    ``(dataset, report)``.
    """
    spec = load_spec(spec)
    if isinstance(bags, (str, os.PathLike)):
        bags = [bags]
    bags = list(bags)
    if not bags:
        raise ValueError('no bags given')
    report = IngestReport()
    ds = DemoDataset(task=spec.task, control_rate_hz=spec.control_rate_hz, schema=spec.to_dict())
    labels = None
    for path in bags:
        try:
            episodes, prov, brep, lab = ingest_bag(path, spec, progress=progress)
        except Exception as err:  # noqa: BLE001 - one bad bag must not stop the others
            msg = str(err) if str(path) in str(err) else f'{path}: {type(err).__name__}: {err}'
            brep = BagReport(bag=str(path), ok=False, error=msg, warnings=list(getattr(err, 'bag_warnings', [])))
            report.bags.append(brep)
            continue
        report.bags.append(brep)
        if not episodes:
            brep.ok = False
            brep.error = (f'{path}: no steps could be made (dropped: {brep.dropped or "nothing"}); check the spec\'s '
                          f'topics, max_staleness and episode segmentation')
            continue
        if labels is None:
            labels = lab
            ds.obs_labels, ds.action_labels = lab
        elif lab != labels:
            brep.ok = False
            brep.error = f'{path}: observation/action labels {lab} differ from the first bag\'s {labels}'
            continue
        for ep in episodes:
            ds.add_episode(ep)
        ds.provenance.append(prov)
    ds.report = report
    if not ds.episodes:
        raise IngestError('nothing could be ingested:\n' + str(report), report)
    return (ds, report) if return_report else ds


__all__ = ['ingest', 'ingest_bag', 'IngestReport', 'BagReport', 'IngestError', 'BagError', 'BagReadError',
           'Extractor', 'FieldError']
