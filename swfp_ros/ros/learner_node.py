"""Learner node: replay from ``/swfp/transition``, critic + one JKO block at a time, accepted blocks on
``/swfp/policy_update``, atomic checkpoints, resume after a restart.

Threads: the executor thread only unpacks and validates transition messages (``swfp_ros.ros.messages``) into a
bounded in-memory queue; one worker thread owns the algorithm :class:`swfp_ros.algo.learner.Learner` — it drains the
queue into the replay buffer, calls ``update()``, checkpoints and publishes. Training therefore never starves the
subscriptions, and the learner object is touched by one thread only.

Parameters (config/learner.yaml; launch / ``swfp up`` override base_checkpoint, checkpoint_dir, transition_bag, device):
    checkpoint_dir     string  the learner's own checkpoints (``learner.pt``), the node's counters
                               (``node_state.json``) and every published update (``updates/v<version>.bin``)
    base_checkpoint    string  BC checkpoint to start from when checkpoint_dir holds no learner checkpoint yet
    transition_bag     string  rosbag2 (dir / .mcap / .db3) whose /swfp/transition messages pre-fill the replay
                               buffer at start (only on a fresh start: a resumed learner already has them)
    device             string  auto | cpu | cuda[:N]
    checkpoint_every   int     learner updates (``update()`` calls that trained) between periodic checkpoints; a
                               checkpoint is also written before every accepted block is published and at shutdown
    update_period      double  s the worker sleeps when there is nothing new to train on
    status_period      double  s between /swfp/status diagnostics
    queue_depth        int     depth of the /swfp/transition subscription (reliable)
    max_pending        int     transitions buffered between the executor and the worker (oldest dropped beyond)
    update_history     int     /swfp/policy_update history kept for late joiners (reliable + transient local)
    swfp.<field>...    SwfpConfig overrides for a fresh learner (e.g. swfp.warmup_steps, swfp.block.train_steps)

Topics: sub ``/swfp/transition`` (Float64MultiArray, TRANSITION layout), pub ``/swfp/policy_update``
(UInt8MultiArray), pub ``/swfp/status`` (DiagnosticArray: replay size, counters, version, last update time).
"""
from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from swfp_ros.ros import messages

TOPIC_TRANSITION = '/swfp/transition'
TOPIC_UPDATE = '/swfp/policy_update'
TOPIC_STATUS = '/swfp/status'
CHECKPOINT_NAME = 'learner.pt'
STATE_NAME = 'node_state.json'


def transition_qos(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def update_qos(depth: int) -> QoSProfile:
    """Reliable + transient local: a policy node that joins late receives every kept update, in order."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- the algorithm side (swfp_ros.algo), kept in one place ---------------------------------------------------------
def _swfp_config(overrides: dict):
    from swfp_ros.algo.config import SwfpConfig
    d = SwfpConfig().to_dict()
    for dotted, value in overrides.items():
        node = d
        *head, last = dotted.split('.')
        for k in head:
            node = node[k]
        node[last] = value
    return SwfpConfig.from_dict(d)


def _flat_defaults() -> dict[str, Any]:
    from swfp_ros.algo.config import SwfpConfig

    out = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f'{prefix}{k}.', v)
            elif isinstance(v, (bool, int, float, str)):
                out[f'{prefix}{k}'] = v
    walk('', SwfpConfig().to_dict())
    return out


def _algo():
    """The algorithm's learner API: ``load_learner(path, device=)``, ``Learner.from_bc_checkpoint(path, cfg,
    device=)``, ``save_learner(learner, path)`` (atomic). ``SWFP_LEARNER_IMPL=module`` substitutes another module
    with the same three names (tests; alternative algorithms)."""
    import importlib
    impl = os.environ.get('SWFP_LEARNER_IMPL')
    if impl:
        return importlib.import_module(impl)
    from types import SimpleNamespace
    from swfp_ros.algo import checkpoint as algo_checkpoint
    from swfp_ros.algo import learner as algo_learner
    return SimpleNamespace(load_learner=algo_learner.load_learner, Learner=algo_learner.Learner,
                           save_learner=algo_checkpoint.save_learner)


def load_or_create_learner(checkpoint: Path, base_checkpoint: str, overrides: dict, device: str):
    """(learner, resumed): the learner's own checkpoint if present, else a fresh one on the BC checkpoint."""
    algo = _algo()
    if checkpoint.is_file():
        return algo.load_learner(checkpoint, device=device), True
    if not base_checkpoint:
        raise RuntimeError(f'no learner checkpoint in {checkpoint.parent} and no base_checkpoint given: '
                           f'the learner needs a BC checkpoint to start from')
    cfg = _swfp_config(overrides)
    return algo.Learner.from_bc_checkpoint(base_checkpoint, cfg, device=device), False


