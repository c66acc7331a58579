"""MuJoCo sim bridge: a Panda task behind the same topics a real arm has, plus task, reward and sim clock — or, in
``hardware`` mode, a mock arm that behaves like a ros2_control Panda and nothing more.

Topic names are relative (``joint_states``, ``swfp/...``): in namespace ``actor0`` the bridge is
``/actor0/joint_states`` etc., one simulated robot per actor namespace. ``/clock`` and ``/swfp/status`` are absolute
(with several bridges, let one publish the clock: ``publish_clock``). One bridge process can also simulate several
robots (``robots``: their relative namespaces, e.g. ``[actor0, actor1]``, each with its own env seeded
``seed + 1000·i`` and its own topics ``actor0/joint_states`` ...); it steps each robot on that robot's actions, and its
/clock follows the first robot.
Publishes
    joint_states    sensor_msgs/JointState        sensor-data QoS (best effort, keep last 5): like a robot driver
    swfp/task       std_msgs/Float64MultiArray    reliable, keep last 1, transient local (a late policy gets it)
    swfp/reward     std_msgs/Float64MultiArray    reliable, keep last 100 (every step counts for learning)
    /clock          rosgraph_msgs/Clock           default QoS (reliable, depth 10), when ``publish_clock``
    /swfp/status    diagnostic_msgs/DiagnosticArray  default QoS, 1 Hz
Subscribes
    swfp/action     std_msgs/Float64MultiArray (7 absolute joint targets) or trajectory_msgs/JointTrajectory
                    (``command_type: trajectory``; points executed one control step each), reliable, keep last 10.

In ``hardware`` mode the topics are those of ros2_control instead (relative, so ``arm1/...`` in namespace arm1):
    joint_states                                 sensor_msgs/JointState at ``joint_state_rate`` (the
                                                 joint_state_broadcaster), stamped with the node's clock
    forward_position_controller/commands         std_msgs/Float64MultiArray (``command_type: float64_array``)
    joint_trajectory_controller/joint_trajectory trajectory_msgs/JointTrajectory (``command_type: trajectory``;
                                                 followed by linear interpolation over time_from_start)
and no task, reward, episode or /clock: the task node computes those on a real arm.

Modes
    hardware  physics at wall-clock rate, following the latest valid command; a command of the wrong size or with
              non-finite values is ignored with a counted warning, as forward_command_controller does.
    lockstep  one control step per received action, then publish: reward, task, joint_states (in this order; the
              policy node pairs each reward with the observation that follows it). An idle bridge republishes the
              current state every ``heartbeat_s`` (same stamp) so a policy that starts late gets its first observation.
    realtime  a wall-clock timer at ``control_rate`` steps the physics with the latest valid command (hold the current
              targets when none), like a robot.
Episodes end on success (terminated) or at the task's step limit (truncated): the bridge publishes the reward with its
flags and the terminal state, resets, and publishes the reset state. Sim time (stamps and /clock) is monotonic across
episodes: it advances one control period at each reset.
Invalid actions (wrong size, NaN) are rejected with a counted, throttled warning; the arm keeps its last valid targets
(lockstep: the step is not taken).
"""
from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidNamespaceException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.validate_namespace import validate_namespace
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int32
from trajectory_msgs.msg import JointTrajectory

from . import messages as M
from .executors import run_node, steady_clock
from .graph import ROBOT_SEED_STRIDE
from .params import ParamSpec, declare_params, set_period
from .qos import ACTION_QOS, EPISODE_QOS, REWARD_QOS, TASK_QOS


