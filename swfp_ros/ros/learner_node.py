"""Learner node: replay from ``/swfp/transition``, critic + one JKO block at a time, accepted blocks on
``/swfp/policy_update``, atomic checkpoints, resume after a restart.

The algorithm is :class:`swfp_ros.algo.learner.Learner`, used directly: a fresh start builds it on the policy of
``base_checkpoint`` (``load_policy``: a BC, or a fine-tuned policy whose blocks and version it continues, as the
policy nodes running that file do) with the ``swfp.*`` parameters as its :class:`SwfpConfig`; a
restart resumes it with ``load_learner`` from ``checkpoint_dir/learner.pt``; checkpoints are ``save_learner``
(atomic). A fresh start never happens over a previous run: when ``checkpoint_dir`` holds that run's node state or
journal but no learner checkpoint, or its learner checkpoint cannot be read, the node says so and exits non-zero.

Data path (nothing the learner took is lost, nothing is stored twice): the executor thread validates each transition
message (``swfp_ros.ros.messages`` and the learner's own rules) and appends it to the on-disk journal
``checkpoint_dir/inbox`` (``swfp_ros.ros.journal``): from then on it counts as received (``journaled``) and survives
the process being killed. One worker thread owns the learner: it reads the journal in order, at most ``max_batch``
transitions per round, and only once the critic has spent the updates owed for what it already stored -- so the
backlog waits on disk, not in memory, and the replay grows at the pace the learner trains. Each round calls
``update()`` with at most ``max_critic_updates`` critic updates, so no call runs a long catch-up. A checkpoint records
how far the journal was stored (the learner's transition count) and deletes the journal segments before that. After
a restart, the learner resumes from its checkpoint and reads the journal from there. Beyond ``max_backlog``
transitions not yet stored, new ones are refused (counted as dropped). An update is published only once a checkpoint
holds it; while checkpoints fail (a full disk) the worker retries the checkpoint before anything else, then publishes.

Stopping (SIGINT/SIGTERM, via ``executors.run_node``): ``update()`` is asked to stop between two critic updates and
between two train steps of a block or of a compaction (an unfinished block is due again, an unfinished compaction
follows the next block); then the final checkpoint is written (only the node's counters when the learner has not
changed since the last one). A final checkpoint that cannot be written (a full disk) makes the process exit with
status 1; the journal still holds every transition the last checkpoint lacks.

Authentication: with ``update_key_file``, every published update is signed (HMAC-SHA256, ``swfp_ros.algo.auth``) and
policy nodes holding the same key accept only signed updates.

Late joiners and restarts: at start (fresh or resumed) the node publishes ``learner.snapshot()`` -- the whole current
policy as a 'base' update at the current version -- then every accepted block (version + 1 each). The reliable,
transient-local history therefore holds the latest base followed by the blocks after it: when the learner publishes
a new base (a compaction), the publisher is re-created first, which drops the older entries. A policy node that
(re)joins replays base (accepted when its version >= the policy's) then the blocks, in order.

Parameters: ``PARAMS`` below and ``swfp.<field>`` (config/learner.yaml; launch / ``swfp up`` override
base_checkpoint, checkpoint_dir, transition_bag, device, log_dir and, when given, update_key_file). Each is declared with its description and range
(``ros2 param describe``); the pacing ones apply live (``ros2 param set``), the others are read at start.
``swfp.<field>`` is the SwfpConfig of a fresh learner (the names of swfp_ros/algo/config.py, e.g.
swfp.block.train_steps); a resumed learner keeps the config stored in its checkpoint. With ``log_dir``, TensorBoard
scalars (``swfp_ros.train.monitor``): critic TD loss and Q, each block's W2 bound, acceptance and λ, replay size and
the time spent per phase.

Topics: sub ``/swfp/transition`` (Float64MultiArray, TRANSITION layout), pub ``/swfp/policy_update``
(UInt8MultiArray), pub ``/swfp/learner_backlog`` (std_msgs/Int64 every ``backlog_period_s``, reliable, transient
local, depth 1: transitions journaled but not yet stored and trained on; lockstep actors can pace themselves on it),
pub ``/swfp/status`` (DiagnosticArray: journal, replay size, env steps, counters, version, ``idle`` = true when
everything received so far is stored and trained on).
"""
from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.duration import Duration
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray, Int64, UInt8MultiArray

