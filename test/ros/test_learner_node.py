"""Learner node in a real process with the real SWFP learner (small nets, warm-up and blocks after 64 env steps):
transitions in, accepted blocks out (transient local: the latest base + the blocks after it), bad messages rejected,
a compaction trims the history, resume from its checkpoint after being killed, a stop with nothing new leaves the
checkpoint as it is and saves the counters, replay pre-filled from a rosbag.
"""
import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, UInt8MultiArray

from swfp_ros.algo.checkpoint import load_policy, read_checkpoint
from swfp_ros.algo.serialize import BlockUpdate
from swfp_ros.ros import messages
from tiny_policy import SMALL_SWFP, write_bc_checkpoint

OBS, ACT = 3, 2
LATCHED = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture
def learner_setup(tmp_path, launch_node):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS, ACT)
    base = {'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu',
            'checkpoint_every': 1, 'status_period_s': 0.2, 'update_period_s': 0.01, 'swfp': SMALL_SWFP}

    def start(**params):
        return launch_node('learner_node', params={**base, **params})
    start.bc = bc
    return start


def transition(i: int):
    rng = np.random.default_rng(i)
    return messages.transition_msg(messages.Transition(
        obs=rng.normal(size=OBS), action=rng.uniform(-1, 1, ACT), reward=-abs(rng.normal()),
        next_obs=rng.normal(size=OBS), terminated=bool(i % 17 == 0), n_steps=1, version=0, actor_id=0))


def stored(received: int) -> str:
    """Replay size after ``received`` of these transitions: each is an independent sample of actor 0, so it breaks the
    previous one's n-step chain and closes its window; the last one's window stays open until the next arrives."""
    return str(received - 1)


def learner_diagnostic(box) -> DiagnosticStatus | None:
    for _, msg in reversed(list(box)):
        for st in msg.status:
            if st.name.endswith('learner_node'):
                return st
    return None


def learner_status(box) -> dict:
    st = learner_diagnostic(box)
    return {kv.key: kv.value for kv in st.values} if st is not None else {}


def checkpoint_counters(ckpt_dir) -> dict:
    """The learner counters its checkpoint holds ({} before the first one)."""
    path = ckpt_dir / 'learner.pt'
    return read_checkpoint(str(path))[1]['learner']['counters'] if path.is_file() else {}


def publish(ros_node, n: int, start: int = 0):
    pub = ros_node.node.create_publisher(Float64MultiArray, '/swfp/transition', QoSProfile(depth=1000))
    ros_node.wait_for(lambda: pub.get_subscription_count() > 0, 30.0, what='learner subscription')
    for i in range(start, start + n):
        pub.publish(transition(i))
    return pub


def updates_of(box) -> list[BlockUpdate]:
    return [BlockUpdate.from_bytes(messages.update_from_msg(m), OBS, ACT) for _, m in list(box)]


