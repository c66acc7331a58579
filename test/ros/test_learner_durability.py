"""Learner node under faults, in a real process: nothing it journaled is lost to a SIGKILL, a SIGINT during a long
catch-up stops it at once with a final checkpoint, a damaged checkpoint is refused (never a silent fresh start over
it), a full backlog drops new transitions and keeps the journaled ones, with a key file every update it
publishes is signed, and on a full disk (a file size limit set on the running process) it drops and counts what it
cannot journal, holds a block back until a checkpoint holds it, and exits with status 1 when the final checkpoint
cannot be written, the journal keeping what it lacks; a worker that does not stop in time writes nothing after the
stop."""
import os
import resource
import shutil
import signal

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Float64MultiArray, UInt8MultiArray

from swfp_ros.algo import auth
from swfp_ros.algo.checkpoint import load_learner, load_policy, save_learner
from swfp_ros.ros import messages
from swfp_ros.ros.journal import SEGMENT_RECORDS, TransitionJournal
from swfp_ros.ros.learner_node import load_or_create_learner, stack, swfp_config
from test_learner_node import ACT, LATCHED, OBS, checkpoint_counters, learner_diagnostic, learner_status, transition
from tiny_policy import SMALL_SWFP, write_bc_checkpoint

KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
# utd 2: storing a transition costs two critic updates, so a fast sender builds a backlog the learner works through
SLOW = {**SMALL_SWFP, 'utd': 2.0, 'warmup_steps': 10 ** 6}
# blocks of 20,000 train steps (minutes): a learner in its first block holds its worker there
SLOW_BLOCK = {**SMALL_SWFP, 'block': {**SMALL_SWFP['block'], 'train_steps': 20_000}}


@pytest.fixture
def start_learner(tmp_path, launch_node):
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS, ACT)

    def start(**params):
        base = {'checkpoint_dir': str(tmp_path / 'ckpt'), 'base_checkpoint': str(bc), 'device': 'cpu',
                'status_period_s': 0.2, 'update_period_s': 0.01, 'swfp': SMALL_SWFP}
        return launch_node('learner_node', params={**base, **params})
    start.bc = bc
    return start


def sender(ros_node):
    pub = ros_node.node.create_publisher(Float64MultiArray, '/swfp/transition', KEEP_ALL)
    ros_node.wait_for(lambda: pub.get_subscription_count() > 0, 30.0, what='learner subscription')
    return pub


def start_in_a_long_block(ros_node, start_learner, status):
    """(process, transition publisher) of a SLOW_BLOCK learner sent 70 transitions (warm-up 64: its first block is
    due), once its status says it is in that block."""
    proc = start_learner(swfp=SLOW_BLOCK)
    pub = sender(ros_node)
    for i in range(70):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('phase') == 'block', 60.0, what='a block under way')
    return proc, pub


def test_sigkill_under_load_loses_nothing_it_journaled(ros_node, start_learner, tmp_path):
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner(swfp=SLOW)
    pub = sender(ros_node)
    for i in range(1500):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: int(learner_status(status).get('journaled', 0)) >= 800, 60.0, what='800 journaled')
    before = learner_status(status)
    assert int(before['transitions']) < int(before['journaled']), before     # a backlog waits on disk
    # and the replay grows at the pace the critic trains: a batch (max_batch, 64) is stored only once the updates owed
    # for the ones before are spent, or while the critic still waits for its first batch (seen in CI: 75 stored, 16
    # updates, the first of them after 11 + 64 were stored)
    owed = SLOW['utd'] * int(before['env_steps']) - int(before['critic_updates'])
    assert owed <= SLOW['utd'] * (64 + SLOW['critic']['batch_size'] + 1), before
    proc.kill()
    status.clear()
    proc2 = start_learner(swfp=SLOW)
    ros_node.wait_for(lambda: learner_status(status).get('resumed') == 'true', 60.0, what='the resumed learner')
    journaled = int(learner_status(status)['journaled'])
    assert journaled >= int(before['journaled'])
    ros_node.wait_for(lambda: learner_status(status).get('idle') == 'true', 240.0, what='the backlog stored')
    after = learner_status(status)
    assert proc2.stop() == 0
    # What the journal holds: the test's transitions in the order sent. A burst of 1,500 can overflow the learner's
    # subscription history (depth 1,000) on a loaded machine before anything is journaled (seen: 67..312 and
    # 319..499 never arrived), so which ones is not fixed; the learner's promise is about those it journaled.
    journal = TransitionJournal(tmp_path / 'ckpt' / 'inbox', messages.transition_size(OBS, ACT), OBS, ACT)
    key = lambda t: np.asarray(t.obs, np.float64).tobytes()  # noqa: E731
    sent = [messages.transition_from_msg(transition(i), OBS, ACT) for i in range(1500)]
    index = {key(t): i for i, t in enumerate(sent)}
    order = [index[key(messages.unpack_transition(r, OBS, ACT))] for r in journal.read(0, 10 ** 6)]
    assert len(order) == journaled and order == sorted(set(order)), order
    # every journaled transition is in the learner exactly once, and nothing arrived after the restart (the sender
    # stopped): each of these breaks the n-step chain, so all but the last one's window are closed, and that one too
    # when it terminated
    last_open = not sent[order[-1]].terminated
    assert int(after['transitions']) == journaled and int(after['replay_size']) == journaled - last_open, after
    assert int(after['journaled']) == journaled


