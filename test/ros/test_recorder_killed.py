"""A recorder node SIGKILLed (a crash, or what launch does once its SIGTERM grace is over) while its topics pause: its
bag, never closed, holds every message the node had flushed, read back by ingest's reader, in both storages. The
bag writer flushes only as it writes, so without the node's own timer the messages before the pause stayed in memory
(MCAP: up to a 1 MiB chunk) or in an open transaction (sqlite3), and died with the process."""
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from std_msgs.msg import Int32  # noqa: E402

from test_multi_actor import statuses  # noqa: E402


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_a_recorder_killed_in_a_pause_keeps_every_message_it_flushed(launch_node, ros_node, tmp_path, storage):
    from swfp_ros.data import BagWarning, open_bag
    counter = ros_node.node.create_publisher(Int32, '/count', 1000)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    recorder = launch_node('recorder_node', params={'output': str(tmp_path / 'bag'), 'storage': storage,
                                                    'topics': ['/count'], 'discovery_period_s': 0.1,
                                                    'status_period_s': 0.1})
    values = lambda: statuses(status).get('/recorder_node', {})  # noqa: E731
    ros_node.wait_for(lambda: counter.get_subscription_count() > 0, 30.0, what='the recorder subscribed to /count')
    for i in range(200):
        counter.publish(Int32(data=i))
    ros_node.wait_for(lambda: values().get('flushed_messages') == '200', 30.0, what='all 200 flushed')
    recorder.kill()

    with pytest.warns(BagWarning), open_bag(tmp_path / 'bag') as bag:      # no metadata.yaml, and unfinished
        assert [deserialize_message(raw, Int32).data for *_, raw in bag.messages()] == list(range(200))
