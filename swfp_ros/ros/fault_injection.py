"""Fault injection against a running policy node, black-box over its topics: a scripted arm that follows the commands
it receives and reports (possibly faulty) joint states, an audit of every command the policy node sends, and the
fault scenarios. Used by ``test/ros/test_faults_policy.py`` and ``benchmarks/bench_faults.py``.

The audit's rule is the safety filter's contract, checked from outside: every command is finite, has one value per
arm joint, lies within the joint limits, and is either a hold -- the arm's last valid joint state brought into the
limits, however old: it asks for no motion -- or within ``max_delta`` (per joint) of a valid joint state the arm
reported in the ``stale_timeout_s`` (+ latency margin) before the command arrived. A joint state is valid when it
names every arm joint, is finite, and is no more than ``max_delta`` outside the limits. A command that breaks the rule
is a violation; during an e-stop, any command but a hold is one too.

Times are the publishers' own send times (DDS source timestamps, wall clock, one host), and a command is judged only
once a joint state sent after it has arrived (a publisher's messages arrive in order): a busy monitoring process can
take a command before the joint state it was computed from, so judging on arrival would misjudge it.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import messages as M

LATENCY_MARGIN_S = 0.2
UNVERIFIED = 'unverified: no joint state of the window reached the monitor'


def monitor_qos():
    """Best effort (what joint-state publishers offer) but deep: a busy monitor must not drop the states it audits
    against (the sensor-data profile keeps 5)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=1000, reliability=ReliabilityPolicy.BEST_EFFORT)


@dataclass
class Measurement:
    t: float
    q: np.ndarray | None          # arm joints by name, or None when the message is invalid


def source_time(info) -> float:
    """A message's send time in seconds (rclpy MessageInfo's source timestamp)."""
    return info['source_timestamp'] * 1e-9


