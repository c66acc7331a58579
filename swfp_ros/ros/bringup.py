"""Bring-up without ``ros2 launch`` (pip-only machines): ``swfp up sim_finetune [name:=value ...]``.

Starts the graph described in :mod:`swfp_ros.ros.graph` — the same description the launch files use — as separate
processes: the same executables (``lib/swfp_ros/`` of the package's install prefix, where ros2 launch finds them,
then this interpreter's console scripts, then PATH), the same parameter files (the package's ``config/`` or the
``config:=DIR`` argument), then the argument-derived overrides inline (``-p name:=value``), so ``--print`` shows
command lines that run as printed. A learner setting can be given like an argument, ``swfp.block.delta:=0.2`` (any
``swfp.<field>`` of the learner's SwfpConfig, checked before anything starts). Each node runs in its own process
group, its output is prefixed ``[name]`` and line-buffered. Ctrl-C / SIGTERM (any number of them): SIGINT to every
node once, wait its stop timeout (the graph's, as under ros2 launch: 30 s for the learner, 10 s for the others; or
``--grace`` seconds), then SIGKILL the stragglers; each node's exit status is reported. When a node exits, the
graph's exit rule applies (:func:`swfp_ros.ros.graph.exit_verdict`): a required node (an actor) or a node that failed
to start ends the graph with a non-zero status; the learner dying does not — the actors keep acting with their last
accepted policy, and it is restarted when ``respawn_learner:=true``.

Also usable as ``python -m swfp_ros.ros.bringup``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from swfp_ros.ros.graph import (GRAPHS, LEARNER_STOP_TIMEOUT_S, PACKAGE_CONFIG_DIR, RESPAWN_DELAY_S,
                                STOP_TIMEOUT_S, ResolvedNode, exit_verdict, get_graph, parse_assignments, resolve)
from swfp_ros.ros.process import StopRequest

# Last-resort fallback for a source checkout that was never installed: the executables' entry points.
NODE_ENTRY_POINTS = ('policy_node', 'learner_node', 'sim_bridge', 'recorder_node', 'task_node',
                     'sim_actor')   # in process.py


def _package_lib_dir(package: str) -> Path | None:
    """``<prefix>/lib/<package>`` of the package's install prefix in the ament index (AMENT_PREFIX_PATH: a sourced
    colcon workspace or ROS install), which is where ``ros2 launch`` / ``ros2 run`` find executables."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return None
    try:
        return Path(get_package_prefix(package)) / 'lib' / package
    except (PackageNotFoundError, ValueError, OSError):
        return None


def find_executable(name: str, package: str = 'swfp_ros') -> list[str]:
    """The command that starts executable ``name``: the package's ``lib/<package>/name`` in the ament index (what
    ros2 launch runs), ``<sys.prefix>/lib/<package>/name``, this interpreter's console scripts, PATH, else
    ``python -c 'from swfp_ros.ros.process import <name>; <name>()'``."""
    lib = _package_lib_dir(package)
    candidates = [*([lib / name] if lib else []), Path(sys.prefix) / 'lib' / package / name,
                  Path(sys.executable).parent / name]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return [str(c)]
    found = shutil.which(name)
    if found:
        return [found]
    if package != 'swfp_ros' or name not in NODE_ENTRY_POINTS:
        raise FileNotFoundError(f'executable {name!r} of package {package!r} not found in '
                                f'{", ".join(map(str, candidates))} or on PATH')
    return [sys.executable, '-c', f'from swfp_ros.ros.process import {name}; {name}()']


class _Proc:
    def __init__(self, node: ResolvedNode, cmd: list[str], popen: subprocess.Popen):
        self.node, self.cmd, self.popen = node, cmd, popen
        self.label = node.label
        self.reader: threading.Thread | None = None
        self.gone = False                         # exited and not restarted (a node the graph can do without)
        self.restart_at: float | None = None