PARAMS = [
    ParamSpec('task', 'panda_reach', 'the simulated task (panda_reach | panda_push)'),
    ParamSpec('seed', 0, 'seeds the first reset; later resets continue the same random stream', low=0),
    ParamSpec('mode', 'lockstep', 'lockstep: one control step per action | realtime: wall-clock physics | hardware: '
              'a mock ros2_control arm', choices=('lockstep', 'realtime', 'hardware')),
    ParamSpec('control_rate', 0.0, "realtime: control steps per second; 0 = the task's own rate", low=0.0,
              high=1000.0),
    ParamSpec('model_path', '', "Panda MJCF; '' = the gymnasium-robotics kitchen_franka assets"),
    ParamSpec('publish_clock', True, 'publish /clock (sim time) for use_sim_time nodes'),
    ParamSpec('command_type', 'float64_array', 'float64_array (7 absolute joint targets) | trajectory '
              '(JointTrajectory)', choices=('float64_array', 'trajectory')),
    ParamSpec('heartbeat_s', 0.5, 's: lockstep republishes the state when no action arrived for this long', 'live',
              low=0.01, high=3600.0),
    ParamSpec('max_episodes', 0, 'exit after this many episodes; 0 = run until shut down', 'live', low=0),
    ParamSpec('joint_state_rate', 100.0, 'hardware: joint_states per second (the controller manager\'s rate)',
              low=0.1, high=10000.0),
    ParamSpec('status_period_s', 1.0, 's between /swfp/status diagnostics', 'live', low=0.01, high=3600.0),
    ParamSpec('robots', [''], "lockstep/realtime: relative namespaces of the robots this process simulates ('' = the "
              "node's own); counters in /swfp/status are their totals"),
]


def relative_topic(prefix: str, name: str) -> str:
    return f'{prefix}/{name}' if prefix else name


def check_robot_namespaces(robots: list[str]) -> list[str]:
    """The ``robots`` parameter, checked: distinct relative namespaces ('' alone for the node's own)."""
    robots = list(robots)
    if not robots:
        raise ValueError("robots: at least one namespace ('' = the node's own)")
    if len(set(robots)) != len(robots):
        raise ValueError(f'robots: namespaces repeat in {robots}')
    for ns in robots:
        if ns == '' and len(robots) > 1:
            raise ValueError(f"robots: '' (the node's own namespace) cannot be one of several: {robots}")
        if ns.startswith('/'):
            raise ValueError(f'robots: {ns!r} is not a relative ROS namespace (no leading /)')
        if ns:
            try:
                validate_namespace(f'/{ns}')
            except InvalidNamespaceException as e:
                why = str(e).splitlines()[0].rstrip(':')
                raise ValueError(f'robots: {ns!r} is not a relative ROS namespace: {why}') from None
    return robots


