"""Learner node: replay from ``/swfp/transition``, critic + one JKO block at a time, accepted blocks on
``/swfp/policy_update``, atomic checkpoints, resume after a restart.

The algorithm is :class:`swfp_ros.algo.learner.Learner`, used directly: a fresh start builds it on the base flow and
normaliser of ``base_checkpoint`` (``load_policy``) with the ``swfp.*`` parameters as its :class:`SwfpConfig`; a
restart resumes it with ``load_learner`` from ``checkpoint_dir/learner.pt``; checkpoints are ``save_learner``
(atomic).

Threads: the executor thread only unpacks and validates transition messages (``swfp_ros.ros.messages``) into a
bounded in-memory queue; one worker thread owns the learner — it drains the queue into the replay buffer (each
message's ``actor_id`` is its n-step stream), calls ``update()``, checkpoints and publishes. Training therefore never starves the subscriptions, and the learner object is
touched by one thread only (plus the final checkpoint after the worker stopped).

Late joiners and restarts: at start (fresh or resumed) the node publishes ``learner.snapshot()`` — the whole current
policy as a 'base' update at the current version — then every accepted block (version + 1 each). The reliable,
transient-local history therefore holds the latest base followed by the blocks after it: when the learner publishes
a new base (a compaction), the publisher is re-created first, which drops the older entries. A policy node that
(re)joins replays base (accepted when its version >= the policy's) then the blocks, in order.

Parameters (config/learner.yaml; launch / ``swfp up`` override base_checkpoint, checkpoint_dir, transition_bag, device):
    checkpoint_dir     string  the learner's own checkpoint (``learner.pt``) and the node's counters
                               (``node_state.json``)
    base_checkpoint    string  BC checkpoint to start from when checkpoint_dir holds no learner checkpoint yet
    transition_bag     string  rosbag2 (dir / .mcap / .db3) whose /swfp/transition messages pre-fill the replay
                               buffer at start (only on a fresh start: a resumed learner already has them)
    device             string  auto | cpu | cuda[:N]
    torch_threads      int     torch.set_num_threads (intra-op threads; 1 is fastest when cores are shared: OpenMP
                               spin-waits make a critic update ~7x slower with 2 threads on 2 busy cores)
    checkpoint_every   int     learner updates (``update()`` calls that trained) between periodic checkpoints; a
                               checkpoint is also written before every accepted block is published and at shutdown
    update_period      double  s the worker waits for new transitions when there is nothing to train on
    status_period      double  s between /swfp/status diagnostics
    queue_depth        int     depth of the /swfp/transition subscription (reliable)
    max_pending        int     transitions buffered between the executor and the worker (oldest dropped beyond)
    backlog_period     double  s between /swfp/learner_backlog messages
    max_batch          int     transitions stored per ``update()`` call (a lagging learner still trains one block per
                               ``steps_per_block`` crossing, with the critic updates spent in between)
    update_history     int     /swfp/policy_update history depth (reliable + transient local); at least
                               swfp.block.max_blocks + 1 is used so that base + all its blocks fit
    swfp.<field>...    SwfpConfig for a fresh learner (same names as swfp_ros/algo/config.py, e.g. swfp.warmup_steps,
                       swfp.block.train_steps, swfp.critic.hidden); unset fields keep SwfpConfig's defaults. A resumed
                       learner keeps the config stored in its checkpoint.

Topics: sub ``/swfp/transition`` (Float64MultiArray, TRANSITION layout), pub ``/swfp/policy_update``
(UInt8MultiArray), pub ``/swfp/learner_backlog`` (std_msgs/Int64 every ``backlog_period`` s, reliable, transient
local, depth 1: transitions received but not yet trained on; lockstep actors can pace themselves on it), pub ``/swfp/status`` (DiagnosticArray: replay size, env steps, counters, version, ``idle`` = true
when everything received so far is stored and trained on).
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
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, Int64, UInt8MultiArray

from swfp_ros.algo.checkpoint import load_learner, load_policy, save_learner
from swfp_ros.algo.config import SwfpConfig
from swfp_ros.algo.learner import Learner
from swfp_ros.ros import messages
from swfp_ros.ros.executors import run_node, steady_clock

TOPIC_TRANSITION = '/swfp/transition'
TOPIC_UPDATE = '/swfp/policy_update'
TOPIC_STATUS = '/swfp/status'
TOPIC_BACKLOG = '/swfp/learner_backlog'
CHECKPOINT_NAME = 'learner.pt'
STATE_NAME = 'node_state.json'


def transition_qos(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def update_qos(depth: int) -> QoSProfile:
    """Reliable + transient local: a policy node that joins late receives the latest base and the blocks after it."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def backlog_qos() -> QoSProfile:
    """/swfp/learner_backlog: the latest value only; a late actor gets it at once."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
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


# --- the algorithm side (swfp_ros.algo) -----------------------------------------------------------------------------
def flat_config_defaults() -> dict[str, Any]:
    """SwfpConfig's scalar fields as dotted names (``block.train_steps``) -> default values."""
    out = {}

    def walk(prefix, d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f'{prefix}{k}.', v)
            elif isinstance(v, (bool, int, float, str)):
                out[f'{prefix}{k}'] = v
    walk('', SwfpConfig().to_dict())
    return out


