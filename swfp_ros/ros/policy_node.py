"""Policy node (lifecycle): the ROS shell of the actor loop (:mod:`swfp_ros.actor`), with safety always on.

The node holds parameters, topics and timers; everything between an observation and a command — chunk execution,
the safety filter calls, transition assembly, pacing, the return to the home posture, the update swap — is
:class:`swfp_ros.actor.ActorLoop`, run on one worker thread (:class:`swfp_ros.actor.ActorWorker`). Subscription
callbacks only parse messages and post them as events, so inference never blocks the executor. In lockstep,
``act_on_executor`` runs the loop on the executor thread instead (the composed sim actor, :mod:`.sim_actor`).

Lifecycle: ``configure`` loads the checkpoint, warms inference up and creates the topics; ``activate`` starts
commanding; ``deactivate`` sends one hold (the measured position) and stops commanding; ``cleanup`` drops the policy.
With ``autostart: true`` (the default: pip-only machines have no lifecycle manager) the node configures and activates
itself at start-up and exits with status 3 when configuring fails; otherwise drive it with
``ros2 lifecycle set /policy_node configure|activate``.

Topics (QoS chosen per use). The actor's own topics are relative names, so a node in namespace ``arm1`` talks to
``/arm1/joint_states`` etc. (without a namespace: ``/joint_states``); the learner's topics, the e-stop and the
status are absolute, shared by every actor.
    sub joint_states         sensor_msgs/JointState          best effort (what drivers publish), depth 100
    sub swfp/task            std_msgs/Float64MultiArray      reliable, depth 1, transient local (latest task state)
    sub swfp/reward          std_msgs/Float64MultiArray      reliable, depth 100
    sub swfp/episode         std_msgs/Int32                  reliable, depth 100 (a new episode: homing ends;
                                                             published latched, received volatile)
    sub swfp/home            sensor_msgs/JointState          reliable, depth 1, transient local: the home posture the
                                                             task monitor brings the arm back to between episodes
    sub /swfp/policy_update  std_msgs/UInt8MultiArray        reliable, transient local, depth 64 (the learner's
                                                             latest base + the blocks after it: late-joiner catch-up)
    sub /swfp/estop          std_msgs/Bool                   reliable, transient local, depth 1 (latched; stops all;
                                                             released only by ``estop_release_sources``)
    sub /swfp/learner_backlog std_msgs/Int64                 reliable, transient local, depth 1 (lockstep pacing,
                                                             only when ``max_learner_backlog`` > 0)
    pub swfp/action          Float64MultiArray | JointTrajectory  reliable, depth 10 (``~/action_preview`` if dry_run);
                                                             remapped to the controller's topic on a real arm
    pub /swfp/transition     std_msgs/Float64MultiArray      reliable, depth 1000 (the learner must not miss data)
    pub /swfp/status         diagnostic_msgs/DiagnosticArray default
Parameters (config/policy.yaml): ``PARAMS`` below, each declared with its description and range (``ros2 param
describe``). Most are read at ``configure``: a set is accepted while the node is unconfigured and refused with the
reason once it is configured; ``status_period_s`` applies live; ``autostart`` is read at start. The behaviour they
select is described in :mod:`swfp_ros.actor.loop`.

Guards of the node itself (:mod:`swfp_ros.ros.guards`; the actor loop knows nothing of the ROS graph):
- ``update_key_file``: only policy updates signed with this key (the learner's) are applied. Without one, a policy
  that commands an arm (realtime mode, dry_run false) warns at start-up: anyone on the DDS domain can then publish
  an update that passes the update checks.
- ``max_update_bytes``: larger update messages are rejected before they are copied or parsed.
- Every rejected update is counted on /swfp/status by reason (``updates_rejected_<reason>``).
- Other publishers on this node's command topic (another node, or a second node of this name) are reported on
  /swfp/status at WARN level with their node names (``foreign_command_publishers``), polled every status period.
- /swfp/estop: anyone may engage it; a release (``false``) is applied only when its sender's node is one of
  ``estop_release_sources`` (fully qualified names); otherwise it is refused, logged and counted
  (``estop_release_refused``, the sender in ``estop_release_refused_from``) and the e-stop stays latched.
Latency on /swfp/status: ``inference_ms_*`` (the cascade alone); ``obs_to_action_ms_*``: from the moment the worker
could act (the observation's arrival, or the tick when the tick comes later) to the command's publication;
``chunk_start_delay_ms_*`` / ``chunk_step_delay_ms_*`` (realtime): tick -> publication for a chunk's first step and
for its later steps.
Liveness on /swfp/status: ``joint_states_received`` / ``updates_received`` count what DDS delivered (executor thread)
and ``joint_state_age_s`` is the time since the last joint state arrived; ``worker_event`` / ``worker_busy_s`` say what
the actor worker is doing (``acting_on``: ``worker``, or ``executor`` with ``act_on_executor``, where a stuck call stops
the status with it). Either silence past ``SILENCE_S`` turns the status to WARN (and is logged): no joint state
for that long — with the number of publishers the graph shows on the topic (some: the node hears nothing they send;
none: no driver, or the topic not remapped to the driver's) — or the worker in one event for that long, with where it
is stuck (it acts no more meanwhile).
"""
from __future__ import annotations

