"""Write demonstrations as real rosbag2 recordings (the ``rosbags`` library, no ROS runtime).

Two ways in:

* :func:`write_demo_bag` — expert episodes (arrays) to a bag with the topics a real arm records:
  ``/joint_states`` (sensor_msgs/msg/JointState), ``/swfp/task`` (std_msgs/msg/Float64MultiArray whose
  ``layout.dim[0].label`` is the comma-joined element labels), ``/swfp/action`` (Float64MultiArray of absolute joint
  position targets, what forward_command_controller takes), ``/swfp/reward`` (Float64MultiArray
  ``[reward, terminated, truncated, step]``, when the episodes carry rewards), ``/swfp/episode`` (std_msgs/msg/Int32,
  the episode index, once at each episode start) and ``/clock`` (rosgraph_msgs/msg/Clock).
* :class:`BagRecorder` — a streaming writer a ROS recorder node feeds with raw CDR bytes (or message objects) from
  live subscriptions; connections are registered on first use by (topic, type). Under simulation time its
  :class:`SimTimeStamper` gives each message the sim time at which it was published.

MCAP is the default storage, sqlite3 on request; rosbag2 format version 8 or 9.
"""
from __future__ import annotations

import bisect
import heapq
import itertools
import os
import sqlite3
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NoReturn, Sequence

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

DEFAULT_STORE = Stores.ROS2_KILTED
TOPIC_JOINT_STATES = '/joint_states'
TOPIC_TASK = '/swfp/task'
TOPIC_ACTION = '/swfp/action'
TOPIC_REWARD = '/swfp/reward'
TOPIC_EPISODE = '/swfp/episode'
TOPIC_CLOCK = '/clock'
T_JOINT_STATE = 'sensor_msgs/msg/JointState'
T_F64_ARRAY = 'std_msgs/msg/Float64MultiArray'
T_INT32 = 'std_msgs/msg/Int32'
T_CLOCK = 'rosgraph_msgs/msg/Clock'
REWARD_LAYOUT = ('reward', 'terminated', 'truncated', 'step')

_STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3, 'db3': StoragePlugin.SQLITE3}


def storage_plugin(storage: str) -> StoragePlugin:
    try:
        return _STORAGES[str(storage).lower()]
    except KeyError:
        raise ValueError(f'unknown rosbag2 storage {storage!r}; expected "mcap" or "sqlite3"') from None


def standard_typestore():
    """A fresh typestore with the standard ROS 2 (Kilted) message types."""
    return get_typestore(DEFAULT_STORE)


@dataclass
class EpisodeRecord:
    """One expert episode as per-step arrays (T steps)."""

    time: np.ndarray           # (T,) sim seconds of each control step
    joint_pos: np.ndarray      # (T, J) observed joint positions
    joint_vel: np.ndarray      # (T, J)
    task: np.ndarray           # (T, n) task vector (labels given to the writer)
    action_target: np.ndarray  # (T, J) absolute joint position targets sent at each step
    action_delta: np.ndarray | None = None  # (T, J) normalised delta in [-1, 1] (kept for round-trip checks)
    reward: np.ndarray | None = None        # (T,) reward of each step; /swfp/reward is written when given
    success: bool = False
    joint_effort: np.ndarray | None = None  # (T, J)

    def __post_init__(self):
        self.time = np.asarray(self.time, np.float64).reshape(-1)
        T = len(self.time)
        for name in ('joint_pos', 'joint_vel', 'task', 'action_target', 'action_delta', 'joint_effort'):
            v = getattr(self, name)
            if v is None:
                continue
            v = np.asarray(v, np.float64)
            if v.ndim != 2 or len(v) != T:
                raise ValueError(f'EpisodeRecord.{name} must have shape (T={T}, n), got {v.shape}')
            setattr(self, name, v)
        if self.reward is not None:
            self.reward = np.asarray(self.reward, np.float64).reshape(-1)
            if len(self.reward) != T:
                raise ValueError(f'EpisodeRecord.reward must have {T} entries, got {len(self.reward)}')
        if T and np.any(np.diff(self.time) <= 0):
            raise ValueError('EpisodeRecord.time must be strictly increasing')

    def __len__(self) -> int:
        return len(self.time)


