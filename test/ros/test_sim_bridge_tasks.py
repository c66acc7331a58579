"""The sim bridge as a node: the tasks it serves (asked for the OGBench task it exits with the reason), and how it
executes action chunks in lockstep and in realtime, with the test process as the policy."""
import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, Int32  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.qos import ACTION_QOS, EPISODE_QOS  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.sim.panda_model import ARM_JOINTS  # noqa: E402

KEEP_ALL = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
HOME_Q = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 0.33, 0.785])   # a Panda posture well inside its joint limits


def test_sim_bridge_refuses_an_end_effector_task_with_the_reason(launch_node):
    bridge = launch_node('sim_bridge', params={'task': 'cube_single'})
    rc = bridge.proc.wait(timeout=60)
    out = bridge.output()
    assert rc != 0 and 'Traceback' not in out, out
    assert "task 'cube_single' is not served by the sim bridge (end-effector actions" in out, out
    assert "['panda_push', 'panda_reach']" in out, out


def test_a_chunk_ends_with_its_episode_and_max_episodes_ends_the_bridge(launch_node, ros_node):
    """Chunks of 3 targets on a 50-step episode: the 17th chunk's last target falls after the episode's end and is
    dropped (the next episode starts from the policy's next command, not from the last episode's plan), checked on the
    bridge's own step count once it reports the episode done; with max_episodes 2 it exits 0 after the second. The
    test paces itself on the bridge's status, which it publishes periodically (a reward published before DDS matched
    the test's subscription would be lost, and a wait for it would never end)."""
    limit, chunk = TASKS['panda_reach'][2], 3
    rewards = ros_node.collect('/swfp/reward', Float64MultiArray, KEEP_ALL)
    status = ros_node.collect('/swfp/status', DiagnosticArray, KEEP_ALL)
    actions = ros_node.node.create_publisher(JointTrajectory, '/swfp/action', ACTION_QOS)
    bridge = launch_node('sim_bridge', params={'task': 'panda_reach', 'command_type': 'trajectory',
                                               'max_episodes': 2, 'status_period_s': 0.05, 'publish_clock': False})
    ros_node.wait_for_subscribers('/swfp/action', timeout=60)

    def counters(first_with_episodes=None):
        """The bridge's latest counters, or those of its first status after that many episodes ended ({} if none)."""
        for _, msg in (list(status) if first_with_episodes is not None else reversed(list(status))):
            values = {kv.key: int(kv.value) for kv in msg.status[0].values if kv.key in ('steps', 'episodes')}
            if first_with_episodes is None or values['episodes'] == first_with_episodes:
                return values
        return {}
    try:
        for episode in (1, 2):
            for k in range(1, -(-limit // chunk) + 1):
                actions.publish(M.trajectory_msg(ARM_JOINTS, np.tile(HOME_Q, (chunk, 1)), 0.05))
                if episode == 2 and k * chunk >= limit:
                    break                                     # the bridge exits on this chunk's last step
                steps = (episode - 1) * limit + min(k * chunk, limit)
                ros_node.wait_for(lambda: counters().get('steps', 0) >= steps, 30,
                                  what=f'the steps of chunk {k} of episode {episode}')
            if episode == 1:
                ros_node.wait_for(lambda: counters(1), 30, what='a status after the first episode')
                assert counters(1)['steps'] == limit, counters(1)
        assert bridge.proc.wait(timeout=30) == 0, bridge.output()[-2000:]
    finally:
        print(bridge.output()[-2000:])
    assert '2 episodes done' in bridge.output()
    # what DDS delivered of the rewards (all of them, unless the first were published before it matched)
    expected = list(range(1, limit + 1)) * 2
    received = [M.reward_from_msg(msg) for _, msg in rewards]
    assert len(received) >= limit and [r.step for r in received] == expected[-len(received):]
    assert all(r.truncated == (r.step == limit) for r in received)


def test_realtime_steps_through_a_chunk_one_target_per_tick(launch_node, ros_node):
    """In realtime a JointTrajectory's targets are taken one per control tick and the last is held: a chunk
    (here, current, current, current + 0.05 rad on joint 1) takes the arm to its last target.

    The episodes run on meanwhile (reach: 50 ticks, 2.5 s) and a reset drops the chunk being executed, so a reset
    that lands between the chunk's arrival and the arm's arrival (a few ticks of the 50) sends the test a new start:
    it tries again from there, up to five times."""
    states = ros_node.collect('/joint_states', JointState, qos_profile_sensor_data)
    episodes = ros_node.collect('/swfp/episode', Int32, EPISODE_QOS)
    actions = ros_node.node.create_publisher(JointTrajectory, '/swfp/action', ACTION_QOS)
    bridge = launch_node('sim_bridge', params={'task': 'panda_reach', 'command_type': 'trajectory',
                                               'mode': 'realtime', 'publish_clock': False})
    try:
        ros_node.wait_for_subscribers('/swfp/action', timeout=60)
        ros_node.wait_for(lambda: states and episodes, 30, what='a joint state and an episode marker')
        def reached() -> bool:
            return abs(states[-1][1].position[0] - last[0]) < 0.005

        for _ in range(5):
            episode = episodes[-1][1].data
            start = np.array(states[-1][1].position[:7])
            last = start + np.array([0.05, 0, 0, 0, 0, 0, 0])
            actions.publish(M.trajectory_msg(ARM_JOINTS, [start, start, last], 0.05))
            ros_node.wait_for(lambda: reached() or episodes[-1][1].data != episode, 30,
                              what="the chunk's last target reached, or a new episode")
            if reached():
                break
        assert reached(), "the chunk's last target was not reached in five episodes"
    finally:
        print(bridge.output()[-2000:])
    assert bridge.stop() == 0