def test_checkpoints_delete_the_journal_segments_they_hold(ros_node, start_learner, tmp_path):
    """The journal does not grow with the run: once a checkpoint holds a whole segment's transitions (SEGMENT_RECORDS),
    that segment is deleted; the records after it stay."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner(queue_depth=10_000, swfp={**SMALL_SWFP, 'utd': 0.01, 'warmup_steps': 10 ** 6})
    pub = sender(ros_node)
    n = SEGMENT_RECORDS + 200
    for i in range(n):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('idle') == 'true' and learner_status(status).get(
        'transitions') == str(n), 120.0, what=f'all {n} stored')
    assert proc.stop() == 0, proc.output()[-3000:]           # the final checkpoint holds all of them
    assert sorted(p.name for p in (tmp_path / 'ckpt' / 'inbox').glob('*.seg')) == [f'{SEGMENT_RECORDS:012d}.seg']


def test_sigint_during_catch_up_stops_at_once_with_a_final_checkpoint(ros_node, start_learner, tmp_path):
    """A checkpoint owing 20,000 critic updates (what the old node left after a SIGINT with a full queue): the resumed
    node works them off in bounded rounds, and a SIGINT in the middle is honoured between two rounds."""
    ckpt_dir = tmp_path / 'ckpt'
    learner, _ = load_or_create_learner(ckpt_dir / 'learner.pt', str(start_learner.bc), swfp_config(
        {'critic.hidden': 32, 'critic.layers': 2, 'critic.batch_size': 32, 'warmup_steps': 10 ** 6}), 'cpu')
    rng = np.random.default_rng(0)
    n = 40_000
    learner.add_transitions(rng.normal(size=(n, OBS)), rng.uniform(-1, 1, (n, ACT)), -rng.random(n),
                            rng.normal(size=(n, OBS)), np.zeros(n, bool), np.ones(n))
    owed = learner.counters.owed_updates
    save_learner(str(ckpt_dir / 'learner.pt'), learner)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner()
    ros_node.wait_for(lambda: int(learner_status(status).get('critic_updates', 0)) >= 50, 120.0,
                      what='the catch-up under way')
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.proc.wait(60) == 0, proc.output()[-3000:]
    out = proc.output()
    assert 'final checkpoint' in out and 'Traceback' not in out, out[-3000:]
    final = load_learner(str(ckpt_dir / 'learner.pt'))
    assert final.counters.critic_updates >= 50                   # the progress is in the final checkpoint
    assert 1 <= final.counters.owed_updates < owed                # and it stopped in the middle of the catch-up


def test_restart_stores_the_journal_backlog_before_the_due_block(ros_node, start_learner, tmp_path):
    """What a stop in a block can leave (seen in CI: 65 of 70 stored when the block began): a checkpoint with the
    block due and journaled transitions after it. The restarted learner stores them first, and its status says so
    while the (minutes-long) block trains."""
    ckpt_dir = tmp_path / 'ckpt'
    slow_block = swfp_config({'warmup_steps': 64, 'steps_per_block': 64, 'utd': 0.5, 'critic.hidden': 32,
                              'critic.layers': 2, 'critic.batch_size': 32, 'block.hidden': 32, 'block.layers': 2,
                              'block.train_steps': 20_000})
    learner, _ = load_or_create_learner(ckpt_dir / 'learner.pt', str(start_learner.bc), slow_block, 'cpu')
    sent = [messages.transition_from_msg(transition(i), OBS, ACT) for i in range(70)]
    learner.add_transitions(**stack(sent[:65]))
    learner.update(should_stop=lambda: learner.counters.owed_updates < 1)   # a stop once the block begins
    assert learner.counters.blocks_trained == 0 and learner.counters.next_block_at <= learner.counters.env_steps
    save_learner(str(ckpt_dir / 'learner.pt'), learner)
    journal = TransitionJournal(ckpt_dir / 'inbox', messages.transition_size(OBS, ACT), OBS, ACT)
    for t in sent:
        journal.append(messages.pack_transition(t))
    journal.close()
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner()                                       # the checkpoint's settings hold
    ros_node.wait_for(lambda: learner_status(status).get('phase') == 'block', 60.0, what='the block under way')
    assert learner_status(status)['transitions'] == '70', learner_status(status)
    proc.kill()


def test_a_block_due_at_the_restart_trains_without_new_data(ros_node, start_learner, tmp_path):
    """A learner stopped as its block began, with exactly the env steps that make it due (64 of warm-up 64) and no
    actor sending: the restarted learner trains that block from its checkpoint alone."""
    ckpt_dir = tmp_path / 'ckpt'
    cfg = swfp_config({'warmup_steps': 64, 'steps_per_block': 64, 'utd': 0.5, 'critic.hidden': 32, 'critic.layers': 2,
                       'critic.batch_size': 32, 'block.hidden': 32, 'block.layers': 2, 'block.train_steps': 20})
    learner, _ = load_or_create_learner(ckpt_dir / 'learner.pt', str(start_learner.bc), cfg, 'cpu')
    learner.add_transitions(**stack([messages.transition_from_msg(transition(i), OBS, ACT) for i in range(64)]))
    learner.update(should_stop=lambda: learner.counters.owed_updates < 1)   # a stop once the block begins
    c = learner.counters
    assert (c.env_steps, c.next_block_at, c.blocks_trained) == (64, 64, 0)
    save_learner(str(ckpt_dir / 'learner.pt'), learner)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner()
    ros_node.wait_for(lambda: learner_status(status).get('blocks_trained') == '1', 60.0, what='the due block trained')
    assert learner_status(status)['received'] == '0'
    assert proc.stop() == 0, proc.output()[-3000:]


def test_beyond_max_backlog_new_transitions_are_dropped_and_counted(ros_node, start_learner, tmp_path):
    """While a long block holds the worker nothing is stored: the journal takes transitions until ``max_backlog``
    (live) wait unstored, and the ones after are dropped and counted, never journaled."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc, pub = start_in_a_long_block(ros_node, start_learner, status)
    ros_node.wait_for(lambda: learner_status(status).get('journaled') == '70', 30.0, what='all 70 journaled')
    pending = int(learner_status(status)['pending'])             # fixed until the block ends
    client = AsyncParameterClient(ros_node.node, '/learner_node')
    ros_node.wait_for(client.services_are_ready, 30.0, what='the parameter services')
    future = client.set_parameters([Parameter('max_backlog', value=pending + 3)])
    ros_node.wait_for(future.done, 30.0, what='max_backlog set')
    assert future.result().results[0].successful
    for i in range(70, 78):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('received') == '78', 30.0, what='all 78 received')
    s = learner_status(status)
    assert (s['journaled'], s['dropped'], s['pending'], s['phase']) == ('73', '5', str(pending + 3), 'block'), s
    proc.kill()


