"""The composed sim actor (swfp_ros.ros.sim_actor; ``compose:=true`` of sim_finetune): the sim bridge and the policy
node in one process, each with its own arguments, the policy acting on the executor thread in lockstep.

End to end through `swfp up sim_finetune compose:=true task:=panda_push` (real processes, real learner, small
config): one process per actor namespace holds both nodes, with each node's own parameters (the task for both, the
policy's checkpoint and actor id, which differ per namespace); transitions reach the learner, its block is applied,
and Ctrl-C stops everything cleanly. The graph resolution itself (sections, round trip through the executable's parser) is in
test/test_launch_files.py.
"""
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.executors import EXIT_START_FAILED  # noqa: E402
from swfp_ros.ros.qos import TRANSITION_QOS  # noqa: E402
from swfp_ros.ros.sim_actor import split_sections  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.train.graph_demo import _config_dir  # noqa: E402
from test_policy_sim_graph import node_status  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402
from up_process import finish, process_gone, started_pids  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
REACH_OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
PUSH_OBS_DIM = 14 + len(TASKS['panda_push'][1].task_labels)
BRIDGE = ['--ros-args', '-r', '__node:=sim_bridge', '-p', 'seed:=4']
POLICY = ['--ros-args', '-r', '__node:=policy_node', '-p', 'checkpoint:=/x.pt']


def test_sections_go_to_their_node_and_the_rest_to_the_process():
    sections, rest = split_sections(['--node', 'sim_bridge', *BRIDGE, '--', '--node', 'policy_node', *POLICY, '--',
                                     '--ros-args', '--log-level', 'warn'])
    assert sections == {'sim_bridge': BRIDGE, 'policy_node': POLICY} and rest == ['--ros-args', '--log-level', 'warn']


def test_an_empty_section_ends_at_its_own_closing_mark():
    sections, rest = split_sections(['--node', 'sim_bridge', '--ros-args', '--',
                                     '--node', 'policy_node', *POLICY, '--'])
    assert sections == {'sim_bridge': ['--ros-args'], 'policy_node': POLICY} and rest == []


@pytest.mark.parametrize('argv, problem', [
    (['--node', 'sim_bridge', *BRIDGE, '--'], 'no --node section for policy_node'),
    (['--node', 'learner_node', *BRIDGE, '--'], "--node 'learner_node': expected one of sim_bridge, policy_node"),
    (['--node', 'sim_bridge', *BRIDGE, '--', '--node', 'sim_bridge', *BRIDGE, '--'], 'sim_bridge given twice'),
    (['--node', 'sim_bridge', '-p', 'seed:=4', '--'], 'must be followed by --ros-args'),
    (['--node', 'sim_bridge', *BRIDGE, '--node', 'policy_node', *POLICY], 'has no closing --'),
    (['--node'], "--node '': expected one of"),                            # a command line cut short
    (['--node', 'sim_bridge'], 'sim_bridge must be followed by --ros-args'),
    (['--node', 'sim_bridge', '--ros-args'], 'sim_bridge: its --ros-args section has no closing --'),
])
def test_a_bad_command_line_is_refused_with_the_reason(argv, problem, ros_env):
    with pytest.raises(ValueError, match=re.escape(problem)) as refused:
        split_sections(argv)
    # the executable: one line, the start-failure status, no traceback
    out = subprocess.run([str(Path(sys.executable).parent / 'sim_actor'), *argv], env=ros_env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 3 and out.stderr.strip() == f'sim_actor: failed to start: {refused.value}'


def test_swfp_up_composed_actors_feed_the_learner(tmp_path, ros_env, ros_node):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', PUSH_OBS_DIM, 7)
    cfg = _config_dir(tmp_path / 'config', SMALL_SWFP, {'max_learner_backlog': 8})
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    log = open(tmp_path / 'up.log', 'w+')
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'swfp'), 'up', 'sim_finetune', 'compose:=true',
                             'task:=panda_push', 'namespace:=actor0,actor1', 'actor_id:=4', f'checkpoint:={bc}', f'config:={cfg}',
                             f'checkpoint_dir:={tmp_path / "ckpt"}', 'device:=cpu', 'seed:=5'],
                            env=ros_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                            start_new_session=True)
    try:
        def versions(actor: int):
            out = [M.transition_from_msg(m, PUSH_OBS_DIM, 7) for _, m in list(transitions)]
            return [t.version for t in out if t.actor_id == actor]
        ros_node.wait_for(lambda: min(max(versions(4), default=0), max(versions(5), default=0)) >= 1, 120.0,
                          what='transitions acted with version >= 1 from both composed actors')
        def statuses():
            return ([node_status(status, f'/actor{i}/policy_node') for i in (0, 1)],
                    [node_status(status, f'/actor{i}/sim_bridge') for i in (0, 1)])
        ros_node.wait_for(lambda: all(p.get('acting_on') == 'executor' for p in statuses()[0]) and
                          all(int(b.get('steps', 0)) > 0 for b in statuses()[1]), 10.0,
                          what='both policies acting on the executor, both bridges stepping')
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=40)
    finally:
        out = finish(proc, log)
    assert rc == 0, out[-4000:]
    pids = started_pids(out)
    assert set(pids) == {'actor0/sim_actor', 'actor1/sim_actor', 'learner_node'}, out[-4000:]
    assert all(process_gone(p) for p in pids.values()), out[-4000:]
    for i in (0, 1):
        # each node got its own section: the policy its actor id (4, 5), both the namespace; one process
        assert re.search(rf'^\[actor{i}/sim_actor\] .*\[actor{i}\.policy_node\]: policy update applied: version 1',
                         out, re.M), out[-4000:]
        assert re.search(rf'^\[actor{i}/sim_actor\] .*\[actor{i}\.sim_bridge\]: panda_push in lockstep mode', out,
                         re.M), out[-4000:]
    assert re.search(r'^\[learner_node\] .*final checkpoint', out, re.M), out[-4000:]
    assert 'SIGKILL' not in out and 'Traceback' not in out, out[-4000:]


def test_a_realtime_policy_node_refuses_to_act_on_its_executor(launch_node, tmp_path):
    """On an arm an inference on the executor thread would hold back the control ticks: configure fails, the node
    exits with the start-failure status and says why."""
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', REACH_OBS_DIM, 7)
    node = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                       params={'checkpoint': str(bc), 'mode': 'realtime', 'act_on_executor': True})
    deadline = time.monotonic() + 60
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not node.alive() and node.proc.returncode == EXIT_START_FAILED, node.output()[-2000:]
    assert 'act_on_executor is for lockstep only' in node.output(), node.output()[-2000:]
