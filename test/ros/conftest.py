"""Fixtures for tests that start real ROS 2 nodes in separate processes.

Isolation: every test that uses ``ros_env`` gets its own ``ROS_DOMAIN_ID`` (reserved across concurrent pytest
processes on this machine with an flock'd file in the temp dir) and ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``
(Kilted ignores ROS_LOCALHOST_ONLY). The test process itself joins the same domain (``ros_node``).

Processes: ``launch_node(executable, params=..., params_file=...)`` starts a node executable (console script next to
this Python, or ``python -m module`` when given a dotted module name) in its own process group with its output in a
log file. At teardown every process group gets SIGINT, then SIGKILL after a grace period, and the Fast DDS shared-
memory files that killed processes leave in /dev/shm are removed (only unreferenced files owned by this user).

Helpers on ``ros_node`` (an rclpy node spun in a background thread): ``wait_for(pred, timeout)``,
``wait_for_topic(name, timeout)``, ``wait_for_publishers(topic, n)``, ``collect(topic, type, qos)``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from swfp_ros.ros.domains import DomainLease  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHM_PREFIXES = ('fastdds_', 'fastrtps_', 'fast_datasharing_', 'sem.fastdds_', 'sem.fastrtps_')


# --- domain isolation (swfp_ros.ros.domains) ------------------------------------------------------------------------
@pytest.fixture
def ros_env(monkeypatch):
    """Environment for this test's ROS processes (also applied to the test process)."""
    lease = DomainLease()
    env = {'ROS_DOMAIN_ID': str(lease.domain_id), 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST',
           'RMW_IMPLEMENTATION': os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp'),
           'PYTHONUNBUFFERED': '1', 'RCUTILS_LOGGING_BUFFERED_STREAM': '0'}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv('ROS_LOCALHOST_ONLY', raising=False)
    try:
        yield dict(os.environ)
    finally:
        lease.release()


# --- Fast DDS shared-memory leftovers -------------------------------------------------------------------------------
def _referenced_shm() -> set[str]:
    """Names in /dev/shm that some readable process has mapped or open."""
    used = set()
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/maps') as f:
                for line in f:
                    i = line.find('/dev/shm/')
                    if i >= 0:
                        used.add(line[i + 9:].strip().split(' ')[0])
            for fd in os.listdir(f'/proc/{pid}/fd'):
                try:
                    target = os.readlink(f'/proc/{pid}/fd/{fd}')
                except OSError:
                    continue
                if target.startswith('/dev/shm/'):
                    used.add(target[9:])
        except (OSError, PermissionError):
            continue
    return used


def clean_fastdds_shm(min_age_s: float = 2.0) -> list[str]:
    """Remove Fast DDS segment/lock files in /dev/shm that no process uses (what SIGKILLed participants leave)."""
    shm = Path('/dev/shm')
    if not shm.is_dir():
        return []
    used = _referenced_shm()
    now, uid, removed = time.time(), os.getuid(), []
    for p in shm.iterdir():
        if not p.name.startswith(SHM_PREFIXES) or p.name in used:
            continue
        base = p.name.rsplit('_el', 1)[0].rsplit('_sl', 1)[0]    # a segment's lock files go with the segment
        if base in used:
            continue
        try:
            st = p.stat()
            if st.st_uid != uid or now - st.st_mtime < min_age_s:
                continue
            p.unlink()
            removed.append(p.name)
        except OSError:
            pass
    return removed


# --- node processes -------------------------------------------------------------------------------------------------
class NodeProcess:
    def __init__(self, name: str, cmd: list[str], env: dict, log_path: Path):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self._log = open(log_path, 'wb')
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO))
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def _signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float = 20.0) -> int | None:
        """SIGINT the process group, then SIGKILL it after ``grace_s``. Returns the exit code.

        The grace is generous on purpose: a test asserts a clean stop, not its speed (each node logs 'stopped in
        X s'); on a loaded CI machine a node's teardown can take several seconds of wall-clock."""
        if self.alive():
            self._signal_group(signal.SIGINT)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.killed = True
                self._signal_group(signal.SIGKILL)
                self.proc.wait(5)
        # anything the node forked that outlived it
        self._signal_group(signal.SIGKILL)
        self._log.close()
        return self.proc.returncode

    def kill(self):
        """SIGKILL the group now (simulates a crash)."""
        self.killed = True
        self._signal_group(signal.SIGKILL)
        self.proc.wait(5)