from swfp_ros.algo import auth
from swfp_ros.algo.checkpoint import CheckpointError, carried_info, load_learner, load_policy, save_learner
from swfp_ros.algo.config import SwfpConfig
from swfp_ros.algo.learner import Learner, validate_transitions
from swfp_ros.files import write_text_atomic
from swfp_ros.ros import messages
from swfp_ros.ros.executors import run_node, steady_clock
from swfp_ros.ros.journal import JournalError, TransitionJournal
from swfp_ros.ros.params import ParamSpec, declare_params, set_period
from swfp_ros.ros.qos import BACKLOG_QOS, transition_qos, update_qos
from swfp_ros.train.monitor import ScalarLog

TOPIC_TRANSITION = '/swfp/transition'
TOPIC_UPDATE = '/swfp/policy_update'
TOPIC_STATUS = '/swfp/status'
TOPIC_BACKLOG = '/swfp/learner_backlog'
CHECKPOINT_NAME = 'learner.pt'
ACK_WAIT_S = 2.0   # s a compaction waits for the policies to acknowledge the blocks before it
STATE_NAME = 'node_state.json'
JOURNAL_DIR = 'inbox'
# At a stop request, how long the worker may take to reach its next stop check (one critic update or train step, or
# a checkpoint being written) before the node gives up on the final checkpoint.
STOP_WAIT_S = 10.0


class StartRefused(RuntimeError):
    """The node cannot start with these files or parameters; the message says why and what to do."""


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


PARAMS = [
    ParamSpec('checkpoint_dir', 'swfp_checkpoints/learner', "the learner's checkpoint (learner.pt), its counters "
              '(node_state.json) and the transition journal (inbox/); resumed from after a restart'),
    ParamSpec('base_checkpoint', '', 'policy checkpoint a fresh learner continues: a BC, or a fine-tuned one (its '
              'blocks and version kept); unused when checkpoint_dir holds learner.pt'),
    ParamSpec('transition_bag', '', 'rosbag2 whose /swfp/transition messages pre-fill the replay on a fresh start'),
    ParamSpec('update_key_file', '', "key shared with the policy nodes: every update is signed (HMAC-SHA256); '' = "
              'unsigned'),
    ParamSpec('log_dir', '', "TensorBoard event files (critic, blocks, replay, times); '' = none"),
    ParamSpec('device', 'auto', 'torch device of the learner: auto | cpu | cuda | cuda:N'),
    ParamSpec('torch_threads', 1, "torch intra-op threads (1: no OpenMP spin-waiting on shared cores)", low=1),
    ParamSpec('checkpoint_every', 20, 'rounds that stored transitions between periodic checkpoints (one is also '
              'written after each block trained, before an update is published, and at shutdown)', 'live', low=1),
    ParamSpec('update_period_s', 0.02, 's the worker waits for new transitions when it has nothing to train on',
              'live', low=0.001, high=10.0, former='update_period'),
    ParamSpec('status_period_s', 1.0, 's between /swfp/status diagnostics', 'live', low=0.01, high=3600.0,
              former='status_period'),
    ParamSpec('backlog_period_s', 0.05, 's between /swfp/learner_backlog messages', 'live', low=0.001, high=3600.0,
              former='backlog_period'),
    ParamSpec('queue_depth', 1000, 'depth of the /swfp/transition subscription (reliable)', low=1),
    ParamSpec('max_batch', 64, 'transitions stored per round (a lagging learner still trains one block per '
              'steps_per_block)', 'live', low=1),
    ParamSpec('max_critic_updates', 8, 'critic updates per round: bounds how long the worker runs between two '
              'checks of a stop request', 'live', low=1),
    ParamSpec('max_backlog', 1_000_000, 'transitions journaled but not yet stored beyond which new ones are refused '
              '(counted as dropped)', 'live', low=1),
    ParamSpec('update_history', 64, '/swfp/policy_update history depth (reliable, transient local); at least '
              'swfp.block.max_blocks + 1 is used', low=1),
]

