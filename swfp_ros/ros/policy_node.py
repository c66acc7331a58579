"""Policy node (lifecycle): the ROS shell of the actor loop (:mod:`swfp_ros.actor`), with safety always on.

The node holds parameters, topics and timers; everything between an observation and a command — chunk execution,
the safety filter calls, transition assembly, pacing, the return to the home posture, the update swap — is
:class:`swfp_ros.actor.ActorLoop`, run on one worker thread (:class:`swfp_ros.actor.ActorWorker`). Subscription
callbacks only parse messages and post them as events, so inference never blocks the executor.

Lifecycle: ``configure`` loads the checkpoint, warms inference up and creates the topics; ``activate`` starts
commanding; ``deactivate`` sends one hold (the measured position) and stops commanding; ``cleanup`` drops the policy.
With ``autostart: true`` (the default: pip-only machines have no lifecycle manager) the node configures and activates
itself at start-up and exits with status 3 when configuring fails; otherwise drive it with
``ros2 lifecycle set /policy_node configure|activate``.

Topics (QoS chosen per use). The actor's own topics are relative names, so a node in namespace ``arm1`` talks to
``/arm1/joint_states`` etc. (without a namespace: ``/joint_states``); the learner's topics, the e-stop and the
status are absolute, shared by every actor.
    sub joint_states         sensor_msgs/JointState          sensor data (best effort): what drivers publish
    sub swfp/task            std_msgs/Float64MultiArray      reliable, depth 1, transient local (latest task state)
    sub swfp/reward          std_msgs/Float64MultiArray      reliable, depth 100
    sub swfp/episode         std_msgs/Int32                  reliable, depth 100 (a new episode: homing ends)
    sub swfp/home            sensor_msgs/JointState          reliable, depth 1, transient local: the home posture the
                                                             task monitor brings the arm back to between episodes
    sub /swfp/policy_update  std_msgs/UInt8MultiArray        reliable, transient local, depth 64 (the learner's
                                                             latest base + the blocks after it: late-joiner catch-up)
    sub /swfp/estop          std_msgs/Bool                   reliable, transient local, depth 1 (latched; stops all)
    sub /swfp/learner_backlog std_msgs/Int64                 reliable, transient local, depth 1 (lockstep pacing,
                                                             only when ``max_learner_backlog`` > 0)
    pub swfp/action          Float64MultiArray | JointTrajectory  reliable, depth 10 (``~/action_preview`` if dry_run);
                                                             remapped to the controller's topic on a real arm
    pub /swfp/transition     std_msgs/Float64MultiArray      reliable, depth 1000 (the learner must not miss data)
    pub /swfp/status         diagnostic_msgs/DiagnosticArray default
Parameters (config/policy.yaml): checkpoint, policy_loader, device, deterministic, task, joint_names, joint_lower,
joint_upper, action_scale, max_delta, stale_timeout_s, mode, control_rate, command_type, dry_run, actor_id,
autostart, max_learner_backlog, backlog_timeout_s, lockstep_timeout_s, async_chunks, temporal_ensemble,
ensemble_decay, home_speed, warmup_iters, status_period_s, torch_threads (``torch_threads`` = torch's intra-op
threads: with shared cores, OpenMP spin-waiting makes more threads slower for these small networks). The behaviour
they select is described in :mod:`swfp_ros.actor.loop`.
Latency on /swfp/status: ``inference_ms_*`` (the cascade alone); ``obs_to_action_ms_*``: from the moment the worker
could act (the observation's arrival, or the tick when the tick comes later) to the command's publication;
``chunk_start_delay_ms_*`` / ``chunk_step_delay_ms_*`` (realtime): tick -> publication for a chunk's first step and
for its later steps.
"""
from __future__ import annotations

import importlib
import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, Int32, Int64, UInt8MultiArray
from trajectory_msgs.msg import JointTrajectory

from swfp_ros.actor import ActorConfig, ActorLoop, ActorWorker

