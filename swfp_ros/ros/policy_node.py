"""Policy node (lifecycle): runs the flow policy + block cascade and commands the arm, with safety always on.

Lifecycle: ``configure`` loads the checkpoint, warms inference up and creates the topics; ``activate`` starts
commanding; ``deactivate`` sends one hold (the measured position) and stops commanding; ``cleanup`` drops the policy.
With ``autostart: true`` (the default: pip-only machines have no lifecycle manager) the node configures and activates
itself at start-up; otherwise drive it with ``ros2 lifecycle set /policy_node configure|activate``.

Threading: subscription callbacks only parse and enqueue; ONE worker thread owns the policy, the safety filter and the
transition assembly, so inference never blocks the executor and a block update is applied between two inferences
(right after a command went out, i.e. at the start of the slack before the next tick).

Topics (QoS chosen per use). The actor's own topics are relative names, so a node in namespace ``actor0`` talks to
``/actor0/joint_states`` etc. (without a namespace: ``/joint_states``); the learner's topics, the e-stop and the
status are absolute, shared by every actor.
    sub joint_states         sensor_msgs/JointState          sensor data (best effort): what drivers publish
    sub swfp/task            std_msgs/Float64MultiArray      reliable, depth 1, transient local (latest task state)
    sub swfp/reward          std_msgs/Float64MultiArray      reliable, depth 100
    sub /swfp/policy_update  std_msgs/UInt8MultiArray        reliable, transient local, depth 64 (the learner's
                                                             latest base + the blocks after it: late-joiner catch-up)
    sub /swfp/estop          std_msgs/Bool                   reliable, transient local, depth 1 (latched; stops all)
    sub /swfp/learner_backlog std_msgs/Int64                 reliable, transient local, depth 1 (lockstep pacing,
                                                             only when ``max_learner_backlog`` > 0)
    pub swfp/action          Float64MultiArray | JointTrajectory  reliable, depth 10 (``~/action_preview`` if dry_run)
    pub /swfp/transition     std_msgs/Float64MultiArray      reliable, depth 1000 (the learner must not miss data)
    pub /swfp/status         diagnostic_msgs/DiagnosticArray default
Modes
    lockstep  act once per new observation (and only after the reward of the previous action arrived): with the sim
              bridge in lockstep, training runs as fast as the two processes allow. With ``max_learner_backlog``
              > 0 the node also waits while the learner has more than that many transitions not yet trained on
              (``/swfp/learner_backlog``), so the data stays close to on-policy as in the in-process runner.
    realtime  act on a ``control_rate`` timer with the latest observation (a real arm).
Latency on /swfp/status: ``inference_ms_*`` (the cascade alone) and ``obs_to_action_ms_*``: from the moment the
worker could act (the observation's arrival, or the tick when the tick comes later) to the command's publication —
i.e. without the wait for the timer tick; the tick-aligned figure is what an outside observer measures.
Parameter ``torch_threads`` (default 1) sets torch's intra-op threads: with shared cores, OpenMP spin-waiting makes
more threads slower for these small networks.
Transitions (see ``messages`` for the packed layout): (obs, executed action in [-1, 1], reward summed over the steps
the action covered, next_obs, terminated, n_steps). Holds are never recorded (the action was not the policy's).
"""
from __future__ import annotations

import importlib
import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Int64, UInt8MultiArray
from trajectory_msgs.msg import JointTrajectory

from . import messages as M
from .executors import run_node, steady_clock
from .safety import SafetyFilter

ARM_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))

TASK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                      history=HistoryPolicy.KEEP_LAST)
REWARD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
ACTION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Deep and reliable: a learner that is slow to take data must not lose transitions.
TRANSITION_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Latched: a policy that (re)starts after the learner published gets the learner's latest base + blocks / e-stop.
UPDATE_QOS = QoSProfile(depth=64, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                        history=HistoryPolicy.KEEP_LAST)
BACKLOG_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)
ESTOP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                       history=HistoryPolicy.KEEP_LAST)


