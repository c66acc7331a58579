"""``swfp inspect BAG``: what a rosbag2 recording holds (storage, format version, duration, topics, types, rates).

A topic's rate is 1 / the median interval between its consecutive messages: the rate while it was published, not
averaged over the pauses between episodes or recordings (a 20 Hz topic with pauses reads 20 Hz, where count / span
read 9.3 Hz). A bag whose timestamps are before 2000-01-01 was stamped with simulation time (``use_sim_time``: the
clock starts at 0): its start and end are shown as seconds of simulation time, not as dates in 1970.
"""
from __future__ import annotations

import os
import warnings
from array import array
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from .reader import BagSource, BagWarning

SIM_TIME_BEFORE_NS = 946_684_800 * 10**9    # 2000-01-01 UTC: earlier stamps are simulation time


@dataclass
class TopicSummary:
    topic: str
    msgtype: str
    count: int
    rate_hz: float | None          # 1 / median interval between consecutive messages (pauses do not count)
    has_definition: bool           # the bag carries the type's definition
    serialization_format: str = 'cdr'


@dataclass
class BagSummary:
    path: str
    storage_id: str | None
    format_version: int | None
    files: list[str]
    message_count: int
    start_ns: int | None
    end_ns: int | None
    topics: list[TopicSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ros_distro: str | None = None

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) * 1e-9 if self.start_ns is not None and self.end_ns is not None else 0.0

    @property
    def sim_time(self) -> bool:
        """Stamped with simulation time (starts near 0), not wall-clock time."""
        return self.start_ns is not None and self.start_ns < SIM_TIME_BEFORE_NS

    def to_dict(self) -> dict:
        d = asdict(self)
        d['duration_s'] = self.duration_s
        d['clock'] = 'sim' if self.sim_time else 'wall' if self.start_ns is not None else None
        return d


def median_rate(stamps_ns) -> float | None:
    """1 / the median interval between consecutive timestamps (None: fewer than two, or no time between them)."""
    if len(stamps_ns) < 2:
        return None
    interval = float(np.median(np.diff(np.sort(np.frombuffer(stamps_ns, dtype=np.int64)))))
    return 1e9 / interval if interval > 0 else None


def inspect_bag(path: str | os.PathLike) -> BagSummary:
    """Summarise a bag directory or single ``.mcap`` / ``.db3`` file; one streaming pass over the timestamps gives
    each topic's rate (no message is decoded)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', BagWarning)
        with BagSource(path) as bag:
            stamps: dict[str, array] = {}
            for topic, _typ, t, _raw in bag.messages():
                stamps.setdefault(topic, array('q')).append(t)
            start, end = bag.start_time, bag.end_time
            topics = []
            for c in sorted(bag.connections.values(), key=lambda c: c.topic):
                rate = median_rate(stamps.get(c.topic, array('q')))
                topics.append(TopicSummary(c.topic, c.msgtype, c.msgcount, rate, bool(c.msgdef),
                                           c.serialization_format))
            summary = BagSummary(path=str(path), storage_id=bag.storage_id, format_version=bag.version,
                                 files=[f.name for f in bag.files], message_count=bag.message_count,
                                 start_ns=start, end_ns=end, topics=topics, warnings=list(bag.warnings),
                                 ros_distro=bag.ros_distro)
    for w in caught:
        if not issubclass(w.category, BagWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return summary


def _fmt_time(ns: int | None) -> str:
    if ns is None:
        return '-'
    if ns < SIM_TIME_BEFORE_NS:
        return f'{ns * 1e-9:.3f} s of simulation time'
    return datetime.fromtimestamp(ns * 1e-9, tz=timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3] + f' UTC ({ns * 1e-9:.3f})'


def format_summary(s: BagSummary) -> str:
    """A human-readable, ``ros2 bag info``-like text."""
    clock = 'simulation time (use_sim_time)' if s.sim_time else 'wall clock' if s.start_ns is not None else '-'
    lines = [
        f'Bag:            {s.path}',
        f'Files:          {", ".join(s.files)}',
        f'Storage:        {s.storage_id or "?"}   format version: {s.format_version if s.format_version else "?"}'
        + (f'   recorded by: {s.ros_distro}' if s.ros_distro else ''),
        f'Duration:       {s.duration_s:.3f} s',
        f'Clock:          {clock}',
        f'Start:          {_fmt_time(s.start_ns)}',
        f'End:            {_fmt_time(s.end_ns)}',
        f'Messages:       {s.message_count}',
        f'Topics ({len(s.topics)}; rate = 1 / median interval between messages):',
    ]
    if s.topics:
        wt = max(len(t.topic) for t in s.topics)
        wy = max(len(t.msgtype) for t in s.topics)
        for t in s.topics:
            rate = f'{t.rate_hz:9.2f} Hz' if t.rate_hz is not None else '        - Hz'
            lines.append(f'  {t.topic:<{wt}}  {t.msgtype:<{wy}}  {t.count:>9d} msgs  {rate}'
                         + ('' if t.has_definition else '  (no embedded definition)')
                         + ('' if t.serialization_format == 'cdr' else f'  (serialized as {t.serialization_format})'))
    for w in s.warnings:
        lines.append(f'Warning: {w}')
    return '\n'.join(lines)
