"""Task node: on a real arm, what the sim bridge provides in simulation — the task vector, and as task monitor the
rewards and episodes — computed from the arm's joint states and a goal (:class:`swfp_ros.sim.monitor.TaskMonitor`:
forward kinematics of the arm's MuJoCo model, and the reach task's one shared definition of vector and reward).

Every ``1 / control_rate`` s, from the latest joint state (by joint name), it publishes ``swfp/task`` (the labels the
policy's checkpoint expects); without a goal it publishes nothing and the policy holds. With ``monitor: true`` it also
publishes ``swfp/reward`` per control step, ``swfp/episode`` at each episode start and the home posture on
``swfp/home``: after each episode the policy node brings the arm home (rate-limited, through its safety filter), and
the next episode starts once the measured joints are within ``home_tolerance`` of it.

Topics (relative: under the arm's namespace)
    sub joint_states   sensor_msgs/JointState          sensor data QoS (what drivers publish)
    sub swfp/goal      geometry_msgs/PoseStamped       reliable, transient local, depth 1 (what RViz's goal tool and
                                                       planners publish); position in the robot base frame
    pub swfp/task      std_msgs/Float64MultiArray      reliable, transient local, depth 1 (labelled)
    pub swfp/reward    std_msgs/Float64MultiArray      reliable, depth 100 (monitor)
    pub swfp/episode   std_msgs/Int32                  reliable, depth 100, transient local (monitor)
    pub swfp/home      sensor_msgs/JointState          reliable, transient local, depth 1 (monitor)
    pub /swfp/status   diagnostic_msgs/DiagnosticArray default
Parameters (config/task_node.yaml): ``PARAMS`` below, with descriptions and ranges (``ros2 param describe``);
``stale_timeout_s`` and ``status_period_s`` apply live, the others are read at start.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, Int32

from . import messages as M
from .executors import run_node, steady_clock
from .params import ParamSpec, declare_params, set_period
from .policy_node import ARM_JOINTS
from .qos import EPISODE_QOS, HOME_QOS, REWARD_QOS, TASK_QOS

GOAL_QOS = TASK_QOS        # latched: a goal given before the node started still arrives


def _xyz_list(values, name: str) -> list[np.ndarray]:
    values = [float(v) for v in values]
    if values in ([], [0.0]):
        return []
    if len(values) % 3:
        raise ValueError(f'{name} must hold x, y, z triples, got {len(values)} values')
    return [np.array(values[i:i + 3]) for i in range(0, len(values), 3)]


def task_params(tasks, success_distance: float) -> list[ParamSpec]:
    """The task node's parameters (defaults from the simulated reach task)."""
    return [
        ParamSpec('task', 'panda_reach', 'the task whose vector needs nothing but the arm: end effector + goal '
                  '(panda_reach only)'),
        ParamSpec('model_path', '', "the arm's MJCF for forward kinematics; '' = the simulation's Panda"),
        ParamSpec('joint_names', list(ARM_JOINTS), "the arm joints, in the model's order"),
        ParamSpec('base_frame', 'panda_link0', 'goals must be in this frame or carry an empty frame_id (no TF '
                  'lookup)'),
        ParamSpec('goal', [0.0], 'initial goal x, y, z (m); [0.0] = none until one arrives on swfp/goal'),
        ParamSpec('goals', [0.0], 'monitor: goals x1, y1, z1, x2, ... cycled per episode; [0.0] = the latest '
                  'swfp/goal'),
        ParamSpec('monitor', False, 'publish swfp/reward, swfp/episode and swfp/home (online fine-tuning)'),
        ParamSpec('control_rate', 20.0, 'Hz, as in training', low=0.1, high=1000.0),
        ParamSpec('episode_steps', tasks['panda_reach'][2], 'monitor: time limit in control steps', low=1),
        ParamSpec('success_distance', success_distance, 'm: end effector to goal for success', low=1e-4, high=1.0),
        ParamSpec('home', [0.0], "monitor: home posture between episodes (rad); [0.0] = the simulation's home"),
        ParamSpec('home_tolerance', 0.05, 'rad per joint: "at home"', low=1e-4, high=1.0),
        ParamSpec('stale_timeout_s', 0.5, 's: joint states older than this publish nothing (the policy holds)',
                  'live', low=0.001, high=60.0),
        ParamSpec('status_period_s', 1.0, 's between /swfp/status diagnostics', 'live', low=0.01, high=3600.0,
                  former='status_period'),
    ]


