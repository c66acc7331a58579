"""Every node survives a burst of SIGINTs and SIGTERMs during its shutdown: exit 0, no traceback, and its cleanup done.

Under ``ros2 launch`` a terminal Ctrl-C reaches each node twice (the terminal signals the whole process group, then
launch signals each node), and launch escalates to SIGTERM when a node is slow to stop. The second signal used to land
in the middle of the cleanup (the learner's final checkpoint, the recorder's bag metadata) and kill it.
"""
import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from swfp_ros.sim import TASKS  # noqa: E402
from test_policy_sim_graph import node_status  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
# SIGINT as from the terminal, then more from launch and its SIGTERM escalation, while the first shutdown runs.
BURST = (signal.SIGINT, signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT)


def _start(kind: str, launch_node, tmp_path: Path):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    if kind == 'learner_node':
        return launch_node('learner_node', params_file=CONFIG / 'learner.yaml', params={
            'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu',
            'status_period_s': 0.2, 'swfp': SMALL_SWFP})
    if kind == 'policy_node':
        return launch_node('policy_node', params_file=CONFIG / 'policy.yaml', params={
            'checkpoint': str(bc), 'device': 'cpu', 'status_period_s': 0.2})
    if kind == 'sim_bridge':
        return launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml')
    return launch_node('recorder_node', params_file=CONFIG / 'recorder.yaml', params={
        'output': str(tmp_path / 'bag'), 'topics': ['/swfp/status'], 'status_period_s': 0.2})


@pytest.mark.parametrize('kind', ['learner_node', 'policy_node', 'sim_bridge', 'recorder_node'])
def test_signal_burst_during_shutdown_exits_cleanly(kind, launch_node, ros_node, tmp_path):
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = _start(kind, launch_node, tmp_path)
    ros_node.wait_for(lambda: node_status(status, f'/{kind}'), 60.0, what=f'{kind} running (its status)')
    if kind == 'recorder_node':   # something to record and a topic to close
        ros_node.wait_for(lambda: node_status(status, '/recorder_node').get('count/swfp/status', '0') != '0', 30.0,
                          what='the recorder recording /swfp/status')
    for sig in BURST:
        os.killpg(proc.pid, sig)
        time.sleep(0.03)
    proc.proc.wait(30)
    out = proc.output()
    assert proc.proc.returncode == 0, out[-3000:]
    assert 'Traceback' not in out and 'Exception ignored' not in out, out[-3000:]
    if kind == 'learner_node':
        assert 'final checkpoint' in out and (tmp_path / 'ckpt' / 'learner.pt').is_file(), out[-3000:]
    if kind == 'recorder_node':
        from swfp_ros.data import inspect_bag
        summary = inspect_bag(tmp_path / 'bag')     # reads metadata.yaml, which a killed close never writes
        assert (tmp_path / 'bag' / 'metadata.yaml').is_file() and summary.message_count > 0 and not summary.warnings