class CommandAudit:
    """Checks commands against the joint states sent before them (pure numpy; times in seconds, one clock)."""

    def __init__(self, joint_names, lower, upper, max_delta: float, window_s: float, sees_every_state: bool = True):
        """``sees_every_state``: the audit is told about every joint state sent (the scripted arm); False for a
        monitor that can miss some -- e.g. those a restarted publisher sends before the monitor discovered it --
        where a command with no joint state at all in its window counts as unverified rather than as a violation."""
        self.sees_every_state = sees_every_state
        self.joint_names = tuple(joint_names)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.max_delta = float(max_delta)
        self.window_s = float(window_s)
        self.measurements: deque[Measurement] = deque(maxlen=200_000)
        self.estopped = False
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting afresh (commands not judged yet are judged and counted in the next period)."""
        with self._lock:
            self.checked = 0
            self.unverified = 0
            self.violations: list[str] = []
            self._unjudged = getattr(self, '_unjudged', [])
            self._last_state_t = getattr(self, '_last_state_t', float('-inf'))

    def measured(self, msg, t: float) -> None:
        """Record a JointState sent at ``t``."""
        try:
            q, _ = M.arm_from_joint_state(msg, self.joint_names)
        except M.MessageError:
            q = None
        if q is not None and np.any(np.maximum(self.lower - q, q - self.upper) > self.max_delta):
            q = None
        with self._lock:
            self.measurements.append(Measurement(t, q))
            self._last_state_t = max(self._last_state_t, t)

    def command(self, values, t: float) -> None:
        """A command sent at ``t``: judged once the joint states sent before it have arrived."""
        with self._lock:
            self._unjudged.append((t, np.asarray(values, float), self.estopped))

    def judge(self, final: bool = False) -> tuple[int, list[str], int]:
        """Judge the commands after which a joint state has arrived (all of them when ``final``: no more states will
        come); returns (commands checked, violations, unverified commands) since the last reset."""
        with self._lock:
            due = [u for u in self._unjudged if final or u[0] < self._last_state_t]
            self._unjudged = [u for u in self._unjudged if not (final or u[0] < self._last_state_t)]
            for t, c, estopped in due:
                self.checked += 1
                problem = self._problem(c, t, estopped)
                if problem == UNVERIFIED:
                    self.unverified += 1
                elif problem:
                    self.violations.append(problem)
            return self.checked, list(self.violations), self.unverified

    def _problem(self, c: np.ndarray, t: float, estopped: bool) -> str | None:
        valid = []                          # valid joint states sent before t, newest first (arrival order is
        for m in reversed(self.measurements):   # send order but for milliseconds: stop well past the window)
            if m.t < t - self.window_s - 5.0 and valid:
                break
            if m.t <= t and m.q is not None:
                valid.append(m)
        valid.sort(key=lambda m: -m.t)
        hold = bool(valid) and c.shape == self.lower.shape and np.allclose(
            c, np.clip(valid[0].q, self.lower, self.upper), rtol=0, atol=1e-9)
        recent = [m.q for m in valid if m.t >= t - self.window_s]
        if c.shape != self.lower.shape:
            return f'{c.size} values'
        if not np.all(np.isfinite(c)):
            return 'non-finite'
        if np.any(c < self.lower - 1e-9) or np.any(c > self.upper + 1e-9):
            return f'outside the limits by {np.max(np.maximum(self.lower - c, c - self.upper)):.3f} rad'
        if estopped and not hold:
            return 'moved during an e-stop'
        if not hold and not any(np.all(np.abs(c - q) <= self.max_delta + 1e-9) for q in recent):
            if not self.sees_every_state and not any(t - self.window_s <= m.t <= t for m in self.measurements):
                return UNVERIFIED
            nearest = min((np.abs(c - q) for q in recent), key=np.max, default=None)
            gap = float('inf') if nearest is None else float(np.max(nearest))
            joint = '' if nearest is None else f'joint {int(np.argmax(nearest)) + 1}; '
            # how old the state it was decided from must have been: tells a stale decision from a wrong one
            near = [m.t for m in valid if np.all(np.abs(c - m.q) <= self.max_delta + 1e-9)]
            origin = f'the newest within max_delta sent {t - max(near):.2f} s before it' if near else \
                'none within max_delta'
            return f'{gap:.3f} rad from every valid joint state of the last {self.window_s:.1f} s ({joint}{origin})'
        return None


class ScriptedArm:
    """A position-controlled arm played by the caller's rclpy node: it moves to every valid command it receives (from
    any publisher, like ros2_control's forward_command_controller) and publishes its joint states at ``rate_hz``
    through ``report`` -- the fault hook, which turns the true position into the messages to publish (none: silence).
    """

    def __init__(self, node, joint_names, extra_joints, q0, task_labels, task_vector, audit: CommandAudit,
                 policy_node_name: str = 'policy_node', rate_hz: float = 100.0):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        from .qos import ACTION_QOS, TASK_QOS
        self.node, self.audit = node, audit
        self.names = list(joint_names) + list(extra_joints)
        self.n = len(joint_names)
        self.q = np.asarray(q0, float).copy()
        self.rate_hz = rate_hz
        self.policy_node_name = policy_node_name
        self.task_labels, self.task_vector = tuple(task_labels), np.asarray(task_vector, float)
        self.report: Callable[[np.ndarray], list] = self.normal
        self.task_report: Callable[[], object | None] = lambda: M.task_msg(self.task_labels, self.task_vector)
        self.held: dict[int, float] = {}     # joints held by hand at a position, whatever the commands
        self.policy_commands = 0
        self.foreign_commands = 0
        self._lock = threading.Lock()
        self._policy_command = threading.Condition()
        self._policy_gids: set[bytes] = set()
        self.js_pub = node.create_publisher(JointState, 'joint_states', qos_profile_sensor_data)
        self.task_pub = node.create_publisher(Float64MultiArray, 'swfp/task', TASK_QOS)
        self.sub = node.create_subscription(Float64MultiArray, 'swfp/action', self._on_command, ACTION_QOS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name='scripted-arm')
        self._thread.start()

    # --- what the arm reports -------------------------------------------------------------------------------------
    def joint_state(self, q_arm, names=None, velocity=None):
        """Stamped with the wall clock, as a driver on this host stamps them."""
        names = names or self.names
        pos = np.concatenate([q_arm, np.zeros(len(names) - len(q_arm))]) if len(q_arm) < len(names) else q_arm
        vel = np.zeros(len(pos)) if velocity is None else velocity
        return M.joint_state_msg(names, pos, vel, stamp=M.time_msg(time.time()))

    def normal(self, q):
        return [self.joint_state(q)]

    def _loop(self):
        period = 1.0 / self.rate_hz
        next_t = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                q = self.q.copy()
            for msg in self.report(q):
                self.audit.measured(msg, time.time())     # just before it is sent: the source timestamp's clock
                self.js_pub.publish(msg)
            task = self.task_report()
            if task is not None:
                self.task_pub.publish(task)
            next_t += period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    # --- commands ---------------------------------------------------------------------------------------------------
    def _is_policy(self, gid) -> bool:
        if gid in self._policy_gids:
            return True
        for info in self.node.get_publishers_info_by_topic(self.sub.topic_name):
            if info.node_name == self.policy_node_name:
                self._policy_gids.add(bytes(info.endpoint_gid))
        return gid in self._policy_gids

    def _on_command(self, msg, info):
        t = source_time(info)
        gid = bytes((info.get('publisher_gid') or {}).get('data', b''))
        c = np.asarray(msg.data, float)
        if self._is_policy(gid):
            self.audit.command(c, t)
            with self._policy_command:
                self.policy_commands += 1
                self._policy_command.notify_all()
        else:
            self.foreign_commands += 1
        if c.shape == (self.n,) and np.all(np.isfinite(c)):
            with self._lock:
                self.q = c.copy()
                for j, v in self.held.items():
                    self.q[j] = v

    def wait_for_policy_command(self, timeout_s: float) -> bool:
        """Until the policy node's next command arrives; False if none did within ``timeout_s``."""
        with self._policy_command:
            seen = self.policy_commands
            return self._policy_command.wait_for(lambda: self.policy_commands > seen, timeout_s)

    def hold_by_hand(self, joints: dict[int, float]) -> None:
        with self._lock:
            self.held = dict(joints)
            for j, v in joints.items():
                self.q[j] = v

    def close(self):
        self._stop.set()
        self._thread.join(2.0)