def _is_raw(data: Any) -> bool:
    return isinstance(data, (bytes, bytearray, memoryview)) or (isinstance(data, np.ndarray) and data.dtype == np.uint8)


class BagWriteError(OSError):
    """Messages that did not reach the bag (a full disk); the message says how many. The recorder stays usable."""


class BagRecorder:
    """Streaming rosbag2 writer: ``open()``, ``write(topic, msgtype, message_or_raw_cdr, timestamp_ns)``, ``close()``.

    ``message_or_raw_cdr`` is either serialized CDR bytes (e.g. from an rclpy ``raw=True`` subscription; they are
    written unchanged) or a rosbags message object (serialized here). Connections are registered on first use per
    (topic, type); definitions come from the standard ROS 2 typestore or from :meth:`register_msgdef` /
    ``msgdefs={type: msg text}`` for custom types. Use as a context manager.

    Every ``commit_period_s`` what was written is handed to the operating system (:meth:`flush`), so that a recorder
    killed, or that never closes, loses at most that long (ingest reads such a bag as far as it is whole, see
    :mod:`.unfinished`). ``write`` does it when it is due; a caller whose messages may pause (a recorder node) also
    calls :meth:`flush` on a timer. :attr:`flushed_messages` counts the messages handed over:

    * sqlite3: the ``rosbags`` writer keeps the whole recording in one database transaction, committed at
      ``close()``; a write that fails on a full disk rolls it back, and with it everything recorded so far, the topics
      included (the bag then reads as empty, however much is written after). So the transaction is committed once a
      topic is added and then every period: a failure rolls back only what was written since the last commit, which
      :class:`BagWriteError` reports and :attr:`lost_messages` counts, and the bag goes on from there.
    * MCAP: the ``rosbags`` writer holds messages in memory until its chunk reaches 1 MiB (at 20 Hz demonstrations,
      most of a minute). The chunk in progress is closed and flushed every period instead. A chunk that fails to reach
      a full disk stays buffered and is written with the next one.
    """

    def __init__(self, path: str | os.PathLike, *, storage: str = 'mcap', version: int = 9,
                 typestore=None, msgdefs: dict[str, str] | None = None, custom_data: dict[str, str] | None = None,
                 commit_period_s: float = 1.0):
        if version not in (8, 9):
            raise ValueError(f'rosbag2 format version {version} cannot be written; choose 8 or 9')
        self.path = Path(path)
        self.storage = str(storage).lower()
        self.version = int(version)
        self.typestore = typestore if typestore is not None else standard_typestore()
        self._writer = Writer(self.path, version=self.version, storage_plugin=storage_plugin(storage))
        for k, v in (custom_data or {}).items():
            self._writer.set_custom_data(str(k), str(v))
        self._connections: dict[tuple[str, str], Any] = {}
        for msgtype, text in (msgdefs or {}).items():
            self.register_msgdef(msgtype, text)
        self.message_count = 0       # handed to write(), a write that raised included
        self.lost_messages = 0       # sqlite3: rolled back by a failed write or commit
        self.is_open = False
        self._sqlite = self._writer.storage_plugin == StoragePlugin.SQLITE3
        self.commit_period_s = float(commit_period_s)
        self.flushed_messages = 0    # handed to the operating system by the last flush()
        self._uncommitted = 0        # sqlite3: written since the last commit
        self._next_commit = 0.0      # time.monotonic() of the next commit

    def register_msgdef(self, msgtype: str, msgdef: str) -> None:
        """Make a custom message type writable (``.msg`` text; nested custom types must be registered first)."""
        self.typestore.register(get_types_from_msg(msgdef, msgtype))

    def open(self) -> 'BagRecorder':
        if not self.is_open:
            self._writer.open()
            self.is_open = True
        return self

    def add_topic(self, topic: str, msgtype: str, *, offered_qos_profiles: Sequence = ()):
        """Register (topic, type) explicitly (``write`` does it on first use)."""
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            if not self.is_open:
                self.open()
            if msgtype not in self.typestore.types:
                raise KeyError(f'cannot record {topic!r}: message type {msgtype!r} is not in the typestore; '
                               f'register its definition with register_msgdef()')
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore,
                                               offered_qos_profiles=offered_qos_profiles)
            self._connections[key] = conn
            self.flush()      # a topic rolled back would leave every later message of it unreadable
        return conn

    def write(self, topic: str, msgtype: str, message_or_raw_cdr: Any, timestamp_ns: int) -> None:
        conn = self.add_topic(topic, msgtype)
        if _is_raw(message_or_raw_cdr):
            data = message_or_raw_cdr
            if isinstance(data, np.ndarray):
                data = data.tobytes()
        else:
            data = self.typestore.serialize_cdr(message_or_raw_cdr, msgtype)
        self.message_count += 1
        if self._sqlite:
            self._uncommitted += 1
            try:
                self._writer.write(conn, int(timestamp_ns), data)
            except sqlite3.Error as e:
                self._rolled_back(e)
        else:
            self._writer.write(conn, int(timestamp_ns), data)
        if time.monotonic() >= self._next_commit:
            self.flush()

    def flush(self) -> None:
        """Hand what was written so far to the operating system: it outlives this process (see the class)."""
        if not self.is_open:
            return
        storage = self._writer.storage
        self._next_commit = time.monotonic() + self.commit_period_s
        if self._sqlite:
            try:
                storage.conn.commit()
            except sqlite3.Error as e:
                self._rolled_back(e)
            self._uncommitted = 0
        elif storage.chunk.msgs:          # an MCAP chunk holding messages (a topic alone waits for its first one)
            storage.close_chunk()
            storage.bio.flush()
        self.flushed_messages = self.message_count - self.lost_messages

    def _rolled_back(self, error: sqlite3.Error) -> NoReturn:
        """A failed sqlite3 write or commit: the transaction is rolled back (SQLite may have done it already; its
        documentation asks for an explicit rollback either way), and what it held is lost."""
        self._writer.storage.conn.rollback()
        lost, self._uncommitted = self._uncommitted, 0
        self.lost_messages += lost
        raise BagWriteError(f'{self.path}: {error}: the {lost} message(s) written since the last commit are lost '
                            f'({self.lost_messages} so far); recording goes on') from error

    def close(self) -> None:
        if self.is_open:
            self._writer.close()
            self.is_open = False

    def abort(self) -> None:
        """Stop without finishing the bag (no index, no metadata.yaml)."""
        if self.is_open:
            self._writer.abort()
            self.is_open = False

    def __enter__(self) -> 'BagRecorder':
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False