class SimBridge(Node):
    def __init__(self, **kwargs):
        super().__init__('sim_bridge', **kwargs)
        from swfp_ros.sim import BRIDGE_TASKS, TASKS
        v = declare_params(self, PARAMS, on_live=self._apply_live)
        self.task_name, self.seed, self.mode = v['task'], v['seed'], v['mode']
        rate, model_path = v['control_rate'], v['model_path']
        self.publish_clock, self.command_type = v['publish_clock'], v['command_type']
        self.heartbeat_s, self.max_episodes = v['heartbeat_s'], v['max_episodes']
        self.joint_state_rate = v['joint_state_rate']
        self._live_timers: dict = {}
        try:    # settings a user got wrong: one line, as the learner node does, no traceback
            if self.task_name not in BRIDGE_TASKS:
                why = ' (end-effector actions: it runs in-process only, swfp finetune)' if self.task_name in TASKS \
                    else ''
                raise ValueError(f'task {self.task_name!r} is not served by the sim bridge{why}; choose one of '
                                 f'{sorted(BRIDGE_TASKS)}')
            robots = check_robot_namespaces(v['robots'])
            if self.mode == 'hardware' and robots != ['']:
                raise ValueError('robots: a hardware-mode bridge is one mock arm; run one bridge per arm namespace')
        except ValueError as e:
            self.get_logger().fatal(f'cannot start: {e}')
            raise SystemExit(1) from None
        _, env_class, self.step_limit = TASKS[self.task_name]

        def new_env():
            return env_class(model_path=model_path or None)
        self.counters = {'steps': 0, 'episodes': 0, 'successes': 0, 'rejected_actions': 0, 'actions': 0}
        self._warn_t = 0.0
        if self.mode == 'hardware':
            self.env = new_env()
            self.control_rate = rate if rate > 0 else self.env.control_rate_hz
            self._start_hardware()
            return

        clock_pub = self.create_publisher(Clock, '/clock', 10) if self.publish_clock else None
        self.status_pub = self.create_publisher(DiagnosticArray, '/swfp/status', 10)
        self.robots = [SimRobot(self, ns, new_env(), self.seed + ROBOT_SEED_STRIDE * i, clock_pub if i == 0 else None)
                       for i, ns in enumerate(robots)]
        self.control_rate = rate if rate > 0 else self.robots[0].env.control_rate_hz
        if self.mode == 'realtime':
            self.create_timer(1.0 / self.control_rate, self._realtime_tick, clock=steady_clock())
        else:
            self._live_timers['heartbeat_s'] = self.create_timer(self.heartbeat_s, self._heartbeat,
                                                                 clock=steady_clock())
        self._start_status_timer()
        where = f', robots {", ".join(robots)}' if robots != [''] else ''
        self.get_logger().info(f'{self.task_name} in {self.mode} mode, control {self.control_rate:g} Hz, '
                               f'seed {self.seed}, command {self.command_type}{where}')

    def _start_status_timer(self) -> None:
        period = self.get_parameter('status_period_s').value
        self._live_timers['status_period_s'] = self.create_timer(period, self._publish_status, clock=steady_clock())

    def _apply_live(self, changes: dict) -> str:
        for name, value in changes.items():
            if name in self._live_timers:
                set_period(self._live_timers[name], value)
            if name != 'status_period_s':
                setattr(self, name, value)      # heartbeat_s (also read by the heartbeat), max_episodes
        return ''

    # --- hardware mode (mock ros2_control arm) -----------------------------------------------------------------
    def _start_hardware(self):
        self.env.reset(seed=self.seed)
        self.command = self.env.joint_positions
        self.trajectory = None                          # (start time, start q, [(t, q), ...])
        self.js_pub = self.create_publisher(JointState, 'joint_states', qos_profile_sensor_data)
        self.status_pub = self.create_publisher(DiagnosticArray, '/swfp/status', 10)
        if self.command_type == 'trajectory':
            topic = 'joint_trajectory_controller/joint_trajectory'
            self.create_subscription(JointTrajectory, topic, self._on_hw_trajectory, ACTION_QOS)
        else:
            topic = 'forward_position_controller/commands'
            self.create_subscription(Float64MultiArray, topic, self._on_hw_command, ACTION_QOS)
        self._hw_last, self._hw_due = time.monotonic(), 0.0
        self.create_timer(1.0 / self.joint_state_rate, self._hardware_tick, clock=steady_clock())
        self._start_status_timer()
        self.get_logger().info(f'mock ros2_control arm: joint_states at {self.joint_state_rate:g} Hz, commands on '
                               f'{self.resolve_topic_name(topic)}')

    def _on_hw_command(self, msg):
        try:
            self.command = M.action_from_msg(msg, len(self.env.joint_names))
        except M.MessageError as e:
            self.reject(str(e))
            return
        self.trajectory = None
        self.counters['actions'] += 1

    def _on_hw_trajectory(self, msg):
        try:
            points = timed_targets(msg, self.env.joint_names)
        except M.MessageError as e:
            self.reject(str(e))
            return
        self.trajectory = (time.monotonic(), self.env.joint_positions, points)
        self.counters['actions'] += 1

    def _hardware_tick(self):
        # Physics follows the wall clock like a real arm: a tick that comes late (a busy machine) advances by the
        # time that actually passed (at most 0.1 s), not by the nominal period.
        now = time.monotonic()
        self._hw_due = min(self._hw_due + now - self._hw_last, 0.1)   # physics time owed to the wall clock
        self._hw_last = now
        if self.trajectory is not None:
            start, start_q, points = self.trajectory
            self.command = trajectory_target(start_q, points, now - start)
        self._hw_due -= self.env.advance(self.command, self._hw_due)
        self.counters['steps'] += 1
        names, pos, vel, eff = self.env.joint_state()
        self.js_pub.publish(M.joint_state_msg(names, pos, vel, eff, stamp=self.get_clock().now().to_msg()))

    # --- sim (every robot) ----------------------------------------------------------------------------------------
    def reject(self, why: str):
        self.counters['rejected_actions'] += 1
        now = time.monotonic()
        if now - self._warn_t > 1.0:
            self._warn_t = now
            self.get_logger().warning(f'rejected action ({self.counters["rejected_actions"]} so far): {why}; holding')

    def episode_done(self, robot: 'SimRobot', success: bool):
        self.counters['episodes'] += 1
        self.counters['successes'] += int(success)
        where = f'{robot.prefix}: ' if robot.prefix else ''
        self.get_logger().debug(f'{where}episode {robot.episodes}: return {robot.episode_return:.3f}, '
                                f'{"success" if success else "time limit"}')
        if self.max_episodes and self.counters['episodes'] >= self.max_episodes:
            self.get_logger().info(f'{self.max_episodes} episodes done')
            raise SystemExit(0)

    def _realtime_tick(self):
        for robot in self.robots:
            robot.realtime_tick()

    def _heartbeat(self):
        for robot in self.robots:
            if time.monotonic() - robot.last_rx >= self.heartbeat_s:
                robot.publish_state()

    def _publish_status(self):
        sim_time = self.env.sim_time if self.mode == 'hardware' else self.robots[0].sim_time
        values = {**self.counters, 'sim_time': f'{sim_time:.3f}'}
        if self.mode != 'hardware' and len(self.robots) > 1:
            values['robots'] = len(self.robots)
        self.status_pub.publish(M.status_msg(self.get_fully_qualified_name(), self.task_name,
                                             f'{self.mode} {self.task_name}', values,
                                             stamp=self.get_clock().now().to_msg()))

    def close(self):
        for env in [self.env] if self.mode == 'hardware' else [r.env for r in self.robots]:
            env.close()


