"""``swfp inspect BAG``: what a rosbag2 recording holds (storage, format version, duration, topics, types, rates)."""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .reader import BagSource, BagWarning


@dataclass
class TopicSummary:
    topic: str
    msgtype: str
    count: int
    rate_hz: float | None          # mean rate: (count - 1) / (last - first) over the topic's own messages
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

    def to_dict(self) -> dict:
        d = asdict(self)
        d['duration_s'] = self.duration_s
        return d


def inspect_bag(path: str | os.PathLike, *, rates: bool = True) -> BagSummary:
    """Summarise a bag directory or single ``.mcap`` / ``.db3`` file.

    With ``rates=True`` the per-topic mean rate uses each topic's first and last timestamps, found by one streaming
    pass over the timestamps (no message is decoded); ``rates=False`` uses the bag's overall duration instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', BagWarning)
        with BagSource(path) as bag:
            first: dict[str, int] = {}
            last: dict[str, int] = {}
            if rates:
                for topic, _typ, t, _raw in bag.messages():
                    if topic not in first:
                        first[topic] = t
                    last[topic] = t
            start, end = bag.start_time, bag.end_time
            topics = []
            for c in sorted(bag.connections.values(), key=lambda c: c.topic):
                if rates:
                    span = (last.get(c.topic, 0) - first.get(c.topic, 0)) * 1e-9
                else:
                    span = (end - start) * 1e-9 if start is not None and end is not None else 0.0
                rate = (c.msgcount - 1) / span if c.msgcount > 1 and span > 0 else None
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
    return datetime.fromtimestamp(ns * 1e-9, tz=timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f')[:-3] + f' UTC ({ns * 1e-9:.3f})'


def format_summary(s: BagSummary) -> str:
    """A human-readable, ``ros2 bag info``-like text."""
    lines = [
        f'Bag:            {s.path}',
        f'Files:          {", ".join(s.files)}',
        f'Storage:        {s.storage_id or "?"}   format version: {s.format_version if s.format_version else "?"}'
        + (f'   recorded by: {s.ros_distro}' if s.ros_distro else ''),
        f'Duration:       {s.duration_s:.3f} s',
        f'Start:          {_fmt_time(s.start_ns)}',
        f'End:            {_fmt_time(s.end_ns)}',
        f'Messages:       {s.message_count}',
        f'Topics ({len(s.topics)}):',
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
