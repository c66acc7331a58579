"""Recorder node in a real process: live topics -> a rosbag2 that the rosbags reader opens (mcap and sqlite3)."""
import os
import random
import signal
import subprocess
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray  # noqa: E402

from swfp_ros.ros.bringup import find_executable  # noqa: E402


def ros_env(domain: int) -> dict:
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST', PYTHONUNBUFFERED='1')
    env.pop('ROS_LOCALHOST_ONLY', None)
    return env


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def wait_for(pred, timeout: float, spin=None, period: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if spin is not None:
            spin()
        if pred():
            return True
        time.sleep(period)
    return False


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_recorder_writes_readable_bag(tmp_path, monkeypatch, storage):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    domain = random.randint(20, 200)
    env = ros_env(domain)
    for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE'):
        monkeypatch.setenv(k, env[k])
    bag = tmp_path / f'bag_{storage}'
    cmd = find_executable('recorder_node') + [
        '--ros-args', '-p', "topics:=['/joint_states', '/swfp/task', '/swfp/estop', '/not/published']",
        '-p', f'output:={bag}', '-p', f'storage:={storage}', '-p', 'discovery_period:=0.2']
    log = open(tmp_path / 'recorder.log', 'w+')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node('recorder_test_pub', context=ctx)
    try:
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        estop = node.create_publisher(Bool, '/swfp/estop', latched)
        estop.publish(Bool(data=True))  # before the recorder subscribes: must still be recorded (transient local)
        task = node.create_publisher(Float64MultiArray, '/swfp/task', QoSProfile(depth=100))
        joints = node.create_publisher(JointState, '/joint_states', QoSProfile(depth=100))
        assert wait_for(lambda: task.get_subscription_count() and joints.get_subscription_count()
                        and estop.get_subscription_count(), 30.0), 'recorder never subscribed'
        time.sleep(0.5)  # let the subscriptions match both ways
        for i in range(25):
            task.publish(Float64MultiArray(data=[float(i), 1.0, 2.0]))
            joints.publish(JointState(name=['a', 'b'], position=[0.1 * i, 0.2]))
            time.sleep(0.01)
        time.sleep(1.0)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        rc = stop(proc)
        log.seek(0)
        output = log.read()
        log.close()
    assert rc == 0, output
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