def test_damaged_checkpoint_refused_never_started_over(ros_node, start_learner, tmp_path):
    ckpt = tmp_path / 'ckpt' / 'learner.pt'
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner()
    pub = sender(ros_node)
    for i in range(20):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('accepted') == '20', 30.0, what='20 stored')
    assert proc.stop() == 0
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:len(good) // 2])                      # a checkpoint cut short (disk full, a copy aborted)
    damaged = ckpt.read_bytes()
    for attempt in ('damaged', 'missing'):
        bad = start_learner()
        assert bad.proc.wait(60) != 0
        out = bad.output()
        assert 'cannot start' in out and 'Traceback' not in out, out[-2000:]
        if attempt == 'damaged':
            assert str(ckpt) in out and ckpt.read_bytes() == damaged     # named, and left as it was
            ckpt.unlink()
        else:
            assert 'refusing to start a fresh learner' in out and not ckpt.exists()
    ckpt.write_bytes(good)                                       # restored: resumes with its 20 transitions
    status.clear()
    proc = start_learner()
    ros_node.wait_for(lambda: learner_status(status).get('resumed') == 'true', 60.0, what='resumed')
    assert learner_status(status)['transitions'] == '20'
    assert proc.stop() == 0


def test_a_journal_that_does_not_cover_the_checkpoint_is_refused(ros_node, start_learner, tmp_path):
    """A learner.pt beside a journal of another run (one starting after its transitions, or ending before them) is
    refused at start, never mixed with it."""
    ckpt_dir = tmp_path / 'ckpt'
    learner, _ = load_or_create_learner(ckpt_dir / 'learner.pt', str(start_learner.bc), swfp_config(
        {'critic.hidden': 32, 'critic.layers': 2, 'critic.batch_size': 32}), 'cpu')
    learner.add_transitions(**stack([messages.transition_from_msg(transition(i), OBS, ACT) for i in range(10)]))
    save_learner(str(ckpt_dir / 'learner.pt'), learner)
    for first_transition in (11, 0):                             # 11..12 or 0..1 against the checkpoint's 10
        journal = TransitionJournal(ckpt_dir / 'inbox', messages.transition_size(OBS, ACT), OBS, ACT,
                                    first_transition=first_transition)
        journal.append(messages.pack_transition(messages.transition_from_msg(transition(99), OBS, ACT)))
        journal.close()
        proc = start_learner()
        assert proc.proc.wait(60) != 0
        assert 'not the same run' in proc.output() and 'Traceback' not in proc.output(), proc.output()[-2000:]
        shutil.rmtree(ckpt_dir / 'inbox')