from . import messages as M
from .executors import EXIT_START_FAILED, run_node, steady_clock
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
# The home posture is state, like the task: latched, the latest value only.
HOME_QOS = TASK_QOS


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
        p = self.declare_parameter
        p('checkpoint', '')
        p('policy_loader', 'swfp_ros.algo.checkpoint:load_policy')   # module:function(checkpoint, device) -> runtime
        p('device', 'auto')
        p('deterministic', False)
        p('task', 'panda_reach')
        p('joint_names', list(ARM_JOINTS))
        p('joint_lower', [0.0])                                   # [0.0] (unset) = the sim task's limits
        p('joint_upper', [0.0])
        p('action_scale', 0.1)
        p('max_delta', 0.1)
        p('stale_timeout_s', 0.5)
        p('mode', 'lockstep')
        p('control_rate', 20.0)
        p('command_type', 'float64_array')
        p('dry_run', False)
        p('actor_id', 0)
        p('autostart', True)
        p('lockstep_timeout_s', 2.0)
        p('max_learner_backlog', 32)
        p('backlog_timeout_s', 1.0)
        p('async_chunks', True)
        p('temporal_ensemble', False)
        p('ensemble_decay', 0.01)
        p('home_speed', 0.5)
        p('warmup_iters', 5)
        p('status_period_s', 1.0)
        p('torch_threads', 1)
        self.loop: ActorLoop | None = None
        self.worker: ActorWorker | None = None
        self.dry_run = False
        self._warn_t: dict[str, float] = {}

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        g = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            cfg = ActorConfig(
                joint_names=tuple(g('joint_names')), action_scale=float(g('action_scale')), mode=g('mode'),
                control_rate=float(g('control_rate')), command_type=g('command_type'),
                deterministic=bool(g('deterministic')), actor_id=int(g('actor_id')),
                lockstep_timeout_s=float(g('lockstep_timeout_s')), max_learner_backlog=int(g('max_learner_backlog')),
                backlog_timeout_s=float(g('backlog_timeout_s')), async_chunks=bool(g('async_chunks')),
                temporal_ensemble=bool(g('temporal_ensemble')), ensemble_decay=float(g('ensemble_decay')),
                home_speed=float(g('home_speed')))
            lower, upper, self.task_labels = task_spec(g('task'), len(cfg.joint_names), g('joint_lower'),
                                                       g('joint_upper'))
            safety = SafetyFilter(lower, upper, g('max_delta'), g('stale_timeout_s'))
            if not g('checkpoint'):
                raise ValueError('parameter checkpoint is empty')
            import torch
            torch.set_num_threads(max(1, int(g('torch_threads'))))
            t0 = time.perf_counter()
            runtime = _load_callable(g('policy_loader'))(g('checkpoint'), g('device'))
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
        self._make_topics(bool(g('dry_run')), float(g('status_period_s')))
        self.worker = ActorWorker(self.loop, self._on_worker_error)
        self.worker.start()
        return TransitionCallbackReturn.SUCCESS

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
        cg = MutuallyExclusiveCallbackGroup()
        sub = lambda typ, topic, cb, qos: self.create_subscription(typ, topic, cb, qos, callback_group=cg)  # noqa
        self._subs = [
            sub(Float64MultiArray, 'swfp/reward', self._on_reward, REWARD_QOS),
            sub(Float64MultiArray, 'swfp/task', self._on_task, TASK_QOS),
            sub(JointState, 'joint_states', self._on_joint_state, qos_profile_sensor_data),
            sub(Int32, 'swfp/episode', lambda m: self.worker.post('episode', int(m.data)), REWARD_QOS),
            sub(JointState, 'swfp/home', self._on_home, HOME_QOS),
            sub(UInt8MultiArray, '/swfp/policy_update', self._on_update, UPDATE_QOS),
            sub(Bool, '/swfp/estop', lambda m: self.worker.post('estop', bool(m.data)), ESTOP_QOS),
        ]
        if self.cfg.mode == 'lockstep' and self.cfg.max_learner_backlog > 0:
            self._subs.append(sub(Int64, '/swfp/learner_backlog',
                                  lambda m: self.worker.post('backlog_report', int(m.data)), BACKLOG_QOS))
        tcg = MutuallyExclusiveCallbackGroup()
        self._timers = [self.create_timer(status_period, self._publish_status, callback_group=tcg,
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
        getattr(self.get_logger(), level)(text)

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
        rx = time.monotonic()
        try:
            q, qd = M.arm_from_joint_state(msg, self.cfg.joint_names)
        except M.MessageError as e:
            return self._invalid('bad_joint_state', f'invalid joint state: {e}; holding')
        self.worker.post('joint_state', q, qd, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec, rx)

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
        try:
            self.worker.post('update', M.update_from_msg(msg))
        except M.MessageError as e:
            self._invalid('updates_rejected', f'invalid policy update message: {e}', hold=False)

    # --- diagnostics / shutdown ---------------------------------------------------------------------------------
    def _publish_status(self):
        values = {**self.loop.stats(), 'device': str(getattr(self.loop.runtime, 'device', '')),
                  'dry_run': int(self.dry_run)}
        self.status_pub.publish(M.status_msg(self.get_fully_qualified_name(), str(self.cfg.actor_id),
                                             'active' if self.loop.active else 'inactive', values,
                                             warn=self.loop.safety.estopped, stamp=self.get_clock().now().to_msg()))

    def _stop_worker(self):
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def close(self):
        """Stop the actor worker (called once the node stops spinning)."""
        self._stop_worker()


def _autostart(node: PolicyNode) -> None:
    """Configure and activate at start-up: pip-only machines have no lifecycle manager."""
    if node.get_parameter('autostart').value:
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal('autostart: configure failed')
            raise SystemExit(EXIT_START_FAILED)
        node.trigger_activate()


def main(args=None) -> int:
    return run_node('policy_node', PolicyNode, on_start=_autostart, args=args,
                    lockstep=lambda node: node.get_parameter('mode').value == 'lockstep')


if __name__ == '__main__':
    sys.exit(main())
