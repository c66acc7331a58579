"""The task node in its own process, fed the way a real arm feeds it: a driver's /joint_states (sensor-data QoS)
published by this test, and goals on swfp/goal. It publishes swfp/task only from fresh, valid joint states and a goal
in the robot's base frame; everything else is counted on /swfp/status and publishes nothing. As task monitor it runs
episodes over its goal list: the home posture (latched), an episode marker at each start, and each step's reward. The
end effector is checked against this test's own forward kinematics (MuJoCo on the Panda model, not the project's
kinematics code)."""
import threading
from array import array

import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, Int32  # noqa: E402

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.qos import EPISODE_QOS, HOME_QOS, REWARD_QOS  # noqa: E402
from swfp_ros.ros.task_node import _xyz_list  # noqa: E402
from swfp_ros.sim.tasks import HOME_Q  # noqa: E402
from test_multi_actor import statuses  # noqa: E402

ARM = [f'panda_joint{i}' for i in range(1, 8)]
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def end_effector(q):
    import mujoco
    from swfp_ros.sim.panda_model import default_panda_xml
    model = mujoco.MjModel.from_xml_string(default_panda_xml())
    data = mujoco.MjData(model)
    for name, value in zip(ARM, q):
        data.qpos[model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)]] = value
    mujoco.mj_kinematics(model, data)
    return data.site_xpos[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, 'end_effector')].copy()


class Driver:
    """Joint states at 50 Hz from a thread, like an arm's joint_state_broadcaster; ``state`` (names, positions) may be
    replaced (one assignment: the thread never sees the names of one state with the positions of another)."""

    def __init__(self, ros_node):
        self.pub = ros_node.node.create_publisher(JointState, '/joint_states', qos_profile_sensor_data)
        self.state = (list(ARM), np.array(HOME_Q))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.pub.publish(M.joint_state_msg(*self.state))

    def stop(self):
        self._stop.set()
        self._thread.join(1.0)


def goal_msg(xyz, frame):
    msg = PoseStamped()
    msg.header.frame_id = frame
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, xyz)
    return msg


def test_task_only_from_fresh_valid_joint_states_and_a_goal_in_the_base_frame(ros_node, launch_node):
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    tasks = ros_node.collect('/swfp/task', Float64MultiArray, LATCHED)
    proc = launch_node('task_node', params={'status_period_s': 0.1})
    number = lambda key: int(statuses(status).get('/task_node', {}).get(key, 0))  # noqa: E731
    # started before the arm's driver, as a cell often is: it waits, publishes no task, and keeps running
    ros_node.wait_for(lambda: len(status) >= 5, 30.0, what='five statuses before any joint state')
    assert not tasks and number('task') == 0 and proc.alive(), proc.output()
    driver = Driver(ros_node)
    try:
        ros_node.wait_for(lambda: number('no_goal') >= 5, 30.0, what='joint states counted without a goal')
        goals = ros_node.node.create_publisher(PoseStamped, '/swfp/goal', LATCHED)
        goals.publish(goal_msg([0.5, 0.1, 0.3], 'world'))
        ros_node.wait_for(lambda: number('bad_goal') == 1, 10.0, what='the goal in another frame refused')
        assert not tasks and number('task') == 0 and number('goals') == 0, statuses(status)

        goals.publish(goal_msg([0.5, 0.1, 0.3], 'panda_link0'))
        ros_node.wait_for(lambda: tasks and number('goals') == 1, 10.0, what='the goal taken and a task')
        _, vector = M.task_from_msg(tasks[-1][1], ('ee_x', 'ee_y', 'ee_z', 'goal_x', 'goal_y', 'goal_z'))
        assert np.allclose(vector[:3], end_effector(HOME_Q), atol=1e-9) and np.allclose(vector[3:], [0.5, 0.1, 0.3])

        driver.state = (ARM, np.where(np.arange(7) == 2, np.nan, HOME_Q))     # a driver fault: NaN
        ros_node.wait_for(lambda: number('bad_joint_state') >= 3, 10.0, what='NaN joint states refused')
        driver.state = (ARM[:6], np.array(HOME_Q[:6]))                         # a joint missing
        ros_node.wait_for(lambda: number('bad_joint_state') >= 10, 10.0, what='joint states lacking a joint refused')

        moved = np.array(HOME_Q) + 0.2
        driver.state = (ARM, moved)
        expected = end_effector(moved)
        ros_node.wait_for(lambda: np.allclose(M.task_from_msg(tasks[-1][1])[1][:3], expected, atol=1e-9),
                          10.0, what='the task following the joint states')
        # a status from while valid states flow (tasks counted after this point): the stale count before the silence
        # (the refused states above may have let the last valid one go stale too)
        flowing = number('task')
        ros_node.wait_for(lambda: number('task') >= flowing + 3, 10.0, what='tasks from valid joint states')
        stale = number('stale')
        driver.stop()                                       # the arm goes silent: its last state turns stale
        ros_node.wait_for(lambda: number('stale') >= stale + 3, 10.0, what='stale joint states counted')
        published = number('task')
        ros_node.wait_for(lambda: number('stale') >= stale + 10, 10.0, what='more stale control steps')
        assert number('task') == published, 'a task published from stale joint states'
    finally:
        driver.stop()
    assert proc.stop() == 0, proc.output()


