"""Authenticated policy updates end to end: a real learner node signing with a key file, a policy node holding the same
key and one without it (separate processes), and a forger on the DDS domain. The forger reads the running policy off
the update topic (the signature does not hide it) and publishes a well-formed block that passes every update check:
the policy without the key applies it -- and then rejects the learner's real blocks as out of order -- while the
policy with the key rejects it as unsigned and applies every block the learner signs."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('rclpy')
import torch  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from std_msgs.msg import Float64MultiArray, UInt8MultiArray  # noqa: E402

from swfp_ros.algo.blocks import RefinementBlock  # noqa: E402
from swfp_ros.algo.checkpoint import load_policy  # noqa: E402
from swfp_ros.algo.serialize import BlockUpdate  # noqa: E402
from swfp_ros.ros import fault_injection as F  # noqa: E402
from swfp_ros.ros import messages as M  # noqa: E402
from swfp_ros.ros.qos import UPDATE_QOS  # noqa: E402
from tiny_policy import SMALL_SWFP, write_bc_checkpoint  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'
OBS, ACT = 20, 7                         # panda_reach: q, qdot, 6 task values; 7 joint actions


def forged_block(policy_file: Path) -> bytes:
    """Block v+1 on the policy a forger read off the topic: a small constant push (E||M(a)-a||^2 = 7 x 0.02^2), well
    inside the trust region it claims."""
    runtime = load_policy(str(policy_file), device='cpu')
    block = RefinementBlock(OBS, ACT, 16, 2, tau=1.0)
    with torch.no_grad():
        block.u[-1].bias.fill_(0.02)
    return BlockUpdate.from_block(runtime.version + 1, block, runtime.digest, 0.0125).to_bytes()


def test_forged_block_rejected_signed_learner_blocks_accepted(launch_node, ros_node, tmp_path):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS, ACT)
    key_file = tmp_path / 'update.key'
    key_file.write_text(np.random.default_rng().bytes(32).hex())
    key_file.chmod(0o600)
    status = F.StatusWatch(ros_node.node)
    launch_node('learner_node', params_file=CONFIG / 'learner.yaml', params={
        'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu', 'status_period': 0.2,
        'update_period': 0.01, 'update_key_file': str(key_file), 'swfp': SMALL_SWFP})
    policy = {'checkpoint': str(bc), 'device': 'cpu', 'status_period_s': 0.2, 'max_learner_backlog': 0}
    signed = launch_node('policy_node', name='policy_signed', params_file=CONFIG / 'policy.yaml',
                         params={**policy, 'update_key_file': str(key_file)})
    launch_node('policy_node', name='policy_open', params_file=CONFIG / 'policy.yaml', params=policy)

    def values(name):
        return status.fresh(name, timeout=60.0)
    assert values('/learner_node')['signed'] == 'true'
    assert values('/policy_signed')['signed_updates'] == '1' and values('/policy_open')['signed_updates'] == '0'
    # the learner's signed snapshot (v0, the policies' own) has reached both
    for name in ('/policy_signed', '/policy_open'):
        ros_node.wait_for(lambda: int(values(name).get('updates_applied', 0)) >= 1, 60.0,
                          what=f'{name} taking the learner snapshot')

    # 1. a forged block, unsigned
    forger = ros_node.node.create_publisher(UInt8MultiArray, '/swfp/policy_update', UPDATE_QOS)
    ros_node.wait_for(lambda: forger.get_subscription_count() >= 2, 30.0, what='both policies subscribed')
    forger.publish(M.update_msg(forged_block(bc)))
    ros_node.wait_for(lambda: values('/policy_open')['policy_version'] == '1', 30.0,
                      what='the policy without a key applying the forgery')
    ros_node.wait_for(lambda: values('/policy_signed').get('updates_rejected_unsigned') == '1', 30.0,
                      what='the policy with the key rejecting it as unsigned')
    assert values('/policy_signed')['policy_version'] == '0'

    # 2. the learner trains and signs blocks: the keyed policy applies each of them
    pub = ros_node.node.create_publisher(Float64MultiArray, '/swfp/transition', QoSProfile(depth=1000))
    ros_node.wait_for(lambda: pub.get_subscription_count() > 0, 30.0, what='the learner subscribed')
    rng = np.random.default_rng(0)
    sent = 0

    def learner_version():
        return int(values('/learner_node').get('version', 0))
    while learner_version() < 2:
        for _ in range(50):
            pub.publish(M.transition_msg(M.Transition(
                obs=rng.normal(size=OBS), action=rng.uniform(-1, 1, ACT), reward=-abs(rng.normal()),
                next_obs=rng.normal(size=OBS), terminated=False, n_steps=1, version=0, actor_id=0)))
        sent += 50
        assert sent <= 5000, 'the learner published no second block'
        ros_node.wait_for(lambda: int(values('/learner_node').get('journaled', 0)) >= sent, 60.0,
                          what='the transitions journaled')
    v = learner_version()
    ros_node.wait_for(lambda: int(values('/policy_signed')['policy_version']) >= v, 60.0,
                      what=f'the keyed policy at the learner\'s v{v}')
    st = values('/policy_signed')
    assert st['updates_rejected'] == '1' and st['updates_rejected_unsigned'] == '1', st
    # the unkeyed policy runs the forger's v1: the learner's blocks no longer fit it
    ros_node.wait_for(lambda: int(values('/policy_open').get('updates_rejected_out_of_order', 0)) >= 1, 30.0,
                      what='the learner\'s block rejected by the forged policy')
    assert values('/policy_open')['policy_version'] == '1'
    assert signed.alive()
