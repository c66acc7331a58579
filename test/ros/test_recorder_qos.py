"""The recorder adapts each subscription to the topic's publishers, as rosbag2 does: a latched (transient-local) topic
is recorded from the sample published before the recorder started, and a best-effort one (a driver's joint states)
is recorded at all (a reliable subscription would match no best-effort publisher), also beside a reliable publisher
of the same topic; a topic with a volatile and a latched publisher is recorded from the volatile one."""
import threading

import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.qos import ESTOP_QOS  # noqa: E402
from test_multi_actor import statuses  # noqa: E402


def test_a_latched_sample_from_before_the_start_and_best_effort_joint_states_are_recorded(
        launch_node, ros_node, tmp_path):
    from swfp_ros.data import open_bag
    ros_node.node.create_publisher(Bool, '/swfp/estop', ESTOP_QOS).publish(Bool(data=True))
    joint_states = ros_node.node.create_publisher(JointState, '/joint_states', qos_profile_sensor_data)
    # created second, so discovered second (one participant's endpoints are announced in order): the recorder
    # never knows the reliable publisher alone
    reliable_joint_states = ros_node.node.create_publisher(JointState, '/joint_states', 10)
    volatile = ros_node.node.create_publisher(Bool, '/mixed', 10)             # created first, discovered first
    ros_node.node.create_publisher(Bool, '/mixed', ESTOP_QOS).publish(Bool(data=True))
    stop = threading.Event()

    def drive():        # 50 Hz, like a driver's joint_state_broadcaster, and a reliable publisher beside it
        while not stop.wait(0.02):
            joint_states.publish(M.joint_state_msg([f'joint{i}' for i in range(1, 8)], np.zeros(7)))
            reliable_joint_states.publish(M.joint_state_msg(['gripper'], np.zeros(1)))
            volatile.publish(Bool(data=False))
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    recorder = launch_node('recorder_node', params={'output': str(tmp_path / 'bag'), 'discovery_period_s': 0.1,
                                                    'status_period_s': 0.1,
                                                    'topics': ['/swfp/estop', '/joint_states', '/mixed']})
    counts = lambda: statuses(status).get('/recorder_node', {})  # noqa: E731
    try:
        ros_node.wait_for(lambda: counts().get('count/swfp/estop') == '1' and int(counts().get('count/joint_states', 0))
                          >= 10 and int(counts().get('count/mixed', 0)) >= 5, 30.0, what='every topic recorded')
    finally:
        stop.set()
        driver.join(1.0)
    assert recorder.stop() == 0, recorder.output()
    with open_bag(tmp_path / 'bag') as bag:
        estops = [deserialize_message(raw, Bool).data for _, _, _, raw in bag.messages(['/swfp/estop'])]
        names = {deserialize_message(raw, JointState).name[0] for _, _, _, raw in bag.messages(['/joint_states'])}
        mixed = [deserialize_message(raw, Bool).data for _, _, _, raw in bag.messages(['/mixed'])]
    assert estops == [True]
    assert names == {'joint1', 'gripper'}      # both publishers recorded
    assert len(mixed) >= 5 and False in mixed  # the volatile publisher recorded