class SimRobot:
    """One simulated arm of a bridge: its env, its topics under ``prefix``, its episode and sim time. The bridge
    keeps the counters (totals over its robots) and the episode limit."""

    def __init__(self, bridge: SimBridge, prefix: str, env, seed: int, clock_pub):
        self.bridge, self.prefix, self.env, self.clock_pub = bridge, prefix, env, clock_pub
        self.dt = 1.0 / env.control_rate_hz
        self.js_pub = bridge.create_publisher(JointState, relative_topic(prefix, 'joint_states'),
                                              qos_profile_sensor_data)
        self.task_pub = bridge.create_publisher(Float64MultiArray, relative_topic(prefix, 'swfp/task'), TASK_QOS)
        self.reward_pub = bridge.create_publisher(Float64MultiArray, relative_topic(prefix, 'swfp/reward'),
                                                  REWARD_QOS)
        # Episode index at each episode start: what a recorded bag is segmented on (config/ingest_panda_*.yaml).
        self.episode_pub = bridge.create_publisher(Int32, relative_topic(prefix, 'swfp/episode'), EPISODE_QOS)
        msg_type = JointTrajectory if bridge.command_type == 'trajectory' else Float64MultiArray
        bridge.create_subscription(msg_type, relative_topic(prefix, 'swfp/action'), self._on_action, ACTION_QOS)
        self.time_offset = 0.0
        self.steps = self.episodes = 0
        self.last_rx = time.monotonic()
        self.reset(seed=seed)

    @property
    def sim_time(self) -> float:
        return self.time_offset + self.env.sim_time

    def reset(self, seed=None):
        if self.steps or self.episodes:
            self.time_offset = self.sim_time + self.dt
        self.env.reset(seed=seed)
        self.episode_return = 0.0
        self.command = self.env.joint_positions        # realtime: the latest valid target (hold at start)
        self.queue: list[np.ndarray] = []               # realtime trajectory points still to execute
        self.episode_pub.publish(Int32(data=self.episodes))
        self.publish_state()

    def publish_state(self):
        stamp = M.time_msg(self.sim_time)
        if self.clock_pub is not None:
            self.clock_pub.publish(Clock(clock=stamp))
        env = self.env
        self.task_pub.publish(M.task_msg(env.task_labels, env.task_vector()))
        names, pos, vel, eff = env.joint_state()
        self.js_pub.publish(M.joint_state_msg(names, pos, vel, eff, stamp=stamp))

    def step(self, target: np.ndarray) -> bool:
        """One control step toward ``target``; True when it ended the episode (and reset)."""
        env = self.env
        _, reward, terminated, _, _ = env.step_joint_targets(target)
        truncated = (not terminated) and env.elapsed_steps >= self.bridge.step_limit
        self.steps += 1
        self.bridge.counters['steps'] += 1
        self.episode_return += reward
        self.reward_pub.publish(M.reward_msg(reward, terminated, truncated, env.elapsed_steps))
        self.publish_state()
        if not (terminated or truncated):
            return False
        self.episodes += 1
        self.bridge.episode_done(self, bool(terminated))
        self.reset()
        return True

    def _on_action(self, msg):
        self.last_rx = time.monotonic()
        try:
            targets = command_targets(msg, self.bridge.command_type, self.env.joint_names)
        except M.MessageError as e:
            self.bridge.reject(f'{self.prefix}: {e}' if self.prefix else str(e))
            return
        self.bridge.counters['actions'] += 1
        if self.bridge.mode == 'lockstep':
            for target in targets:
                if self.step(target):
                    break                         # the rest of a chunk does not carry over into a new episode
        else:
            self.command, self.queue = targets[0], targets[1:]

    def realtime_tick(self):
        if self.queue:
            self.command = self.queue.pop(0)
        self.step(self.command)