class TaskNode(Node):
    def __init__(self, **kwargs):
        super().__init__('task_node', **kwargs)
        from swfp_ros.sim import TASKS
        from swfp_ros.sim.kinematics import ArmKinematics
        from swfp_ros.sim.monitor import TaskMonitor
        from swfp_ros.sim.tasks import ReachDefinition, SUCCESS_DISTANCE
        v = declare_params(self, task_params(TASKS, SUCCESS_DISTANCE), on_live=self._apply_live)
        task, model_path = v['task'], v['model_path']
        self.joint_names = tuple(v['joint_names'])
        self.base_frame = v['base_frame']
        goal, goals = _xyz_list(v['goal'], 'goal'), _xyz_list(v['goals'], 'goals')
        monitor, rate, episode_steps = v['monitor'], v['control_rate'], v['episode_steps']
        success, home, home_tol = v['success_distance'], [float(x) for x in v['home']], v['home_tolerance']
        self.stale_timeout_s = v['stale_timeout_s']
        if task != 'panda_reach':
            raise ValueError(f'task {task!r}: the task node computes panda_reach (end effector + goal from joint '
                             f'states); other tasks need perception of the objects (publish their swfp/task yourself)')
        kin = ArmKinematics(model_path or None)
        if self.joint_names != kin.joint_names:
            raise ValueError(f'joint_names {list(self.joint_names)} do not match the model\'s {list(kin.joint_names)}')
        self.monitor = TaskMonitor(kin, ReachDefinition(success), monitor=monitor, episode_steps=episode_steps,
                                   goals=goals or goal, home=None if home == [0.0] else home,
                                   home_tolerance=home_tol)
        self.labels = ReachDefinition.labels
        self.js = None                          # (q, receive time)
        self.counters = {'task': 0, 'rewards': 0, 'goals': 0, 'bad_goal': 0, 'bad_joint_state': 0, 'stale': 0,
                         'no_goal': 0}
        self._warn_t: dict[str, float] = {}

        self.task_pub = self.create_publisher(Float64MultiArray, 'swfp/task', TASK_QOS)
        self.status_pub = self.create_publisher(DiagnosticArray, '/swfp/status', 10)
        if monitor:
            self.reward_pub = self.create_publisher(Float64MultiArray, 'swfp/reward', REWARD_QOS)
            self.episode_pub = self.create_publisher(Int32, 'swfp/episode', EPISODE_QOS)
            home_pub = self.create_publisher(JointState, 'swfp/home', HOME_QOS)
            home_pub.publish(M.joint_state_msg(self.joint_names, self.monitor.home))
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, 'swfp/goal', self._on_goal, GOAL_QOS)
        self.create_timer(1.0 / rate, self._step, clock=steady_clock())
        self._status_timer = self.create_timer(v['status_period_s'], self._publish_status, clock=steady_clock())
        self.get_logger().info(f'{task} from {self.joint_names[0]}..{self.joint_names[-1]} at {rate:g} Hz'
                               f'{", task monitor" if monitor else ""}; goal: '
                               f'{"list of %d" % len(goals) if goals else goal[0] if goal else "from swfp/goal"}')

    def _apply_live(self, changes: dict) -> str:
        if 'status_period_s' in changes:
            set_period(self._status_timer, changes['status_period_s'])
        self.stale_timeout_s = changes.get('stale_timeout_s', self.stale_timeout_s)
        return ''

    def _warn(self, key: str, text: str):
        self.counters[key] += 1
        now = time.monotonic()
        if now - self._warn_t.get(key, 0.0) > 2.0:
            self._warn_t[key] = now
            self.get_logger().warning(f'{text} ({self.counters[key]} so far)')

    def _on_joint_state(self, msg):
        try:
            q, _ = M.arm_from_joint_state(msg, self.joint_names)
        except M.MessageError as e:
            self._warn('bad_joint_state', f'invalid joint state: {e}')
            return
        self.js = (q, time.monotonic())

    def _on_goal(self, msg: PoseStamped):
        frame = msg.header.frame_id
        if frame not in ('', self.base_frame):
            self._warn('bad_goal', f'goal in frame {frame!r} ignored: give it in {self.base_frame!r}')
            return
        p = msg.pose.position
        try:
            self.monitor.set_goal([p.x, p.y, p.z])
        except ValueError as e:
            self._warn('bad_goal', f'goal ignored: {e}')
            return
        self.counters['goals'] += 1
        self.get_logger().info(f'goal ({p.x:.3f}, {p.y:.3f}, {p.z:.3f})')

    def _step(self):
        if self.js is None:
            return
        q, rx = self.js
        if time.monotonic() - rx > self.stale_timeout_s:
            self._warn('stale', 'joint states are stale: task not published')
            return
        out = self.monitor.control_step(q)
        if out.reward is not None:
            self.reward_pub.publish(M.reward_msg(*out.reward))
            self.counters['rewards'] += 1
        if out.episode is not None:
            self.episode_pub.publish(Int32(data=out.episode))
        if out.task is None:
            self.counters['no_goal'] += 1
            return
        self.task_pub.publish(M.task_msg(self.labels, out.task))
        self.counters['task'] += 1

    def _publish_status(self):
        m = self.monitor
        values = {**self.counters, **m.counters, 'state': m.state, 'episode': m.episode_index,
                  'goal': '' if m.goal is None else ','.join(f'{x:.3f}' for x in m.goal)}
        self.status_pub.publish(M.status_msg(self.get_fully_qualified_name(), 'task', m.state, values,
                                             stamp=self.get_clock().now().to_msg()))

    def close(self):
        pass


def main(args=None) -> int:
    return run_node('task_node', TaskNode, args=args)


if __name__ == '__main__':
    sys.exit(main())