@dataclass
class Scenario:
    name: str
    fault: str                                      # what is injected, in words (the table's first column)
    run: Callable                                   # run(ctx): injects for a while, then restores normal operation;
                                                    # may return what it observed (a dict: the row's 'observed')
    counters: tuple[str, ...] = ()                  # /swfp/status counters that must move
    expect: str = ''                                # the required reaction, in words
    extra: dict = field(default_factory=dict)


def _for(ctx, seconds: float, report=None, task_report=None):
    """Inject ``report`` / ``task_report`` for ``seconds``, then restore the normal ones."""
    arm = ctx.arm
    if report is not None:
        arm.report = report
    if task_report is not None:
        arm.task_report = task_report
    time.sleep(seconds)
    arm.report = arm.normal
    arm.task_report = lambda: M.task_msg(arm.task_labels, arm.task_vector)


def _every(n: int, bad, good):
    """A report that is ``bad`` on one message in ``n``."""
    count = [0]

    def report(q):
        count[0] += 1
        return bad(q) if count[0] % n == 0 else good(q)
    return report


# The reaction to invalid joint states: hold at the last valid one while it is fresh (stale_timeout_s), then send
# nothing -- the arm may have moved since, and the controller keeps its last target.
HOLD_THEN_NOTHING = 'hold, then nothing'