def test_transitions_blocks_compaction_bad_messages(ros_node, learner_setup, tmp_path):
    # max_blocks 2: the second accepted block triggers a compaction (a new base at the next version); update_history 1:
    # the history still holds max_blocks + 1 updates, a base and the blocks after it
    proc = learner_setup(update_history=1, swfp={**SMALL_SWFP, 'block': {**SMALL_SWFP['block'], 'max_blocks': 2}})
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    first = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: len(first) >= 1, 40.0, what='the start-up snapshot')
    pub = publish(ros_node, 40)
    # bad messages: NaN, wrong size, wrong layout, action out of range, more env steps than a decision of this policy
    # (chunk 1) can take -> rejected on arrival, nothing journaled (the learner would refuse the last one only when
    # storing it, and stop there)
    nan = transition(0)
    nan.data = [float('nan')] + list(nan.data[1:])
    short = transition(0)
    short.data = list(short.data[:-1])
    nolayout = Float64MultiArray(data=[1.0, 2.0])
    wrongdims = transition(0)
    wrongdims.layout.dim = [MultiArrayDimension(label='obs_dim', size=4, stride=15),
                            MultiArrayDimension(label='act_dim', size=2, stride=2)]
    bad_action = transition(0)   # the packer refuses |a| > 1: edit the packed data (action follows obs)
    bad_action.data = list(bad_action.data[:OBS]) + [3.0] * ACT + list(bad_action.data[OBS + ACT:])
    too_many_steps = messages.transition_msg(messages.Transition(
        obs=np.zeros(OBS), action=np.zeros(ACT), reward=0.0, next_obs=np.zeros(OBS), terminated=False, n_steps=2,
        version=0, actor_id=0))
    for m in (nan, short, nolayout, wrongdims, bad_action, too_many_steps):
        pub.publish(m)
    # the critic trains on what is stored after storing it: a status may show all 40 stored before the first update
    ros_node.wait_for(lambda: learner_status(status).get('accepted') == '40' and learner_status(status).get(
        'rejected') == '6' and learner_status(status).get('replay_size') == stored(40) and int(learner_status(
            status).get('critic_updates', 0)) > 0, 30.0, what='40 in, 6 rejected, the critic updated')
    s = learner_status(status)
    assert (s['replay_size'], s['received'], s['journaled'], s['version']) == (stored(40), '46', '40', '0'), s
    diag = learner_diagnostic(status)    # the last rejection's reason, as a warning
    assert (diag.level, diag.message) == (
        DiagnosticStatus.WARN, 'running; n_steps: must be integers in [1, 1] (env steps in the chunk)'), diag
    assert s['blocks_trained'] == '0' and int(s['updates']) > 0, s     # rounds that did something; no block yet
    ros_node.wait_for(lambda: learner_status(status).get('idle') == 'true', 30.0, what='the learner idle')
    assert learner_status(status)['phase'] == 'idle', learner_status(status)   # not the last round's critic phase
    # checkpoint_every 1: every round that stored transitions is checkpointed, not only blocks and the shutdown
    ros_node.wait_for(lambda: checkpoint_counters(tmp_path / 'ckpt').get('transitions') == 40, 20.0,
                      what='a checkpoint holding the 40 stored transitions before any block')
    # warm-up (64 env steps) -> the first block, then 64 more -> the second block + compaction
    publish(ros_node, 30, start=40)
    ros_node.wait_for(lambda: learner_status(status).get('blocks_trained') == '1' and learner_status(status).get(
        'blocks_published') == learner_status(status).get('blocks_accepted'), 60.0, what='the first block')
    published = 1 + int(learner_status(status)['blocks_published'])
    ros_node.wait_for(lambda: len(first) == published, 20.0, what='the base and the first block, if accepted')
    early_late = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: len(early_late) == published, 20.0, what='the same on a late subscriber')
    publish(ros_node, 64, start=70)
    ros_node.wait_for(lambda: learner_status(status).get('blocks_trained') == '2', 60.0, what='the second block')
    s = learner_status(status)
    assert proc.alive(), proc.output()
    accepted, compactions = int(s['blocks_accepted']), int(s['compactions'])
    assert s['version'] == str(accepted + compactions) and compactions == int(accepted == 2), s
    ros_node.wait_for(lambda: learner_status(status)['bases_published'] == str(1 + compactions), 20.0,
                      what='the start-up snapshot and one base per compaction counted')
    # the first subscriber saw everything, in an order a PolicyRuntime accepts
    ros_node.wait_for(lambda: len(first) >= 1 + accepted + compactions, 20.0, what='every update')
    ups = updates_of(first)
    assert ups[0].kind == 'base' and ups[0].version == 0
    runtime = load_policy(str(learner_setup.bc), device='cpu')
    for u in ups:
        runtime.apply_update(u.to_bytes())
    assert runtime.version == accepted + compactions
    # a late joiner gets the latest base and the blocks after it only (older history trimmed by the compaction)
    late = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: late and updates_of(late)[-1].version == runtime.version, 20.0,
                      what='the history up to the latest version on a late subscriber')   # a message per update
    late_ups = updates_of(late)
    assert late_ups[0].kind == 'base'
    assert [u.version for u in late_ups] == list(range(late_ups[0].version, late_ups[0].version + len(late_ups)))
    if compactions:
        assert [(u.kind, u.version) for u in late_ups] == [('base', 3)]
    fresh = load_policy(str(learner_setup.bc), device='cpu')
    for u in late_ups:
        fresh.apply_update(u.to_bytes())
    assert fresh.version == runtime.version
    obs = np.zeros((4, OBS), np.float32)
    assert np.allclose(fresh.act(obs, deterministic=True), runtime.act(obs, deterministic=True), atol=1e-5)
    assert proc.stop() == 0, proc.output()
    assert 'final checkpoint' in proc.output()