def test_updates_signed_with_the_key_file(ros_node, start_learner, tmp_path):
    key_file = tmp_path / 'update.key'
    key_file.write_text(os.urandom(32).hex())
    key_file.chmod(0o644)
    loose = start_learner(update_key_file=str(key_file))
    assert loose.proc.wait(60) != 0 and 'chmod 600' in loose.output()
    key_file.chmod(0o600)
    updates = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    proc = start_learner(update_key_file=str(key_file))
    ros_node.wait_for(lambda: len(updates) >= 1, 60.0, what='the signed snapshot')
    blob = messages.update_from_msg(updates[0][1])
    assert auth.is_signed(blob)
    actor = load_policy(str(start_learner.bc), device='cpu')
    actor.set_update_key(auth.load_key(key_file))
    assert actor.apply_update(blob) == 0                         # the learner's snapshot: same policy, accepted
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(ValueError, match='signature'):
        actor.apply_update(bytes(tampered))
    assert proc.stop() == 0


def test_sigint_during_a_block_stops_it_with_a_final_checkpoint(ros_node, start_learner, tmp_path):
    """A block takes seconds (here: 20,000 train steps, minutes): a stop request ends it at the next train step, the
    final checkpoint holds the state before it (the block still due), and a restarted learner trains it."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc, _ = start_in_a_long_block(ros_node, start_learner, status)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.proc.wait(60) == 0, proc.output()[-3000:]
    out = proc.output()
    assert 'final checkpoint' in out and 'Traceback' not in out, out[-3000:]
    final = load_learner(str(tmp_path / 'ckpt' / 'learner.pt'))
    assert final.counters.blocks_trained == 0                                                # no block
    assert final.counters.next_block_at <= final.counters.env_steps                          # and the block due
    # all data: the block may start before the last few transitions are stored (seen: 65 of 70); those stay in the
    # journal, after the ones the checkpoint holds, for the restarted learner to store
    journal = TransitionJournal(tmp_path / 'ckpt' / 'inbox', messages.transition_size(OBS, ACT), OBS, ACT)
    assert journal.first_transition + journal.written == 70, (journal.first_transition, journal.written)
    assert journal.first_transition <= final.counters.transitions <= 70
    journal.close()
    status.clear()
    proc = start_learner(swfp=SLOW_BLOCK)
    ros_node.wait_for(lambda: learner_status(status).get('phase') == 'block' and learner_status(status).get(
        'transitions') == '70', 60.0, what='all 70 stored and the block trained again')
    proc.kill()


def test_a_block_whose_checkpoint_fails_goes_out_once_a_checkpoint_holds_it(ros_node, start_learner, tmp_path):
    """A full disk as a block is trained (here: a file size limit under the checkpoint's size, set on the running
    learner with prlimit; the kernel refuses the write as on a full disk): the accepted block is not published while
    no checkpoint holds it, and once there is room it goes out, in order. Dropped, as it was, every policy node would
    refuse each later block as out of order until the next compaction."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    updates = ros_node.collect('/swfp/policy_update', UInt8MultiArray, LATCHED)
    proc = start_learner(checkpoint_every=1)
    ros_node.wait_for(lambda: len(updates) == 1, 30.0, what='the start-up snapshot')
    pub = sender(ros_node)
    for i in range(50):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: checkpoint_counters(tmp_path / 'ckpt').get('transitions') == 50, 30.0,
                      what='a checkpoint of the 50 stored')
    size = (tmp_path / 'ckpt' / 'learner.pt').stat().st_size
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size // 2, resource.RLIM_INFINITY))    # the disk is full
    for i in range(50, 70):          # warm-up 64 env steps: the first block is due
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('blocks_trained') == '1', 60.0, what='the first block')
    s = learner_status(status)
    assert s['blocks_accepted'] == '1', f'the block was rejected, the test needs an accepted one: {s}'
    # the status counts the block trained a moment before it is held back, and the disk was full before the block
    ros_node.wait_for(lambda: learner_status(status).get('unpublished') == '1'
                      and 'File too large' in learner_diagnostic(status).message, 30.0,
                      what='the block held back, the failed checkpoint on the status')
    s = learner_status(status)
    assert (s['blocks_published'], s['version']) == ('0', '1') and len(updates) == 1, s
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    ros_node.wait_for(lambda: len(updates) == 2, 30.0, what='the block published')
    ros_node.wait_for(lambda: (learner_status(status)['blocks_published'], learner_status(status)['unpublished']) == (
        '1', '0'), 30.0, what='the status counting it published')
    policy = load_policy(str(start_learner.bc), device='cpu')
    for _, msg in list(updates):
        policy.apply_update(messages.update_from_msg(msg))
    assert policy.version == 1 and checkpoint_counters(tmp_path / 'ckpt')['version'] == 1
    assert proc.stop() == 0, proc.output()


