"""Recorder node: live topics of the running graph -> a rosbag2 (MCAP by default, sqlite3 on request).

What ``ros2 bag record`` would do, without rosbag2_py (not on PyPI): raw (serialized CDR) subscriptions feed
:class:`swfp_ros.data.bag_writer.BagRecorder` unchanged, so ``record_bag:=true`` works in the sim launch and in
``swfp up`` on pip-only machines.

Parameters (config/recorder.yaml): ``PARAMS`` below, with descriptions and ranges (``ros2 param describe``); the
two periods apply live.

QoS: like rosbag2, each subscription adapts to the publishers it finds — reliable if every publisher is reliable
(otherwise best effort), transient local if every publisher is transient local (so latched topics such as
/swfp/policy_update and /swfp/estop are recorded from their first sample). Receive timestamps come from the node's
clock; with use_sim_time they are the simulation time at which each message was published (see
:class:`swfp_ros.data.bag_writer.SimTimeStamper`: stamping on arrival mixed up lockstep steps), written after a hold
of a quarter second. The bag is closed (index and metadata.yaml written) on SIGINT / SIGTERM; until then what was
recorded is handed to the operating system every second (``flushed_messages`` on /swfp/status), so a recorder killed
loses at most the last second, and ingest reads its bag as far as it is whole.
"""
from __future__ import annotations

import importlib
import sys
import threading
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from swfp_ros.data.bag_writer import BagRecorder, SimTimeStamper
from swfp_ros.ros.executors import run_node, steady_clock
from swfp_ros.ros import messages as M
from swfp_ros.ros.params import ParamSpec, declare_params, set_period

DEFAULT_TOPICS = ['/joint_states', '/swfp/task', '/swfp/action', '/swfp/reward', '/swfp/episode', '/swfp/transition',
                  '/swfp/policy_update', '/swfp/estop', '/clock']


PARAMS = [
    ParamSpec('topics', DEFAULT_TOPICS, 'topics to record (absolute names); each is subscribed once a publisher '
              'appears, with its type from the graph'),
    ParamSpec('output', '', "bag directory to create (must not exist); '' = ./swfp_bag_<YYYYmmdd_HHMMSS>"),
    ParamSpec('storage', 'mcap', 'rosbag2 storage', choices=('mcap', 'sqlite3')),
    ParamSpec('version', 9, 'rosbag2 format version (8 or 9)', low=8, high=9),
    ParamSpec('discovery_period_s', 0.5, 's between graph scans for topics not yet subscribed', 'live', low=0.01,
              high=3600.0, former='discovery_period'),
    ParamSpec('status_period_s', 2.0, 's between /swfp/status diagnostics', 'live', low=0.01, high=3600.0,
              former='status_period'),
]


def message_class(msgtype: str):
    """'std_msgs/msg/Float64MultiArray' -> the rclpy message class."""
    pkg, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{pkg}.{kind}'), name)


