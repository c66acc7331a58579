"""The executor the swfp_ros nodes spin in.

The SingleThreadedExecutor: the nodes' callbacks only parse and enqueue (worker threads do the heavy work), so one
executor thread is enough, and rclpy's MultiThreadedExecutor costs several times more per callback (measured with
benchmarks/bench_ros_latency.py: realtime obs->action p50 33 -> 14 ms when the policy node switched). rclpy's
experimental EventsExecutor was tried too: it did not stop on SIGINT (Kilted wheels), which clean shutdown needs.
"""
from __future__ import annotations

from rclpy.executors import SingleThreadedExecutor


def make_executor() -> SingleThreadedExecutor:
    return SingleThreadedExecutor()


def steady_clock():
    """The clock of the nodes' own timers (heartbeat, realtime tick, status). Not ROS time: with use_sim_time, ROS
    time only advances when the sim bridge steps, so a heartbeat on it would never fire while the loop waits for it,
    and status would stop when the actors stop."""
    from rclpy.clock import Clock, ClockType
    return Clock(clock_type=ClockType.STEADY_TIME)