def test_a_final_checkpoint_the_disk_refuses_exits_1_and_loses_nothing(ros_node, start_learner, tmp_path):
    """A full disk at the stop (a file size limit under the checkpoint's size, set on the running learner): the final
    checkpoint cannot be written, the node says so and exits with status 1 (it exited 0, its error one log line), the
    checkpoint before stands, and a restart stores every transition from the journal."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner(checkpoint_every=1000, swfp=SLOW)
    pub = sender(ros_node)
    for i in range(30):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('transitions') == '30'
                      and learner_status(status).get('idle') == 'true', 60.0, what='all 30 stored')
    assert checkpoint_counters(tmp_path / 'ckpt')['transitions'] == 0       # the start-up checkpoint only
    size = (tmp_path / 'ckpt' / 'learner.pt').stat().st_size
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size // 2, resource.RLIM_INFINITY))    # the disk is full
    assert proc.stop() == 1, proc.output()[-3000:]
    out = proc.output()
    assert 'close failed: RuntimeError: final checkpoint not written: ' in out, out[-3000:]
    assert 'File too large' in out and 'the 30 transitions received after it are in the journal' in out, out[-3000:]
    assert checkpoint_counters(tmp_path / 'ckpt')['transitions'] == 0
    status.clear()
    proc = start_learner(checkpoint_every=1000)
    ros_node.wait_for(lambda: learner_status(status).get('transitions') == '30', 60.0,
                      what='the 30 stored from the journal')
    assert proc.stop() == 0, proc.output()[-3000:]
    assert checkpoint_counters(tmp_path / 'ckpt')['transitions'] == 30


def test_a_worker_that_does_not_stop_in_time_writes_nothing_over_the_stop(ros_env, tmp_path, monkeypatch):
    """A worker held past STOP_WAIT_S in one call (here: the learner's update, stopped on an event; in a run, a slow
    disk): close() gives up on the final checkpoint and raises saying so (the process exits 1), and when the call
    returns the worker writes no checkpoint over what close() left and publishes none of the round's updates (no
    checkpoint holds them; in-process: the worker is held from the test)."""
    import threading
    from types import SimpleNamespace

    import rclpy

    from swfp_ros.ros import learner_node
    monkeypatch.setattr(learner_node, 'STOP_WAIT_S', 0.2)
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS, ACT)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = learner_node.LearnerNode(context=context, parameter_overrides=[
        Parameter('checkpoint_dir', value=str(tmp_path / 'ckpt')), Parameter('base_checkpoint', value=str(bc)),
        Parameter('device', value='cpu'), Parameter('checkpoint_every', value=1)])
    try:
        in_update, release = threading.Event(), threading.Event()
        block = SimpleNamespace(kind='block', version=1, to_bytes=lambda: b'block')

        def held_update(**_):
            in_update.set()
            release.wait(30.0)
            return [block]
        node.learner.update = held_update
        node._on_transition(transition(0))          # as the executor would: journaled, the worker woken
        assert in_update.wait(30.0), 'the worker never reached the update'
        ckpt = tmp_path / 'ckpt' / 'learner.pt'
        before = ckpt.stat()
        with pytest.raises(RuntimeError, match=r'final checkpoint not written: the worker did not stop within 0.2 s '
                                               r'\(critic\); .* the 1 transitions received after it are in the '
                                               r'journal'):
            node.close()
        release.set()
        node._worker.join(30.0)
        assert not node._worker.is_alive()
        assert (ckpt.stat().st_ino, ckpt.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert node.counters['blocks_published'] == 0 and node._unpublished == [block]
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_transitions_the_journal_cannot_take_are_dropped_and_counted_and_journaling_resumes(ros_node, start_learner,
                                                                                           tmp_path):
    """A full disk under the journal (a file size limit set on the running learner with prlimit: room for 20 more
    records): the next transitions are dropped and counted, the status warns, the node runs on; with room again they
    are journaled and stored, and none of the earlier ones is lost."""
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc = start_learner(swfp={**SMALL_SWFP, 'warmup_steps': 10 ** 6})
    pub = sender(ros_node)
    for i in range(50):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('accepted') == '50', 30.0, what='50 stored')
    segment = next((tmp_path / 'ckpt' / 'inbox').glob('*.seg'))
    record = segment.stat().st_size // 50
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (segment.stat().st_size + 20 * record + record // 2,
                                                       resource.RLIM_INFINITY))
    for i in range(50, 90):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('received') == '90', 30.0, what='90 received')
    ros_node.wait_for(lambda: learner_diagnostic(status).level == DiagnosticStatus.WARN, 10.0, what='a warning')
    s = learner_status(status)
    assert (s['journaled'], s['dropped']) == ('70', '20') and proc.alive(), s
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    for i in range(90, 100):
        pub.publish(transition(i))
    ros_node.wait_for(lambda: learner_status(status).get('accepted') == '80', 30.0, what='all 80 journaled stored')
    assert learner_status(status)['journaled'] == '80'
    assert proc.stop() == 0, proc.output()