def measurement_scenarios(lower, upper, max_delta) -> list[Scenario]:
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)

    def nan(ctx):
        _for(ctx, 1.0, lambda q: [ctx.arm.joint_state(np.where(np.arange(len(q)) == 2, np.nan, q))])

    def inf_velocity(ctx):
        _for(ctx, 1.0, lambda q: [ctx.arm.joint_state(q, velocity=np.full(len(ctx.arm.names), np.inf))])

    def wrong_size(ctx):
        _for(ctx, 1.0, lambda q: [M.joint_state_msg(ctx.arm.names[:5], q[:5])])

    def shuffled(ctx):
        perm = np.random.default_rng(0).permutation(len(ctx.arm.names))

        def report(q):
            msg = ctx.arm.joint_state(q)
            return [M.joint_state_msg([msg.name[i] for i in perm], np.asarray(msg.position)[perm],
                                      np.asarray(msg.velocity)[perm], stamp=msg.header.stamp)]
        _for(ctx, 1.0, report)

    def missing_name(ctx):
        _for(ctx, 1.0, lambda q: [M.joint_state_msg([n if i != 3 else 'elbow' for i, n in enumerate(ctx.arm.names)],
                                                    np.concatenate([q, np.zeros(len(ctx.arm.names) - len(q))]))])

    def pushed_past_limit(excess):
        def run(ctx):
            ctx.arm.hold_by_hand({1: upper[1] + excess})    # someone holds joint 2 past its soft limit
            time.sleep(1.0)
            ctx.arm.hold_by_hand({1: upper[1] - 0.2})       # and brings it back inside
            ctx.arm.hold_by_hand({})
        return run

    def glitch(ctx):
        def bad(q):
            return [ctx.arm.joint_state(np.where(np.arange(len(q)) == 0, upper[0] + 0.6, q))]
        _for(ctx, 1.5, _every(3, bad, ctx.arm.normal))

    def stale(ctx):
        _for(ctx, 1.2, lambda q: [])

    def stalled_pushed(stall_s, nan_after_s=None):
        # A busy machine: the policy node's process is stopped for stall_s while the arm is pushed 0.3 rad (joint 1,
        # 50 ms in), its joint states turning NaN nan_after_s into the stall if given; then 1 s more of the same.
        # Neither the last position the node saw before the stall nor any other old one may be held to: that
        # commands a 0.3 rad jump back. The stop comes right after a command, i.e. between two control steps, where a
        # busy machine deschedules a node; one that lands inside a send -- after the last freshness check, before
        # the DDS write: microseconds -- sends that one command late, which no node can prevent (the controller's
        # command timeout is what covers it).
        def run(ctx):
            def nan_report(q):
                return [ctx.arm.joint_state(np.where(np.arange(len(q)) == 2, np.nan, q))]
            if not ctx.arm.wait_for_policy_command(2.0):
                raise RuntimeError('the policy node sent no command in the 2 s before the stall')
            pushed = ctx.arm.q[0] + 0.3 if ctx.arm.q[0] + 0.3 <= upper[0] else ctx.arm.q[0] - 0.3
            stopped = time.monotonic()
            os.killpg(ctx.process.pid, signal.SIGSTOP)
            try:
                time.sleep(0.05)
                ctx.arm.hold_by_hand({0: pushed})
                if nan_after_s is not None:
                    time.sleep(max(0.0, stopped + nan_after_s - time.monotonic()))
                    ctx.arm.report = nan_report
                time.sleep(max(0.0, stopped + stall_s - time.monotonic()))
            finally:
                os.killpg(ctx.process.pid, signal.SIGCONT)
            _for(ctx, 1.0, nan_report if nan_after_s is not None else None)
            ctx.arm.hold_by_hand({})
        return run

    def bursty(ctx):
        tick = [0]

        def report(q):
            tick[0] += 1
            return [ctx.arm.joint_state(q)] * 10 if tick[0] % 70 == 0 else []   # 10 at once, every 0.7 s
        _for(ctx, 2.5, report)

    return [
        Scenario('nan_joint', 'NaN joint position (1 of 7)', nan, ('bad_joint_state', 'stale_holds_withheld'),
                 'hold at the last valid while it is fresh, then nothing'),
        Scenario('inf_velocity', 'inf joint velocities', inf_velocity, ('bad_joint_state',), HOLD_THEN_NOTHING),
        Scenario('wrong_size', 'joint state with 5 joints', wrong_size, ('bad_joint_state',), HOLD_THEN_NOTHING),
        Scenario('shuffled_names', 'joint names in shuffled order', shuffled, (), 'normal (read by name)'),
        Scenario('missing_name', 'a joint name missing', missing_name, ('bad_joint_state',), HOLD_THEN_NOTHING),
        Scenario('beyond_limit_small', f'arm 0.05 rad past a limit (< max_delta {max_delta})',
                 pushed_past_limit(0.05), ('safety_measured_beyond_limit',), 'commands inside the limits'),
        Scenario('beyond_limit_far', 'arm 0.12 rad past a limit (> max_delta)', pushed_past_limit(0.12),
                 ('safety_measured_out_of_limits',), 'no command'),
        Scenario('glitch_far_outside', '1 in 3 joint states 0.6 rad outside a limit', glitch,
                 ('safety_measured_out_of_limits',), 'no command on the glitch'),
        Scenario('stale', 'joint states stop for 1.2 s', stale, ('safety_stale', 'stale_holds_withheld'),
                 'nothing sent once stale (the controller keeps its last target)'),
        Scenario('stalled_pushed', 'policy node stopped 1 s while the arm is pushed 0.3 rad', stalled_pushed(1.0),
                 (), 'no hold at the pre-stall position; acting from the pushed one'),
        Scenario('stalled_pushed_nan', 'policy node stopped 0.3 s while the arm is pushed 0.3 rad and its joint '
                 'states turn NaN', stalled_pushed(0.3, nan_after_s=0.15), ('bad_joint_state',),
                 'hold at the pushed position'),
        Scenario('bursty', 'bursts of 10 joint states every 0.7 s', bursty, ('safety_stale',),
                 'nothing sent while stale'),
    ]