def test_resume_after_kill(ros_node, learner_setup, tmp_path):
    proc = learner_setup()
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    publish(ros_node, 70)

    # what the restarted learner is asserted to resume with, in its checkpoint (status shows a block before the
    # checkpoint holding it is written): the block and all 70 transitions
    ros_node.wait_for(lambda: checkpoint_counters(tmp_path / 'ckpt').items() >= {'env_steps': 70,
                                                                                  'blocks_trained': 1}.items(),
                      60.0, what='a checkpoint holding the block and all 70 transitions')
    version = str(checkpoint_counters(tmp_path / 'ckpt')['version'])
    proc.kill()                       # a crash: no final checkpoint
    status.clear()
    proc2 = learner_setup()
    ros_node.wait_for(lambda: learner_status(status).get('resumed') == 'true', 40.0, what='resumed learner')
    s = learner_status(status)
    assert s['restarts'] == '1' and s['version'] == version and s['blocks_trained'] == '1', s
    assert s['replay_size'] == stored(70) and int(s['env_steps']) == 70, s   # the open window was checkpointed too
    # the restarted learner publishes its snapshot: one base at the current version, which a fresh actor accepts
    late = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    ros_node.wait_for(lambda: len(late) >= 1, 15.0, what='the snapshot')
    ups = updates_of(late)
    assert [(u.kind, u.version) for u in ups] == [('base', int(version))]
    runtime = load_policy(str(learner_setup.bc), device='cpu')
    runtime.apply_update(ups[0].to_bytes())
    assert runtime.version == int(version)
    publish(ros_node, 64, start=70)   # 134 env steps: the next block is due at 128
    ros_node.wait_for(lambda: learner_status(status).get('replay_size') == stored(134)
                      and learner_status(status).get('blocks_trained') == '2', 60.0, what='training continues')
    assert proc2.stop() == 0, proc2.output()


def test_rejected_block_is_checkpointed(ros_node, learner_setup, tmp_path):
    """A block the acceptance test rejects (here: never trained, so it predicts no gain) still cost its training: the
    checkpoint after it holds it whatever checkpoint_every says, so a restart does not train it again."""
    proc = learner_setup(checkpoint_every=1000, swfp={**SMALL_SWFP, 'block': {**SMALL_SWFP['block'], 'train_steps': 0}})
    publish(ros_node, 70)
    ros_node.wait_for(lambda: checkpoint_counters(tmp_path / 'ckpt').get('blocks_trained') == 1, 60.0,
                      what='a checkpoint with the block')
    counters = checkpoint_counters(tmp_path / 'ckpt')
    assert counters['blocks_accepted'] == 0 and counters['version'] == 0, counters
    assert proc.stop() == 0, proc.output()


def test_a_stop_with_nothing_new_keeps_the_checkpoint_and_saves_the_counters(ros_node, learner_setup, tmp_path):
    """A learner stopped with nothing stored or trained since its last checkpoint leaves that file as it is (not
    rewritten at every stop: one checkpoint, the start-up one, counted) but saves its counters: what it received and
    refused, and its restarts, carry on across restarts (they were lost when nothing else had changed)."""
    ckpt = tmp_path / 'ckpt' / 'learner.pt'
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = learner_setup()
    ros_node.wait_for(lambda: learner_status(status).get('state') == 'running', 40.0, what='the learner running')
    written = ckpt.stat()
    pub = ros_node.node.create_publisher(Float64MultiArray, '/swfp/transition', QoSProfile(depth=10))
    ros_node.wait_for(lambda: pub.get_subscription_count() > 0, 30.0, what='learner subscription')
    nan = transition(0)
    nan.data = [float('nan')] + list(nan.data[1:])
    for _ in range(3):
        pub.publish(nan)
    ros_node.wait_for(lambda: learner_status(status).get('rejected') == '3', 20.0, what='three rejected')
    assert proc.stop() == 0, proc.output()
    assert 'is up to date' in proc.output(), proc.output()
    for restarts in (1, 2):
        status.clear()
        proc = learner_setup()
        ros_node.wait_for(lambda: learner_status(status).get('resumed') == 'true', 40.0, what='the resumed learner')
        s = learner_status(status)
        assert (s['restarts'], s['received'], s['rejected'], s['checkpoints']) == (str(restarts), '3', '3', '1'), s
        assert proc.stop() == 0, proc.output()
    assert (ckpt.stat().st_ino, ckpt.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


def test_prefill_from_transition_bag(ros_node, learner_setup, tmp_path):
    from rclpy.serialization import serialize_message

    from swfp_ros.data import BagRecorder
    bag = tmp_path / 'transitions'
    with BagRecorder(bag, storage='mcap') as rec:
        for i in range(80):
            rec.write('/swfp/transition', 'std_msgs/msg/Float64MultiArray', serialize_message(transition(i)),
                      1_000_000_000 + i * 50_000_000)
            rec.write('/swfp/reward', 'std_msgs/msg/Float64MultiArray',
                      serialize_message(messages.reward_msg(-1.0, False, False, i)), 1_000_000_000 + i * 50_000_000)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = learner_setup(transition_bag=str(bag))
    # 80 recorded env steps > warm-up 64: the learner trains its first block without any live transition
    ros_node.wait_for(lambda: learner_status(status).get('blocks_trained') == '1', 60.0, what='a block from the bag')
    s = learner_status(status)
    assert s['bag_transitions'] == '80' and s['replay_size'] == stored(80) and s['received'] == '0', s
    assert proc.stop() == 0, proc.output()
    # a bag of the wrong dimensions is refused at start (the node exits non-zero and says why)
    other = tmp_path / 'other'
    with BagRecorder(other, storage='sqlite3') as rec:
        m = messages.transition_msg(messages.Transition(obs=np.zeros(5), action=np.zeros(ACT), reward=0.0,
                                                        next_obs=np.zeros(5), terminated=False, n_steps=1))
        rec.write('/swfp/transition', 'std_msgs/msg/Float64MultiArray', serialize_message(m), 1)
    bad = learner_setup(transition_bag=str(other), checkpoint_dir=str(tmp_path / 'ckpt2'))
    bad.proc.wait(60)
    assert bad.proc.returncode != 0 and 'do not match the learner' in bad.output()


def test_tensorboard_scalars_from_log_dir(ros_node, learner_setup, tmp_path):
    """log_dir: the learner's critic, block, replay and time scalars, readable once the node stopped."""
    proc = learner_setup(log_dir=str(tmp_path / 'tb'))
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    publish(ros_node, 70)
    ros_node.wait_for(lambda: learner_status(status).get('blocks_trained') == '1'
                      and learner_status(status).get('replay_size') == stored(70), 60.0,
                      what='a block and every transition stored')
    assert proc.stop() == 0, proc.output()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / 'tb'), size_guidance={'scalars': 0})
    acc.Reload()
    scalars = {tag: acc.Scalars(tag) for tag in acc.Tags()['scalars']}
    for tag in ('critic/td_loss', 'critic/q_mean', 'block/w2_bound', 'block/accepted', 'block/lambda',
                'learner/replay_size', 'time/critic_ms_per_update', 'time/block_s'):
        assert scalars.get(tag), f'no {tag} in {sorted(scalars)}'
    assert len(scalars['block/w2_bound']) == 1 and scalars['block/w2_bound'][0].step >= 64
    assert scalars['learner/replay_size'][-1].value == int(stored(70))


