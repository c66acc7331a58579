"""The executors the swfp_ros nodes spin in, and the one start-up / shutdown sequence they share.

The nodes' callbacks only parse and enqueue (worker threads do the heavy work), so one executor thread is enough (a
composed sim actor, :mod:`.sim_actor`, also acts on it: lockstep, where the simulator waits for each action anyway).
rclpy's SingleThreadedExecutor by default; rclpy's EventsExecutor (C++, event-driven) for the nodes of a lockstep
simulation (sim bridge and policy node in lockstep mode), where the executor's cost per callback is what limits the
graph. Measured on a shared 2-core machine (panda_reach lockstep, CPU per env step read from /proc): the
SingleThreadedExecutor's thread spent 1.7 ms per step in each node (it rebuilds its wait set in Python on every
wake-up), the EventsExecutor's 0.35 (policy node) and 0.7 ms (sim bridge, physics included); with
benchmarks/bench_ros_latency.py (and the compiled act()) the graph went from 91 to 246 env steps/s when the cores were
busy with other jobs (load 7), from 236 to 275 when they were quieter (load 4.5). It is not used on the realtime /
real-arm path: with it in every node, the two-arm real_arm test (test_real_arm.py) saw commands farther than
max_delta from every joint state its observer received, twice in two runs (0.114 and 0.122 rad against 0.1; the same
test passed on the SingleThreadedExecutor), and that was not understood in time. It also cannot call a
subscription callback that takes the message info (Kilted wheels: ``SystemError: null argument to internal
routine``), which the recorder needs. It stops within ``STOP_POLL_S`` of a signal in the loop below (spin_once with a
timeout, checking our stop flag).
rclpy's MultiThreadedExecutor costs several times more per callback than the single-threaded one (realtime
obs->action p50 33 -> 14 ms when the policy node left it).
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import Callable, NoReturn, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.experimental import EventsExecutor
from rclpy.signals import SignalHandlerOptions

from .process import catch_stop_signals, end_process, ignore_stop_signals, stop_requested

# Seconds between checks of the stop flag while the executor waits for work: the bound on how late a signal is seen.
STOP_POLL_S = 0.1
# Exit status of a node that could not start (bad parameters, missing checkpoint): launchers end the whole graph on
# it, while a node that fails later (status 1) may be one the graph can do without for a while (the learner).
EXIT_START_FAILED = 3


class StartRefused(ValueError):
    """A node cannot start with the settings it was given, and the message says which and why (a parameter out of its
    range, say): ``run_nodes`` prints it as one line and exits ``EXIT_START_FAILED``, without a traceback — the
    input is the user's, not a bug."""


# rclpy's and DDS's teardown after the nodes' own cleanup: past this the process ends with its status anyway. It once
# hung past the 10 s `swfp up` (like ros2 launch) gives a node before SIGKILL (a fresh-clone CI run: the task node
# 'stopped in 0.00 s', then was killed), and nothing of value is left to it then.
TEARDOWN_DEADLINE_S = 3.0


def make_executor(lockstep: bool) -> Executor:
    """The EventsExecutor for a node of a lockstep simulation, else the SingleThreadedExecutor (see above)."""
    return EventsExecutor() if lockstep else SingleThreadedExecutor()


def steady_clock():
    """The clock of the nodes' own timers (heartbeat, realtime tick, status). Not ROS time: with use_sim_time, ROS
    time only advances when the sim bridge steps, so a heartbeat on it would never fire while the loop waits for it,
    and status would stop when the actors stop."""
    from rclpy.clock import Clock, ClockType
    return Clock(clock_type=ClockType.STEADY_TIME)


def run_node(name: str, make_node: Callable, on_start: Callable | None = None, args=None,
             lockstep: Callable[[object], bool] | None = None) -> NoReturn:
    """One node in its process: :func:`run_nodes` with a single node."""
    run_nodes(name, [(make_node, on_start)], args=args,
              lockstep=None if lockstep is None else lambda nodes: lockstep(nodes[0]))