def task_scenarios() -> list[Scenario]:
    def nan_task(ctx):
        arm = ctx.arm
        _for(ctx, 1.0, task_report=lambda: M.task_msg(arm.task_labels, np.full(len(arm.task_labels), np.nan)))

    def wrong_labels(ctx):
        arm = ctx.arm
        _for(ctx, 1.0, task_report=lambda: M.task_msg(tuple(f'x{i}' for i in range(len(arm.task_labels))),
                                                      arm.task_vector))

    def wrong_size(ctx):
        arm = ctx.arm
        _for(ctx, 1.0, task_report=lambda: M.task_msg(arm.task_labels[:-1], arm.task_vector[:-1]))

    return [
        Scenario('nan_task', 'NaN task vector', nan_task, ('bad_task',), 'hold'),
        Scenario('task_labels', 'task vector with other labels', wrong_labels, ('bad_task',), 'hold'),
        Scenario('task_size', 'task vector one value short', wrong_size, ('bad_task',), 'hold'),
    ]


def estop_scenario() -> Scenario:
    """Engaged and released by a node in the policy's ``estop_release_sources`` (the context's estop_pub)."""
    def run(ctx):
        from std_msgs.msg import Bool
        ctx.estop_pub.publish(Bool(data=True))
        ctx.status.wait(ctx.policy_name, lambda st: st.values.get('estop') == '1', 10.0)   # the node latched it
        ctx.status.fresh(ctx.policy_name)     # and a command it sent before is delivered (another topic)
        ctx.arm.audit.estopped = True
        time.sleep(1.0)
        ctx.arm.audit.estopped = False
        ctx.estop_pub.publish(Bool(data=False))
        ctx.status.wait(ctx.policy_name, lambda st: st.values.get('estop') == '0', 10.0)
    return Scenario('estop', 'e-stop latched for 1.3 s, then released by a configured source', run,
                    ('safety_estop',), 'hold while latched, moving after the release')