def swfp_config(values: dict[str, Any]) -> SwfpConfig:
    """SwfpConfig from dotted names; each value is coerced to its default's type (YAML writes 1 for 1.0)."""
    defaults = flat_config_defaults()
    d = SwfpConfig().to_dict()
    for dotted, value in values.items():
        typ = type(defaults[dotted])
        if typ is bool and not isinstance(value, bool):
            raise ValueError(f'swfp.{dotted}: expected true/false, got {value!r}')
        node = d
        *head, last = dotted.split('.')
        for k in head:
            node = node[k]
        node[last] = typ(value)
    return SwfpConfig.from_dict(d)


def load_or_create_learner(checkpoint: Path, base_checkpoint: str, cfg: SwfpConfig, device: str
                           ) -> tuple[Learner, bool]:
    """(learner, resumed): the learner's own checkpoint if present, else a fresh one on the BC checkpoint."""
    if checkpoint.is_file():
        return load_learner(str(checkpoint), device=device), True
    if not base_checkpoint:
        raise RuntimeError(f'no learner checkpoint in {checkpoint.parent} and no base_checkpoint given: '
                           f'the learner needs a BC checkpoint to start from')
    bc = load_policy(base_checkpoint, device='cpu')
    return Learner(bc.cascade.base, bc.normalizer, cfg, device=device), False


def learner_stats(learner: Learner) -> dict[str, Any]:
    c = learner.counters
    return {'replay_size': len(learner.replay), 'env_steps': c.env_steps, 'transitions': c.transitions,
            'version': c.version, 'num_blocks': len(learner.policy.blocks), 'critic_updates': c.critic_updates,
            'blocks_trained': c.blocks_trained, 'blocks_accepted': c.blocks_accepted, 'compactions': c.compactions,
            'next_block_at': c.next_block_at}


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


def stack(transitions: list) -> dict[str, np.ndarray]:
    """Transition messages -> ``Learner.add_transitions`` arguments; each actor is its own n-step stream."""
    return {'obs': np.stack([t.obs for t in transitions]), 'action': np.stack([t.action for t in transitions]),
            'reward': np.array([t.reward for t in transitions]),
            'next_obs': np.stack([t.next_obs for t in transitions]),
            'terminated': np.array([t.terminated for t in transitions]),
            'n_steps': np.array([t.n_steps for t in transitions]), 'stream': np.array([t.actor_id for t in transitions])}


