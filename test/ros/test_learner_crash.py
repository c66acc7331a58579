"""A learner crash is not an actor crash: with the learner SIGKILLed the policy keeps commanding the (simulated) arm,
and a restarted learner resumes from its checkpoint and republishes its policy, which the running policy accepts."""
from pathlib import Path

import pytest

pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from swfp_ros.sim import TASKS  # noqa: E402
from test_multi_actor import statuses  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def test_policy_survives_learner_crash_and_accepts_the_resumed_learner(launch_node, ros_node, tmp_path):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    actions = ros_node.collect('/swfp/action', Float64MultiArray, DEEP)
    learner_params = {'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu',
                      'status_period_s': 0.2, 'swfp': SMALL_SWFP}
    learner = launch_node('learner_node', params_file=CONFIG / 'learner.yaml', params=learner_params)
    bridge = launch_node('sim_bridge', params_file=CONFIG / 'sim_bridge.yaml', params={'seed': 3})
    policy = launch_node('policy_node', params_file=CONFIG / 'policy.yaml',
                         params={'checkpoint': str(bc), 'device': 'cpu', 'status_period_s': 0.2})
    try:
        def policy_version():
            return int(statuses(status).get('/policy_node', {}).get('policy_version', -1))
        ros_node.wait_for(lambda: policy_version() >= 1, 120.0, what='the policy at version >= 1')
        learner.kill()
        learner.proc.wait(10)
        before = len(actions)
        ros_node.wait_for(lambda: len(actions) >= before + 40, 30.0, what='actions while the learner is dead')
        assert policy.alive() and bridge.alive()

        version_at_crash = policy_version()
        applied_at_crash = int(statuses(status)['/policy_node'].get('updates_applied', 0))
        restarted = launch_node('learner_node', params_file=CONFIG / 'learner.yaml', params=learner_params)
        ros_node.wait_for(lambda: statuses(status).get('/learner_node', {}).get('resumed') == 'true', 60.0,
                          what='the restarted learner reports resumed')
        resumed = statuses(status)['/learner_node']
        assert int(resumed['version']) >= 1
        # the resumed learner's snapshot (a base at its version) is applied: nothing rejected, version not lower
        ros_node.wait_for(lambda: int(statuses(status)['/policy_node'].get('updates_applied', 0)) > applied_at_crash,
                          30.0, what='an update applied after the restart (the snapshot)')
        policy_status = statuses(status)['/policy_node']
        assert int(policy_status.get('updates_rejected', 0)) == 0, policy_status
        assert policy_version() >= version_at_crash
        assert policy.alive() and bridge.alive() and restarted.alive()
    finally:
        print(learner.output()[-1500:], policy.output()[-1500:])
    for p in (restarted, policy, bridge):
        assert p.stop() == 0, p.output()[-2000:]