def clock_ns_from_cdr(raw: bytes) -> int:
    """Sim time (ns) of a serialized rosgraph_msgs/Clock (CDR: 4-byte encapsulation header, int32 sec, uint32 ns)."""
    sec, nanosec = struct.unpack_from('<iI' if raw[1] == 1 else '>iI', raw, 4)
    return sec * 1_000_000_000 + nanosec


class SimTimeStamper:
    """Bag timestamps in simulation time, from publish order instead of arrival order.

    A recorder that stamps each message with its own sim clock as it processes it mixes steps up: in a lockstep graph
    the next /clock tick (published once the bridge got action t) can be processed before action t itself, which then
    takes the next step's time, and two actions share one timestamp. Here every message is stamped from its publish
    time (the DDS source timestamp, one wall clock on one host): the sim time of the last /clock published before it,
    plus its rank among the messages published since, in nanoseconds. So within one tick the bag keeps the order in
    which things happened (state, action, then the reward of that action) at offsets far below a control period.
    A message is held ``hold_ns`` after its arrival (any monotonic clock, the same for ``add`` and ``ready``) so that
    ones delivered out of order are sorted first, and until a /clock published after it has arrived (so the tick it
    belongs to is known even when a lagging recorder drains its /clock queue late), or at most ``max_hold_ns``.
    """

    def __init__(self, clock_topic: str = '/clock', hold_ns: int = 250_000_000, max_hold_ns: int = 2_000_000_000):
        self.clock_topic, self.hold_ns, self.max_hold_ns = clock_topic, hold_ns, max_hold_ns
        self._newest_clock = -1                   # source time of the newest /clock that has arrived
        self._pending: list = []                 # heap of (source_ns, seq, arrival_ns, topic, msgtype, raw)
        self._seq = itertools.count()
        self._clocks: list[tuple[int, int]] = []   # (source_ns, sim_ns) of released /clock messages, in order
        self._tick, self._rank = -1, 0             # the clock tick messages are being ranked in

    def add(self, topic: str, msgtype: str, raw: bytes, source_ns: int, arrival_ns: int) -> None:
        heapq.heappush(self._pending, (source_ns, next(self._seq), arrival_ns, topic, msgtype, raw))
        if topic == self.clock_topic:
            self._newest_clock = max(self._newest_clock, source_ns)

    def ready(self, now_ns: int) -> list[tuple[str, str, bytes, int]]:
        """(topic, msgtype, raw, stamp_ns) of the messages held long enough, in publish order."""
        out = []
        while self._pending:
            source_ns, _, arrival_ns, topic = self._pending[0][:4]
            held = now_ns - arrival_ns
            tick_known = topic == self.clock_topic or self._newest_clock > source_ns
            if held < self.hold_ns or (not tick_known and held < self.max_hold_ns):
                break
            out.append(self._release(*heapq.heappop(self._pending)))
        return out

    def flush(self) -> list[tuple[str, str, bytes, int]]:
        """Everything still held (the recording stops)."""
        return [self._release(*heapq.heappop(self._pending)) for _ in range(len(self._pending))]

    def _release(self, source_ns, _seq, _arrival, topic, msgtype, raw):
        if topic == self.clock_topic:
            self._clocks.append((source_ns, clock_ns_from_cdr(raw)))
            return topic, msgtype, raw, self._clocks[-1][1]
        tick = bisect.bisect_right(self._clocks, (source_ns, 2 ** 63)) - 1
        self._tick, self._rank = tick, (self._rank + 1 if tick == self._tick else 1)
        return topic, msgtype, raw, (self._clocks[tick][1] if tick >= 0 else 0) + self._rank


