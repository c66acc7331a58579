"""The executor the swfp_ros nodes spin in, and the one start-up / shutdown sequence they share.

The SingleThreadedExecutor: the nodes' callbacks only parse and enqueue (worker threads do the heavy work), so one
executor thread is enough, and rclpy's MultiThreadedExecutor costs several times more per callback (measured with
benchmarks/bench_ros_latency.py: realtime obs->action p50 33 -> 14 ms when the policy node switched). rclpy's
experimental EventsExecutor was tried too: it did not stop on SIGINT (Kilted wheels), which clean shutdown needs.
"""
from __future__ import annotations

import sys
import traceback
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor


def make_executor() -> SingleThreadedExecutor:
    return SingleThreadedExecutor()


def steady_clock():
    """The clock of the nodes' own timers (heartbeat, realtime tick, status). Not ROS time: with use_sim_time, ROS
    time only advances when the sim bridge steps, so a heartbeat on it would never fire while the loop waits for it,
    and status would stop when the actors stop."""
    from rclpy.clock import Clock, ClockType
    return Clock(clock_type=ClockType.STEADY_TIME)


def run_node(name: str, make_node: Callable, on_start: Callable | None = None, args=None) -> int:
    """Init rclpy, build the node, spin it until Ctrl-C / SIGTERM / shutdown, then ``node.close()`` and tear down.

    Returns the process exit status: 0 for a requested stop (also ``SystemExit(0)`` from inside the node), 1 for an
    error, which is printed with its traceback. A RuntimeError raised after the context was shut down is a message take
    interrupted by Ctrl-C: a clean stop, not a crash.
    """
    rclpy.init(args=args)
    executor = make_executor()
    node = None
    rc = 0
    try:
        node = make_node()
        executor.add_node(node)
        if on_start is not None:
            on_start(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SystemExit as e:
        rc = 0 if e.code in (0, None) else 1
    except Exception as e:  # noqa: BLE001 -- the node's last word before the process exits
        if not (isinstance(e, RuntimeError) and not rclpy.ok()):
            print(f'{name}: {type(e).__name__}: {e}', file=sys.stderr)
            traceback.print_exc()
            rc = 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return rc
