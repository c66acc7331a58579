"""The launch files under real `ros2 launch`, in real processes: this checkout installed the way colcon installs an
ament_python package (``setup.py install`` into a prefix put first on AMENT_PREFIX_PATH), then
``ros2 launch swfp_ros <file>.launch.py`` as a user types it.

Runs only where ROS 2's launch, launch_ros and ros2cli (with ros2launch) are installed: a ROS 2 install, or the
local set-up the README's "Running the node graph" describes (launch and launch_ros are not on PyPI, so the pip-only
test environment skips this file). What it checks: ``--show-args``; a terminal's double Ctrl-C to the whole process
group (every node exits 0, the learner's final checkpoint written, the recorded bag readable); a node that cannot
start ends the launch with the reason and status 1; the learner SIGKILLed while the arm keeps being commanded, then
respawned; two namespaced arms from one launch; two composed sim actors (``compose:=true``), one process each.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
launch = pytest.importorskip('launch')
if not hasattr(launch, 'LaunchDescription'):   # only the repository's launch/ folder, seen as a namespace package
    pytest.skip('launch (ROS 2) is not installed', allow_module_level=True)
pytest.importorskip('launch_ros')
pytest.importorskip('ros2launch')
if shutil.which('ros2') is None:
    pytest.skip('no ros2 command on PATH', allow_module_level=True)

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from swfp_ros.ros import graph  # noqa: E402
from swfp_ros.ros.sim_actor import NODE_FLAG, split_sections  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.train.graph_demo import _config_dir  # noqa: E402
from test_multi_actor import statuses  # noqa: E402
from test_real_arm import DEEP, LATCHED, _goal_msg  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402
from up_process import process_gone  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
STARTED = re.compile(r'^\[INFO\] \[(\S+)\]: process started with pid \[(\d+)\]', re.M)
FINISHED = re.compile(r'^\[INFO\] \[(\S+)\]: process has finished cleanly \[pid (\d+)\]', re.M)
# Printed by the `ros2 launch` process itself (its lines carry no [process-N] prefix) when the second SIGINT of a
# double Ctrl-C lands inside a weakref callback: launch keeps Python's default SIGINT handler, and CPython reports the
# KeyboardInterrupt raised there as ignored (python/cpython#95959). Not from any node of ours.
LAUNCH_IGNORED_INTERRUPT = re.compile(r'^Exception ignored in: [^\n]*\nTraceback \(most recent call last\):\n'
                                      r'(?:  [^\n]*\n)*KeyboardInterrupt: ?\n', re.M)


@pytest.fixture(scope='module')
def prefix(tmp_path_factory):
    """This checkout installed as colcon installs it (``setup.py install``, setup.cfg's lib/swfp_ros script dir)."""
    build, prefix = tmp_path_factory.mktemp('build'), tmp_path_factory.mktemp('ws') / 'install'
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(build), 'build', '--build-base',
                    str(build / 'build'), 'install', '--prefix', str(prefix), '--record', str(build / 'install.log'),
                    '--single-version-externally-managed'], check=True, cwd=ROOT, capture_output=True)
    return prefix


@pytest.fixture
def launch_env(prefix, ros_env, monkeypatch):
    """The environment of `source install/setup.bash` for that prefix (also applied to the test process, so that
    the package's config files it copies are the installed ones)."""
    site = next((prefix / 'lib').glob('python3*/site-packages'))
    for var, value in (('AMENT_PREFIX_PATH', prefix), ('PYTHONPATH', site), ('PATH', prefix / 'bin')):
        monkeypatch.setenv(var, f'{value}{os.pathsep}{os.environ[var]}' if os.environ.get(var) else str(value))
    return {**ros_env, **{v: os.environ[v] for v in ('AMENT_PREFIX_PATH', 'PYTHONPATH', 'PATH')},
            'OMP_NUM_THREADS': '1'}


