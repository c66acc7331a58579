"""End to end through `swfp up sim_finetune` (the one graph description; separate processes): the sim bridge and the
policy node run the task in lockstep, transitions reach the learner (real SWFP learner, small config), the learner
publishes an accepted block, the policy (paced on the learner's backlog) applies it (the policy_version in later
transitions increases), and Ctrl-C
stops every process cleanly (exit 0, no orphans, the learner's final checkpoint written). With record_bag:=true the
recorder's live bag ingests with the shipped spec (config/ingest_panda_reach.yaml) into whole episodes.
"""
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.qos import TRANSITION_QOS  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.train.graph_demo import _config_dir  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402
from up_process import finish, process_gone, started_pids  # noqa: E402

OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)


# Messages the live bag must hold before the graph is stopped (config/ingest_panda_reach.yaml's topics): a step each
# of actions, joint states and rewards for 20 steps, the task, and the running episode's (latched) marker.
INGESTED_TOPICS = {'/swfp/action': 20, '/joint_states': 20, '/swfp/reward': 20, '/swfp/task': 1, '/swfp/episode': 1}


def test_swfp_up_sim_finetune_end_to_end(tmp_path, ros_env, ros_node):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    cfg = _config_dir(tmp_path / 'config', SMALL_SWFP, {'max_learner_backlog': 8})   # actors paced on the learner
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    swfp = Path(sys.executable).parent / 'swfp'
    log = open(tmp_path / 'up.log', 'w+')
    proc = subprocess.Popen([str(swfp), 'up', 'sim_finetune', f'checkpoint:={bc}', f'config:={cfg}',
                             f'checkpoint_dir:={tmp_path / "ckpt"}', 'device:=cpu', 'seed:=5',
                             'record_bag:=true', f'bag_path:={tmp_path / "live_bag"}'],
                            env=ros_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                            start_new_session=True)
    try:
        def versions():
            return [M.transition_from_msg(m, OBS_DIM, 7).version for _, m in list(transitions)]
        ros_node.wait_for(lambda: max(versions(), default=0) >= 1, 80.0, what='a transition acted with version >= 1')

        def node_status(name):
            out = {}
            for _, m in list(status):
                for st in m.status:
                    if st.name == name:
                        out = {kv.key: kv.value for kv in st.values}
            return out
        ros_node.wait_for(lambda: int(node_status('/learner_node').get('blocks_accepted', 0)) >= 1, 10.0,
                          what='learner status')
        learner = node_status('/learner_node')
        # The live bag is ingested below: the recorder subscribes to a topic once it has discovered its publisher,
        # which on a busy machine can come after a short run's first block (a bag without /swfp/action was seen).
        ros_node.wait_for(lambda: all(int(node_status('/recorder_node').get(f'count{t}', 0)) >= n
                                      for t, n in INGESTED_TOPICS.items()), 60.0,
                          what="the recorder's counts of the topics ingest reads")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=40)
    finally:
        out = finish(proc, log)
    assert rc == 0, out[-4000:]
    # What this collector received: it may have matched the policy's publisher only after the first transitions
    # (discovery on a busy machine), so the stream it saw need not start at version 0; the learner's count below
    # shows those reached the learner.
    v = versions()
    assert v == sorted(v) and v[-1] >= 1, 'the policy version only grows along the transition stream'
    assert int(learner['accepted']) >= SMALL_SWFP['warmup_steps'] and int(learner['blocks_accepted']) >= 1, learner
    pids = started_pids(out)
    assert set(pids) == {'sim_bridge', 'policy_node', 'learner_node', 'recorder_node'}, out[-4000:]
    assert all(process_gone(p) for p in pids.values()), out[-4000:]
    assert re.search(r'^\[policy_node\] .*policy update applied: version 1', out, re.M), out[-4000:]
    assert re.search(r'^\[learner_node\] .*final checkpoint', out, re.M), out[-4000:]
    assert 'SIGKILL' not in out and 'Traceback' not in out, out[-4000:]

    from swfp_ros.data import ingest
    from swfp_ros.paths import config_path
    live = ingest([tmp_path / 'live_bag'], config_path('ingest_panda_reach.yaml'))
    assert len(live) >= 1 and live.obs_dim == OBS_DIM and live.act_dim == 7, live
    assert all(abs(ep.actions).max() <= 1.0 for ep in live)
