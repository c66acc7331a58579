"""Prints every /swfp/status entry it receives as one JSON line (name + values): the netns test runs it inside a
network namespace, where the test process itself cannot reach the graph. Stops on SIGINT/SIGTERM."""
import json
import signal
import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray


def main() -> int:
    rclpy.init(signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = rclpy.create_node('netns_monitor')
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))

    def on_status(msg):
        for s in msg.status:
            print(json.dumps({'name': s.name, **{kv.key: kv.value for kv in s.values}}), flush=True)
    node.create_subscription(DiagnosticArray, '/swfp/status', on_status, 50)
    while not stop:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