# swfp.<field>: one line per SwfpConfig field (swfp_ros/algo/config.py, where the defaults and the reasons live); the
# base flow's fields (flow.*) are not parameters: a learner's base flow is the BC checkpoint's.
SWFP_HELP = {
    'block.hidden': 'JKO block: hidden units per layer',
    'block.layers': 'JKO block: hidden layers',
    'block.delta': 'trust-region radius: E||M(a)-a||^2 <= delta^2 in [-1, 1] action units',
    'block.alpha': 'entropy temperature (0 skips the Jacobian term)',
    'block.q_scale': 'Q term divisor: grad_norm (the pool\'s mean |dQ/da|) | none',
    'block.train_steps': 'gradient steps per block',
    'block.lr': 'block learning rate',
    'block.batch_size': 'states per block gradient step',
    'block.pool_size': 'replay states drawn per block',
    'block.holdout_frac': 'fraction of the pool (distinct states) held out for the acceptance test',
    'block.holdout_actions': 'actions sampled per held-out state',
    'block.dual_step': 'ascent step on log lambda per train step',
    'block.tolerance': 'accept if the held-out E||M(a)-a||^2 <= tolerance * delta^2',
    'block.state_p95': '... and its per-state 95th percentile <= tolerance * state_p95 * delta^2',
    'block.max_blocks': 'cascade length that triggers a compaction',
    'block.compaction_steps': 'flow-matching steps of a compaction',
    'block.compaction_lr': 'compaction learning rate',
    'block.compaction_tolerance': 'publish a compaction only within this * delta^2 of the cascade (paired noise)',
    'block.compaction_value_tolerance': '... and losing at most this * delta * E|dQ/da| of the critic\'s value',
    'critic.hidden': 'critic: hidden units per layer',
    'critic.layers': 'critic: hidden layers',
    'critic.gamma': 'discount per env step',
    'critic.n_step': 'decisions per TD target (n-step windows of one actor)',
    'critic.polyak': 'target network averaging rate',
    'critic.lr': 'critic learning rate',
    'critic.batch_size': 'transitions per critic update',
    'critic.soft_target': 'entropy term in the TD target (costs Jacobians when alpha > 0)',
    'critic.ensemble': 'Q heads: 2 = clipped double Q; more: targets from a random pair, blocks climb the min of all',
    'warmup_steps': 'env steps of critic-only training before the first block',
    'steps_per_block': 'env steps between blocks',
    'utd': 'critic updates per env step (a chunk of H actions is H steps)',
    'demo_ratio': 'fraction of each critic batch drawn from demonstrations, when given',
    'replay_capacity': 'replay buffer size (transitions)',
    'seed': 'seed of the learner\'s random streams',
}


def swfp_params() -> list[ParamSpec]:
    """swfp.<field> for every scalar SwfpConfig field but flow.* (the base flow is the BC checkpoint's); typed
    dynamically (YAML writes 1 for 1.0), checked by SwfpConfig itself at start."""
    return [ParamSpec(f'swfp.{key}', default, f'SwfpConfig.{key} of a fresh learner: {SWFP_HELP[key]}',
                      dynamic_typing=True) for key, default in flat_config_defaults().items()
            if not key.startswith('flow.')]


