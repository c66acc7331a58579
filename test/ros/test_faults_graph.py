"""Fault injection on the training graph (sim bridge + policy node in /actor0, lockstep, + learner node; real
processes, small networks): SIGKILL of the learner under load, of the sim bridge and of the policy node, each
restarted. Every command the policy sends is audited against the bridge's joint states (the safety contract of
swfp_ros/ros/fault_injection.py), nothing the learner journaled is lost, and the graph trains on afterwards."""
import time
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from swfp_ros.ros import fault_injection as F  # noqa: E402
from swfp_ros.ros.journal import TransitionJournal  # noqa: E402
from swfp_ros.ros.learner_node import JOURNAL_DIR  # noqa: E402
from swfp_ros.ros.messages import transition_size  # noqa: E402
from swfp_ros.sim import TASKS  # noqa: E402
from swfp_ros.sim.panda_model import ARM_JOINTS  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
TASK = TASKS['panda_reach'][1]
OBS_DIM = 14 + len(TASK.task_labels)
NS = ['-r', '__ns:=/actor0']


def test_sigkill_learner_bridge_policy(launch_node, ros_node, tmp_path):
    env = TASK()
    audit = F.CommandAudit(ARM_JOINTS, env.joint_lower, env.joint_upper, 0.1, 0.5 + F.LATENCY_MARGIN_S,
                           sees_every_state=False)
    env.close()
    ros_node.node.create_subscription(JointState, '/actor0/joint_states',
                                      lambda m, i: audit.measured(m, F.source_time(i)), F.monitor_qos())
    ros_node.node.create_subscription(Float64MultiArray, '/actor0/swfp/action',
                                      lambda m, i: audit.command(m.data, F.source_time(i)), 1000)
    status = F.StatusWatch(ros_node.node)
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    ckpt_dir = tmp_path / 'ckpt'
    nodes = {
        'learner': lambda: launch_node('learner_node', params_file=CONFIG / 'learner.yaml', params={
            'checkpoint_dir': str(ckpt_dir), 'base_checkpoint': str(bc), 'device': 'cpu', 'status_period_s': 0.2,
            'swfp': {**SMALL_SWFP, 'utd': 4.0}}),     # utd 4: the learner falls behind the actor, a backlog builds
        'bridge': lambda: launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', ros_args=NS,
                                      name='sim_bridge', params={'seed': 3}),
        'policy': lambda: launch_node('policy_node', params_file=CONFIG / 'policy.yaml', ros_args=NS,
                                      name='policy_node', params={'checkpoint': str(bc), 'device': 'cpu',
                                                                  'status_period_s': 0.2}),
    }
    procs = {k: start() for k, start in nodes.items()}

    def learner():
        return status.fresh('/learner_node', timeout=30)

    def policy():
        return status.fresh('/actor0/policy_node', timeout=30)

    def restart(kind, pause_s=2.0):
        procs[kind].kill()
        time.sleep(pause_s)
        procs[kind] = nodes[kind]()
    try:
        ros_node.wait_for(lambda: int(learner().get('journaled', 0)) >= 300, 120.0, what='300 journaled')
        # 1. learner: everything it journaled before the kill is stored after the restart
        ros_node.wait_for(lambda: int(learner()['journaled']) > int(learner()['transitions']), 60.0,
                          what='a backlog on disk')
        procs['learner'].kill()
        journal = TransitionJournal(ckpt_dir / JOURNAL_DIR, transition_size(OBS_DIM, 7), OBS_DIM, 7)
        journaled = journal.first_transition + journal.written
        journal.close()
        sent = int(policy()['transitions'])
        procs['learner'] = nodes['learner']()
        ros_node.wait_for(lambda: learner().get('resumed') == 'true', 60.0, what='the learner resumed')
        assert int(policy()['transitions']) > sent                     # the actor kept acting meanwhile
        ros_node.wait_for(lambda: int(learner()['transitions']) >= journaled, 180.0, what='the journal stored')
        # 2. sim bridge: the policy waits, then acts again on the restarted bridge
        n = int(policy()['transitions'])
        restart('bridge')
        ros_node.wait_for(lambda: int(policy()['transitions']) >= n + 30, 60.0, what='acting on the new bridge')
        # 3. policy: the restarted one takes the learner's latched history and acts with its version
        restart('policy')
        ros_node.wait_for(lambda: int(policy().get('transitions', 0)) >= 30, 60.0, what='the new policy acting')
        v = int(learner()['version'])
        ros_node.wait_for(lambda: int(policy()['policy_version']) >= v, 60.0, what=f'the new policy at v{v}')
        assert policy().get('updates_rejected', '0') == '0'
        assert all(p.alive() for p in procs.values())
        # 4. the actor stops: the learner stores everything it journaled, each transition once
        assert procs['policy'].stop() == 0
        ros_node.wait_for(lambda: learner().get('idle') == 'true', 300.0, what='the learner idle')
        done = learner()
        assert done['transitions'] == done['journaled'] and int(done['journaled']) > journaled, done
        checked, violations, unverified = audit.judge(final=True)   # the actor has stopped: no later states come
        print(f'{checked} commands audited, {unverified} unverified (sent before this monitor saw a restarted bridge)')
        assert checked > 300 and not violations and unverified < checked / 10, (checked, violations[:5], unverified)
    finally:
        for name in ('/learner_node', '/actor0/policy_node', '/actor0/sim_bridge'):
            print(name, status.latest(name))
        for p in procs.values():
            print(p.name, p.output()[-3000:])