def save_learner(learner, path: Path) -> None:
    _algo().save_learner(learner, path)


def learner_stats(learner) -> dict[str, Any]:
    out = {}
    for key in ('replay_size', 'env_steps', 'version', 'num_blocks', 'critic_updates'):
        v = getattr(learner, key, None)
        if callable(v):
            v = v()
        if v is not None:
            out[key] = v
    if 'replay_size' not in out and hasattr(learner, '__len__'):
        out['replay_size'] = len(learner)
    return out


def read_transition_bag(path: str):
    """Yield Transitions of every /swfp/transition message in a rosbag2 (rosbags library, no ROS runtime)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    p = Path(path).expanduser()
    with AnyReader([p], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.topic == TOPIC_TRANSITION]
        if not conns:
            raise ValueError(f'{p}: no {TOPIC_TRANSITION} messages (topics: '
                             f'{sorted({c.topic for c in reader.connections})})')
        for conn, _, raw in reader.messages(connections=conns):
            yield messages.transition_from_msg(reader.deserialize(raw, conn.msgtype))


def stack(transitions: list) -> tuple:
    return (np.stack([t.obs for t in transitions]), np.stack([t.action for t in transitions]),
            np.array([t.reward for t in transitions]), np.stack([t.next_obs for t in transitions]),
            np.array([t.terminated for t in transitions]), np.array([t.n_steps for t in transitions]))


class LearnerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('learner_node', **kwargs)
        d = self.declare_parameter
        d('checkpoint_dir', 'swfp_checkpoints/learner')
        d('base_checkpoint', '')
        d('transition_bag', '')
        d('device', 'auto')
        d('checkpoint_every', 20)
        d('update_period', 0.02)
        d('status_period', 1.0)
        d('queue_depth', 1000)
        d('max_pending', 100000)
        d('update_history', 1000)
        self._swfp_keys = []
        for key, default in _flat_defaults().items():
            self.declare_parameter(f'swfp.{key}', default)
            self._swfp_keys.append(key)
        g = lambda name: self.get_parameter(name).value  # noqa: E731
        self.ckpt_dir = Path(g('checkpoint_dir')).expanduser().resolve()
        self.ckpt_path = self.ckpt_dir / CHECKPOINT_NAME
        self.updates_dir = self.ckpt_dir / 'updates'
        self.checkpoint_every = max(1, int(g('checkpoint_every')))
        self.update_period = float(g('update_period'))
        self.max_pending = int(g('max_pending'))

        # counters (persisted in node_state.json so that they continue across restarts)
        self.counters = {'received': 0, 'accepted': 0, 'rejected': 0, 'dropped': 0, 'updates': 0,
                         'blocks_published': 0, 'checkpoints': 0, 'bag_transitions': 0, 'restarts': 0}
        self.last_error = ''
        self.learner = None
        self.resumed = False
        self._pending: collections.deque = collections.deque()
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._learner_lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self._state = 'starting'

        self.update_pub = self.create_publisher(UInt8MultiArray, TOPIC_UPDATE, update_qos(g('update_history')))
        self.status_pub = self.create_publisher(DiagnosticArray, TOPIC_STATUS, 10)
        self._load(g)
        self.create_subscription(Float64MultiArray, TOPIC_TRANSITION, self._on_transition,
                                 transition_qos(g('queue_depth')))
        self.create_timer(float(g('status_period')), self._publish_status)
        self._worker = threading.Thread(target=self._work, name='swfp-learner', daemon=True)
        self._worker.start()

    # --- start-up -------------------------------------------------------------------------------------------------
    def _load(self, g) -> None:
        state_file = self.ckpt_dir / STATE_NAME
        overrides = {k: g(f'swfp.{k}') for k in self._swfp_keys}
        self.learner, self.resumed = load_or_create_learner(self.ckpt_path, str(g('base_checkpoint')), overrides,
                                                            str(g('device')))
        if self.resumed and state_file.is_file():
            saved = json.loads(state_file.read_text())
            self.counters.update({k: int(v) for k, v in saved.get('counters', {}).items() if k in self.counters})
            self.counters['restarts'] += 1
        self.obs_dim = int(getattr(self.learner, 'obs_dim'))
        self.act_dim = int(getattr(self.learner, 'act_dim'))
        if self.resumed:
            self._republish_updates()
            self.get_logger().info(f'resumed from {self.ckpt_path} ({learner_stats(self.learner)})')
        else:
            self.get_logger().info(f'fresh learner on {g("base_checkpoint")} (obs {self.obs_dim}, act {self.act_dim})')
            bag = str(g('transition_bag'))
            if bag:
                self._prefill(bag)
            self._checkpoint()
        self._stats = learner_stats(self.learner)
        self._state = 'running'

    def _prefill(self, bag: str) -> None:
        batch, n = [], 0
        for t in read_transition_bag(bag):
            if t.obs.size != self.obs_dim or t.action.size != self.act_dim:
                raise ValueError(f'{bag}: transition dims (obs {t.obs.size}, act {t.action.size}) do not match the '
                                 f'learner (obs {self.obs_dim}, act {self.act_dim})')
            batch.append(t)
            if len(batch) >= 4096:
                n += self._add(batch)
                batch = []
        if batch:
            n += self._add(batch)
        self.counters['bag_transitions'] += n
        self.get_logger().info(f'pre-filled replay with {n} transitions from {bag}')

    def _republish_updates(self) -> None:
        """After a restart the transient-local history is gone: publish the kept updates again, in order."""
        if not self.updates_dir.is_dir():
            return
        version = learner_stats(self.learner).get('version')
        files = sorted(self.updates_dir.glob('v*.bin'))
        for f in files:
            v = int(f.stem[1:])
            if version is not None and v > int(version):
                continue  # written, but the learner checkpoint that holds it was never completed
            self.update_pub.publish(messages.update_msg(f.read_bytes()))
        if files:
            self.get_logger().info(f'republished {len(files)} kept policy update(s)')

    # --- executor thread: receive ---------------------------------------------------------------------------------
    def _on_transition(self, msg: Float64MultiArray) -> None:
        self.counters['received'] += 1
        try:
            t = messages.transition_from_msg(msg, self.obs_dim, self.act_dim)
        except ValueError as e:
            self._reject(str(e))
            return
        with self._pending_lock:
            self._pending.append(t)
            if len(self._pending) > self.max_pending:
                self._pending.popleft()
                self.counters['dropped'] += 1

    def _reject(self, reason: str, n: int = 1) -> None:
        self.counters['rejected'] += n
        self.last_error = reason
        self.get_logger().warning(f'rejected transition ({self.counters["rejected"]} so far): {reason}',
                                  throttle_duration_sec=2.0)

    # --- worker thread: learn -------------------------------------------------------------------------------------
    def _add(self, transitions: list) -> int:
        """Store transitions; a batch the learner refuses is retried one by one so only bad ones are dropped."""
        try:
            self.learner.add_transitions(*stack(transitions))
            self.counters['accepted'] += len(transitions)
            return len(transitions)
        except ValueError as e:
            if len(transitions) == 1:
                self._reject(f'learner refused it: {e}')
                return 0
        return sum(self._add([t]) for t in transitions)

    def _drain(self) -> int:
        with self._pending_lock:
            batch = list(self._pending)
            self._pending.clear()
        return self._add(batch) if batch else 0

    def _work(self) -> None:
        since_ckpt = 0
        while not self._stop.is_set():
            try:
                with self._learner_lock:
                    added = self._drain()
                    trained = False
                    blocks = self.learner.update() if added or self._has_work() else []
                    if blocks is None:
                        blocks = []
                    trained = bool(added) or bool(blocks)
                    if trained:
                        self.counters['updates'] += 1
                        since_ckpt += 1
                    if blocks:
                        self._publish_blocks(blocks)
                        since_ckpt = 0
                    elif since_ckpt >= self.checkpoint_every:
                        self._checkpoint()
                        since_ckpt = 0
                    self._stats = learner_stats(self.learner)
            except Exception as e:  # noqa: BLE001 - keep learning; the error shows on /swfp/status
                self.last_error = f'{type(e).__name__}: {e}'
                self.get_logger().error(f'learner update failed: {self.last_error}\n{traceback.format_exc()}',
                                        throttle_duration_sec=5.0)
                self._stop.wait(1.0)
            if not trained:
                self._stop.wait(self.update_period)

    def _has_work(self) -> bool:
        fn = getattr(self.learner, 'has_pending_work', None)
        return bool(fn()) if callable(fn) else False

    def _publish_blocks(self, blocks: list) -> None:
        payloads = [(int(b.version), b.to_bytes()) for b in blocks]
        for version, payload in payloads:  # 1. keep them (for republishing after a restart)
            atomic_write_bytes(self.updates_dir / f'v{version:06d}.bin', payload)
        self._checkpoint()                 # 2. the learner state that contains them
        for version, payload in payloads:  # 3. only then publish
            self.update_pub.publish(messages.update_msg(payload))
            self.counters['blocks_published'] += 1
            self.get_logger().info(f'published policy update v{version} ({len(payload)} bytes)')

    def _checkpoint(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_learner(self.learner, self.ckpt_path)
        self.counters['checkpoints'] += 1
        atomic_write_bytes(self.ckpt_dir / STATE_NAME,
                           json.dumps({'counters': self.counters, 'time': time.time()}).encode())

    # --- diagnostics / shutdown -----------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        stats = dict(self._stats)
        with self._pending_lock:
            pending = len(self._pending)
        level = DiagnosticStatus.OK
        if self.last_error:
            level = DiagnosticStatus.WARN
        st = DiagnosticStatus(level=level, name=self.get_fully_qualified_name(), hardware_id='swfp_ros',
                              message=f'{self._state}; {self.last_error}' if self.last_error else self._state)
        values = {'state': self._state, 'resumed': str(self.resumed).lower(), 'pending': pending,
                  'checkpoint': str(self.ckpt_path), **self.counters, **stats}
        st.values = [KeyValue(key=str(k), value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[st])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)

    def close(self) -> None:
        """Stop the worker, store what is pending, write the final checkpoint (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._worker.join(timeout=60.0)
        with self._learner_lock:
            if self.learner is not None:
                try:
                    self._drain()
                    self._checkpoint()
                    self.get_logger().info(f'final checkpoint {self.ckpt_path} ({self.counters})')
                except Exception as e:  # noqa: BLE001
                    self.get_logger().error(f'final checkpoint failed: {e}')


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    rc = 0
    try:
        node = LearnerNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # noqa: BLE001
        print(f'learner_node: {type(e).__name__}: {e}', file=sys.stderr)
        traceback.print_exc()
        rc = 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == '__main__':
    sys.exit(main())
