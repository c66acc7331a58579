"""The executor the swfp_ros nodes spin in, and the one start-up / shutdown sequence they share.

rclpy's EventsExecutor (C++, event-driven): the nodes' callbacks only parse and enqueue (worker threads do the heavy
work), so one executor thread is enough, and its cost per callback is what limits a lockstep graph. Measured with
benchmarks/bench_ros_latency.py (panda_reach lockstep, sim bridge + policy node, shared 2-core machine): the Python
SingleThreadedExecutor's thread spent 1.7 ms of CPU per env step in each node (it rebuilds its wait set in Python on
every wake-up), the EventsExecutor's 0.35 (policy) and 0.7 ms (sim bridge, physics included).
rclpy's MultiThreadedExecutor costs several times more per callback than the single-threaded one (realtime
obs->action p50 33 -> 14 ms when the policy node left it). The EventsExecutor stops within ``STOP_POLL_S`` of a signal
in the loop below (spin_once with a timeout, checking our stop flag). It cannot call a subscription callback that
takes the message info (Kilted wheels: ``SystemError: null argument to internal routine``): the recorder, which
needs the info's timestamps, spins in the SingleThreadedExecutor (``run_node(..., executor=SingleThreadedExecutor)``).
"""
from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
from typing import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.experimental import EventsExecutor
from rclpy.signals import SignalHandlerOptions

# Seconds between checks of the stop flag while the executor waits for work: the bound on how late a signal is seen.
STOP_POLL_S = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Exit status of a node that could not start (bad parameters, missing checkpoint): launchers end the whole graph on
# it, while a node that fails later (status 1) may be one the graph can do without for a while (the learner).
EXIT_START_FAILED = 3


def make_executor() -> Executor:
    return EventsExecutor()


def steady_clock():
    """The clock of the nodes' own timers (heartbeat, realtime tick, status). Not ROS time: with use_sim_time, ROS
    time only advances when the sim bridge steps, so a heartbeat on it would never fire while the loop waits for it,
    and status would stop when the actors stop."""
    from rclpy.clock import Clock, ClockType
    return Clock(clock_type=ClockType.STEADY_TIME)


def run_node(name: str, make_node: Callable, on_start: Callable | None = None, args=None,
             executor: Callable[[], Executor] = make_executor) -> int:
    """Init rclpy, build the node, spin it until SIGINT / SIGTERM / shutdown, then ``node.close()`` and tear down.

    Signals only *request* the stop: rclpy's own handlers are off, and ours set a flag that the spin loop checks
    between callbacks (at most ``STOP_POLL_S`` later). A KeyboardInterrupt raised at an arbitrary point would cut
    short whatever runs at that moment -- an rclpy Task under construction (whose ``__del__`` then prints a
    traceback), the learner's final checkpoint, a bag's metadata -- and a terminal Ctrl-C under ``ros2 launch``
    delivers SIGINT twice (from the terminal to the process group, then from launch), then SIGTERM when a node is
    slow. Once the shutdown sequence has begun, both signals are ignored: it runs to the end and the exit status is
    0. (Ignored rather than left to a Python handler: Python resets its handlers to the default -- terminate -- while
    the interpreter exits.)

    ``executor``: builds the executor (default :func:`make_executor`).

    Returns the process exit status: 0 for a requested stop (also ``SystemExit(0)`` from inside the node),
    ``EXIT_START_FAILED`` when building or starting the node failed (or it raised ``SystemExit(EXIT_START_FAILED)``),
    1 for an error while running, which is printed with its traceback.
    """
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    executor = executor()
    node = None
    rc = 0
    started = False
    try:
        node = make_node()
        executor.add_node(node)
        if on_start is not None and not stop.is_set():
            on_start(node)
        started = True
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except ExternalShutdownException:
        pass
    except SystemExit as e:
        rc = 0 if e.code in (0, None) else EXIT_START_FAILED if e.code == EXIT_START_FAILED or not started else 1
    except Exception as e:  # noqa: BLE001 -- the node's last word before the process exits
        print(f'{name}: {"failed to start: " if not started else ""}{type(e).__name__}: {e}', file=sys.stderr)
        traceback.print_exc()
        rc = 1 if started else EXIT_START_FAILED
    finally:
        for sig in STOP_SIGNALS:   # the stop is under way; ignored (not default) also through interpreter exit
            signal.signal(sig, signal.SIG_IGN)
        t0 = time.monotonic()
        if node is not None:
            node.get_logger().info('stopping' + (' (signal)' if stop.is_set() else ''))
            node.close()
            node.get_logger().info(f'stopped in {time.monotonic() - t0:.2f} s')
            node.destroy_node()
        executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
    return rc
