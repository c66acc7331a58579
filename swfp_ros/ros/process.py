"""How a node process starts and ends: the stop signals, and the node executables' entry points.

This module imports nothing heavy (no rclpy, torch or MuJoCo), so that the executables setup.py installs can catch
SIGINT / SIGTERM before the node's own module is imported. That import takes seconds, and a launch that shuts down
meanwhile (another node failed to start, or a Ctrl-C right after the start) used to end the node with a
KeyboardInterrupt traceback (status -2); a stop requested that early now ends it with status 0 without starting
(:func:`swfp_ros.ros.executors.run_node` sees the request).
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import NoReturn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A flag a stop signal's handler sets and a polling loop reads (a node's spin loop, `swfp up`'s wait loop).

    Not a ``threading.Event``: ``Event.set()`` takes a lock, and Python runs a signal handler in the main thread at
    any bytecode, also inside that lock: a second signal landing while the first handler held it ran the handler
    again, which then waited for the lock forever (the likely cause of a policy node that hung in a burst of SIGINT /
    SIGTERM in a full test run). Assigning an attribute takes no lock."""

    def __init__(self):
        self._requested = False

    def set(self) -> None:
        self._requested = True

    def is_set(self) -> bool:
        return self._requested


# Set by SIGINT / SIGTERM once catch_stop_signals() ran: a stop was requested.
stop_requested = StopRequest()


def catch_stop_signals() -> None:
    """From now on SIGINT and SIGTERM only set :data:`stop_requested` (any number of them)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop_requested.set())


def ignore_stop_signals() -> None:
    """For the shutdown sequence: ignored (not default) also through the process's end."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def end_process(status: int) -> NoReturn:
    """Exit now with ``status``, once the node's own cleanup is done (its final checkpoint written, its bag closed).

    Skips the interpreter's finalisation: with torch and MuJoCo loaded, its garbage collection took 2-5 s on the
    2 shared cores here, and over 10 s in one run under ``ros2 launch``, which escalates to SIGKILL 10 s after its
    SIGINT by default. Nothing of value is left to it: every node closes its files in ``close()``, and rcutils
    flushes each log line itself; Python's own buffered streams are flushed here."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _run(module: str) -> NoReturn:
    catch_stop_signals()
    importlib.import_module(f'swfp_ros.ros.{module}').main()   # run_node: ends the process


# The node executables (setup.py's NODE_EXECUTABLES, bringup's fallback).
def policy_node() -> NoReturn:
    _run('policy_node')


def learner_node() -> NoReturn:
    _run('learner_node')


def sim_bridge() -> NoReturn:
    _run('sim_bridge_node')


def recorder_node() -> NoReturn:
    _run('recorder_node')


def task_node() -> NoReturn:
    _run('task_node')


def sim_actor() -> NoReturn:
    _run('sim_actor')