class Bringup:
    """Start, watch and stop the processes of one resolved graph."""

    def __init__(self, nodes: Sequence[ResolvedNode], *, grace: float | None = None, out=None,
                 env: dict | None = None):
        """``grace``: seconds between SIGINT and SIGKILL at shutdown for every node; None: each node's own."""
        self.nodes = list(nodes)
        self.grace = None if grace is None else float(grace)
        self.out = out if out is not None else sys.stdout
        self.env = dict(os.environ if env is None else env)
        # line-buffered, uncoloured output from Python and from rcutils loggers
        self.env.setdefault('PYTHONUNBUFFERED', '1')
        self.env.setdefault('RCUTILS_LOGGING_BUFFERED_STREAM', '1')
        self.env.setdefault('RCUTILS_COLORIZED_OUTPUT', '0')
        self.procs: list[_Proc] = []
        self._out_lock = threading.Lock()
        self._stop = StopRequest()   # set from a signal handler: takes no lock (see StopRequest)

    def commands(self) -> list[list[str]]:
        """The command line of every node."""
        return [find_executable(node.executable, node.package) + node.ros_args() for node in self.nodes]

    def _say(self, label: str, line: str) -> None:
        with self._out_lock:
            self.out.write(f'[{label}] {line}' if line.endswith('\n') else f'[{label}] {line}\n')
            self.out.flush()

    def _pump(self, proc: _Proc) -> None:
        assert proc.popen.stdout is not None
        for raw in iter(proc.popen.stdout.readline, b''):
            self._say(proc.label, raw.decode('utf-8', 'replace'))
        proc.popen.stdout.close()

    def start(self) -> None:
        for node, cmd in zip(self.nodes, self.commands()):
            self.procs.append(self._spawn(_Proc(node, cmd, None)))

    def _spawn(self, proc: _Proc) -> _Proc:
        proc.popen = subprocess.Popen(proc.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, env=self.env,
                                      start_new_session=True)  # own session = own process group
        proc.reader = threading.Thread(target=self._pump, args=(proc,), daemon=True, name=f'pump-{proc.label}')
        proc.reader.start()
        proc.restart_at = None
        self._say('swfp up', f'started {proc.label} (pid {proc.popen.pid}): {" ".join(proc.cmd)}')
        return proc

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def wait(self, poll: float = 0.1) -> int:
        """Until Ctrl-C/SIGTERM (-> 0 when everything stops cleanly) or an exit that ends the graph (-> non-zero)."""
        while not self._stop.is_set():
            for p in self.procs:
                if p.restart_at is not None and time.monotonic() >= p.restart_at:
                    self._spawn(p)
                if p.gone or p.restart_at is not None or p.popen.poll() is None:
                    continue
                rc = p.popen.returncode
                stop, message = exit_verdict(p.node, rc)
                self._say('swfp up', message)
                if stop:
                    self.shutdown()
                    return rc if rc and rc > 0 else 1
                if p.reader is not None:
                    p.reader.join(timeout=2.0)
                if p.node.respawn:
                    p.restart_at = time.monotonic() + RESPAWN_DELAY_S
                else:
                    p.gone = True
            time.sleep(poll)   # a stop requested meanwhile is seen at most poll s later
        self._say('swfp up', 'shutting down')
        return self.shutdown()

    def stop_timeout(self, node: ResolvedNode) -> float:
        return node.stop_timeout_s if self.grace is None else self.grace

    def shutdown(self) -> int:
        """SIGINT to every running node's process group, wait its stop timeout, SIGKILL the rest. 0 if all stopped
        on SIGINT by themselves (exit 0, or killed by that SIGINT)."""
        for p in self.procs:
            if p.popen.poll() is None:
                _killpg(p.popen.pid, signal.SIGINT)
        start = time.monotonic()
        rc = 0
        for p in self.procs:
            timeout = self.stop_timeout(p.node)
            try:
                p.popen.wait(timeout=max(0.0, start + timeout - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say('swfp up', f'{p.label} did not stop within {timeout:g} s: SIGKILL')
                _killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait()
                rc = 1
            # a straggling child of the node's own group
            _killpg(p.popen.pid, signal.SIGKILL)
        for p in self.procs:
            if p.reader is not None:
                p.reader.join(timeout=2.0)
        for p in self.procs:
            code = p.popen.returncode
            if not p.gone:
                self._say('swfp up', f'{p.label} exited with status {code}')
            if code not in (0, -signal.SIGINT, 128 + signal.SIGINT, -signal.SIGTERM) and rc == 0 and not p.gone:
                rc = 1
        return rc


LEARNER_SETTING = 'swfp.'


def apply_learner_settings(nodes: Sequence[ResolvedNode], settings: dict[str, str]) -> None:
    """``{'swfp.block.delta': '0.2'}`` -> typed parameters of the graph's learner, checked as SwfpConfig checks them
    (with the learner's parameter files), so a typo or a value out of range stops ``swfp up`` before any node starts."""
    if not settings:
        return
    learners = [n for n in nodes if n.executable == 'learner_node']
    if not learners:
        raise ValueError(f'{", ".join(settings)}: this graph runs no learner (real_arm: learn:=true)')
    import yaml

    from swfp_ros.train.settings import SettingsError, load_swfp_config
    typed: dict[str, Any] = {}
    for name, text in settings.items():
        field = name[len(LEARNER_SETTING):]
        if field.startswith('flow.'):
            raise ValueError(f'{name}: the base flow is the BC checkpoint\'s (set it when pretraining)')
        try:
            typed[name] = yaml.safe_load(text)
        except yaml.YAMLError:
            typed[name] = text
    items = {f'{name[len(LEARNER_SETTING):]}={text}': f'{name}:={text}' for name, text in settings.items()}
    for node in learners:
        try:
            load_swfp_config(node.param_files[-1], list(items))
        except SettingsError as e:   # its message names the `swfp finetune --set` item: name ours instead
            message = str(e)
            for item, assignment in items.items():
                message = message.replace(f'--set {item}', assignment)
            raise ValueError(message) from None
        node.parameters.update(typed)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _help_epilog() -> str:
    lines = ['graphs and their arguments (name:=value):']
    for g in GRAPHS.values():
        lines.append(f'\n  {g.name}: {g.description}')
        nodes = ', '.join(n.executable + (f' (when {n.condition})' if n.condition else '') for n in g.nodes)
        lines.append(f'    nodes: {nodes}')
        for c in g.compositions:
            lines.append(f'    when {c.condition}: {" + ".join(c.nodes)} in one {c.executable} process per namespace')
        for a in g.arguments:
            default = a.default if a.default is PACKAGE_CONFIG_DIR else a.launch_default()
            choices = f' {{{"|".join(a.choices)}}}' if a.choices else ''
            lines.append(f'    {a.name}:={default!s}{choices}\n        {a.description}')
    lines.append('\nlearner settings: swfp.<field>:=value sets the learner\'s SwfpConfig field (config/learner.yaml, '
                 'section swfp:), e.g. swfp.block.delta:=0.2 swfp.warmup_steps:=2000')
    lines.append('\nexample: swfp up sim_finetune task:=panda_reach checkpoint:=bc.pt record_bag:=true')
    return '\n'.join(lines)


def build_parser(prog: str = 'swfp up') -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_help_epilog(),
        description='Start a swfp_ros node graph without ros2 launch (same graph description, executables and '
                    'parameter files as launch/*.launch.py). Ctrl-C stops every node.')
    p.add_argument('graph', choices=sorted(GRAPHS), help='which graph')
    p.add_argument('assignments', nargs='*', metavar='name:=value',
                   help='graph arguments, as with ros2 launch, and learner settings swfp.<field>:=value')
    p.add_argument('--grace', type=float, default=None,
                   help='seconds between SIGINT and SIGKILL at shutdown (default: each node\'s stop timeout, as '
                        'under ros2 launch: %g s for the learner, %g s for the others)'
                        % (LEARNER_STOP_TIMEOUT_S, STOP_TIMEOUT_S))
    p.add_argument('--print', dest='print_only', action='store_true',
                   help='print the command lines (each runs as printed: overrides inline) and exit')
    return p


def main(argv: Sequence[str] | None = None, prog: str = 'swfp up') -> int:
    args = build_parser(prog).parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    try:
        graph = get_graph(args.graph)
        given = parse_assignments(args.assignments)
        settings = {k: v for k, v in given.items() if k.startswith(LEARNER_SETTING)}
        nodes = resolve(graph, {k: v for k, v in given.items() if k not in settings})
        apply_learner_settings(nodes, settings)
    except (KeyError, ValueError, OSError) as e:
        print(f'{prog}: error: {e.args[0] if e.args else e}', file=sys.stderr)
        return 2
    up = Bringup(nodes, grace=args.grace)
    if args.print_only:
        for cmd in up.commands():
            print(shlex.join(cmd))
        return 0
    previous = {s: signal.signal(s, up.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            up.start()
        except FileNotFoundError as e:
            print(f'{prog}: error: {e}', file=sys.stderr)
            up.shutdown()
            return 2
        return up.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == '__main__':
    sys.exit(main(prog='python -m swfp_ros.ros.bringup'))