def test_goal_parameters_are_xyz_triples_and_the_placeholder_means_none():
    assert _xyz_list([], 'goals') == [] and _xyz_list([0.0], 'goals') == []    # the parameter's "none" placeholder
    assert _xyz_list(array('d', [0.0]), 'goals') == [], 'as rclpy gives a double array parameter'
    one, two = _xyz_list([0.5, 0.1, 0.3, 0.4, -0.2, 0.5], 'goals')
    assert np.array_equal(one, [0.5, 0.1, 0.3]) and np.array_equal(two, [0.4, -0.2, 0.5])
    for count in (2, 4, 7):
        with pytest.raises(ValueError, match=f'goals must hold x, y, z triples, got {count} values'):
            _xyz_list([0.5] * count, 'goals')


def test_monitor_runs_episodes_over_its_goal_list(ros_node, launch_node):
    """An arm that stays at home: every episode runs to its 3-step time limit, and the next starts at once with the
    next goal of the list (cycled)."""
    goals = np.array([[0.5, 0.1, 0.3], [0.4, -0.2, 0.5]])
    homes = ros_node.collect('/swfp/home', JointState, HOME_QOS)
    markers = ros_node.collect('/swfp/episode', Int32, EPISODE_QOS)
    rewards = ros_node.collect('/swfp/reward', Float64MultiArray, REWARD_QOS)
    proc = launch_node('task_node', params={'monitor': True, 'episode_steps': 3, 'goals': goals.ravel().tolist()})
    driver = Driver(ros_node)

    def episodes_of_rewards() -> list[list]:
        """The rewards received, one list per episode; the first is dropped (its start may predate discovery)."""
        infos = [M.reward_from_msg(msg) for _, msg in list(rewards)]
        starts = [i for i, info in enumerate(infos) if info.step == 1]
        return [infos[a:b] for a, b in zip(starts[1:], starts[2:] + [len(infos)])][:3]

    def received_all():
        whole = episodes_of_rewards()
        return homes and len(markers) >= 4 and len(whole) == 3 and len(whole[-1]) == 3

    try:
        ros_node.wait_for(received_all, 30.0, what='the home posture, four markers and three whole episodes of '
                          'rewards after the first one')
    finally:
        driver.stop()
    assert proc.stop() == 0, proc.output()
    home, _ = M.arm_from_joint_state(homes[-1][1], ARM)
    assert np.array_equal(home, HOME_Q), 'the home posture published is the simulation\'s'
    assert [msg.data for _, msg in markers][:4] == [0, 1, 2, 3], 'one marker per episode, from 0, none lost'
    ee = end_effector(HOME_Q)
    distances = np.linalg.norm(goals - ee, axis=1)
    assert np.all(distances > 0.05) and abs(distances[0] - distances[1]) > 0.05, 'the goals tell episodes apart'
    seen = []
    for episode in episodes_of_rewards():
        assert [r.step for r in episode] == [1, 2, 3] and [r.truncated for r in episode] == [False, False, True]
        assert not any(r.terminated for r in episode), 'the arm never reached a goal'
        goal_index = int(np.argmin(np.abs(distances + episode[0].reward)))
        assert np.allclose([r.reward for r in episode], -distances[goal_index], atol=1e-9)
        seen.append(goal_index)
    assert seen in ([0, 1, 0], [1, 0, 1]), f'the goals alternate episode by episode, got {seen}'