def resolve_command(executable: str) -> list[str]:
    """A console script next to this Python (the venv's bin) or on PATH; ``pkg.module`` runs ``python -m``."""
    if '.' in executable and '/' not in executable:
        return [sys.executable, '-m', executable]
    for cand in (Path(sys.executable).parent / executable, shutil.which(executable)):
        if cand and Path(cand).is_file():
            return [str(cand)]
    raise FileNotFoundError(f'no executable {executable!r} next to {sys.executable} or on PATH')


def write_params(path: Path, params: dict, node: str = '/**') -> Path:
    path.write_text(yaml.safe_dump({node: {'ros__parameters': params}}, sort_keys=False))
    return path


@pytest.fixture
def launch_node(ros_env, tmp_path):
    """Factory: ``launch_node(executable, params={...}, params_file=path, name=..., remap={...}, args=[...])``.

    ``params`` (a dict) is written to a YAML file passed after ``params_file``, so it overrides it.
    """
    procs: list[NodeProcess] = []

    def start(executable: str, params: dict | None = None, params_file: str | Path | None = None,
              name: str | None = None, remap: dict | None = None, args: list[str] | None = None,
              env: dict | None = None, ros_args: list[str] | None = None) -> NodeProcess:
        label = name or executable.rsplit('.', 1)[-1]
        cmd = resolve_command(executable) + list(args or []) + ['--ros-args']
        if name:
            cmd += ['-r', f'__node:={name}']
        for src, dst in (remap or {}).items():
            cmd += ['-r', f'{src}:={dst}']
        if params_file:
            cmd += ['--params-file', str(params_file)]
        if params:
            f = write_params(tmp_path / f'{label}_{len(procs)}_params.yaml', params)
            cmd += ['--params-file', str(f)]
        cmd += list(ros_args or [])
        proc = NodeProcess(label, cmd, {**ros_env, **(env or {})}, tmp_path / f'{label}_{len(procs)}.log')
        procs.append(proc)
        return proc

    start.processes = procs
    try:
        yield start
    finally:
        killed = False
        for p in reversed(procs):
            p.stop()
            killed |= p.killed
        if killed:
            clean_fastdds_shm()


# --- the test process's own node ----------------------------------------------------------------------------------
class RosTestNode:
    def __init__(self, name: str):
        from rclpy.executors import SingleThreadedExecutor
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:       # shutdown races
            pass

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.02, what: str = 'condition'):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        raise TimeoutError(f'timed out after {timeout:.1f} s waiting for {what}')

    def wait_for_topic(self, topic: str, timeout: float = 15.0):
        self.wait_for(lambda: any(n == topic for n, _ in self.node.get_topic_names_and_types()), timeout,
                      what=f'topic {topic}')

    def wait_for_publishers(self, topic: str, n: int = 1, timeout: float = 15.0):
        self.wait_for(lambda: self.node.count_publishers(topic) >= n, timeout, what=f'{n} publisher(s) on {topic}')

    def wait_for_subscribers(self, topic: str, n: int = 1, timeout: float = 15.0):
        self.wait_for(lambda: self.node.count_subscribers(topic) >= n, timeout,
                      what=f'{n} subscriber(s) on {topic}')

    def collect(self, topic: str, msg_type, qos=10, keep: int = 100000) -> list:
        """Subscribe and append (monotonic receive time, msg) pairs to the returned list."""
        box: list = []

        def cb(msg):
            with self._lock:
                box.append((time.monotonic(), msg))
                if len(box) > keep:
                    del box[0]
        self.node.create_subscription(msg_type, topic, cb, qos)
        return box

    def close(self):
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(2.0)


@pytest.fixture
def ros_node(ros_env, request):
    tn = RosTestNode(f'test_{abs(hash(request.node.name)) % 10**8}')
    try:
        yield tn
    finally:
        tn.close()