def command_targets(msg, command_type: str, joint_names: list[str]) -> list[np.ndarray]:
    """The joint targets of a command message, in ``joint_names`` order; MessageError when it is not a valid one."""
    n = len(joint_names)
    if command_type == 'float64_array':
        return [M.action_from_msg(msg, n)]
    index = {name: i for i, name in enumerate(msg.joint_names)}
    missing = [j for j in joint_names if j not in index]
    if missing:
        raise M.MessageError(f'trajectory lacks joints {missing}')
    if not msg.points:
        raise M.MessageError('trajectory has no points')
    cols = [index[j] for j in joint_names]
    points = []
    for pt in msg.points:
        pos = np.asarray(pt.positions, dtype=np.float64)
        if pos.size != len(msg.joint_names) or not np.all(np.isfinite(pos)):
            raise M.MessageError('trajectory point has a wrong size or non-finite positions')
        points.append(pos[cols])
    return points


def timed_targets(msg: JointTrajectory, joint_names: list[str]) -> list[tuple[float, np.ndarray]]:
    """A JointTrajectory's (time_from_start in s, joint targets) pairs, for a controller that follows it in time;
    MessageError when it is not a valid trajectory or its times do not increase from > 0."""
    points = command_targets(msg, 'trajectory', joint_names)
    times = [M.time_to_sec(pt.time_from_start) for pt in msg.points]
    if any(b <= a for a, b in zip([0.0] + times, times)):
        raise M.MessageError('trajectory times must increase from > 0')
    return list(zip(times, points))


def trajectory_target(start_q: np.ndarray, points: list[tuple[float, np.ndarray]], elapsed: float) -> np.ndarray:
    """The target ``elapsed`` s into a trajectory begun at ``start_q``: linear between its timed points, as
    joint_trajectory_controller interpolates them; the last point once its time has passed."""
    prev_t, prev_q = 0.0, start_q
    for t, q in points:
        if elapsed < t:
            return prev_q + (q - prev_q) * (elapsed - prev_t) / (t - prev_t)
        prev_t, prev_q = t, q
    return points[-1][1]


def is_lockstep(node: SimBridge) -> bool:
    return node.mode == 'lockstep'


def main(args=None) -> int:
    return run_node('sim_bridge', SimBridge, args=args, lockstep=is_lockstep)


if __name__ == '__main__':
    sys.exit(main())