def _load_callable(spec: str):
    module, _, attr = spec.partition(':')
    return getattr(importlib.import_module(module), attr or 'load_policy')


@dataclass
class Obs:
    q: np.ndarray
    vector: np.ndarray
    stamp_ns: int
    rx: float                      # time.monotonic() when the joint state arrived


@dataclass
class Pending:
    """An action in flight, waiting for its rewards and next observation."""
    obs: np.ndarray
    chunk: np.ndarray              # (H, n) policy actions in [-1, 1]
    executed: list = field(default_factory=list)   # executed actions (policy units), one per step sent
    version: int = 0
    record: bool = True
    reward: float = 0.0
    n_rewards: int = 0
    terminated: bool = False
    done: bool = False


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__('policy_node', **kwargs)
        p = self.declare_parameter
        p('checkpoint', '')
        p('policy_loader', 'swfp_ros.algo.checkpoint:load_policy')   # module:function(checkpoint, device) -> runtime
        p('device', 'auto')
        p('deterministic', False)                                 # False while fine-tuning: exploration
        p('task', 'panda_reach')
        p('joint_names', list(ARM_JOINTS))
        p('joint_lower', [0.0])                                   # [0.0] (unset) = the sim task's limits
        p('joint_upper', [0.0])
        p('action_scale', 0.1)                                    # rad per step at |action| = 1
        p('max_delta', 0.1)                                       # rad per step, safety clamp
        p('stale_timeout_s', 0.5)
        p('mode', 'lockstep')
        p('control_rate', 20.0)
        p('command_type', 'float64_array')
        p('dry_run', False)
        p('actor_id', 0)
        p('autostart', True)
        p('lockstep_timeout_s', 2.0)
        p('warmup_iters', 5)
        p('status_period_s', 1.0)
        p('torch_threads', 1)
        p('max_learner_backlog', 0)                               # lockstep pacing; 0 = off
        self.runtime = None
        self.active = False
        self._worker = None
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.counters: Counter[str] = Counter()
        self.latency = deque(maxlen=2000)
        self.act_latency = deque(maxlen=2000)     # obs (or tick) -> command published, s
        self._warn_t: dict[str, float] = {}

    # --- lifecycle ----------------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        g = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            self.mode = g('mode')
            self.command_type = g('command_type')
            if self.mode not in ('lockstep', 'realtime'):
                raise ValueError(f"mode must be 'lockstep' or 'realtime', got {self.mode!r}")
            if self.command_type not in ('float64_array', 'trajectory'):
                raise ValueError(f"command_type must be 'float64_array' or 'trajectory', got {self.command_type!r}")
            self.joint_names = tuple(g('joint_names'))
            self.n = len(self.joint_names)
            self.action_scale = float(g('action_scale'))
            self.deterministic = bool(g('deterministic'))
            self.actor_id = int(g('actor_id'))
            self.dt = 1.0 / float(g('control_rate'))
            self.lockstep_timeout_s = float(g('lockstep_timeout_s'))
            self.max_backlog = int(g('max_learner_backlog'))
            lower, upper, self.task_labels = self._task_spec(g('task'), g('joint_lower'), g('joint_upper'))
            self.safety = SafetyFilter(lower, upper, g('max_delta'), g('stale_timeout_s'))
            if not g('checkpoint'):
                raise ValueError('parameter checkpoint is empty')
            import torch
            torch.set_num_threads(max(1, int(g('torch_threads'))))
            t0 = time.perf_counter()
            self.runtime = _load_callable(g('policy_loader'))(g('checkpoint'), g('device'))
            self.obs_dim = 2 * self.n + len(self.task_labels)
            self._warmup(int(g('warmup_iters')))
            self.get_logger().info(f'loaded {g("checkpoint")} on {getattr(self.runtime, "device", "?")} '
                                   f'(version {self._version()}, act_dim {self.act_dim}, chunk {self.horizon}) '
                                   f'in {time.perf_counter() - t0:.2f} s')
        except Exception as e:  # noqa: BLE001 - any failure aborts the transition with a reason
            self.get_logger().error(f'configure failed: {type(e).__name__}: {e}')
            self.runtime = None
            return TransitionCallbackReturn.FAILURE
        self._reset_state()
        self._make_topics(bool(g('dry_run')), float(g('status_period_s')))
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name='policy_worker', daemon=True)
        self._worker.start()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._events.put(('active', True))
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._events.put(('active', False))
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_topics()
        self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    # --- set-up helpers ---------------------------------------------------------------------------------------------
    def _task_spec(self, task, lower, upper):
        labels, sim_lower, sim_upper = None, None, None
        try:
            from swfp_ros.sim import TASKS
            cls = TASKS[task][1]
            labels = tuple(cls.task_labels)
            if len(lower) <= 1 or len(upper) <= 1:
                env = cls()
                sim_lower, sim_upper = env.joint_lower, env.joint_upper
                env.close()
        except (ImportError, KeyError) as e:
            raise ValueError(f'task {task!r} unknown to swfp_ros.sim ({e})') from e
        lower = np.asarray(lower if len(lower) > 1 else sim_lower, dtype=np.float64)
        upper = np.asarray(upper if len(upper) > 1 else sim_upper, dtype=np.float64)
        if lower.shape != (self.n,) or upper.shape != (self.n,):
            raise ValueError(f'joint limits need {self.n} values each')
        return lower, upper, labels

    def _warmup(self, iters: int):
        obs = np.zeros(self.obs_dim, dtype=np.float32)
        a = None
        for _ in range(max(1, iters)):
            a = np.asarray(self.runtime.act(obs, deterministic=self.deterministic), dtype=np.float64).ravel()
        if a.size % self.n:
            raise ValueError(f'policy act_dim {a.size} is not a multiple of {self.n} joints')
        self.act_dim, self.horizon = a.size, a.size // self.n

    def _version(self) -> int:
        return int(getattr(self.runtime, 'version', 0))

    def _make_topics(self, dry_run: bool, status_period: float):
        cmd_type = JointTrajectory if self.command_type == 'trajectory' else Float64MultiArray
        topic = '~/action_preview' if dry_run else 'swfp/action'
        self.action_pub = self.create_publisher(cmd_type, topic, ACTION_QOS)
        self.transition_pub = self.create_publisher(Float64MultiArray, '/swfp/transition', TRANSITION_QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, '/swfp/status', 10)
        # Callbacks only parse and enqueue; one exclusive group is enough and keeps their order per executor pass.
        cg = MutuallyExclusiveCallbackGroup()
        self._subs = [
            self.create_subscription(Float64MultiArray, 'swfp/reward', self._on_reward, REWARD_QOS, callback_group=cg),
            self.create_subscription(Float64MultiArray, 'swfp/task', self._on_task, TASK_QOS, callback_group=cg),
            self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos_profile_sensor_data,
                                     callback_group=cg),
            self.create_subscription(UInt8MultiArray, '/swfp/policy_update', self._on_update, UPDATE_QOS,
                                     callback_group=cg),
            self.create_subscription(Bool, '/swfp/estop', self._on_estop, ESTOP_QOS, callback_group=cg),
        ]
        if self.mode == 'lockstep' and self.max_backlog > 0:
            self._subs.append(self.create_subscription(Int64, '/swfp/learner_backlog',
                                                       lambda m: self._events.put(('backlog', int(m.data))),
                                                       BACKLOG_QOS, callback_group=cg))
        tcg = MutuallyExclusiveCallbackGroup()
        self._timers = [self.create_timer(status_period, self._publish_status, callback_group=tcg,
                                          clock=steady_clock())]
        if self.mode == 'realtime':
            self._timers.append(self.create_timer(self.dt, lambda: self._events.put(('tick', time.monotonic())),
                                                  callback_group=tcg, clock=steady_clock()))
        self.dry_run = dry_run
        if dry_run:
            self.get_logger().warning(f'dry_run: commands go to {self.action_pub.topic_name} only')

    def _destroy_topics(self):
        for s in getattr(self, '_subs', []):
            self.destroy_subscription(s)
        for t in getattr(self, '_timers', []):
            self.destroy_timer(t)
        for name in ('action_pub', 'transition_pub', 'status_pub'):
            if hasattr(self, name):
                self.destroy_publisher(getattr(self, name))
                delattr(self, name)
        self._subs, self._timers = [], []

    def _reset_state(self):
        self.task_vec = None
        self.js = None                      # latest valid (q, qd, stamp_ns, rx)
        self.obs_invalid = None             # reason string while the latest input was invalid
        self.pending: Pending | None = None
        self.obs_q: deque[Obs] = deque()
        self.rewards: deque[M.RewardInfo] = deque()
        self.last_stamp = None
        self.last_progress = time.monotonic()
        self._deferred_updates: deque[bytes] = deque()
        self._tick_t = 0.0
        self.backlog = 0
        self._paused: Obs | None = None     # lockstep pacing: the observation waiting for the learner

    def _stop_worker(self):
        self._stop.set()
        if self._worker is not None:
            self._worker.join(2.0)
            self._worker = None

    def _warn(self, key: str, text: str):
        now = time.monotonic()
        if now - self._warn_t.get(key, 0.0) > 1.0:
            self._warn_t[key] = now
            self.get_logger().warning(f'{text} ({self.counters[key]} so far)')

    # --- callbacks (executor threads): parse, count, enqueue ---------------------------------------------------------
    def _on_joint_state(self, msg):
        rx = time.monotonic()
        try:
            q, qd = M.arm_from_joint_state(msg, self.joint_names)
        except M.MessageError as e:
            self.counters['bad_joint_state'] += 1
            self._warn('bad_joint_state', f'invalid joint state: {e}; holding')
            self._events.put(('invalid', 'bad_joint_state'))
            return
        self._events.put(('js', (q, qd, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, rx)))

    def _on_task(self, msg):
        try:
            _, vec = M.task_from_msg(msg, self.task_labels)
        except M.MessageError as e:
            self.counters['bad_task'] += 1
            self._warn('bad_task', f'invalid task message: {e}; holding')
            self._events.put(('invalid', 'bad_task'))
            return
        self._events.put(('task', vec))

    def _on_reward(self, msg):
        try:
            self._events.put(('reward', M.reward_from_msg(msg)))
        except M.MessageError as e:
            self.counters['bad_reward'] += 1
            self._warn('bad_reward', f'invalid reward message: {e}')

    def _on_update(self, msg):
        try:
            self._events.put(('update', M.update_from_msg(msg)))
        except M.MessageError as e:
            self.counters['updates_rejected'] += 1
            self._warn('updates_rejected', f'invalid policy update message: {e}')

    def _on_estop(self, msg):
        self._events.put(('estop', bool(msg.data)))

    # --- worker thread -----------------------------------------------------------------------------------------------
    def _work(self):
        while not self._stop.is_set():
            try:
                kind, payload = self._events.get(timeout=0.1)
            except queue.Empty:
                self._check_lockstep_timeout()
                continue
            try:
                self._handle(kind, payload)
            except Exception as e:  # noqa: BLE001 - the control loop must survive a bad event
                if not self.context.ok():
                    return                                   # shutting down (Ctrl-C): nothing to publish to
                self.counters['worker_errors'] += 1
                self.get_logger().error(f'worker error on {kind}: {type(e).__name__}: {e}')

    def _handle(self, kind, payload):
        if kind == 'js':
            q, qd, stamp, rx = payload
            self.js = payload
            if self.obs_invalid == 'bad_joint_state':
                self.obs_invalid = None
            if self.task_vec is None:
                return
            obs = Obs(q, np.concatenate([q, qd, self.task_vec]), stamp, rx)
            if self.mode == 'lockstep':
                if stamp != self.last_stamp:
                    self.last_stamp = stamp
                    self.obs_q.append(obs)
                    self._lockstep_advance()
            elif self.pending is not None and self.pending.done:
                self._finish(obs)            # the terminal observation of a realtime episode
        elif kind == 'task':
            self.task_vec = payload
            if self.obs_invalid == 'bad_task':
                self.obs_invalid = None
        elif kind == 'reward':
            if self.mode == 'lockstep':
                self.rewards.append(payload)
                self._lockstep_advance()
            elif self.pending is not None:
                self._add_reward(self.pending, payload)
        elif kind == 'invalid':
            self.obs_invalid = payload
            if self.mode == 'realtime':
                self._discard_pending()
        elif kind == 'tick':
            if self._events.qsize() and any(k == 'tick' for k, _ in list(self._events.queue)):
                self.counters['ticks_coalesced'] += 1      # we are behind: skip to the newest tick
                return
            self._tick_t = payload
            self._realtime_tick()
        elif kind == 'update':
            self._apply_update(payload)
        elif kind == 'backlog':
            self.backlog = payload
            if self._paused is not None and not self._learner_behind():
                obs, self._paused = self._paused, None
                obs.rx = time.monotonic()   # lockstep: the sim waited for this action, the observation is current
                self.last_progress = time.monotonic()
                self._act(obs)
        elif kind == 'estop':
            self.safety.set_estop(payload)
            self.get_logger().warning('E-STOP engaged: holding' if payload else 'e-stop released')
            if payload and self.active:
                self._discard_pending()
                self._send_hold('estop')
        elif kind == 'active':
            self.active = payload
            self._paused = None
            if not payload:
                self._discard_pending()
                self._send_hold('deactivated')
            else:
                self.last_progress = time.monotonic()
                self.last_stamp = None               # act on the current (possibly heartbeat) observation
                self.obs_q.clear()
                self.rewards.clear()

    # --- acting --------------------------------------------------------------------------------------------------
    def _infer(self, obs: Obs) -> np.ndarray:
        t0 = time.perf_counter()
        a = self.runtime.act(obs.vector.astype(np.float32), deterministic=self.deterministic)
        self.latency.append(time.perf_counter() - t0)
        self.counters['inferences'] += 1
        a = np.asarray(a, dtype=np.float64).ravel()
        if a.size != self.act_dim:
            return np.full(self.act_dim, np.nan)     # the safety filter turns this into a counted hold
        return a.reshape(self.horizon, self.n)

    def _command(self, obs: Obs, pend: Pending) -> bool:
        """Send the next step(s) of ``pend`` from ``obs``; returns False when the safety filter held instead."""
        age = time.monotonic() - obs.rx
        if self.obs_invalid:
            self._send_hold(self.obs_invalid, obs.q)
            return False
        k = len(pend.executed)
        steps = pend.chunk[k:] if self.command_type == 'trajectory' else pend.chunk[k:k + 1]
        base, points = obs.q, []
        for a in steps:
            res = self.safety.filter(base + np.clip(a, -1, 1) * self.action_scale, base, age)
            if res.command is None or res.held:
                self._publish(res.command) if res.command is not None else None
                self.counters['holds'] += 1
                return False
            pend.executed.append(np.clip((res.command - base) / self.action_scale, -1.0, 1.0))
            points.append(res.command)
            base = res.command
        self._publish(np.array(points))
        # obs -> command: from when the worker could act on it (arrival, or the later tick in realtime)
        self.act_latency.append(time.monotonic() - max(obs.rx, self._tick_t if self.mode == 'realtime' else 0.0))
        return True

    def _publish(self, points: np.ndarray):
        points = np.atleast_2d(points)
        if self.command_type == 'trajectory':
            msg = M.trajectory_msg(self.joint_names, points, self.dt, stamp=self.get_clock().now().to_msg())
        else:
            msg = M.action_msg(points[0], self.joint_names)
        self.action_pub.publish(msg)
        self.counters['commands'] += 1
        self.last_command_t = time.monotonic()

    def _send_hold(self, reason: str, q=None):
        if q is None:
            if self.js is None:
                return
            q = self.js[0]
        res = self.safety.hold(q, reason)
        if res.command is not None and hasattr(self, 'action_pub'):
            self._publish(res.command)
            self.counters['holds'] += 1

    def _act(self, obs: Obs):
        """Start a new action (inference) from ``obs``; returns whether a policy action went out."""
        held = self.safety.estopped or self.obs_invalid or (time.monotonic() - obs.rx) > self.safety.stale_timeout_s
        chunk = np.zeros((self.horizon, self.n)) if held else self._infer(obs)
        self.pending = Pending(obs=obs.vector, chunk=chunk, version=self._version())
        ok = self._command(obs, self.pending)
        if not ok:
            self.pending.record = False
        while self._deferred_updates:                    # between two inferences, right after a command went out
            self._apply_update(self._deferred_updates.popleft(), now=True)
        return ok

    def _add_reward(self, pend: Pending, r: M.RewardInfo):
        pend.reward += r.reward
        pend.n_rewards += 1
        pend.terminated |= r.terminated
        pend.done |= r.done

    def _finish(self, next_obs: Obs):
        pend, self.pending = self.pending, None
        if pend is None or not pend.record or pend.n_rewards == 0 or not pend.executed:
            self.counters['transitions_dropped'] += int(pend is not None)
            return
        action = np.concatenate(pend.executed)
        if action.size != self.act_dim:                 # chunk cut short by an episode end: pad with zeros
            action = np.concatenate([action, np.zeros(self.act_dim - action.size)])
        t = M.Transition(obs=pend.obs, action=action, reward=pend.reward, next_obs=next_obs.vector,
                         terminated=pend.terminated, n_steps=pend.n_rewards, version=pend.version,
                         actor_id=self.actor_id)
        self.transition_pub.publish(M.transition_msg(t))
        self.counters['transitions'] += 1

    def _discard_pending(self):
        if self.pending is not None:
            self.pending.record = False

    def _lockstep_advance(self):
        """Pair each reward with the observation that follows it; act once per step (see module docstring)."""
        if not self.active:
            self.obs_q.clear()
            self.rewards.clear()
            return
        while True:
            if self.pending is None:
                if not self.obs_q:
                    return
                while len(self.obs_q) > 1:                  # only the newest observation is worth acting on
                    self.obs_q.popleft()
                self.rewards.clear()                       # rewards for actions we no longer track
                self._act_paced(self.obs_q.popleft())
                self.last_progress = time.monotonic()
                continue
            if not (self.rewards and self.obs_q):
                return
            r, obs = self.rewards.popleft(), self.obs_q.popleft()
            self.last_progress = time.monotonic()
            pend = self.pending
            self._add_reward(pend, r)
            if pend.done or pend.n_rewards >= self.horizon:
                self._finish(obs)
                if not pend.done:
                    self._act_paced(obs)
                # after an episode end, the next observation (the reset state) starts a new action
            elif self.command_type == 'float64_array':
                if not self._command(obs, pend):            # next step of the chunk
                    pend.record = False
                    self.pending = None
                    self._act(obs)

    def _learner_behind(self) -> bool:
        return self.max_backlog > 0 and self.backlog > self.max_backlog

    def _act_paced(self, obs: Obs):
        """Lockstep: act now, or (pacing on) keep the observation until the learner's backlog is small again. The
        sim bridge waits for the action meanwhile, so the actors never run far ahead of the learner."""
        if self._learner_behind():
            self._paused = obs
            self.counters['paced_waits'] += 1
            return
        self._act(obs)

    def _check_lockstep_timeout(self):
        if (self.mode == 'lockstep' and self.active and self.pending is not None
                and time.monotonic() - self.last_progress > self.lockstep_timeout_s):
            self.counters['lockstep_timeouts'] += 1
            self._warn('lockstep_timeouts', f'no reward/observation for {self.lockstep_timeout_s} s: restarting')
            self.pending = None
            self.obs_q.clear()
            self.rewards.clear()
            self.last_stamp = None                       # accept the bridge's heartbeat observation
            self.last_progress = time.monotonic()

    def _realtime_tick(self):
        if not self.active:
            return
        if self.js is None or self.task_vec is None:
            self.counters['no_observation'] += 1
            return
        q, qd, stamp, rx = self.js
        obs = Obs(q, np.concatenate([q, qd, self.task_vec]), stamp, rx)
        pend = self.pending
        if pend is not None and pend.n_rewards and not pend.done:
            self._finish(obs)
            pend = None
        elif pend is not None and pend.done:
            return                                       # waiting for the terminal observation
        if pend is None or len(pend.executed) >= self.horizon or self.command_type == 'trajectory' \
                or not pend.record:
            self._act(obs)
        elif not self._command(obs, pend):
            pend.record = False

    # --- updates and diagnostics -------------------------------------------------------------------------------------
    def _apply_update(self, data: bytes, now: bool = False):
        if self.mode == 'realtime' and not now and self.active:
            self._deferred_updates.append(data)       # apply right after the next command, not before it
            return
        t0 = time.perf_counter()
        try:
            self.runtime.apply_update(data)
        except ValueError as e:                      # UpdateRejected is a ValueError: keep the old policy
            self.counters['updates_rejected'] += 1
            self.get_logger().warning(f'policy update rejected ({self.counters["updates_rejected"]} so far): {e}; '
                                      f'keeping version {self._version()}')
            return
        self.counters['updates_applied'] += 1
        self.last_update_s = time.perf_counter() - t0
        self.get_logger().info(f'policy update applied: version {self._version()} ({self.last_update_s * 1e3:.1f} ms)')

    def _publish_status(self):
        lat = np.array(self.latency) * 1e3 if self.latency else np.zeros(1)
        o2a = np.array(self.act_latency) * 1e3 if self.act_latency else np.zeros(1)
        values = {'policy_version': self._version(), 'inference_ms_p50': f'{np.percentile(lat, 50):.3f}',
                  'inference_ms_p99': f'{np.percentile(lat, 99):.3f}',
                  'obs_to_action_ms_p50': f'{np.percentile(o2a, 50):.3f}',
                  'obs_to_action_ms_p99': f'{np.percentile(o2a, 99):.3f}', 'mode': self.mode,
                  'device': str(getattr(self.runtime, 'device', '')), 'estop': int(self.safety.estopped),
                  'dry_run': int(self.dry_run), **dict(self.counters),
                  **{f'safety_{k}': v for k, v in self.safety.counters.items()}}
        self.status_pub.publish(M.status_msg(self.get_fully_qualified_name(), str(self.actor_id),
                                             'active' if self.active else 'inactive', values,
                                             warn=self.safety.estopped, stamp=self.get_clock().now().to_msg()))

    def close(self):
        """Stop the inference worker (called once the node stops spinning)."""
        self._stop_worker()


def _autostart(node: PolicyNode) -> None:
    """Configure and activate at start-up: pip-only machines have no lifecycle manager."""
    if node.get_parameter('autostart').value:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal('autostart: configure failed')
            raise SystemExit(1)
        node.trigger_activate()


def main(args=None) -> int:
    return run_node('policy_node', PolicyNode, on_start=_autostart, args=args)


if __name__ == '__main__':
    sys.exit(main())