def default_output() -> str:
    return time.strftime('swfp_bag_%Y%m%d_%H%M%S')


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__('recorder_node', **kwargs)
        v = declare_params(self, PARAMS, on_live=self._apply_live)
        self.topics = [self._absolute(t) for t in v['topics'] if t]
        output, storage, version = v['output'] or default_output(), v['storage'], v['version']
        self.path = Path(output).expanduser().resolve()
        self._lock = threading.Lock()
        self._bag = BagRecorder(self.path, storage=storage, version=version,
                                custom_data={'swfp.recorder': self.get_fully_qualified_name()}).open()
        self.counts: dict[str, int] = {}
        self.errors = 0
        self._subs: dict[str, object] = {}
        self._stamper = SimTimeStamper() if self.get_parameter('use_sim_time').value else None
        self._status_pub = self.create_publisher(DiagnosticArray, '/swfp/status', 10)
        steady = steady_clock()
        self._live_timers = {
            'discovery_period_s': self.create_timer(v['discovery_period_s'], self._discover, clock=steady),
            'status_period_s': self.create_timer(v['status_period_s'], self._publish_status, clock=steady)}
        if self._stamper is not None:
            self.create_timer(0.05, self._write_stamped, clock=steady)
        self.create_timer(self._bag.commit_period_s, self._flush, clock=steady)
        self.get_logger().info(f'recording {", ".join(self.topics)} to {self.path} ({storage}, v{version})')
        self._discover()

    def _apply_live(self, changes: dict) -> str:
        for name, value in changes.items():
            set_period(self._live_timers[name], value)
        return ''

    def _absolute(self, topic: str) -> str:
        return topic if topic.startswith('/') else self.resolve_topic_name(topic)

    # --- subscriptions --------------------------------------------------------------------------------------------
    def _qos_for(self, topic: str) -> QoSProfile | None:
        infos = self.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000 if reliable else 100,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _discover(self) -> None:
        pending = [t for t in self.topics if t not in self._subs]
        if not pending:
            return
        types = dict(self.get_topic_names_and_types())
        for topic in pending:
            if topic not in types:
                continue
            msgtype = types[topic][0]
            qos = self._qos_for(topic)
            if qos is None:
                continue
            try:
                cls = message_class(msgtype)
                self._bag.add_topic(topic, msgtype)
            except Exception as e:  # noqa: BLE001 - an unrecordable type must not stop the others
                self.get_logger().error(f'cannot record {topic} ({msgtype}): {e}')
                self._subs[topic] = None
                continue
            self.counts[topic] = 0
            self._subs[topic] = self.create_subscription(
                cls, topic, lambda data, info, t=topic, m=msgtype: self._on_message(t, m, data, info), qos, raw=True)
            self.get_logger().info(f'subscribed {topic} [{msgtype}] '
                                   f'({qos.reliability.name.lower()}, {qos.durability.name.lower()})')

    def _on_message(self, topic: str, msgtype: str, data: bytes, info) -> None:
        with self._lock:
            if self._stamper is not None:
                self._stamper.add(topic, msgtype, data, info['source_timestamp'] or info['received_timestamp'],
                                  time.monotonic_ns())
            else:
                self._write(topic, msgtype, data, self.get_clock().now().nanoseconds)

    def _write_stamped(self) -> None:
        with self._lock:
            for item in self._stamper.ready(time.monotonic_ns()):
                self._write(*item)

    def _write(self, topic: str, msgtype: str, data: bytes, stamp: int) -> None:
        """Append one message (the lock is held)."""
        if not self._bag.is_open:
            return
        try:
            self._bag.write(topic, msgtype, data, stamp)
            self.counts[topic] += 1
        except Exception as e:  # noqa: BLE001
            self.errors += 1
            self.get_logger().error(f'write failed on {topic}: {e}', throttle_duration_sec=5.0)

    def _flush(self) -> None:
        """Hand what was recorded to the operating system while no message arrives too (the bag does it as it
        writes): killed in a pause, the recorder has lost nothing written a period before."""
        with self._lock:
            try:
                self._bag.flush()
            except Exception as e:  # noqa: BLE001
                self.errors += 1
                self.get_logger().error(f'flush failed: {e}', throttle_duration_sec=5.0)

    # --- diagnostics / shutdown -----------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        values = {'path': self.path, 'messages': sum(self.counts.values()), 'write_errors': self.errors,
                  'lost_messages': self._bag.lost_messages, 'flushed_messages': self._bag.flushed_messages,
                  **{f'count{t}': n for t, n in sorted(self.counts.items())}}
        self._status_pub.publish(M.status_msg(self.get_fully_qualified_name(), 'swfp_ros',
                                              f'recording to {self.path}', values, warn=bool(self.errors),
                                              stamp=self.get_clock().now().to_msg()))

    def close(self) -> None:
        """Finish the bag (idempotent)."""
        with self._lock:
            if self._bag.is_open:
                for item in self._stamper.flush() if self._stamper is not None else ():
                    self._write(*item)
                self._bag.close()
                self.get_logger().info(f'closed {self.path}: {sum(self.counts.values())} messages '
                                       f'({", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items()))})')


def main(args=None) -> int:
    return run_node('recorder_node', RecorderNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