class Launch:
    """`ros2 launch swfp_ros FILE ARGS` in its own session, as a terminal's foreground job (SIGINT not ignored)."""

    def __init__(self, tmp_path: Path, env: dict, file: str, *args: str):
        self.log = open(tmp_path / 'launch.log', 'w+')
        self.ros_log_dir = tmp_path / 'ros_log'          # each node process's own log file (rcl's file logging)
        env = {**env, 'ROS_LOG_DIR': str(self.ros_log_dir)}
        # A Python handler (not SIG_IGN, as in a background job of a non-interactive shell) while it starts: exec
        # resets it to the default, so ros2 launch sees the Ctrl-C.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen(['ros2', 'launch', 'swfp_ros', file, *args], env=env, stdout=self.log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(tmp_path),
                                         start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, previous)

    def text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text(errors='replace')

    def pids(self) -> dict[str, list[int]]:
        """Executable -> the pids launch started it with (launch names a process '<executable>-<n>')."""
        out: dict[str, list[int]] = {}
        for name, pid in STARTED.findall(self.text()):
            out.setdefault(name.rsplit('-', 1)[0], []).append(int(pid))
        return out

    def node_log(self, executable: str) -> str:
        """What the processes of ``executable`` wrote to their own log files. Their last lines on launch's output can
        be missing: launch learns of a process's exit before its output pipe is drained, and may end first."""
        return ''.join(f.read_text(errors='replace') for pid in self.pids().get(executable, [])
                       for f in self.ros_log_dir.glob(f'*_{pid}_*.log'))

    def ctrl_c_twice(self) -> None:
        """What a terminal's Ctrl-C pressed twice does: SIGINT to the whole process group, twice within 100 ms."""
        os.killpg(self.proc.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self) -> str:
        """The output; SIGKILL to whatever is left of the group (after a failure)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        out = self.text()
        self.log.close()
        return out


def _every_process_finished_cleanly(out: str) -> None:
    started = {int(pid) for _, pid in STARTED.findall(out)}
    finished = {int(pid) for _, pid in FINISHED.findall(out)}
    assert started and finished == started, out[-4000:]
    assert 'process has died' not in out and 'escalating' not in out, out[-4000:]
    assert 'Traceback' not in LAUNCH_IGNORED_INTERRUPT.sub('', out), out[-4000:]
    assert all(process_gone(p) for p in started)


@pytest.mark.parametrize('name', sorted(graph.GRAPHS))
def test_show_args_lists_every_argument_with_its_description(name, launch_env):
    out = subprocess.run(['ros2', 'launch', 'swfp_ros', f'{name}.launch.py', '--show-args'], env=launch_env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    flat = ' '.join(out.split())
    for a in graph.get_graph(name).arguments:
        assert f"'{a.name}':" in out and ' '.join(a.description.split()) in flat, a.name


def test_ctrl_c_to_the_process_group_stops_every_node_cleanly(launch_env, ros_node, tmp_path):
    """sim_finetune with the recorder, the learner training blocks; a double Ctrl-C to the whole process group."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    run = Launch(tmp_path, launch_env, 'sim_finetune.launch.py', f'checkpoint:={bc}', 'device:=cpu',
                 f'config:={_config_dir(tmp_path / "config", SMALL_SWFP)}', f'checkpoint_dir:={tmp_path / "ckpt"}',
                 'record_bag:=true', f'bag_path:={tmp_path / "bag"}')
    try:
        ros_node.wait_for(lambda: int(statuses(status).get('/learner_node', {}).get('blocks_published', 0)) >= 1,
                          180.0, what='a block published by the learner')
        run.ctrl_c_twice()
        rc = run.proc.wait(60)
    finally:
        out = run.finish()
    assert rc == 0, out[-4000:]
    assert sorted(run.pids()) == ['learner_node', 'policy_node', 'recorder_node', 'sim_bridge'], out[-4000:]
    _every_process_finished_cleanly(out)
    assert '[learner_node]: final checkpoint' in run.node_log('learner_node'), out[-4000:]
    assert (tmp_path / 'ckpt' / 'learner.pt').is_file()
    from swfp_ros.data import inspect_bag
    summary = inspect_bag(tmp_path / 'bag')       # metadata.yaml written by the recorder's clean close
    counts = {t.topic: t.count for t in summary.topics}
    assert counts.get('/swfp/transition', 0) > 0 and counts.get('/swfp/action', 0) > 0 and not summary.warnings


