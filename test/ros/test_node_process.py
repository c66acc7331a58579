"""How a node process starts (swfp_ros/ros/process.py), through the installed executable: a launch that shuts down
while a node is still importing (another node failed to start, or an early Ctrl-C) ends it quietly."""
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')


CONFIG = Path(__file__).resolve().parents[2] / 'config'


def _mapped(pid: int, library: str) -> bool:
    try:
        return library in Path(f'/proc/{pid}/maps').read_text()
    except OSError:
        return False


def test_a_stop_while_the_node_is_importing_ends_it_with_status_0(launch_node):
    """SIGINT to the learner's executable while it imports torch (libtorch mapped, the node not built yet): status
    0, no traceback, and the node was never started."""
    proc = launch_node('learner_node', params_file=CONFIG / 'learner.yaml')
    deadline = time.monotonic() + 60
    while not _mapped(proc.pid, 'libtorch') and proc.alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _mapped(proc.pid, 'libtorch'), proc.output()[-2000:]
    proc._signal_group(signal.SIGINT)
    proc.proc.wait(60)
    out = proc.output()
    assert proc.proc.returncode == 0, out[-3000:]
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out[-3000:]
    assert 'stopping' not in out, out[-3000:]          # ended before the node was built


# The main thread calls a stop handler over and over (as if a first signal's handler were running) while another
# process sends SIGINT / SIGTERM as fast as it can, so that signals land inside the handler.
SIGNAL_FLOOD = r'''
import os, signal, subprocess, sys
{install}
handler = signal.getsignal(signal.SIGINT)
flood = subprocess.Popen([sys.executable, '-c', f"""
import os, signal, time
for i in range(5000):
    os.kill({{os.getpid()}}, (signal.SIGINT, signal.SIGTERM)[i % 2])
    time.sleep(0.0002)
"""])
calls = 0
while flood.poll() is None:
    handler(signal.SIGINT, None)
    calls += 1
assert {requested}
print(f'handled; {{calls}} calls')
'''
HANDLERS = {
    'node': ('from swfp_ros.ros.process import catch_stop_signals, stop_requested\ncatch_stop_signals()',
             'stop_requested.is_set()'),
    'swfp up': ('from swfp_ros.ros.bringup import Bringup\nup = Bringup([])\n'
                'for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, up.request_stop)',
                'up.wait() == 0'),   # returns once the stop was requested
}


@pytest.mark.parametrize('who', sorted(HANDLERS))
def test_the_stop_handler_survives_signals_landing_inside_it(who):
    """A burst of signals used to hang a node for good now and then: the handler set a threading.Event, whose lock a
    second signal's handler then waited for inside the first. With signals flooding in while the handler runs, the
    process must finish (a node's handler, and `swfp up`'s)."""
    import subprocess
    import sys
    install, requested = HANDLERS[who]
    script = SIGNAL_FLOOD.format(install=install, requested=requested)
    try:
        done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f'the stop handler deadlocked under a signal flood: {e}')
    assert done.returncode == 0 and 'handled;' in done.stdout, done.stderr[-2000:]


STUCK_TEARDOWN = '''
import time
from rclpy.node import Node
from swfp_ros.ros.executors import run_node

class Stuck(Node):
    """Its own cleanup is instant; rclpy's teardown of it never ends."""
    def __init__(self):
        super().__init__('stuck_teardown')
    def close(self):
        pass
    def destroy_node(self):
        time.sleep(600)

run_node('stuck_teardown', Stuck, on_start=lambda node: print('spinning', flush=True))
'''


def test_a_teardown_that_hangs_after_the_nodes_stopped_still_ends_the_process_with_its_status(ros_env):
    """Once every node's own cleanup is done, rclpy's and DDS's teardown gets TEARDOWN_DEADLINE_S: a hang there
    (seen once in CI, past launch's SIGKILL) ends the process with status 0 and one line saying so."""
    import subprocess
    import sys
    from swfp_ros.ros.executors import TEARDOWN_DEADLINE_S
    proc = subprocess.Popen([sys.executable, '-c', STUCK_TEARDOWN], env=ros_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'spinning', proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=TEARDOWN_DEADLINE_S + 30)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert rc == 0, err
    assert f'stuck_teardown: rclpy teardown still running {TEARDOWN_DEADLINE_S:g} s after the nodes stopped' in err