def load_or_create_learner(checkpoint: Path, base_checkpoint: str, cfg: SwfpConfig, device: str
                           ) -> tuple[Learner, bool]:
    """(learner, resumed): the learner's own checkpoint if present, else a fresh one on the BC checkpoint -- unless
    the checkpoint's folder holds a previous run's state without it (a fresh start would then write over that run)."""
    if checkpoint.is_file():
        return load_learner(str(checkpoint), device=device), True
    leftovers = [p.name for p in (checkpoint.parent / STATE_NAME, checkpoint.parent / JOURNAL_DIR) if p.exists()]
    if leftovers:
        raise StartRefused(f'{checkpoint.parent} holds a previous run ({", ".join(leftovers)}) but no '
                           f'{checkpoint.name}: refusing to start a fresh learner over it; restore {checkpoint.name} '
                           f'or use another checkpoint_dir')
    if not base_checkpoint:
        raise StartRefused(f'no learner checkpoint in {checkpoint.parent} and no base_checkpoint given: '
                           f'the learner needs a policy checkpoint (BC or fine-tuned) to start from')
    start = load_policy(base_checkpoint, device='cpu')
    return Learner.on_policy(start.cascade, start.normalizer, start.version, cfg, device=device), False


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
        values = declare_params(self, PARAMS + swfp_params(), on_live=self._apply_live)
        g = values.__getitem__
        torch.set_num_threads(g('torch_threads'))
        self.ckpt_dir = Path(g('checkpoint_dir')).expanduser().resolve()
        self.ckpt_path = self.ckpt_dir / CHECKPOINT_NAME
        self.checkpoint_every = g('checkpoint_every')
        self.update_period = g('update_period_s')
        self.max_batch = g('max_batch')
        self.max_critic_updates = g('max_critic_updates')
        self.max_backlog = g('max_backlog')

        # counters (persisted in node_state.json so that they continue across restarts)
        self.counters = {'received': 0, 'accepted': 0, 'rejected': 0, 'dropped': 0, 'updates': 0,
                         'blocks_published': 0, 'bases_published': 0, 'checkpoints': 0, 'bag_transitions': 0,
                         'restarts': 0}
        self.last_error = ''
        self.learner: Learner | None = None
        self.resumed = False
        self._wake = threading.Event()          # set by the executor when transitions arrive
        self._stop = threading.Event()
        self._learner_lock = threading.Lock()   # the worker's round, or the final checkpoint
        self._ckpt_lock = threading.Lock()      # one checkpoint at a time; none after the final one
        self._final = False
        self._stats: dict[str, Any] = {}
        self._state = 'starting'
        self._phase = 'idle'                    # what the worker is doing: idle | critic | block | checkpoint
        self._idle = False
        self._unpublished: list = []            # updates trained but not yet out: their checkpoint failed

        cfg = swfp_config({k: g(f'swfp.{k}') for k in SWFP_HELP})
        self._scalars = ScalarLog(g('log_dir'))     # flushed with every checkpoint
        try:
            key_file = str(g('update_key_file'))
            self._key = auth.load_key(key_file) if key_file else None
            self._load(g, cfg)
        except (CheckpointError, StartRefused, JournalError, auth.KeyFileError, ValueError, OSError) as e:
            self.get_logger().fatal(f'cannot start: {e}')
            raise SystemExit(1) from None
        self._update_depth = max(int(g('update_history')), self.learner.cfg.block.max_blocks + 1)
        self.update_pub = self.create_publisher(UInt8MultiArray, TOPIC_UPDATE, update_qos(self._update_depth))
        self.status_pub = self.create_publisher(DiagnosticArray, TOPIC_STATUS, 10)
        self.backlog_pub = self.create_publisher(Int64, TOPIC_BACKLOG, BACKLOG_QOS)
        self._publish_base(self.learner.snapshot(), recreate=False)   # late joiners / restarted actors catch up
        self.create_subscription(Float64MultiArray, TOPIC_TRANSITION, self._on_transition,
                                 transition_qos(g('queue_depth')))
        self._live_timers = {
            'status_period_s': self.create_timer(g('status_period_s'), self._publish_status, clock=steady_clock()),
            'backlog_period_s': self.create_timer(g('backlog_period_s'), self._publish_backlog, clock=steady_clock())}
        self._worker = threading.Thread(target=self._work, name='swfp-learner', daemon=True)
        self._worker.start()

    def _apply_live(self, changes: dict[str, Any]) -> str:
        """The on-set callback's live part (executor thread): pacing values the worker reads each round."""
        for name, value in changes.items():
            if name in self._live_timers:
                set_period(self._live_timers[name], value)
            elif name == 'update_period_s':
                self.update_period = value
            else:
                setattr(self, name, value)      # checkpoint_every, max_batch, max_critic_updates, max_backlog
        self.get_logger().info(f'parameters set: {changes}')
        return ''

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
        self._max_steps = self.learner.cfg.flow.chunk
        # the task, labels and provenance of the BC checkpoint, carried on by every checkpoint of this learner
        self._carried = carried_info(str(self.ckpt_path) if self.resumed else str(g('base_checkpoint')))
        if self.resumed:
            self.get_logger().info(f'resumed from {self.ckpt_path} ({learner_stats(self.learner)})')
        else:
            self.get_logger().info(f'fresh learner on {g("base_checkpoint")} (obs {self.obs_dim}, act {self.act_dim}, '
                                   f'warmup {cfg.warmup_steps}, steps_per_block {cfg.steps_per_block}, device '
                                   f'{self.learner.device})')
            bag = str(g('transition_bag'))
            if bag:
                self._prefill(bag)
        # Record k of the journal is the learner's transition first_transition + k (a journal created now starts at
        # the learner's count; one that exists keeps its own).
        self.journal = TransitionJournal(self.ckpt_dir / JOURNAL_DIR, messages.transition_size(self.obs_dim,
                                                                                               self.act_dim),
                                         self.obs_dim, self.act_dim, first_transition=self.learner.counters.transitions)
        self._stored = self.learner.counters.transitions - self.journal.first_transition
        if not 0 <= self._stored <= self.journal.written:
            raise StartRefused(f'{self.ckpt_path} holds {self.learner.counters.transitions} transitions, but its '
                               f'journal {self.journal.dir} covers {self.journal.first_transition}..'
                               f'{self.journal.first_transition + self.journal.written}: not the same run')
        if self.journal.torn_bytes:
            self.get_logger().warning(f'journal: cut off {self.journal.torn_bytes} bytes of a record torn by a kill')
        if self.resumed and self._stored < self.journal.written:
            self.get_logger().info(f'journal: {self.journal.written - self._stored} transitions received after the '
                                   f'checkpoint will be stored')
        if not self.resumed:
            self._checkpoint()
        self._ckpt_mark = self._mark()
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
                self.learner.add_transitions(**stack(batch))
                n, batch = n + len(batch), []
        if batch:
            self.learner.add_transitions(**stack(batch))
            n += len(batch)
        self.counters['bag_transitions'] += n
        self.get_logger().info(f'pre-filled replay with {n} transitions from {bag}')

    # --- executor thread: receive into the journal ----------------------------------------------------------------
    def _on_transition(self, msg: Float64MultiArray) -> None:
        self.counters['received'] += 1
        try:
            t = messages.transition_from_msg(msg, self.obs_dim, self.act_dim)
            validate_transitions(t.obs, t.action, t.reward, t.next_obs, t.terminated, t.n_steps, self.obs_dim,
                                 self.act_dim, self._max_steps)    # what the learner would refuse, refused here
        except ValueError as e:
            self._reject(str(e))
            return
        if self.journal.written - self._stored >= self.max_backlog:
            self.counters['dropped'] += 1
            self.get_logger().warning(f'backlog of {self.max_backlog} transitions not yet stored: dropping new ones '
                                      f'({self.counters["dropped"]} so far)', throttle_duration_sec=5.0)
            return
        try:
            self.journal.append(messages.pack_transition(t))
        except OSError as e:
            self.counters['dropped'] += 1
            self.last_error = f'journal write failed: {e}'
            self.get_logger().error(self.last_error, throttle_duration_sec=5.0)
            return
        self._wake.set()

    def _reject(self, reason: str, n: int = 1) -> None:
        self.counters['rejected'] += n
        self.last_error = reason
        self.get_logger().warning(f'rejected transition ({self.counters["rejected"]} so far): {reason}',
                                  throttle_duration_sec=2.0)

    # --- worker thread: learn -------------------------------------------------------------------------------------
    def _ingest(self) -> int:
        """Store the next journal records (at most ``max_batch``) into the learner, in order."""
        records = self.journal.read(self._stored, self.max_batch)
        if not len(records):
            return 0
        batch = [messages.unpack_transition(r, self.obs_dim, self.act_dim) for r in records]
        try:
            self.learner.add_transitions(**stack(batch))
        except ValueError as e:   # validated on arrival with the learner's own rules: a bug, not bad data
            raise RuntimeError(f'journal records {self._stored}..{self._stored + len(batch)}: the learner refused '
                               f'them ({e}); they stay in the journal') from e
        self._stored += len(batch)
        self.counters['accepted'] += len(batch)
        return len(batch)

    def _round(self) -> bool:
        """One bounded round: store a batch once the critic has spent what it owes for the previous one (the
        in-process cadence: a batch, its critic updates, then a block if one is due -- storing more before would
        keep the learner owing and the block waiting for as long as the actors are faster), spend at most
        ``max_critic_updates`` of the owed critic updates, train a block if one is due. Returns whether anything
        was done."""
        c = self.learner.counters
        if self._unpublished:   # a checkpoint failed before they went out (a full disk): nothing else until they do
            self._publish_updates()
            return True
        stored = self._ingest() if c.owed_updates < 1 or self._starved else 0
        if stored:
            self._stats = learner_stats(self.learner)   # a block can take minutes: status shows what it trains on
        # a block can be due without new data: after a restart that stopped it
        due = (c.env_steps >= c.next_block_at and int(c.owed_updates) <= self.max_critic_updates
               and len(self.learner.replay) >= 2)
        if not stored and not due and (c.owed_updates < 1 or self._starved):
            return False
        self._phase = 'block' if due else 'critic'
        critic_before, blocks_before, tick = c.critic_updates, c.blocks_trained, time.perf_counter()
        updates = self.learner.update(max_critic_updates=self.max_critic_updates, should_stop=self._stop.is_set)
        self._log_scalars(c.critic_updates - critic_before, c.blocks_trained > blocks_before,
                          time.perf_counter() - tick)
        # the critic cannot train yet (replay smaller than a batch): keep storing instead of waiting for it
        self._starved = c.critic_updates == critic_before and c.owed_updates >= 1
        self._stats = learner_stats(self.learner)   # before publishing: status never lags
        self.counters['updates'] += 1
        self._since_ckpt += bool(stored)
        if updates:
            self._unpublished = updates
            self._publish_updates()
        elif self._since_ckpt >= self.checkpoint_every or c.blocks_trained > blocks_before:
            self._checkpoint()      # a rejected block too: a restart must not train it again
        self._stats = learner_stats(self.learner)
        return True

    def _log_scalars(self, critic_updates: int, block: bool, elapsed: float) -> None:
        """One round's scalars; its time is the block's when it trained one (critic updates before it included)."""
        step = self.learner.counters.env_steps
        if critic_updates:
            self._scalars.critic(self.learner.critic_metrics, step)
        if block:
            self._scalars.block(self.learner.reports[-1], step)
            self._scalars.scalars('time', {'block_s': elapsed}, step)
        elif critic_updates:
            self._scalars.scalars('time', {'critic_ms_per_update': 1e3 * elapsed / critic_updates}, step)
        self._scalars.scalars('learner', {'replay_size': len(self.learner.replay),
                                          'blocks_accepted': self.learner.counters.blocks_accepted}, step)

    def _work(self) -> None:
        self._since_ckpt, self._starved = 0, False
        while not self._stop.is_set():
            progressed = False
            try:
                with self._learner_lock:
                    progressed = self._round()
            except Exception as e:  # noqa: BLE001 - keep learning; the error shows on /swfp/status
                if not self.context.ok():
                    return                          # shutting down: the final checkpoint is close()'s
                self.last_error = f'{type(e).__name__}: {e}'
                self.get_logger().error(f'learner update failed: {self.last_error}\n{traceback.format_exc()}',
                                        throttle_duration_sec=5.0)
                self._stop.wait(1.0)
            self._phase = 'idle'
            if not progressed:
                self._idle = True                   # everything received so far is stored and trained on
                self._wake.wait(self.update_period)
                self._wake.clear()
                self._idle = False

    def _publish_updates(self) -> None:
        """Checkpoint the learner state that contains the unpublished updates, then publish them in order (never an
        update that no checkpoint holds: a learner restarted from an older one would publish a different policy at
        that version). While the checkpoint fails they stay unpublished and the worker tries again: dropped, the
        policies would refuse every later block as out of order."""
        if not self._checkpoint():
            return
        updates, self._unpublished = self._unpublished, []
        for u in updates:
            if u.kind == 'base':
                self._publish_base(u, recreate=True)
            else:
                payload = self._signed(u.to_bytes())
                self.update_pub.publish(messages.update_msg(payload))
                self.counters['blocks_published'] += 1
                self.get_logger().info(f'published policy update v{u.version} (block, {len(payload)} bytes)')

    def _signed(self, payload: bytes) -> bytes:
        return auth.sign(payload, self._key) if self._key is not None else payload

    def _publish_base(self, update, recreate: bool) -> None:
        """A base update restarts the history: a fresh publisher (older entries dropped), then the base. The old
        publisher first gets up to ``ACK_WAIT_S`` for the policies to acknowledge its last blocks: destroyed with
        blocks still in flight, a running policy would miss them (harmless -- the base holds them -- but its update
        stream would skip versions)."""
        if recreate:
            self.update_pub.wait_for_all_acked(Duration(seconds=ACK_WAIT_S))
            self.destroy_publisher(self.update_pub)
            self.update_pub = self.create_publisher(UInt8MultiArray, TOPIC_UPDATE, update_qos(self._update_depth))
        payload = self._signed(update.to_bytes())
        self.update_pub.publish(messages.update_msg(payload))
        self.counters['bases_published'] += 1
        self.get_logger().info(f'published policy update v{update.version} (base, {len(payload)} bytes)')

    def _mark(self) -> tuple:
        """What a checkpoint would change: stored transitions, critic updates, version."""
        c = self.learner.counters
        return self._stored, c.critic_updates, c.version, c.blocks_trained

    def _checkpoint(self) -> bool:
        """Save the learner, the node's counters, then drop the journal segments it covers. False after the final
        checkpoint (a worker still busy at shutdown must not write over it)."""
        with self._ckpt_lock:
            if self._final:
                return False
            phase, self._phase = self._phase, 'checkpoint'
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.journal.sync()
            save_learner(str(self.ckpt_path), self.learner, extra=self._carried)
            self._scalars.flush()
            self.counters['checkpoints'] += 1
            self._write_node_state()
            self.journal.prune(self._stored)
            self._ckpt_mark, self._since_ckpt, self._phase = self._mark(), 0, phase
            return True

    def _write_node_state(self) -> None:
        write_text_atomic(self.ckpt_dir / STATE_NAME, json.dumps({'counters': self.counters, 'time': time.time()}))

    # --- diagnostics / shutdown -----------------------------------------------------------------------------------
    def _backlog(self) -> int:
        return self.journal.written - self._stored

    def _publish_backlog(self) -> None:
        self.backlog_pub.publish(Int64(data=self._backlog()))

    def _publish_status(self) -> None:
        stats = dict(self._stats)
        backlog = self._backlog()
        idle = self._idle and backlog == 0
        values = {'state': self._state, 'resumed': str(self.resumed).lower(), 'pending': backlog,
                  'idle': str(idle).lower(), 'phase': self._phase, 'signed': str(self._key is not None).lower(),
                  'unpublished': len(self._unpublished),
                  'journaled': self.journal.first_transition + self.journal.written,
                  'journal_mb': f'{self.journal.disk_bytes() / 2 ** 20:.2f}',
                  'checkpoint': str(self.ckpt_path), **self.counters, **stats}
        self.status_pub.publish(messages.status_msg(
            self.get_fully_qualified_name(), 'swfp_ros',
            f'{self._state}; {self.last_error}' if self.last_error else self._state, values,
            warn=bool(self.last_error), stamp=self.get_clock().now().to_msg()))

    def close(self) -> None:
        """Stop the worker (it stops at its next check; STOP_WAIT_S at most), write the final checkpoint (idempotent).
        Raises when the final checkpoint was not written (the process then exits with status 1): the checkpoint as
        last written stands, and the journal keeps every transition received after it."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=STOP_WAIT_S)
        failure = None
        if self._learner_lock.acquire(blocking=False):
            try:
                if self._mark() == self._ckpt_mark:    # the learner as saved; the counters may have moved on
                    self._write_node_state()
                    self.get_logger().info(f'final checkpoint: {self.ckpt_path} is up to date ({self.counters})')
                elif self._checkpoint():
                    self.get_logger().info(f'final checkpoint {self.ckpt_path} ({self.counters})')
            except Exception as e:  # noqa: BLE001 - the journal and the scalars still close
                failure = f'{type(e).__name__}: {e}'
            finally:
                self._learner_lock.release()
        else:
            failure = f'the worker did not stop within {STOP_WAIT_S} s ({self._phase})'
        with self._ckpt_lock:                 # waits for a checkpoint in progress; none starts after this
            self._final = True
        not_saved = self.journal.written - self._ckpt_mark[0]     # the checkpoint's mark starts with _stored
        self.journal.close()
        self._scalars.close()
        if failure:
            raise RuntimeError(f'final checkpoint not written: {failure}; {self.ckpt_path} as last written stands, '
                               f'the {not_saved} transitions received after it are in the journal')


def main(args=None) -> int:
    return run_node('learner_node', LearnerNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