class _Msgs:
    """Message constructors from a typestore."""

    def __init__(self, ts):
        t = ts.types
        self.Time = t['builtin_interfaces/msg/Time']
        self.Header = t['std_msgs/msg/Header']
        self.JointState = t[T_JOINT_STATE]
        self.F64 = t[T_F64_ARRAY]
        self.Layout = t['std_msgs/msg/MultiArrayLayout']
        self.Dim = t['std_msgs/msg/MultiArrayDimension']
        self.Int32 = t[T_INT32]
        self.Clock = t[T_CLOCK]

    def time(self, ns: int):
        return self.Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def array(self, values, labels: Sequence[str] | None):
        values = np.ascontiguousarray(values, dtype=np.float64)
        n = len(values)
        dims = [self.Dim(label=','.join(labels) if labels else '', size=n, stride=n)] if labels is not None else []
        return self.F64(layout=self.Layout(dim=dims, data_offset=0), data=values)


def write_demo_bag(path: str | os.PathLike, episodes: Iterable[EpisodeRecord], joint_names: Sequence[str],
                   task_labels: Sequence[str], control_rate_hz: float, *, storage: str = 'mcap', version: int = 9,
                   start_time_ns: int = 1_700_000_000_000_000_000, episode_gap_s: float = 1.0,
                   action_latency_s: float = 0.0, action_labels: Sequence[str] | None = None,
                   custom_data: dict[str, str] | None = None) -> dict:
    """Write expert episodes to a rosbag2 at ``path`` (a new directory). Returns a summary dict.

    Timeline: episode k starts ``episode_gap_s`` after the previous one ends; inside an episode step i is stamped at
    ``start + (time[i] - time[0])``. At each step the bag gets ``/clock``, ``/joint_states`` and ``/swfp/task``
    at the step time and ``/swfp/action`` ``action_latency_s`` later; ``/swfp/episode`` at the first step; the
    reward of step i is published one control period later (when the next state is observed), like a sim bridge.
    Log time (the bag's receive timestamp) equals the header stamp.
    """
    joint_names = [str(j) for j in joint_names]
    task_labels = [str(x) for x in task_labels]
    period_ns = int(round(1e9 / float(control_rate_hz)))
    latency_ns = int(round(action_latency_s * 1e9))
    meta = {'swfp.control_rate_hz': str(float(control_rate_hz)), 'swfp.joint_names': ','.join(joint_names),
            'swfp.task_labels': ','.join(task_labels), **(custom_data or {})}
    rec = BagRecorder(path, storage=storage, version=version, custom_data=meta)
    m = _Msgs(rec.typestore)
    act_labels = list(action_labels) if action_labels is not None else joint_names
    n_eps = n_steps = 0
    t_cursor = int(start_time_ns)
    ts = rec.typestore
    ser = ts.serialize_cdr
    with rec:
        for k, ep in enumerate(episodes):
            T = len(ep)
            if T == 0:
                continue
            for name in ('joint_pos', 'joint_vel', 'action_target', 'joint_effort'):
                array = getattr(ep, name)
                if array is not None and array.shape[1] != len(joint_names):
                    raise ValueError(f'episode {k}: {name} has {array.shape[1]} columns, '
                                     f'{len(joint_names)} joint names given')
            if ep.task.shape[1] != len(task_labels):
                raise ValueError(f'episode {k}: task has {ep.task.shape[1]} columns, {len(task_labels)} labels given')
            rel = np.round((ep.time - ep.time[0]) * 1e9).astype(np.int64)
            stamps = t_cursor + rel
            effort = ep.joint_effort if ep.joint_effort is not None else np.zeros_like(ep.joint_pos)
            for i in range(T):
                t = int(stamps[i])
                stamp = m.time(t)
                rec.write(TOPIC_CLOCK, T_CLOCK, ser(m.Clock(clock=stamp), T_CLOCK), t)
                if i == 0:
                    rec.write(TOPIC_EPISODE, T_INT32, ser(m.Int32(data=k), T_INT32), t)
                elif ep.reward is not None:
                    _write_reward(rec, m, ep, i - 1, T, t)
                js = m.JointState(header=m.Header(stamp=stamp, frame_id=''), name=joint_names,
                                  position=np.ascontiguousarray(ep.joint_pos[i]),
                                  velocity=np.ascontiguousarray(ep.joint_vel[i]),
                                  effort=np.ascontiguousarray(effort[i]))
                rec.write(TOPIC_JOINT_STATES, T_JOINT_STATE, ser(js, T_JOINT_STATE), t)
                rec.write(TOPIC_TASK, T_F64_ARRAY, ser(m.array(ep.task[i], task_labels), T_F64_ARRAY), t)
                rec.write(TOPIC_ACTION, T_F64_ARRAY, ser(m.array(ep.action_target[i], act_labels), T_F64_ARRAY),
                          t + latency_ns)
            t_end = int(stamps[-1]) + period_ns
            if ep.reward is not None:
                _write_reward(rec, m, ep, T - 1, T, t_end)
            t_cursor = t_end + int(round(episode_gap_s * 1e9))
            n_eps += 1
            n_steps += T
    return {'path': str(path), 'storage': rec.storage, 'version': rec.version, 'episodes': n_eps, 'steps': n_steps,
            'messages': rec.message_count}


def _write_reward(rec: BagRecorder, m: _Msgs, ep: EpisodeRecord, i: int, T: int, t: int) -> None:
    last = i == T - 1
    vals = [float(ep.reward[i]), float(last and ep.success), float(last and not ep.success), float(i)]
    rec.write(TOPIC_REWARD, T_F64_ARRAY, rec.typestore.serialize_cdr(m.array(vals, REWARD_LAYOUT), T_F64_ARRAY), t)
