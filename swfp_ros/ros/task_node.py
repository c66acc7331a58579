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
    pub swfp/episode   std_msgs/Int32                  reliable, depth 100 (monitor)
    pub swfp/home      sensor_msgs/JointState          reliable, transient local, depth 1 (monitor)
    pub /swfp/status   diagnostic_msgs/DiagnosticArray default
Parameters (config/task_node.yaml)
    task             string    panda_reach (the task whose vector needs no perception beyond the arm)
    model_path       string    the arm's MJCF ('' = the simulation's Panda)
    joint_names      string[]  the arm joints, in the model's order
    base_frame       string    goals must be in this frame (or carry an empty frame_id): there is no TF lookup
    goal             double[]  initial goal x, y, z (m); [] or [0.0] = none until one arrives on swfp/goal
    goals            double[]  monitor: goal list x1, y1, z1, x2, ... (cycled); empty = the latest goal received
    monitor          bool      publish rewards and episodes (online fine-tuning)
    control_rate     double    Hz
    episode_steps    int       monitor: time limit in control steps
    success_distance double    m
    home             double[]  monitor: home posture (rad); [] = the simulation's home
    home_tolerance   double    rad, per joint
    stale_timeout_s  double    joint states older than this: nothing published (the policy's watchdog holds)
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
from .policy_node import ARM_JOINTS, HOME_QOS, REWARD_QOS, TASK_QOS

GOAL_QOS = TASK_QOS        # latched: a goal given before the node started still arrives


def _xyz_list(values, name: str) -> list[np.ndarray]:
    values = [float(v) for v in values]
    if values in ([], [0.0]):
        return []
    if len(values) % 3:
        raise ValueError(f'{name} must hold x, y, z triples, got {len(values)} values')
    return [np.array(values[i:i + 3]) for i in range(0, len(values), 3)]


class TaskNode(Node):
    def __init__(self, **kwargs):
        super().__init__('task_node', **kwargs)
        from swfp_ros.sim import TASKS
        from swfp_ros.sim.kinematics import ArmKinematics
        from swfp_ros.sim.monitor import TaskMonitor
        from swfp_ros.sim.tasks import ReachDefinition, SUCCESS_DISTANCE
        p = self.declare_parameter
        task = p('task', 'panda_reach').value
        model_path = p('model_path', '').value
        self.joint_names = tuple(p('joint_names', list(ARM_JOINTS)).value)
        self.base_frame = p('base_frame', 'panda_link0').value
        goal = _xyz_list(p('goal', [0.0]).value, 'goal')
        goals = _xyz_list(p('goals', [0.0]).value, 'goals')
        monitor = bool(p('monitor', False).value)
        rate = float(p('control_rate', 20.0).value)
        episode_steps = int(p('episode_steps', TASKS.get(task, (None, None, 50))[2]).value)
        success = float(p('success_distance', SUCCESS_DISTANCE).value)
        home = [float(v) for v in p('home', [0.0]).value]
        home_tol = float(p('home_tolerance', 0.05).value)
        self.stale_timeout_s = float(p('stale_timeout_s', 0.5).value)
        status_period = float(p('status_period', 1.0).value)
        if task != 'panda_reach':
            raise ValueError(f'task {task!r}: the task node computes panda_reach (end effector + goal from joint '
                             f'states); other tasks need perception of the objects (publish their swfp/task yourself)')
        if rate <= 0:
            raise ValueError(f'control_rate must be positive, got {rate}')
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
            self.episode_pub = self.create_publisher(Int32, 'swfp/episode', REWARD_QOS)
            home_pub = self.create_publisher(JointState, 'swfp/home', HOME_QOS)
            home_pub.publish(M.joint_state_msg(self.joint_names, self.monitor.home))
        self.create_subscription(JointState, 'joint_states', self._on_joint_state, qos_profile_sensor_data)
        self.create_subscription(PoseStamped, 'swfp/goal', self._on_goal, GOAL_QOS)
        self.create_timer(1.0 / rate, self._step, clock=steady_clock())
        self.create_timer(status_period, self._publish_status, clock=steady_clock())
        self.get_logger().info(f'{task} from {self.joint_names[0]}..{self.joint_names[-1]} at {rate:g} Hz'
                               f'{", task monitor" if monitor else ""}; goal: '
                               f'{"list of %d" % len(goals) if goals else goal[0] if goal else "from swfp/goal"}')

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