def other_node(ctx, name: str):
    """Another node in the monitor's process (a second command publisher, a stray e-stop release)."""
    import rclpy
    return rclpy.create_node(name, context=ctx.context)


def graph_scenarios(lower, upper) -> list[Scenario]:
    """Other nodes on the policy's topics: a second publisher on its command topic, an e-stop release from a node
    that is not one of its ``estop_release_sources``."""
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)

    def second_publisher(ctx):
        from std_msgs.msg import Float64MultiArray

        from .qos import ACTION_QOS
        node = other_node(ctx, 'intruder')
        try:
            pub = node.create_publisher(Float64MultiArray, ctx.arm.sub.topic_name, ACTION_QOS)
            # a 0.5 rad jump of joint 1 within the limits, then a NaN, every 0.1 s for 1 s; the arm takes the jumps
            for i in range(10):
                jump = np.clip(ctx.arm.q + np.eye(len(lower))[0] * (0.5 if i % 2 == 0 else -0.5), lower, upper)
                pub.publish(Float64MultiArray(data=list(np.full(len(lower), np.nan) if i % 3 == 2 else jump)))
                time.sleep(0.1)
            seen = ctx.status.wait(ctx.policy_name, lambda st: '/intruder' in st.values.get(
                'foreign_command_publishers', '').split(','), 10.0)
        finally:
            node.destroy_node()
        gone = ctx.status.wait(ctx.policy_name, lambda st: not st.values.get('foreign_command_publishers'), 10.0)
        return {'reported': f'{LEVELS[seen.level]}: {seen.message}', 'after': f'{LEVELS[gone.level]}: {gone.message}'}

    def foreign_release(ctx):
        from std_msgs.msg import Bool

        from .qos import ESTOP_QOS
        ctx.estop_pub.publish(Bool(data=True))
        ctx.status.wait(ctx.policy_name, lambda st: st.values.get('estop') == '1', 10.0)
        ctx.arm.audit.estopped = True
        refused_before = int(ctx.status.fresh(ctx.policy_name).get('estop_release_refused', 0))
        node = other_node(ctx, 'intruder')
        try:
            node.create_publisher(Bool, '/swfp/estop', ESTOP_QOS).publish(Bool(data=False))
            refused = ctx.status.wait(ctx.policy_name, lambda st: int(st.values.get('estop_release_refused', 0))
                                      > refused_before, 10.0)
            time.sleep(0.7)                       # still latched: only holds may go out
            still = ctx.status.fresh(ctx.policy_name)
        finally:
            node.destroy_node()
        ctx.arm.audit.estopped = False
        ctx.estop_pub.publish(Bool(data=False))
        ctx.status.wait(ctx.policy_name, lambda st: st.values.get('estop') == '0', 10.0)
        return {'refused_from': refused.values.get('estop_release_refused_from'),
                'estop_after_refusal': still.get('estop'), 'reported': f'{LEVELS[refused.level]}: {refused.message}'}

    return [
        Scenario('second_publisher', 'a second node (/intruder) publishing on the command topic: 0.5 rad jumps '
                 'and NaN', second_publisher, ('foreign_command_publishers_seen',),
                 'reported on /swfp/status (WARN, with its name) while it exists'),
        Scenario('foreign_estop_release', 'e-stop engaged, then released by /intruder (not a configured source)',
                 foreign_release, ('estop_release_refused',), 'release refused and reported; still holding'),
    ]


