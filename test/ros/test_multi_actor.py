"""Two namespaced actors (sim bridge + policy node each, in /actor0 and /actor1) feeding ONE learner, every node a
separate process started with the package's parameter files (``/**`` keys apply under any namespace); and one sim
bridge process simulating both actors' robots.

Each actor has its own /actorN/joint_states, /actorN/swfp/action, /actorN/swfp/reward; /swfp/transition and
/swfp/policy_update are shared: transitions of both actors reach the learner, and both policies apply its blocks.
"""
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.fault_injection import source_time  # noqa: E402
from swfp_ros.ros.qos import TRANSITION_QOS  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def statuses(box) -> dict:
    out = {}
    for _, msg in list(box):
        for st in msg.status:
            out[st.name] = {kv.key: kv.value for kv in st.values}
    return out


def test_two_namespaced_actors_one_learner(launch_node, ros_node, tmp_path):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    actions = {i: ros_node.collect(f'/actor{i}/swfp/action', Float64MultiArray, DEEP) for i in (0, 1)}
    plain = ros_node.collect('/swfp/action', Float64MultiArray, DEEP)    # no actor may use the global name
    learner = launch_node('learner_node', params_file=CONFIG / 'learner.yaml', params={
        'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu', 'status_period_s': 0.2,
        'swfp': SMALL_SWFP})
    procs = [learner]
    for i in (0, 1):
        ns = ['-r', f'__ns:=/actor{i}']
        procs.append(launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', ros_args=ns, name='sim_bridge',
                                 params={'seed': 10 + i, 'publish_clock': i == 0}))
        procs.append(launch_node('policy_node', params_file=CONFIG / 'policy.yaml', ros_args=ns, name='policy_node',
                                 params={'checkpoint': str(bc), 'device': 'cpu', 'actor_id': i,
                                         'status_period_s': 0.2}))
    try:
        # both actors' transitions reach the learner, and both policies apply a block the learner published
        def versions():
            s = statuses(status)
            return [int(s.get(f'/actor{i}/policy_node', {}).get('policy_version', -1)) for i in (0, 1)]
        ros_node.wait_for(lambda: min(versions()) >= 1, 150.0, what='both policies at version >= 1')   # loaded CI

        def acted_with_block():   # transitions of both actors acted with the learner's block
            ts = [M.transition_from_msg(m, OBS_DIM, 7) for _, m in list(transitions)]
            return {(t.actor_id, t.version >= 1) for t in ts} >= {(0, True), (1, True)}
        ros_node.wait_for(acted_with_block, 60.0, what='transitions acted with version >= 1 from both actors')

        def learner_trained():
            learner = statuses(status).get('/learner_node', {})
            return int(learner.get('accepted', 0)) >= 64 and int(learner.get('blocks_accepted', 0)) >= 1
        ros_node.wait_for(learner_trained, 10.0, what='learner status: >= 64 transitions stored, a block accepted')
        ros_node.wait_for(lambda: len(actions[0]) > 10 and len(actions[1]) > 10, 30.0,
                          what="this test's subscriptions receiving both actors' actions")
    finally:
        for p in procs:
            print(p.name, p.output()[-1500:])
    ts = [M.transition_from_msg(m, OBS_DIM, 7) for _, m in list(transitions)]
    assert {t.actor_id for t in ts} == {0, 1}
    # each actor's policy versions only move forward (this test's subscription may match after the first versions:
    # under load it saw none of version 0 once, so where they start is not asserted)
    for i in (0, 1):
        seen = [t.version for t in ts if t.actor_id == i]
        assert seen == sorted(seen) and seen[-1] >= 1, (i, seen)
    assert not plain
    assert all(p.alive() for p in procs)
    for p in reversed(procs):
        assert p.stop() == 0, p.output()