import importlib
import sys
import time
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Int32, Int64, UInt8MultiArray
from trajectory_msgs.msg import JointTrajectory

from swfp_ros.actor import ActorConfig, ActorLoop, ActorWorker
from swfp_ros.algo import auth
from swfp_ros.algo.serialize import MAX_UPDATE_BYTES

from . import guards
from . import messages as M
from .executors import EXIT_START_FAILED, run_node, steady_clock
from .params import ParamSpec, declare_params, set_period
from .qos import (ACTION_QOS, BACKLOG_QOS, ESTOP_QOS, HOME_QOS, JOINT_STATE_QOS, REWARD_QOS, TASK_QOS, TRANSITION_QOS,
                  UPDATE_QOS)
from .safety import SafetyFilter

ARM_JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))
ESTOP_TOPIC = '/swfp/estop'
RELEASE_CHECK_PERIOD_S = 0.1    # how often a release whose sender the graph cannot name yet is looked up again
# No joint state this long from a publisher the graph shows, or one worker event this long (update checks and inferences
# take ms to 0.3 s), is reported: a driver at 50 Hz or more and the sim bridge's heartbeat (0.5 s) are never this quiet.
SILENCE_S = 5.0


C = 'configure'
PARAMS = [
    ParamSpec('checkpoint', '', 'policy checkpoint (BC or fine-tuned) loaded at configure; required', C),
    ParamSpec('policy_loader', 'swfp_ros.algo.checkpoint:load_policy', 'module:function(checkpoint, device) -> '
              'the runtime that acts and applies updates', C),
    ParamSpec('device', 'auto', 'torch device: auto (cuda when available) | cpu | cuda | cuda:N', C),
    ParamSpec('deterministic', False, 'act with zero noise (evaluation); false while fine-tuning', C),
    ParamSpec('task', 'panda_reach', 'the task whose /swfp/task labels are expected (and joint limits when unset)',
              C),
    ParamSpec('joint_names', list(ARM_JOINTS), 'the arm joints, in the policy\'s order', C),
    ParamSpec('joint_lower', [0.0], 'rad, per joint; [0.0] = the simulated task\'s limits', C),
    ParamSpec('joint_upper', [0.0], 'rad, per joint; [0.0] = the simulated task\'s limits', C),
    ParamSpec('action_scale', 0.1, 'rad per control step at |action| = 1 (as in training)', C, low=1e-6, high=1.0),
    ParamSpec('max_delta', 0.1, 'rad per control step: safety clamp of a command around the measured position', C,
              low=1e-6, high=1.0),
    ParamSpec('stale_timeout_s', 0.5, 's: joint states older than this: no policy step; in realtime no command at all, '
              'not even a hold (the controller keeps its last target)', C, low=0.001, high=60.0),
    ParamSpec('stamp_age', True, "realtime: a joint state's age counts from its header stamp when that is older "
              "than its arrival (a state that waited in this node's queue is not fresh); needs the driver's clock to "
              "agree with this node's (one host, or synced); a zero stamp is judged by arrival", C),
    ParamSpec('mode', 'lockstep', 'lockstep (sim bridge in lockstep) | realtime (control_rate timer; a real arm)', C,
              choices=('lockstep', 'realtime')),
    ParamSpec('control_rate', 20.0, 'Hz: realtime tick, and the spacing of trajectory points', C, low=0.1,
              high=1000.0),
    ParamSpec('command_type', 'float64_array', 'float64_array (forward_command_controller) | trajectory '
              '(JointTrajectory)', C, choices=('float64_array', 'trajectory')),
    ParamSpec('dry_run', False, 'publish commands to ~/action_preview only', C),
    ParamSpec('actor_id', 0, "tags this actor's transitions (one n-step stream per actor)", C, low=0),
    ParamSpec('autostart', True, 'configure and activate at start-up (no lifecycle manager needed)'),
    ParamSpec('lockstep_timeout_s', 2.0, 's: lockstep restarts the step protocol when nothing arrives for this long',
              C, low=0.01, high=3600.0),
    ParamSpec('max_learner_backlog', 32, 'lockstep: wait while the learner has more untrained transitions than '
              'this; 0 = off', C, low=0),
    ParamSpec('backlog_timeout_s', 1.0, 's: a backlog report older than this means no learner (never wait for a '
              'dead one)', C, low=0.01, high=3600.0),
    ParamSpec('learner_wait_s', 5.0, "s: lockstep pacing waits this long after activation for the learner's first "
              'backlog report (steps taken before its subscription matched would lose their transitions); 0 = no '
              'wait', C, low=0.0, high=3600.0),
    ParamSpec('act_on_executor', False, 'lockstep: run the actor loop on the executor thread instead of a worker '
              'thread (no hand-off per message; the composed sim actor sets it); refused in realtime, where an '
              'inference must not hold back the control ticks', C),
    ParamSpec('async_chunks', True, 'realtime: infer the next action chunk while the current one executes', C),
    ParamSpec('temporal_ensemble', False, 'realtime: ACT temporal ensembling of overlapping chunks', C),
    ParamSpec('ensemble_decay', 0.01, "ACT's m: weight exp(-m i) of the i-th oldest overlapping chunk", C, low=0.0,
              high=10.0),
    ParamSpec('home_speed', 0.5, 'rad/s per joint when the task monitor brings the arm home', C, low=0.001,
              high=10.0),
    ParamSpec('warmup_iters', 5, 'inferences at configure (allocations, CUDA kernels)', C, low=0),
    ParamSpec('status_period_s', 1.0, 's between /swfp/status diagnostics', 'live', low=0.01, high=3600.0),
    ParamSpec('torch_threads', 1, 'torch intra-op threads (1: no OpenMP spin-waiting on shared cores)', C, low=1),
    ParamSpec('update_key_file', '', "file with the learner's update key: only updates signed with it are applied; "
              "'' = unsigned updates pass (a warning when commanding an arm)", C),
    ParamSpec('max_update_bytes', MAX_UPDATE_BYTES, 'bytes: larger policy-update messages are rejected unread', C,
              low=1, high=MAX_UPDATE_BYTES),
    ParamSpec('estop_release_sources', [''], "fully qualified node names allowed to release /swfp/estop; [''] = "
              'none (engaging it stays open to every node)', C),
]