def run_nodes(name: str, nodes: Sequence[tuple[Callable, Callable | None]], args=None,
              lockstep: Callable[[list], bool] | None = None) -> NoReturn:
    """Init rclpy, build the nodes (``(make_node, on_start)`` each, in order), spin them on one executor until
    SIGINT / SIGTERM / shutdown, then ``node.close()`` each (last built first), tear down, and end the process
    (:func:`swfp_ros.ros.process.end_process`) with its exit status.

    Signals only *request* the stop: rclpy's own handlers are off, and ours set a flag that the spin loop checks
    between callbacks (at most ``STOP_POLL_S`` later). A KeyboardInterrupt raised at an arbitrary point would cut
    short whatever runs at that moment -- an rclpy Task under construction (whose ``__del__`` then prints a
    traceback), the learner's final checkpoint, a bag's metadata -- and a terminal Ctrl-C under ``ros2 launch``
    delivers SIGINT twice (from the terminal to the process group, then from launch), then SIGTERM when a node is
    slow. Once the shutdown sequence has begun, both signals are ignored: it runs to the end and the exit status is
    0. A stop requested before the nodes were built (the executables catch the signals before importing the nodes'
    modules, see :mod:`swfp_ros.ros.process`) ends the process with status 0 without building them.

    ``lockstep(nodes)``: whether the built nodes run in a lockstep simulation (their executor: :func:`make_executor`).

    Exit status: 0 for a requested stop (also ``SystemExit(0)`` from inside a node), ``EXIT_START_FAILED`` when
    building or starting a node failed (or it raised ``SystemExit(EXIT_START_FAILED)``), 1 for an error while
    running or while a node closed (the others are still closed), printed with its traceback.
    """
    catch_stop_signals()
    if stop_requested.is_set():
        end_process(0)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # noqa: BLE001 -- rcl refused (bad --ros-args; DDS security on and no enclave): one line
        print(f'{name}: failed to start: {e}', file=sys.stderr)
        end_process(EXIT_START_FAILED)
    executor = None
    built: list = []
    rc = 0
    started = False
    try:
        for make_node, _ in nodes:
            built.append(make_node())
        executor = make_executor(lockstep is not None and lockstep(built))
        for node in built:
            executor.add_node(node)
        for node, (_, on_start) in zip(built, nodes):
            if on_start is not None and not stop_requested.is_set():
                on_start(node)
        started = True
        while not stop_requested.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_POLL_S)
    except ExternalShutdownException:
        pass
    except SystemExit as e:
        rc = 0 if e.code in (0, None) else EXIT_START_FAILED if e.code == EXIT_START_FAILED or not started else 1
    except StartRefused as e:
        print(f'{name}: failed to start: {e}', file=sys.stderr)
        rc = EXIT_START_FAILED
    except Exception as e:  # noqa: BLE001 -- the node's last word before the process exits
        print(f'{name}: {"failed to start: " if not started else ""}{type(e).__name__}: {e}', file=sys.stderr)
        traceback.print_exc()
        rc = 1 if started else EXIT_START_FAILED
    finally:
        ignore_stop_signals()   # the stop is under way
        for node in reversed(built):
            t0 = time.monotonic()
            node.get_logger().info('stopping' + (' (signal)' if stop_requested.is_set() else ''))
            try:
                node.close()
            except Exception as e:  # noqa: BLE001 -- the other nodes still close (a bag's index, a checkpoint)
                print(f'{name}: {node.get_name()}: close failed: {type(e).__name__}: {e}', file=sys.stderr)
                traceback.print_exc()
                rc = rc or 1
            node.get_logger().info(f'stopped in {time.monotonic() - t0:.2f} s')
        overdue = threading.Timer(TEARDOWN_DEADLINE_S, _teardown_overdue, args=(name, rc))
        overdue.daemon = True
        overdue.start()
        for node in reversed(built):
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        # Not rclpy's uninstall_signal_handlers (its default here): installed or not, it sets SIGINT and SIGTERM to
        # their default action for a moment (strace: SIG_DFL, then back to SIG_IGN), and a signal of the burst a
        # Ctrl-C under launch sends landing then killed the process (status -2, once in a fresh-clone CI run).
        rclpy.try_shutdown(uninstall_handlers=False)
    end_process(rc)


def _teardown_overdue(name: str, rc: int) -> NoReturn:
    print(f'{name}: rclpy teardown still running {TEARDOWN_DEADLINE_S:g} s after the nodes stopped; exiting',
          file=sys.stderr)
    end_process(rc)