def test_one_bridge_process_simulates_two_robots(launch_node, ros_node, tmp_path):
    """``robots: [actor0, actor1]``: one sim bridge process, two arms on their own topics, each driven by the policy
    node in its namespace; each robot steps only on its own actions, and the bridge's counters are their totals."""
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    transitions = ros_node.collect('/swfp/transition', Float64MultiArray, TRANSITION_QOS)
    rewards = {i: ros_node.collect(f'/actor{i}/swfp/reward', Float64MultiArray, DEEP) for i in (0, 1)}
    robot1_sent = []                   # send times of robot 1's rewards (this test's callbacks can lag on a busy machine)
    ros_node.node.create_subscription(Float64MultiArray, '/actor1/swfp/reward',
                                      lambda m, info: robot1_sent.append(source_time(info)), DEEP)
    plain = ros_node.collect('/swfp/reward', Float64MultiArray, DEEP)
    bridge = launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', name='sim_bridge',
                         params={'seed': 10, 'robots': ['actor0', 'actor1'], 'status_period_s': 0.2})
    policies = [launch_node('policy_node', params_file=CONFIG / 'policy.yaml', ros_args=['-r', f'__ns:=/actor{i}'],
                            name='policy_node', params={'checkpoint': str(bc), 'device': 'cpu', 'actor_id': i,
                                                        'max_learner_backlog': 0})
                for i in (0, 1)]
    try:
        ros_node.wait_for(lambda: len(rewards[0]) >= 60 and len(rewards[1]) >= 60, 120.0,
                          what='60 rewards on each robot')
        assert policies[1].stop() == 0     # robot 1 loses its policy: robot 0 goes on stepping alone
        policy1_gone = time.time()          # its process has exited: the senders' clock, as the source timestamps
        r0 = len(rewards[0])
        ros_node.wait_for(lambda: len(rewards[0]) >= r0 + 60, 60.0, what='robot 0 stepping on alone')
        # robot 1 steps only on its own policy's actions: at most the one its policy sent before exiting is rewarded
        # after that (counted by send time: rewards sent before the exit may still be on their way to this test)
        assert sum(t > policy1_gone for t in robot1_sent) <= 1, sorted(robot1_sent)[-5:]
        assert policies[0].stop() == 0     # both idle: every count settles

        def one_step_per_action():          # the bridge's own counters (this test's subscriptions may have matched
            s = statuses(status).get('/sim_bridge', {})     # after the first messages), totals over both robots
            return s.get('robots') == '2' and int(s['steps']) == int(s['actions']) >= len(rewards[0]) + len(rewards[1])
        ros_node.wait_for(one_step_per_action, 30.0, what="the bridge's counters: one step per action, both robots")
    finally:
        print(bridge.output()[-2000:])
    assert not plain
    ts = [M.transition_from_msg(m, OBS_DIM, 7) for _, m in list(transitions)]
    first = {i: next(t.obs for t in ts if t.actor_id == i) for i in (0, 1)}
    assert not np.allclose(first[0], first[1])          # each robot its own env and seed
    assert bridge.alive() and bridge.stop() == 0


def test_one_bridge_process_runs_two_robots_in_realtime(launch_node, ros_node):
    """Realtime: every tick steps each robot (holding its targets: no policy runs here)."""
    rewards = {i: ros_node.collect(f'/r{i}/swfp/reward', Float64MultiArray, DEEP) for i in (0, 1)}
    bridge = launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml',
                         params={'mode': 'realtime', 'robots': ['r0', 'r1']})
    ros_node.wait_for(lambda: len(rewards[0]) >= 10 and len(rewards[1]) >= 10, 60.0, what='10 rewards on each robot')
    assert bridge.stop() == 0


@pytest.mark.parametrize('robots, problem', [(['actor0', 'actor0'], 'namespaces repeat'),
                                             (['', 'actor1'], 'cannot be one of several'),
                                             (['/actor0'], 'not a relative ROS namespace'),
                                             (['actor-0'], 'not a relative ROS namespace')])
def test_bridge_refuses_bad_robot_namespaces(launch_node, robots, problem):
    bridge = launch_node('sim_bridge', params={'robots': robots})
    assert bridge.proc.wait(timeout=60) != 0
    assert problem in bridge.output() and 'Traceback' not in bridge.output(), bridge.output()[-2000:]