def test_a_policy_that_cannot_start_ends_the_launch_with_the_reason(launch_env, tmp_path):
    """No checkpoint (its argument misspelt, which launch itself lets pass): a warning naming the argument, then the
    failed start of the policy node or of the learner (both need the checkpoint; whichever exits first, the learner
    on most runs) ends the launch with status 1 and the reason."""
    run = Launch(tmp_path, launch_env, 'sim_finetune.launch.py', 'device:=cpu', f'chekpoint:={tmp_path / "bc.pt"}')
    try:
        rc = run.proc.wait(120)
    finally:
        out = run.finish()
    assert rc == 1, out[-4000:]
    assert '[WARNING] [launch.user]: chekpoint:= is not an argument of sim_finetune and is ignored; did you mean ' \
           'checkpoint:=?' in out, out[-4000:]
    assert re.search(r'Caught exception in launch \(see debug for traceback\): (policy_node exited with status 3|'
                     r'learner_node failed to start \(status 3\)); shutting the graph down', out), out[-4000:]
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out[-4000:]
    assert all(process_gone(p) for p in sum(run.pids().values(), []))


def test_the_arm_keeps_acting_while_the_learner_is_dead_and_it_is_respawned(launch_env, ros_node, tmp_path):
    """real_arm on the mock arm with the learner and respawn_learner: SIGKILL the learner -> commands keep flowing,
    launch restarts it, it resumes from its checkpoint; then a double Ctrl-C ends everything with status 0."""
    commands = ros_node.collect('/forward_position_controller/commands', Float64MultiArray, DEEP)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    run = Launch(tmp_path, launch_env, 'real_arm.launch.py', 'mock_arm:=true', 'dry_run:=false', 'device:=cpu',
                 f'checkpoint:={bc}', 'learn:=true', 'respawn_learner:=true', 'goal:=0.5,0.1,0.3;0.4,-0.2,0.25',
                 f'config:={_config_dir(tmp_path / "config", SMALL_SWFP)}', f'checkpoint_dir:={tmp_path / "ckpt"}')
    try:
        learner = lambda: statuses(status).get('/learner_node', {})  # noqa: E731
        ros_node.wait_for(lambda: int(learner().get('checkpoints', 0)) >= 1 and len(commands) >= 20, 180.0,
                          what='commands and a learner checkpoint')
        os.kill(run.pids()['learner_node'][0], signal.SIGKILL)
        n = len(commands)
        ros_node.wait_for(lambda: len(commands) >= n + 40, 30.0, what='commands while the learner is dead')
        ros_node.wait_for(lambda: len(run.pids()['learner_node']) == 2, 30.0, what='the learner respawned')
        ros_node.wait_for(lambda: learner().get('resumed') == 'true', 90.0, what='the respawned learner resumed')
        run.ctrl_c_twice()
        rc = run.proc.wait(60)
    finally:
        out = run.finish()
    assert rc == 0, out[-4000:]
    assert 'learner_node exited with status -9; the actors keep acting with their last accepted policy; ' \
           'restarting it in 2 s' in out, out[-4000:]
    killed = run.pids()['learner_node'][0]
    started = {int(p) for _, p in STARTED.findall(out)} - {killed}
    assert {int(p) for _, p in FINISHED.findall(out)} == started, out[-4000:]
    assert all(process_gone(p) for p in started)