# Two nodes in one process as run_nodes builds them (the sim actor's case), with a fault put where argv[1] says.
PROBE_NODES = '''
import sys
from rclpy.node import Node
from swfp_ros.ros.executors import StartRefused, run_nodes

FAULT = sys.argv[1]

class Probe(Node):
    def __init__(self, name):
        super().__init__(name)
        if FAULT == 'build' and name == 'second':
            raise ValueError('cannot build second')
        self.create_timer(0.05, self.tick)

    def tick(self):
        if FAULT == 'running':
            raise RuntimeError('broken while running')
        if FAULT.startswith('exit ') or FAULT == 'close':
            raise SystemExit(int(FAULT.split()[1]) if FAULT != 'close' else 0)

    def close(self):
        if FAULT == 'close' and self.get_name() == 'second':
            raise OSError(28, 'No space left on device')
        print(f'closed {self.get_name()}', flush=True)

def on_start(node):
    if FAULT == 'refused':
        raise StartRefused('gain must be in [0, 2], got 3')
    if FAULT == 'exit on start':
        raise SystemExit(2)

run_nodes('probe', [(lambda: Probe('first'), None), (lambda: Probe('second'), on_start)],
          args=['probe', *sys.argv[2:]])
'''


@pytest.mark.parametrize('fault, status, closed, last_words, traceback', [
    ('bad arguments', 3, [], 'probe: failed to start: failed to initialize rcl: Couldn\'t parse trailing -r', False),
    ('build', 3, ['first'], 'probe: failed to start: ValueError: cannot build second', True),
    ('refused', 3, ['second', 'first'], 'probe: failed to start: gain must be in [0, 2], got 3', False),
    ('exit on start', 3, ['second', 'first'], '', False),
    ('running', 1, ['second', 'first'], 'probe: RuntimeError: broken while running', True),
    ('exit 0', 0, ['second', 'first'], '', False),
    ('exit 3', 3, ['second', 'first'], '', False),
    ('exit 2', 1, ['second', 'first'], '', False),
    ('close', 1, ['first'], 'probe: second: close failed: OSError: [Errno 28] No space left on device', True),
])
def test_the_exit_status_says_whether_the_nodes_failed_to_start_or_failed_later(ros_env, fault, status, closed,
                                                                                 last_words, traceback):
    """run_nodes' contract with launchers: 3 when a node could not be built or started (the graph ends: no restart
    helps), 1 for an error once running or while closing, 0 for a requested end; each built node closed, last built
    first, also after another's close failed (a full disk as a bag is finished); a refusal of the user's settings in
    one line, a bug with its traceback."""
    import subprocess
    import sys
    ros_args = ['--ros-args', '-r'] if fault == 'bad arguments' else []    # a remapping rule left out
    done = subprocess.run([sys.executable, '-c', PROBE_NODES, fault, *ros_args], env=ros_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == status, done.stderr[-3000:]
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith('closed ')] == closed
    if last_words:
        assert any(line.startswith(last_words) for line in done.stderr.splitlines()), done.stderr[-3000:]
    else:
        assert 'probe:' not in done.stderr, done.stderr[-3000:]
    assert ('Traceback' in done.stderr) == traceback, done.stderr[-3000:]


# A node that stops at once, with rclpy's uninstall_signal_handlers watched.
WATCHED_TEARDOWN = '''
import rclpy
from rclpy.node import Node
from swfp_ros.ros.executors import run_node

uninstall = rclpy.uninstall_signal_handlers
def watched():
    print('signal handlers uninstalled', flush=True)
    uninstall()
rclpy.uninstall_signal_handlers = watched      # the name rclpy.try_shutdown calls

class Quick(Node):
    def __init__(self):
        super().__init__('quick_teardown')
    def close(self):
        print('closed quick_teardown')           # not flushed: the process's end must flush it (os._exit does not)

run_node('quick_teardown', Quick, on_start=lambda node: print('spinning', flush=True))
'''


def test_the_teardown_leaves_the_stop_signals_ignored(ros_env):
    """From the start of the shutdown to the process's end, SIGINT and SIGTERM stay ignored. rclpy's
    uninstall_signal_handlers (what try_shutdown calls by default) sets both to their default action for a moment
    even when rclpy installed no handler (strace shows rt_sigaction SIG_DFL, then SIG_IGN again), and one signal of a
    Ctrl-C burst under launch landing in that moment killed a policy node in a fresh-clone CI run (status -2). And
    what the node printed last reaches its output (the process ends with os._exit, which flushes nothing itself)."""
    import subprocess
    import sys
    buffered = {k: v for k, v in ros_env.items() if k != 'PYTHONUNBUFFERED'}     # stdout as under launch, to a pipe
    proc = subprocess.Popen([sys.executable, '-c', WATCHED_TEARDOWN], env=buffered, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'spinning', proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
    rest = proc.stdout.read()
    assert rc == 0, proc.stderr.read()
    assert 'signal handlers uninstalled' not in rest and rest.endswith('closed quick_teardown\n'), rest