def update_scenarios(runtime, key: bytes | None = None, max_update_bytes: int | None = None) -> list[Scenario]:
    """Updates an attacker (or a broken learner) publishes, crafted against ``runtime``: a PolicyRuntime loaded from
    the checkpoint the policy node runs (its digest and version are what a forger would read off the topic).

    Without ``key`` (a policy without update_key_file, whose ``max_update_bytes`` is given): malformed, misordered and
    forged updates the checks reject, an oversized one, and last a forged block that passes every check -- without a
    key it is accepted (version + 1), which is what the key is for. With ``key`` (the policy's update_key_file): that
    forged block unsigned, signed with another key, signed and then altered (all rejected), and signed with the key
    (accepted: what the learner publishes)."""
    import torch

    from swfp_ros.algo import auth
    from swfp_ros.algo.blocks import Cascade, RefinementBlock
    from swfp_ros.algo.serialize import BlockUpdate

    obs, act, digest, v = runtime.obs_dim, runtime.act_dim, runtime.digest, runtime.version

    def block(bias=0.0, w2=0.0125, nan_output=False, hidden=16, layers=2):
        b = RefinementBlock(obs, act, hidden, layers, tau=1.0)
        with torch.no_grad():
            b.u[-1].bias.fill_(bias)
            if nan_output:                   # finite weights; hidden units overflow to +-inf, then inf - inf = NaN
                b.u[0].weight[0::2] = 1e30
                b.u[0].weight[1::2] = -1e30
                b.u[-1].weight[:, 0::2] = 1e30
                b.u[-1].weight[:, 1::2] = -1e30
        return b, w2

    def block_update(version=v + 1, parent=digest, **kw):
        b, w2 = block(**kw)
        return BlockUpdate.from_block(version, b, parent, w2).to_bytes()

    def publish(payload: bytes):
        def run(ctx):
            ctx.update_pub.publish(M.update_msg(payload))
            time.sleep(1.0)
        return run

    # within its claim: E||M(a) - a||^2 = 7 x 0.02^2 = 0.0028 <= 0.0125; a forger's small, persistent push
    benign = block_update(bias=0.02)
    if key is not None:
        other_key = bytes(reversed(key))
        altered = bytearray(auth.sign(benign, key))
        altered[-100] ^= 0x01
        rows = [
            ('unsigned', 'forged block within its claim, unsigned (key on)', benign, 'unsigned',
             'rejected: not signed'),
            ('other_key', 'the same block signed with another key', auth.sign(benign, other_key), 'bad_signature',
             'rejected: signed with another key'),
            ('altered', 'the same block signed with the key, then one byte altered', bytes(altered), 'bad_signature',
             'rejected: signature does not match'),
            ('signed', 'the same block signed with the key (as the learner signs)', auth.sign(benign, key), None,
             'accepted'),
        ]
    else:
        corrupt = bytearray(block_update(bias=0.01))
        corrupt[len(corrupt) // 2] ^= 0xFF
        hidden = Cascade(runtime.cascade.base, [*runtime.cascade.blocks, block(bias=0.5)[0]],
                         clip=runtime.cascade.clip)
        big = block_update(hidden=512, layers=4)
        rows = [
            ('corrupt_update', 'block with one byte flipped', bytes(corrupt), 'corrupt', 'rejected: checksum'),
            ('out_of_order', f'block v{v + 2} (policy at v{v})', block_update(version=v + 2), 'out_of_order',
             'rejected: out of order'),
            ('wrong_parent', 'block that extends another policy', block_update(parent='f' * 64), 'wrong_parent',
             'rejected: parent'),
            ('forged_bias', 'forged block: +1.0 on every action, claims delta 0.1', block_update(bias=1.0),
             'trust_region', 'rejected: 560x its claim on probe states'),
            ('forged_claim', 'forged block claiming a trust region of 5.0', block_update(bias=1.0, w2=5.0),
             'claim_too_large', 'rejected: claim over the limit'),
            ('nan_output', 'block with finite weights and NaN output', block_update(nan_output=True),
             'non_finite_output', 'rejected: non-finite actions on probe states'),
            ('version_jump', 'base at version 2^40', BlockUpdate.from_policy(2 ** 40, runtime.cascade,
                                                                             runtime.normalizer).to_bytes(),
             'version_jump', 'rejected: more than 1000 versions ahead'),
            ('same_version_base', f'base at v{v} with a hidden block', BlockUpdate.from_policy(
                v, hidden, runtime.normalizer).to_bytes(), 'same_version_differs',
             'rejected: a different policy at the running version'),
            ('oversized', f'well-formed block of {len(big) / 2 ** 20:.1f} MiB (max_update_bytes '
             f'{max_update_bytes / 2 ** 20:g} MiB)', big, 'oversized', 'rejected unread'),
            ('forged_accepted', 'forged block within its claim, unsigned (key off)', benign, None,
             'accepted: without a key nothing tells it from the learner\'s'),
        ]
        assert len(big) > max_update_bytes, 'the oversized update must exceed the policy\'s max_update_bytes'
    return [Scenario(name, fault, publish(payload),
                     (f'updates_rejected_{reason}',) if reason else ('updates_applied',), expect)
            for name, fault, payload, reason, expect in rows]


LEVELS = {0: 'OK', 1: 'WARN', 2: 'ERROR', 3: 'STALE'}


@dataclass
class Status:
    level: int                    # diagnostic_msgs/DiagnosticStatus level (LEVELS)
    message: str
    values: dict


class StatusWatch:
    """The latest /swfp/status of each node, with the time it arrived."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray
        self._latest: dict[str, tuple[float, Status]] = {}
        self._lock = threading.Lock()
        node.create_subscription(DiagnosticArray, '/swfp/status', self._on_status, 50)

    def _on_status(self, msg):
        t = time.monotonic()
        with self._lock:
            for st in msg.status:
                self._latest[st.name] = (t, Status(int.from_bytes(st.level, 'little') if isinstance(st.level, bytes)
                                                   else int(st.level), st.message,
                                                   {kv.key: kv.value for kv in st.values}))

    def wait(self, name: str, pred: Callable[[Status], bool], timeout: float = 10.0) -> Status:
        """The first status of ``name`` that arrives after this call and satisfies ``pred``."""
        start = last = time.monotonic()
        while time.monotonic() - start < timeout:
            with self._lock:
                t, st = self._latest.get(name, (0.0, None))
            if t > last:
                last = t
                if pred(st):
                    return st
            time.sleep(0.02)
        raise TimeoutError(f'no /swfp/status from {name} within {timeout} s that satisfies the condition')

    def fresh(self, name: str, timeout: float = 10.0) -> dict:
        """The values of the first status of ``name`` that arrives after this call."""
        return self.wait(name, lambda st: True, timeout).values

    def latest(self, name: str) -> dict:
        """The last status of ``name`` received so far (empty if none): for failure reports."""
        with self._lock:
            return self._latest.get(name, (0.0, {}))[1]


@dataclass
class Context:
    arm: ScriptedArm
    status: StatusWatch
    estop_pub: object                               # a node in the policy's estop_release_sources
    update_pub: object
    context: object = None                          # the monitor's rclpy Context (other_node)
    process: object = None                          # the policy node's process (.pid: leader of its process group)
    policy_name: str = '/policy_node'


def run_scenario(ctx: Context, sc: Scenario, settle_s: float = 0.7) -> dict:
    """Normal operation, the fault, normal operation again: every policy command in the fault and the recovery
    after it is audited. Returns the table row."""
    time.sleep(settle_s)
    before = ctx.status.fresh(ctx.policy_name)
    audit = ctx.arm.audit
    audit.judge()
    audit.reset()
    observed = sc.run(ctx) or {}
    time.sleep(settle_s)
    after = ctx.status.fresh(ctx.policy_name)
    checked, violations, _ = audit.judge()

    def delta(key):
        return int(after.get(key, 0)) - int(before.get(key, 0))
    return {'scenario': sc.name, 'fault': sc.fault, 'commands': checked, 'violations': len(violations),
            'examples': violations[:3], 'holds': delta('holds'),
            'counters': {k: delta(k) for k in sc.counters}, 'version': int(after.get('policy_version', -1)),
            'version_before': int(before.get('policy_version', -1)), 'expect': sc.expect, 'observed': observed}