def test_two_namespaced_arms_from_one_launch(launch_env, ros_node, tmp_path):
    """namespace:=arm1,arm2 with mock arms: each arm commanded on its own controller topic, none on the plain one."""
    commands = {ns: ros_node.collect(f'/{ns}/forward_position_controller/commands', Float64MultiArray, DEEP)
                for ns in ('arm1', 'arm2')}
    plain = ros_node.collect('/forward_position_controller/commands', Float64MultiArray, DEEP)
    for ns, goal in (('arm1', (0.5, 0.15, 0.3)), ('arm2', (0.4, -0.2, 0.25))):
        ros_node.node.create_publisher(PoseStamped, f'/{ns}/swfp/goal', LATCHED).publish(_goal_msg(goal))
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    run = Launch(tmp_path, launch_env, 'real_arm.launch.py', 'mock_arm:=true', 'dry_run:=false', 'device:=cpu',
                 f'checkpoint:={bc}', 'namespace:=arm1,arm2')
    try:
        ros_node.wait_for(lambda: min(len(c) for c in commands.values()) >= 60, 120.0, what='3 s of commands per arm')
        run.ctrl_c_twice()
        rc = run.proc.wait(60)
    finally:
        out = run.finish()
    assert rc == 0, out[-4000:]
    assert {name: len(pids) for name, pids in run.pids().items()} == {'sim_bridge': 2, 'task_node': 2,
                                                                      'policy_node': 2}, out[-4000:]
    assert not plain
    _every_process_finished_cleanly(out)


def test_composed_sim_actors_one_process_per_namespace(launch_env, ros_node, tmp_path):
    """sim_finetune compose:=true namespace:=a,b: one sim_actor process per namespace, holding that namespace's sim
    bridge and policy node (each in its own --node section; no sim_bridge or policy_node process), both bridges
    stepping with their policy acting on the executor and the learner training; then a double Ctrl-C to the process
    group ends every process cleanly, the learner's final checkpoint written."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    run = Launch(tmp_path, launch_env, 'sim_finetune.launch.py', f'checkpoint:={bc}', 'device:=cpu', 'compose:=true',
                 'namespace:=a,b', f'config:={_config_dir(tmp_path / "config", SMALL_SWFP)}',
                 f'checkpoint_dir:={tmp_path / "ckpt"}')

    def node(name: str) -> dict:
        assert run.proc.poll() is None, run.text()[-4000:]      # the launch ended: fail now, with its output
        return statuses(status).get(name, {})
    steps = lambda ns: int(node(f'/{ns}/sim_bridge').get('steps', 0))  # noqa: E731
    try:
        ros_node.wait_for(lambda: min(steps('a'), steps('b')) > 0, 180.0, what='both composed bridges stepping')
        first = {ns: steps(ns) for ns in 'ab'}
        ros_node.wait_for(lambda: all(steps(ns) > first[ns] for ns in 'ab') and
                          all(node(f'/{ns}/policy_node').get('acting_on') == 'executor' for ns in 'ab') and
                          int(node('/learner_node').get('blocks_published', 0)) >= 1, 120.0,
                          what='both bridges stepping on, both policies acting on the executor, a learner block')
        argvs = [Path(f'/proc/{pid}/cmdline').read_bytes().decode().split('\0')[:-1]
                 for pid in run.pids().get('sim_actor', [])]
        run.ctrl_c_twice()
        rc = run.proc.wait(60)
    finally:
        out = run.finish()
    assert rc == 0, out[-4000:]
    assert {name: len(pids) for name, pids in run.pids().items()} == {'sim_actor': 2, 'learner_node': 1}, out[-4000:]
    namespaces = []
    for argv in argvs:     # each process: both nodes' sections, both in the one namespace of that process
        sections, _ = split_sections(argv[argv.index(NODE_FLAG):])
        ns = {name: [a for a in s if a.startswith('__ns:=')] for name, s in sections.items()}
        assert ns['sim_bridge'] == ns['policy_node'] and len(ns['sim_bridge']) == 1, argv
        namespaces += ns['sim_bridge']
    assert sorted(namespaces) == ['__ns:=/a', '__ns:=/b'], argvs
    _every_process_finished_cleanly(out)
    assert '[learner_node]: final checkpoint' in run.node_log('learner_node'), out[-4000:]
    assert (tmp_path / 'ckpt' / 'learner.pt').is_file()
