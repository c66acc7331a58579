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