def test_a_fresh_learner_continues_a_fine_tuned_checkpoint_where_the_policy_node_runs_it(tmp_path):
    """checkpoint:= a learner.pt (fine-tuned in simulation) on a graph that learns: the policy node runs that whole
    policy at its version, and the learner node, starting fresh on the same file, must continue exactly that -- its
    blocks kept, its version carried on -- or none of its blocks applies on the arm (older versions, another parent)
    and its first compaction replaces the fine-tuned policy with one that never had those blocks."""
    from swfp_ros.algo.checkpoint import save_learner
    from swfp_ros.algo.config import SwfpConfig
    from swfp_ros.ros.learner_node import load_or_create_learner
    cfg = SwfpConfig.from_dict(SMALL_SWFP)
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS, ACT)
    tuned, _ = load_or_create_learner(tmp_path / 'sim' / 'learner.pt', str(bc), cfg, 'cpu')
    while tuned.counters.blocks_accepted < 2:
        tuned.add_transitions(*_batch(np.random.default_rng(tuned.counters.transitions)))
        tuned.update()
    save_learner(str(tmp_path / 'sim.pt'), tuned)
    arm = load_policy(str(tmp_path / 'sim.pt'), device='cpu')           # what the policy node runs

    learner, resumed = load_or_create_learner(tmp_path / 'arm' / 'learner.pt', str(tmp_path / 'sim.pt'), cfg, 'cpu')
    assert not resumed and learner.counters.env_steps == 0 and len(learner.replay) == 0     # a fresh critic and replay
    assert learner.counters.version == arm.version == tuned.counters.version >= 2
    assert len(learner.policy.blocks) == len(tuned.policy.blocks)
    assert arm.apply_update(learner.snapshot().to_bytes()) == arm.version    # its late-joiner base: the same policy
    updates = []
    while not updates:
        learner.add_transitions(*_batch(np.random.default_rng(10_000 + learner.counters.transitions)))
        updates = learner.update()
    for u in updates:                                                        # its first block applies on the arm
        assert arm.apply_update(u.to_bytes()) == u.version == tuned.counters.version + 1
    obs = np.random.default_rng(1).normal(size=(5, OBS)).astype(np.float32)
    with torch.no_grad():
        ours = learner.policy.sample(learner.normalizer(torch.as_tensor(obs)), torch.zeros(5, ACT)).numpy()
    assert np.allclose(arm.act(obs, deterministic=True), ours, atol=1e-5)


def _batch(rng, n=32):
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    return obs, action, -np.abs(action).sum(1), rng.normal(size=(n, OBS)).astype(np.float32), np.ones(n, bool)