class LearnerNode(Node):
    def __init__(self, **kwargs):
        super().__init__('learner_node', **kwargs)
        d = self.declare_parameter
        d('checkpoint_dir', 'swfp_checkpoints/learner')
        d('base_checkpoint', '')
        d('transition_bag', '')
        d('device', 'auto')
        d('torch_threads', 1)
        d('checkpoint_every', 20)
        d('update_period', 0.02)
        d('status_period', 1.0)
        d('queue_depth', 1000)
        d('max_pending', 100000)
        d('max_batch', 64)
        d('backlog_period', 0.05)
        d('update_history', 64)
        defaults = flat_config_defaults()
        for key, default in defaults.items():   # dynamic typing: `swfp.block.delta: 1` in YAML is fine
            self.declare_parameter(f'swfp.{key}', default, ParameterDescriptor(dynamic_typing=True))
        g = lambda name: self.get_parameter(name).value  # noqa: E731
        torch.set_num_threads(max(1, int(g('torch_threads'))))
        self.ckpt_dir = Path(g('checkpoint_dir')).expanduser().resolve()
        self.ckpt_path = self.ckpt_dir / CHECKPOINT_NAME
        self.checkpoint_every = max(1, int(g('checkpoint_every')))
        self.update_period = float(g('update_period'))
        self.max_pending = int(g('max_pending'))
        self.max_batch = max(1, int(g('max_batch')))

        # counters (persisted in node_state.json so that they continue across restarts)
        self.counters = {'received': 0, 'accepted': 0, 'rejected': 0, 'dropped': 0, 'updates': 0,
                         'blocks_published': 0, 'bases_published': 0, 'checkpoints': 0, 'bag_transitions': 0,
                         'restarts': 0}
        self.last_error = ''
        self.learner: Learner | None = None
        self.resumed = False
        self._pending: collections.deque = collections.deque()
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()          # set by the executor when transitions arrive
        self._stop = threading.Event()
        self._learner_lock = threading.Lock()
        self._stats: dict[str, Any] = {}
        self._state = 'starting'
        self._kick = False                      # train once without new messages (after a bag pre-fill)
        self._idle = False

        cfg = swfp_config({k: g(f'swfp.{k}') for k in defaults})
        self._load(g, cfg)
        self._update_depth = max(int(g('update_history')), self.learner.cfg.block.max_blocks + 1)
        self.update_pub = self.create_publisher(UInt8MultiArray, TOPIC_UPDATE, update_qos(self._update_depth))
        self.status_pub = self.create_publisher(DiagnosticArray, TOPIC_STATUS, 10)
        self.backlog_pub = self.create_publisher(Int64, TOPIC_BACKLOG, backlog_qos())
        self._in_flight = 0
        self._publish_base(self.learner.snapshot(), recreate=False)   # late joiners / restarted actors catch up
        self.create_subscription(Float64MultiArray, TOPIC_TRANSITION, self._on_transition,
                                 transition_qos(g('queue_depth')))
        self.create_timer(float(g('status_period')), self._publish_status, clock=steady_clock())
        self.create_timer(float(g('backlog_period')), self._publish_backlog, clock=steady_clock())
        self._worker = threading.Thread(target=self._work, name='swfp-learner', daemon=True)
        self._worker.start()

    # --- start-up -------------------------------------------------------------------------------------------------
    def _load(self, g, cfg: SwfpConfig) -> None:
        state_file = self.ckpt_dir / STATE_NAME
        self.learner, self.resumed = load_or_create_learner(self.ckpt_path, str(g('base_checkpoint')), cfg,
                                                            str(g('device')))
        if self.resumed and state_file.is_file():
            saved = json.loads(state_file.read_text())
            self.counters.update({k: int(v) for k, v in saved.get('counters', {}).items() if k in self.counters})
            self.counters['restarts'] += 1
        self.obs_dim, self.act_dim = int(self.learner.obs_dim), int(self.learner.act_dim)
        if self.resumed:
            self.get_logger().info(f'resumed from {self.ckpt_path} ({learner_stats(self.learner)})')
        else:
            self.get_logger().info(f'fresh learner on {g("base_checkpoint")} (obs {self.obs_dim}, act {self.act_dim}, '
                                   f'warmup {cfg.warmup_steps}, steps_per_block {cfg.steps_per_block}, device '
                                   f'{self.learner.device})')
            bag = str(g('transition_bag'))
            if bag:
                self._prefill(bag)
                self._kick = True
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
        self._wake.set()

    def _reject(self, reason: str, n: int = 1) -> None:
        self.counters['rejected'] += n
        self.last_error = reason
        self.get_logger().warning(f'rejected transition ({self.counters["rejected"]} so far): {reason}',
                                  throttle_duration_sec=2.0)

    # --- worker thread: learn -------------------------------------------------------------------------------------
    def _add(self, transitions: list) -> int:
        """Store transitions; a batch the learner refuses is retried one by one so only bad ones are dropped."""
        try:
            self.learner.add_transitions(**stack(transitions))
            self.counters['accepted'] += len(transitions)
            return len(transitions)
        except ValueError as e:
            if len(transitions) == 1:
                self._reject(f'learner refused it: {e}')
                return 0
        return sum(self._add([t]) for t in transitions)

    def _drain(self) -> int:
        """Store up to ``max_batch`` pending transitions, oldest first. Small batches keep the in-process runner's
        cadence when the learner lags behind the actors: critic updates are spent as the data arrives, and a block is
        trained at every ``steps_per_block`` crossing (a large batch would cross several at once: one block)."""
        with self._pending_lock:
            n = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            self._in_flight = n                     # still counts as backlog until update() returns
            if not self._pending:
                self._wake.clear()
        return self._add(batch) if batch else 0

    def _work(self) -> None:
        since_ckpt = 0
        while not self._stop.is_set():
            trained = False
            try:
                with self._learner_lock:
                    if self._drain() or self._kick:
                        self._kick = False
                        updates = self.learner.update()
                        self._stats = learner_stats(self.learner)   # before publishing: status never lags
                        trained = True
                        self.counters['updates'] += 1
                        since_ckpt += 1
                        if updates:
                            self._publish_updates(updates)
                            since_ckpt = 0
                        elif since_ckpt >= self.checkpoint_every:
                            self._checkpoint()
                            since_ckpt = 0
                        self._stats = learner_stats(self.learner)
                    self._in_flight = 0
            except Exception as e:  # noqa: BLE001 - keep learning; the error shows on /swfp/status
                if not self.context.ok():
                    return                          # shutting down: the final checkpoint is close()'s
                self.last_error = f'{type(e).__name__}: {e}'
                self.get_logger().error(f'learner update failed: {self.last_error}\n{traceback.format_exc()}',
                                        throttle_duration_sec=5.0)
                self._stop.wait(1.0)
            if not trained:
                self._idle = True                   # everything received so far is stored and trained on
                self._wake.wait(self.update_period)
                self._idle = False

    def _publish_updates(self, updates: list) -> None:
        """Checkpoint the learner state that contains them, then publish them in order."""
        self._checkpoint()
        for u in updates:
            if u.kind == 'base':
                self._publish_base(u, recreate=True)
            else:
                payload = u.to_bytes()
                self.update_pub.publish(messages.update_msg(payload))
                self.counters['blocks_published'] += 1
                self.get_logger().info(f'published policy update v{u.version} (block, {len(payload)} bytes)')

    def _publish_base(self, update, recreate: bool) -> None:
        """A base update restarts the history: a fresh publisher (older entries dropped), then the base."""
        if recreate:
            self.destroy_publisher(self.update_pub)
            self.update_pub = self.create_publisher(UInt8MultiArray, TOPIC_UPDATE, update_qos(self._update_depth))
        payload = update.to_bytes()
        self.update_pub.publish(messages.update_msg(payload))
        self.counters['bases_published'] += 1
        self.get_logger().info(f'published policy update v{update.version} (base, {len(payload)} bytes)')

    def _checkpoint(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        save_learner(str(self.ckpt_path), self.learner)
        self.counters['checkpoints'] += 1
        atomic_write_bytes(self.ckpt_dir / STATE_NAME,
                           json.dumps({'counters': self.counters, 'time': time.time()}).encode())

    # --- diagnostics / shutdown -----------------------------------------------------------------------------------
    def _publish_backlog(self) -> None:
        with self._pending_lock:
            n = len(self._pending) + self._in_flight
        self.backlog_pub.publish(Int64(data=n))

    def _publish_status(self) -> None:
        stats = dict(self._stats)
        with self._pending_lock:
            pending = len(self._pending)
        idle = self._idle and pending == 0
        values = {'state': self._state, 'resumed': str(self.resumed).lower(), 'pending': pending,
                  'idle': str(idle).lower(),
                  'checkpoint': str(self.ckpt_path), **self.counters, **stats}
        self.status_pub.publish(messages.status_msg(
            self.get_fully_qualified_name(), 'swfp_ros',
            f'{self._state}; {self.last_error}' if self.last_error else self._state, values,
            warn=bool(self.last_error), stamp=self.get_clock().now().to_msg()))

    def close(self) -> None:
        """Stop the worker, store what is pending, write the final checkpoint (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=120.0)
        with self._learner_lock:
            if self.learner is not None:
                try:
                    while self._drain():
                        pass
                    self._checkpoint()
                    self.get_logger().info(f'final checkpoint {self.ckpt_path} ({self.counters})')
                except Exception as e:  # noqa: BLE001
                    self.get_logger().error(f'final checkpoint failed: {e}')


def main(args=None) -> int:
    return run_node('learner_node', LearnerNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