def _load_callable(spec: str):
    module, _, attr = spec.partition(':')
    return getattr(importlib.import_module(module), attr or 'load_policy')


def task_spec(task: str, n: int, lower, upper):
    """(joint lower, joint upper, task labels) for ``task``; unset limits ([0.0]) come from the simulated task."""
    try:
        from swfp_ros.sim import TASKS
        cls = TASKS[task][1]
    except (ImportError, KeyError) as e:
        raise ValueError(f'task {task!r} unknown to swfp_ros.sim ({e})') from e
    sim_lower = sim_upper = None
    if len(lower) <= 1 or len(upper) <= 1:
        env = cls()
        sim_lower, sim_upper = env.joint_lower, env.joint_upper
        env.close()
    lower = np.asarray(lower if len(lower) > 1 else sim_lower, dtype=np.float64)
    upper = np.asarray(upper if len(upper) > 1 else sim_upper, dtype=np.float64)
    if lower.shape != (n,) or upper.shape != (n,):
        raise ValueError(f'joint limits need {n} values each')
    return lower, upper, tuple(cls.task_labels)


class PolicyNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__('policy_node', **kwargs)
        declare_params(self, PARAMS, on_live=self._apply_live, configure_refusal=self._configure_refusal)
        self.loop: ActorLoop | None = None
        self.worker: ActorWorker | None = None
        self.dry_run = False
        self._warn_t: dict[str, float] = {}
        self.guard_counters: Counter[str] = Counter(estop_release_refused=0)   # the node's own checks
        self.update_rejections: Counter[str] = Counter()        # rejected before the runtime saw them, by reason
        self.estop_refused_from = ''
        self.received: Counter[str] = Counter(joint_states=0, updates=0)   # delivered by DDS (executor thread)
        self.last_joint_state_rx = 0.0        # monotonic; set at configure, so a node deaf from the start shows too

    def _configure_refusal(self) -> str:
        return 'the node is configured' if self.loop is not None else ''

    def _apply_live(self, changes: dict) -> str:
        if 'status_period_s' in changes and self.loop is not None:   # configured: the status timer exists
            set_period(self._status_timer, changes['status_period_s'])
        return ''

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        g = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            cfg = ActorConfig(
                joint_names=tuple(g('joint_names')), action_scale=float(g('action_scale')), mode=g('mode'),
                control_rate=float(g('control_rate')), command_type=g('command_type'),
                deterministic=bool(g('deterministic')), actor_id=int(g('actor_id')),
                lockstep_timeout_s=float(g('lockstep_timeout_s')), max_learner_backlog=int(g('max_learner_backlog')),
                backlog_timeout_s=float(g('backlog_timeout_s')), learner_wait_s=float(g('learner_wait_s')),
                async_chunks=bool(g('async_chunks')),
                temporal_ensemble=bool(g('temporal_ensemble')), ensemble_decay=float(g('ensemble_decay')),
                home_speed=float(g('home_speed')))
            lower, upper, self.task_labels = task_spec(g('task'), len(cfg.joint_names), g('joint_lower'),
                                                       g('joint_upper'))
            safety = SafetyFilter(lower, upper, g('max_delta'), g('stale_timeout_s'))
            if not g('checkpoint'):
                raise ValueError('parameter checkpoint is empty')
            if g('act_on_executor') and cfg.mode != 'lockstep':
                raise ValueError('act_on_executor is for lockstep only: in realtime an inference on the executor '
                                 'thread would hold back the control ticks')
            self.max_update_bytes = int(g('max_update_bytes'))   # in 1..MAX_UPDATE_BYTES: its ParamSpec range
            self.estop_guard = guards.EstopReleaseGuard(guards.node_names(g('estop_release_sources')))
            key = auth.load_key(g('update_key_file')) if g('update_key_file') else None
            import torch
            torch.set_num_threads(max(1, int(g('torch_threads'))))
            t0 = time.perf_counter()
            runtime = _load_callable(g('policy_loader'))(g('checkpoint'), g('device'))
            if key is not None:
                if not hasattr(runtime, 'set_update_key'):
                    raise ValueError(f'update_key_file is set but the runtime of {g("policy_loader")} cannot check '
                                     f'signatures (it has no set_update_key)')
                runtime.set_update_key(key)
            if cfg.mode == 'realtime' and hasattr(runtime, 'compile_updates'):
                runtime.compile_updates = False     # a compile thread would delay control ticks (PolicyRuntime)
            self.signed_updates = key is not None
            self.loop = ActorLoop(runtime, safety, cfg, self._send_command, self._send_transition, self._log)
            self.loop.warmup(2 * len(cfg.joint_names) + len(self.task_labels), int(g('warmup_iters')))
            self.get_logger().info(f'loaded {g("checkpoint")} on {getattr(runtime, "device", "?")} '
                                   f'(version {self.loop.version}, act_dim {self.loop.act_dim}, chunk '
                                   f'{self.loop.horizon}, {cfg.mode}) in {time.perf_counter() - t0:.2f} s')
        except Exception as e:  # noqa: BLE001 - any failure aborts the transition with a reason
            self.get_logger().error(f'configure failed: {type(e).__name__}: {e}')
            self.loop = None
            return TransitionCallbackReturn.FAILURE
        self.cfg = cfg
        self.stamp_age = cfg.mode == 'realtime' and bool(g('stamp_age'))
        self._make_topics(bool(g('dry_run')), float(g('status_period_s')))
        self._log_guards()
        self.worker = ActorWorker(self.loop, self._on_worker_error, inline=bool(g('act_on_executor')))
        if self.worker.inline:
            self._timers.append(self.create_timer(self.worker.idle_s, self.worker.idle, clock=steady_clock(),
                                                  callback_group=self._event_group))
        self.worker.start()
        return TransitionCallbackReturn.SUCCESS

    def _log_guards(self):
        if self.signed_updates:
            self.get_logger().info('policy updates: only those signed with update_key_file are applied')
        elif self.cfg.mode == 'realtime' and not self.dry_run:
            self.get_logger().warning(
                'no update_key_file on a policy that commands an arm (realtime, dry_run false): any participant of '
                'the DDS domain can publish a policy update that passes the update checks. Give this node and the '
                'learner the same key file (update_key_file:=...; see the README, "Authenticated policy updates")')
        sources = self.estop_guard.sources
        self.get_logger().info(f'e-stop releases accepted from: {", ".join(sources)}' if sources else
                               'no estop_release_sources: an engaged e-stop stays engaged until this node restarts')

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.worker.post('set_active', True)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.worker.post('set_active', False)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_topics()
        self.loop = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    # --- topics -------------------------------------------------------------------------------------------------
    def _make_topics(self, dry_run: bool, status_period: float):
        cmd_type = JointTrajectory if self.cfg.command_type == 'trajectory' else Float64MultiArray
        self.action_pub = self.create_publisher(cmd_type, '~/action_preview' if dry_run else 'swfp/action',
                                                ACTION_QOS)
        self.transition_pub = self.create_publisher(Float64MultiArray, '/swfp/transition', TRANSITION_QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, '/swfp/status', 10)
        # Callbacks only parse and post; one exclusive group is enough and keeps their order per executor pass.
        cg = self._event_group = MutuallyExclusiveCallbackGroup()
        sub = lambda typ, topic, cb, qos: self.create_subscription(typ, topic, cb, qos, callback_group=cg)  # noqa
        self.joint_state_sub = sub(JointState, 'joint_states', self._on_joint_state, JOINT_STATE_QOS)
        self.last_joint_state_rx = time.monotonic()
        self._subs = [
            sub(Float64MultiArray, 'swfp/reward', self._on_reward, REWARD_QOS),
            sub(Float64MultiArray, 'swfp/task', self._on_task, TASK_QOS),
            self.joint_state_sub,
            sub(Int32, 'swfp/episode', lambda m: self.worker.post('episode', int(m.data)), REWARD_QOS),
            sub(JointState, 'swfp/home', self._on_home, HOME_QOS),
            sub(UInt8MultiArray, '/swfp/policy_update', self._on_update, UPDATE_QOS),
            sub(Bool, ESTOP_TOPIC, self._on_estop, ESTOP_QOS),
        ]
        if self.cfg.mode == 'lockstep' and self.cfg.max_learner_backlog > 0:
            self._subs.append(sub(Int64, '/swfp/learner_backlog',
                                  lambda m: self.worker.post('backlog_report', int(m.data)), BACKLOG_QOS))
        tcg = MutuallyExclusiveCallbackGroup()
        self.command_watch = guards.CommandPublisherWatch(self.get_fully_qualified_name())
        self._status_timer = self.create_timer(status_period, self._publish_status, callback_group=tcg,
                                               clock=steady_clock())
        self._timers = [self._status_timer,
                        self.create_timer(RELEASE_CHECK_PERIOD_S, self._decide_releases, callback_group=cg,
                                          clock=steady_clock())]
        if self.cfg.mode == 'realtime':
            self._timers.append(self.create_timer(self.cfg.dt, lambda: self.worker.post('tick', time.monotonic()),
                                                  callback_group=tcg, clock=steady_clock()))
        self.dry_run = dry_run
        if dry_run:
            self.get_logger().warning(f'dry_run: commands go to {self.action_pub.topic_name} only')
        else:
            self.get_logger().info(f'commands go to {self.action_pub.topic_name}')

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

    # --- outputs of the actor loop (worker thread) ----------------------------------------------------------------
    def _send_command(self, points: np.ndarray):
        if self.cfg.command_type == 'trajectory':
            msg = M.trajectory_msg(self.cfg.joint_names, points, self.cfg.dt, stamp=self.get_clock().now().to_msg())
        else:
            msg = M.action_msg(points[0], self.cfg.joint_names)
        self.action_pub.publish(msg)

    def _send_transition(self, t):
        self.transition_pub.publish(M.transition_msg(t))

    def _log(self, level: str, text: str):
        # rclpy binds a severity to each call site (another severity there raises): one call per level
        if level == 'warning':
            self.get_logger().warning(text)
        else:
            self.get_logger().info(text)

    def _on_worker_error(self, event: str, e: Exception):
        if self.context.ok():
            self.get_logger().error(f'worker error on {event}: {type(e).__name__}: {e}')

    def _warn(self, key: str, text: str):
        now = time.monotonic()
        if now - self._warn_t.get(key, 0.0) > 1.0:
            self._warn_t[key] = now
            self.get_logger().warning(f'{text} ({self.loop.counters[key]} so far)')

    # --- callbacks (executor thread): parse, count, post ------------------------------------------------------------
    def _invalid(self, key: str, text: str, hold: bool = True):
        self.loop.counters[key] += 1
        self._warn(key, text)
        if hold:
            self.worker.post('invalid', key)

    def _on_joint_state(self, msg):
        rx = self.last_joint_state_rx = time.monotonic()
        self.received['joint_states'] += 1
        try:
            q, qd = M.arm_from_joint_state(msg, self.cfg.joint_names)
        except M.MessageError as e:
            return self._invalid('bad_joint_state', f'invalid joint state: {e}; holding')
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        self.worker.post('joint_state', q, qd, stamp_ns, rx - self._stamp_age_s(stamp_ns))

    def _stamp_age_s(self, stamp_ns: int) -> float:
        """How much older than its arrival a joint state is by its stamp (``stamp_age``; 0 without a stamp): a node
        that stalled takes the states queued meanwhile late, and one measured a second ago is no longer where the arm
        is. A clock disagreeing with the driver's by more than ``stale_timeout_s`` makes every state stale: warned."""
        if not self.stamp_age or stamp_ns <= 0:
            return 0.0
        age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
        limit = self.loop.safety.stale_timeout_s
        if age > limit:
            self.loop.counters['old_joint_state_stamps'] += 1
            self._warn('old_joint_state_stamps', f'joint state stamped {age:.2f} s before now (over stale_timeout_s '
                       f'{limit}): not acted on. If this repeats, the driver\'s clock and this '
                       "machine's disagree: sync them, or set stamp_age false to judge by arrival only")
        return max(0.0, age)

    def _on_task(self, msg):
        try:
            _, vec = M.task_from_msg(msg, self.task_labels)
        except M.MessageError as e:
            return self._invalid('bad_task', f'invalid task message: {e}; holding')
        self.worker.post('task', vec)

    def _on_reward(self, msg):
        try:
            self.worker.post('reward', M.reward_from_msg(msg))
        except M.MessageError as e:
            self._invalid('bad_reward', f'invalid reward message: {e}', hold=False)

    def _on_home(self, msg):
        try:
            q, _ = M.arm_from_joint_state(msg, self.cfg.joint_names)
        except M.MessageError as e:
            return self._invalid('bad_home', f'invalid home posture: {e}; not homing', hold=False)
        self.worker.post('home', q)

    def _on_update(self, msg):
        self.received['updates'] += 1
        if len(msg.data) > self.max_update_bytes:
            self.update_rejections['oversized'] += 1
            return self._invalid('updates_rejected', f'policy update of {len(msg.data)} bytes rejected: over '
                                 f'max_update_bytes {self.max_update_bytes}', hold=False)
        try:
            self.worker.post('update', M.update_from_msg(msg))
        except M.MessageError as e:
            self.update_rejections['malformed'] += 1
            self._invalid('updates_rejected', f'invalid policy update message: {e}', hold=False)

    # --- node-level guards (executor thread) ------------------------------------------------------------------------
    def _publishers_on(self, topic: str) -> list[guards.Endpoint]:
        return [guards.Endpoint(guards.fully_qualified(i.node_namespace, i.node_name), bytes(i.endpoint_gid))
                for i in self.get_publishers_info_by_topic(topic)]

    def _on_estop(self, msg, info):
        if msg.data:
            self.estop_guard.engaged()
            self.worker.post('estop', True)
            return
        self.estop_guard.release(bytes((info.get('publisher_gid') or {}).get('data', b'')), time.monotonic())
        self._decide_releases()

    def _decide_releases(self):
        """Apply or refuse the waiting e-stop releases whose sender the graph can name (timer and e-stop callback)."""
        if not self.estop_guard.pending:
            return
        names = {e.gid: e.node for e in self._publishers_on(ESTOP_TOPIC)}
        for d in self.estop_guard.decide(names, time.monotonic()):
            if d.allowed:
                self.get_logger().info(f'e-stop release from {d.source}')
                self.worker.post('estop', False)
                continue
            self.guard_counters['estop_release_refused'] += 1
            self.estop_refused_from = d.source
            sources = self.estop_guard.sources
            self.get_logger().error(
                f'e-stop release from {d.source} refused ({self.guard_counters["estop_release_refused"]} so far): '
                + (f'releases are accepted from {", ".join(sources)} only' if sources else
                   'no estop_release_sources configured') + '; the e-stop stays as it was')

    def _check_command_publishers(self):
        for name in self.command_watch.update(self._publishers_on(self.action_pub.topic_name)):
            self.get_logger().error(f'another publisher on the command topic {self.action_pub.topic_name}: {name} '
                                    '(its commands reach the arm unfiltered by this node)')

    # --- diagnostics / shutdown ---------------------------------------------------------------------------------
    def _publish_status(self):
        self._check_command_publishers()
        foreign = self.command_watch.current
        rejections = self.update_rejections + Counter(getattr(self.loop.runtime, 'rejections', {}))
        values = {**self.loop.stats(), 'device': str(getattr(self.loop.runtime, 'device', '')),
                  'forward': getattr(self.loop.runtime, 'forward_kind', ''),
                  'dry_run': int(self.dry_run), 'signed_updates': int(self.signed_updates),
                  **{f'updates_rejected_{reason}': n for reason, n in sorted(rejections.items())},
                  'foreign_command_publishers': ','.join(foreign),
                  'foreign_command_publishers_seen': len(self.command_watch.seen),
                  **self.guard_counters, 'estop_release_refused_from': self.estop_refused_from,
                  **{f'{k}_received': n for k, n in self.received.items()}}
        busy = self.worker.busy() if self.worker is not None else None
        values['worker_event'], values['worker_busy_s'] = ('', '0.000') if busy is None else (busy[0], f'{busy[1]:.3f}')
        values['acting_on'] = 'executor' if self.worker is not None and self.worker.inline else 'worker'
        silent_s = time.monotonic() - self.last_joint_state_rx
        values['joint_state_age_s'] = f'{silent_s:.3f}'
        warnings = (['e-stop engaged'] if self.loop.safety.estopped else []) + (
            [f'other publishers on {self.action_pub.topic_name}: {", ".join(foreign)}'] if foreign else [])
        if silent_s > SILENCE_S:
            topic = self.joint_state_sub.topic_name
            n = self.count_publishers(topic)
            silence = (f'no joint state delivered for {silent_s:.1f} s though the graph shows {n} publisher(s) on '
                       f'{topic}' if n else f'no joint state for {silent_s:.1f} s: no publisher on {topic} (is the '
                       "driver running, and is this topic remapped to its joint states?)")
            self.get_logger().error(silence, throttle_duration_sec=5.0)
            warnings.append(silence)
        if busy is not None and busy[1] > SILENCE_S:
            stuck = f'actor worker stuck in {busy[0]} for {busy[1]:.1f} s at {busy[2]}'
            self.get_logger().error(f'{stuck}: no commands meanwhile', throttle_duration_sec=5.0)
            warnings.append(stuck)
        message = '; '.join(['active' if self.loop.active else 'inactive', *warnings])
        self.status_pub.publish(M.status_msg(self.get_fully_qualified_name(), str(self.cfg.actor_id), message, values,
                                             warn=bool(warnings), stamp=self.get_clock().now().to_msg()))

    def _stop_worker(self):
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def close(self):
        """Stop the actor worker (called once the node stops spinning)."""
        self._stop_worker()


def autostart(node: PolicyNode) -> None:
    """Configure and activate at start-up: pip-only machines have no lifecycle manager."""
    if node.get_parameter('autostart').value:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal('autostart: configure failed')
            raise SystemExit(EXIT_START_FAILED)
        node.trigger_activate()


def is_lockstep(node: PolicyNode) -> bool:
    return node.get_parameter('mode').value == 'lockstep'


def main(args=None) -> int:
    return run_node('policy_node', PolicyNode, on_start=autostart, args=args, lockstep=is_lockstep)


if __name__ == '__main__':
    sys.exit(main())
