"""Recorder node in a real process: live topics -> a rosbag2 that the rosbags reader opens (mcap and sqlite3)."""
import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy')

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray  # noqa: E402

from test_policy_sim_graph import node_status  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_recorder_writes_readable_bag(launch_node, ros_node, tmp_path, storage):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = tmp_path / f'bag_{storage}'
    node = ros_node.node
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    estop = node.create_publisher(Bool, '/swfp/estop', latched)
    estop.publish(Bool(data=True))  # before the recorder subscribes: must still be recorded (transient local)
    task = node.create_publisher(Float64MultiArray, '/swfp/task', QoSProfile(depth=100))
    joints = node.create_publisher(JointState, '/joint_states', QoSProfile(depth=100))
    recorder = launch_node('recorder_node', params={
        'topics': ['/joint_states', '/swfp/task', '/swfp/estop', '/not/published'], 'output': str(bag),
        'storage': storage, 'discovery_period_s': 0.2, 'status_period_s': 0.2})
    ros_node.wait_for(lambda: task.get_subscription_count() and joints.get_subscription_count()
                      and estop.get_subscription_count(), 30.0, what='the recorder subscribed to every topic')
    for i in range(25):
        task.publish(Float64MultiArray(data=[float(i), 1.0, 2.0]))
        joints.publish(JointState(name=['a', 'b'], position=[0.1 * i, 0.2]))
        time.sleep(0.01)
    recorded = {'count/swfp/task': '25', 'count/joint_states': '25', 'count/swfp/estop': '1', 'messages': '51',
                'write_errors': '0', 'lost_messages': '0'}
    ros_node.wait_for(lambda: recorded.items() <= node_status(status, '/recorder_node').items(), 30.0,
                      what='the recorder counted every message')
    assert recorder.stop() == 0, recorder.output()
    output = recorder.output()
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        types = {c.topic: c.msgtype for c in reader.connections}
        assert counts == {'/swfp/task': 25, '/joint_states': 25, '/swfp/estop': 1}, output
        assert types['/swfp/task'] == 'std_msgs/msg/Float64MultiArray'
        assert types['/joint_states'] == 'sensor_msgs/msg/JointState'
        values = [reader.deserialize(raw, c.msgtype).data[0]
                  for c, _, raw in reader.messages(connections=[c for c in reader.connections
                                                                if c.topic == '/swfp/task'])]
        assert list(values) == [float(i) for i in range(25)]
    files = {p.suffix for p in bag.iterdir()}
    assert ('.mcap' if storage == 'mcap' else '.db3') in files and '.yaml' in files


def test_a_recorder_joining_mid_episode_records_the_running_episodes_marker(launch_node, ros_node, tmp_path):
    """The sim bridge marks an episode once, at its start. A recorder that subscribes later must still record that
    marker: ingestion drops the steps recorded before a bag's first marker, so without it the running episode is
    lost, and a bag shorter than one episode yields nothing (what a short recorded fine-tuning run hit)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = tmp_path / 'bag'
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    # lockstep and no policy: the bridge publishes episode 0 as it starts, then waits for actions that never come
    launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', params={'status_period_s': 0.2})
    ros_node.wait_for(lambda: node_status(status, '/sim_bridge'), 60.0, what='the sim bridge running')
    recorder = launch_node('recorder_node', params={'topics': ['/swfp/episode'], 'output': str(bag),
                                                   'discovery_period_s': 0.2, 'status_period_s': 0.2})
    ros_node.wait_for(lambda: node_status(status, '/recorder_node').get('count/swfp/episode') == '1', 30.0,
                      what="the recorder recorded the running episode's marker")
    assert recorder.stop() == 0, recorder.output()
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        markers = [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages()]
    assert markers == [0], recorder.output()


@contextmanager
def recorder_in_process(ros_node, **params):
    """A RecorderNode in this process on the test node's context, not spun: the test drives its callbacks."""
    from rclpy.parameter import Parameter

    from swfp_ros.ros.recorder_node import RecorderNode

    overrides = [Parameter(name, value=value) for name, value in {'topics': ['/none'], **params}.items()]
    recorder = RecorderNode(context=ros_node.context, parameter_overrides=overrides)
    try:
        yield recorder
    finally:
        recorder.close()
        recorder.destroy_node()


def test_an_empty_output_records_to_a_dated_folder_in_the_working_directory(ros_node, tmp_path, monkeypatch):
    """`output: ''` (the default) records to a dated folder `./swfp_bag_<YYYYmmdd_HHMMSS>`, like `ros2 bag record`."""
    monkeypatch.chdir(tmp_path)
    with recorder_in_process(ros_node, output='') as recorder:
        assert re.fullmatch(r'swfp_bag_\d{8}_\d{6}', recorder.path.name), recorder.path
        assert recorder.path.parent == tmp_path.resolve()
    assert (recorder.path / 'metadata.yaml').is_file()


def test_a_failed_write_is_counted_and_reported_and_recording_goes_on(ros_node, tmp_path):
    """A write that fails (a full disk) must not stop the recorder: it is counted, and the status turns WARN."""
    def full_disk(*_):
        raise OSError(28, 'No space left on device')

    def reported():
        return any(s.name == '/recorder_node' and s.level == DiagnosticStatus.WARN
                   and {v.key: v.value for v in s.values}.get('write_errors') == '1'
                   for _, m in list(status) for s in m.status)

    status = ros_node.collect('/swfp/status', DiagnosticArray)
    with recorder_in_process(ros_node, output=str(tmp_path / 'bag')) as recorder:
        recorder.counts['/x'] = 0          # as if subscribed to /x
        write, recorder._bag.write = recorder._bag.write, full_disk
        recorder._write('/x', 'std_msgs/msg/Bool', b'\x00\x01\x00\x00\x01', 1)
        recorder._bag.write = write
        recorder._write('/x', 'std_msgs/msg/Bool', b'\x00\x01\x00\x00\x01', 2)
        assert (recorder.errors, recorder.counts['/x']) == (1, 1)
        recorder._publish_status()
        ros_node.wait_for(reported, 10.0, what='a WARN status counting the failed write')


def test_messages_still_held_under_sim_time_are_written_at_the_close(ros_node, tmp_path):
    """On simulation time a message waits a quarter second before it is written; stopping the recorder writes what is
    still waiting instead of dropping it."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with recorder_in_process(ros_node, output=str(tmp_path / 'bag'), use_sim_time=True) as recorder:
        recorder.counts['/flag'] = 0          # as if subscribed to /flag
        arrival = {'source_timestamp': time.time_ns(), 'received_timestamp': 0}
        recorder._on_message('/flag', 'std_msgs/msg/Bool', b'\x00\x01\x00\x00\x01', arrival)
        assert recorder.counts['/flag'] == 0   # held, not written yet
    with AnyReader([tmp_path / 'bag'], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        assert [reader.deserialize(raw, c.msgtype).data for c, _, raw in reader.messages()] == [True]
