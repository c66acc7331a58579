"""The actor loop as a library, without any ROS graph: chunk execution, per-step safety, the asynchronous next
chunk, transition assembly, pacing, the update swap, temporal ensembling and the return home — and an in-process
lockstep run on the real MuJoCo reach task, driven the way a runner would drive it."""
import threading
import time
from concurrent import futures

import numpy as np
import pytest

from swfp_ros.actor import ActorConfig, ActorLoop, ActorWorker, RewardInfo
from swfp_ros.ros.safety import SafetyFilter

N = 7
TASK = np.array([0.4, 0.0, 0.3, 0.5, 0.1, 0.3])
OBS_DIM = 2 * N + TASK.size
JOINTS = tuple(f'panda_joint{i}' for i in range(1, 8))


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class ScriptedRuntime:
    """Chunk k (the k-th inference) is all (k + 1) / 10 per step, clipped: easy to tell chunks and steps apart."""

    def __init__(self, horizon=1):
        self.horizon, self.version, self.calls, self.obs_seen = horizon, 0, 0, []
        self.threads = {}                            # the thread that ran prepare_update / commit_update
        self.before_prepare = lambda: None
        self.commit_refusal = ''                     # set: commit_update raises it (an update that lost a race)

    def act(self, obs, deterministic=False):
        self.obs_seen.append(np.asarray(obs, dtype=np.float64).copy())
        self.calls += 1
        step = np.clip(np.full(N, self.calls / 10.0), -1, 1)
        return np.tile(step, self.horizon) + 0.01 * np.repeat(np.arange(self.horizon), N)

    def prepare_update(self, data):
        self.before_prepare()
        self.threads['prepare'] = threading.current_thread().name
        if data != b'next':
            raise ValueError('bad update')
        return self.version + 1

    def commit_update(self, version):
        self.threads['commit'] = threading.current_thread().name
        if self.commit_refusal:
            raise ValueError(self.commit_refusal)
        self.version = version
        return version


def make(horizon=1, clock=None, max_delta=0.1, active=False, **cfg):
    """A warmed-up loop on a scripted runtime; ``active``: with the task given and activated, as a node runs it."""
    clock = clock or Clock()
    runtime = ScriptedRuntime(horizon)
    safety = SafetyFilter(np.full(N, -3.0), np.full(N, 3.0), max_delta, stale_timeout_s=0.5)
    commands, transitions = [], []
    loop = ActorLoop(runtime, safety, ActorConfig(joint_names=JOINTS, **cfg), commands.append, transitions.append,
                     clock=clock)
    loop.warmup(OBS_DIM, iters=1)
    runtime.calls = 0
    runtime.obs_seen.clear()
    if active:
        loop.task(TASK)
        loop.set_active(True)
    return loop, runtime, commands, transitions, clock


def feed(loop, clock, q, stamp):
    loop.joint_state(np.asarray(q, float), np.zeros(N), stamp, clock())


def test_realtime_chunk_steps_are_filtered_against_the_latest_measured_position():
    loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', async_chunks=False, active=True,
                                                       actor_id=5)
    q = np.zeros(N)
    for k in range(8):
        q = q + 0.08                                 # the arm moves between ticks: 0.24 rad within a chunk
        feed(loop, clock, q, k)
        loop.tick(clock())
        cmd = commands[-1][0]
        assert np.all(np.abs(cmd - q) <= 0.1 + 1e-12), 'every step within max_delta of the measured position'
        clock.t += 0.05
        loop.reward(RewardInfo(-1.0, False, False, k + 1))
    assert runtime.calls == 2                        # two chunks of 4 steps, inferred at ticks 0 and 4
    assert len(commands) == 8 and len(transitions) == 1
    t = transitions[0]
    assert t.n_steps == 4 and t.reward == -4.0 and t.action.shape == (4 * N,)
    assert not t.terminated and t.actor_id == 5      # no reward said terminated; the learner's stream of this actor
    # the executed actions are the first chunk's steps (0.1 + 0.01 j), each relative to the position measured then
    assert np.allclose(t.action.reshape(4, N)[:, 0], [0.1, 0.11, 0.12, 0.13], atol=1e-9)


def test_async_next_chunk_is_ready_at_the_boundary_and_chains_transitions():
    for async_chunks in (False, True):
        loop, runtime, commands, transitions, clock = make(horizon=3, mode='realtime', async_chunks=async_chunks,
                                                           active=True)
        calls_at_tick = []
        for k in range(9):
            feed(loop, clock, np.full(N, 0.01 * k), k)
            before = runtime.calls
            loop.tick(clock())
            if loop.prefetch is not None:
                loop.prefetch[1].result()            # the background inference finishes within the period
            calls_at_tick.append(runtime.calls - before)
            clock.t += 0.05
            loop.reward(RewardInfo(-0.5, False, False, k + 1))
        loop.close()
        if async_chunks:
            # inference is started at each chunk's last step (ticks 2, 5, 8), never at a boundary tick (3, 6)
            assert [i for i, c in enumerate(calls_at_tick) if c] == [0, 2, 5, 8]
            assert loop.counters['prefetched_chunks'] == 2
            # the next decision is taken from the observation at the last step (one step of action latency)
            assert np.allclose(runtime.obs_seen[1][:N], 0.02) and np.allclose(runtime.obs_seen[2][:N], 0.05)
        else:
            assert [i for i, c in enumerate(calls_at_tick) if c] == [0, 3, 6]
        assert len(transitions) == 2
        a, b = transitions
        assert np.array_equal(a.next_obs, b.obs), 'consecutive decisions chain (the learner\'s n-step windows)'
        assert np.allclose(b.obs, runtime.obs_seen[1], atol=1e-6), 'a decision\'s obs is what the policy saw'
        assert a.n_steps == 3


def test_stale_observation_and_estop_hold_and_are_not_recorded():
    loop, runtime, commands, transitions, clock = make(horizon=1, mode='realtime', active=True)
    q = np.full(N, 0.2)
    feed(loop, clock, q, 0)
    sent = len(commands)
    clock.t += 0.6                                   # older than stale_timeout_s
    loop.tick(clock())
    # no hold at a measurement that old (the arm may have moved since): nothing is sent, the controller keeps its target
    assert len(commands) == sent and loop.safety.counters['stale'] == 1
    assert loop.counters['stale_holds_withheld'] == 1
    assert runtime.calls == 0, 'no inference from a stale observation'
    feed(loop, clock, q, 1)
    loop.estop(True)
    loop.tick(clock())
    assert np.allclose(commands[-1][0], q) and loop.safety.counters['estop'] >= 1
    assert runtime.calls == 0, 'no inference while e-stopped'
    loop.reward(RewardInfo(-1.0, False, False, 1))
    loop.estop(False)
    feed(loop, clock, q, 2)
    loop.tick(clock())
    assert not np.allclose(commands[-1][0], q)       # moving again
    assert not transitions, 'holds are never recorded'


def test_no_task_holds_and_invalid_input_holds():
    loop, runtime, commands, transitions, clock = make(mode='realtime')
    loop.set_active(True)
    q = np.full(N, 0.3)
    feed(loop, clock, q, 0)
    loop.tick(clock())
    assert np.allclose(commands[-1][0], q) and loop.safety.counters['no_task'] == 1 and runtime.calls == 0
    loop.task(TASK)
    loop.invalid('bad_task')
    loop.tick(clock())
    assert np.allclose(commands[-1][0], q) and loop.safety.counters['bad_task'] == 1 and runtime.calls == 0
    loop.task(TASK)                                  # a valid task clears it
    loop.tick(clock())
    assert runtime.calls == 1


def test_an_invalid_joint_state_between_ticks_drops_the_chunk_in_flight():
    """Realtime: a bad joint state arrives mid-chunk and a valid one before the next tick. The rest of the chunk,
    planned before the fault, is dropped (not executed, its decision not recorded): the next tick infers afresh."""
    loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', async_chunks=False, active=True)
    feed(loop, clock, np.full(N, 0.2), 0)
    loop.tick(clock())
    assert runtime.calls == 1
    loop.invalid('bad_joint_state')
    feed(loop, clock, np.full(N, 0.25), 1)
    clock.t += 0.05
    loop.tick(clock())
    assert runtime.calls == 2 and np.allclose(runtime.obs_seen[-1][:N], 0.25)
    assert np.allclose(commands[-1][0], 0.25 + 0.1 * 0.2)     # chunk 2's first step, from the new measurement
    loop.reward(RewardInfo(-1.0, False, False, 1))
    assert not any(np.allclose(t.obs[:N], 0.2) for t in transitions)


@pytest.mark.parametrize('command_type', ['float64_array', 'trajectory'])
def test_an_estop_and_a_deactivation_hold_at_once_without_waiting_for_a_tick(command_type):
    """Mid-chunk (mid-trajectory: the controller would run the rest on its own), engaging the e-stop and deactivating
    each send a hold at the measured position right away, and the interrupted decision is not recorded."""
    for stop in ('estop', 'deactivate'):
        loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', command_type=command_type,
                                                           active=True)
        q = np.full(N, 0.2)
        feed(loop, clock, q, 0)
        loop.tick(clock())
        sent = len(commands)
        if stop == 'estop':
            loop.estop(True)
        else:
            loop.set_active(False)
        assert len(commands) == sent + 1 and np.array_equal(commands[-1][0], q), stop
        assert loop.counters['holds'] == 1
        loop.reward(RewardInfo(-1.0, True, False, 1))
        feed(loop, clock, q, 1)
        assert not transitions, stop
    sent = len(commands)                             # inactive: an e-stop and its release command nothing
    loop.estop(True)
    loop.estop(False)
    assert len(commands) == sent


def test_a_trajectory_is_filtered_point_by_point_from_the_previous_point():
    """A chunk sent as one trajectory: each point is the previous one plus its step, bounded by max_delta from the
    previous point (the controller reaches each from the last), so the points accumulate and no step between two
    exceeds the bound."""
    loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', command_type='trajectory',
                                                       max_delta=0.0105, active=True)
    feed(loop, clock, np.full(N, 0.2), 0)
    loop.tick(clock())
    points = np.asarray(commands[-1])                # chunk 1: actions 0.10, 0.11, 0.12, 0.13 at 0.1 rad each
    steps = np.minimum([0.010, 0.011, 0.012, 0.013], 0.0105)
    np.testing.assert_allclose(points, np.broadcast_to(0.2 + np.cumsum(steps)[:, None], (4, N)))
    assert loop.safety.counters['clamp_delta'] == 3


def test_a_chunk_cut_short_by_the_episode_end_is_recorded_padded_to_its_full_size():
    """Realtime, H = 4: the episode ends after two steps of a chunk. Its transition carries the two executed steps and
    zeros for the two never sent, so it has the policy's action size (the learner refuses any other)."""
    loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', async_chunks=False, active=True)
    for stamp in range(2):
        feed(loop, clock, np.full(N, 0.2), stamp)
        loop.tick(clock())
        loop.reward(RewardInfo(-1.0, stamp == 1, False, 1))
    feed(loop, clock, np.full(N, 0.2), 2)            # the terminal observation
    assert len(transitions) == 1 and transitions[0].terminated
    action = np.asarray(transitions[0].action).reshape(4, N)
    np.testing.assert_allclose(action[:2], [np.full(N, 0.10), np.full(N, 0.11)])
    assert np.array_equal(action[2:], np.zeros((2, N)))


@pytest.mark.parametrize('planned', ['prefetch', 'temporal_ensemble'])
def test_nothing_planned_before_an_estop_is_executed_after_its_release(planned):
    """What the loop planned ahead -- the next chunk inferred in the background, or the chunks a temporal ensemble
    averages -- came from observations before the e-stop; after the release it acts on a fresh inference only."""
    cfg = {'async_chunks': True} if planned == 'prefetch' else {'temporal_ensemble': True}
    loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', **cfg, active=True)
    for stamp in range(4):                           # chunk 1 executed; the next one planned from 0.2
        feed(loop, clock, np.full(N, 0.2), stamp)
        loop.tick(clock())
    planned_calls = runtime.calls
    loop.estop(True)
    loop.estop(False)
    feed(loop, clock, np.full(N, 0.3), 4)
    loop.tick(clock())
    assert runtime.calls == planned_calls + 1 and np.allclose(runtime.obs_seen[-1][:N], 0.3)
    step = (planned_calls + 1) / 10 * 0.1            # the fresh chunk's first step, alone
    np.testing.assert_allclose(commands[-1][0], 0.3 + step)


def test_realtime_updates_are_checked_aside_and_swapped_after_a_command():
    loop, runtime, commands, transitions, clock = make(mode='realtime', active=True)
    loop.update(b'next')
    loop.update(b'corrupt')
    loop.checking_update.result(10.0)                # the first update's checks are done ...
    assert runtime.version == 0, '... but it is swapped in only after the next command'
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    assert runtime.version == 1 and loop.counters['updates_applied'] == 1 and commands
    assert runtime.threads == {'prepare': 'swfp-update_0', 'commit': threading.current_thread().name}
    futures.wait([loop.checking_update], 10.0)       # the second one, checked after the first was swapped in
    loop.tick(clock())
    assert loop.counters['updates_rejected'] == 1 and runtime.version == 1


def checking_an_update_until_released():
    """An active realtime loop whose first update's checks block until ``release`` is set."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', active=True)
    release = threading.Event()
    runtime.before_prepare = lambda: release.wait(30.0)
    loop.update(b'next')
    return loop, runtime, commands, clock, release


def test_ticks_go_on_while_an_update_is_being_checked():
    """The checks take longer than a control period on a busy CPU: they must not hold the control thread."""
    loop, runtime, commands, clock, release = checking_an_update_until_released()
    for i in range(3):
        feed(loop, clock, np.zeros(N), i)
        loop.tick(clock())
        loop.reward(RewardInfo(-1.0, False, False, i + 1))
    assert len(commands) == 3 and runtime.calls == 3 and runtime.version == 0
    release.set()
    loop.checking_update.result(10.0)
    feed(loop, clock, np.zeros(N), 3)
    loop.tick(clock())
    assert runtime.version == 1 and loop.counters['updates_applied'] == 1


def test_lockstep_pacing_waits_for_the_learner_but_not_for_a_dead_one():
    loop, runtime, commands, transitions, clock = make(mode='lockstep', max_learner_backlog=8, backlog_timeout_s=1.0,
                                                       lockstep_timeout_s=1.0, active=True)
    loop.backlog_report(50)
    feed(loop, clock, np.zeros(N), 1)
    assert not commands and loop.paused is not None and loop.counters['paced_waits'] == 1
    loop.backlog_report(3)                           # the learner caught up
    assert len(commands) == 1
    loop.backlog_report(50)
    loop.reward(RewardInfo(-1.0, False, False, 1))
    feed(loop, clock, np.zeros(N), 2)
    assert len(commands) == 1 and loop.paused is not None
    clock.t += 1.5                                   # no report for longer than backlog_timeout_s: learner gone
    loop.idle()
    assert len(commands) == 2 and loop.paused is None
    # a policy step, not a hold: the simulator waited for it, so the observation is current however long it waited
    assert not np.array_equal(commands[-1][0], np.zeros(N)) and loop.safety.counters['stale'] == 0
    assert loop.counters['lockstep_timeouts'] == 0 and loop.pending is not None, 'the wait was no lost step'


def test_lockstep_pacing_limits_are_inclusive():
    """A backlog of exactly max_learner_backlog is not behind; a report exactly backlog_timeout_s old still counts."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', max_learner_backlog=8, backlog_timeout_s=1.0,
                                                       active=True)
    loop.backlog_report(8)
    feed(loop, clock, np.zeros(N), 1)
    assert len(commands) == 1
    loop.backlog_report(9)
    clock.t += 1.0
    loop.reward(RewardInfo(-1.0, False, False, 1))
    feed(loop, clock, np.zeros(N), 2)
    assert len(commands) == 1 and loop.paused is not None


def test_the_next_command_goes_out_before_the_transition_its_observation_finished():
    """The observation that ends a decision starts the next one: its command is on the observation → command path,
    the finished transition is not, so the transition follows the command, within the same event."""
    for mode in ('lockstep', 'realtime'):
        out = []
        runtime = ScriptedRuntime()
        safety = SafetyFilter(np.full(N, -3.0), np.full(N, 3.0), 0.1, stale_timeout_s=0.5)
        clock = Clock()
        loop = ActorLoop(runtime, safety, ActorConfig(joint_names=JOINTS, mode=mode, async_chunks=False),
                         lambda points: out.append('command'), lambda t: out.append('transition'), clock=clock)
        loop.warmup(OBS_DIM, iters=1)
        loop.task(TASK)
        loop.set_active(True)
        for k in range(3):
            feed(loop, clock, np.full(N, 0.01 * k), k)
            if mode == 'realtime':
                loop.tick(clock())
            loop.reward(RewardInfo(-1.0, False, False, k + 1))
        assert out == ['command', 'command', 'transition', 'command', 'transition'], mode
        assert loop.counters['transitions'] == 2


def test_lockstep_pacing_waits_for_the_learners_first_report_then_acts_unpaced_without_one():
    """Until the learner's first backlog report the learner may still be being discovered: steps taken then would
    send transitions no learner receives. The actor waits up to learner_wait_s after activation, released by the
    first report; with none by then it acts unpaced."""
    def first_observation(learner_wait_s):
        loop, _, commands, _, clock = make(mode='lockstep', max_learner_backlog=8, learner_wait_s=learner_wait_s,
                                           active=True)
        feed(loop, clock, np.zeros(N), 1)
        return loop, commands, clock

    loop, commands, clock = first_observation(2.0)
    clock.t += 1.5
    loop.idle()
    assert not commands and loop.counters['learner_waits'] == 1
    loop.backlog_report(3)                           # the learner is there and not behind
    assert len(commands) == 1 and loop.counters['learner_wait_expired'] == 0

    loop, commands, clock = first_observation(2.0)
    clock.t += 1.5
    loop.idle()
    assert not commands
    clock.t += 1.0                                   # no report within learner_wait_s: no learner
    loop.idle()
    assert len(commands) == 1 and loop.counters['learner_wait_expired'] == 1
    loop.reward(RewardInfo(-1.0, False, False, 1))
    feed(loop, clock, np.zeros(N), 2)
    assert len(commands) == 2, 'unpaced from then on'

    loop, commands, clock = first_observation(0.0)
    assert len(commands) == 1, 'learner_wait_s 0: no wait'


@pytest.mark.parametrize('reward_first', [True, False])
def test_lockstep_steps_on_whichever_of_reward_and_observation_arrives_last(reward_first):
    """A simulator's reward and next observation come on two topics, in either order: the next decision goes out on
    the second of them, with the transition right after it. The same observation again (a heartbeat: same stamp) is
    no new step -- paired with the reward it would end the step on the state before it."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', active=True)
    feed(loop, clock, np.zeros(N), 0)
    feed(loop, clock, np.zeros(N), 0)
    assert len(commands) == 1 and runtime.calls == 1
    if reward_first:
        loop.reward(RewardInfo(-1.0, False, False, 1))
        assert len(commands) == 1, 'no step before its observation'
        feed(loop, clock, np.full(N, 0.01), 1)
    else:
        feed(loop, clock, np.full(N, 0.01), 1)
        assert len(commands) == 1, 'no step before its reward'
        loop.reward(RewardInfo(-1.0, False, False, 1))
    assert len(commands) == 2 and len(transitions) == 1
    assert np.allclose(transitions[0].next_obs[:N], 0.01) and np.allclose(runtime.obs_seen[-1][:N], 0.01)


def test_after_an_episode_end_the_next_decision_is_taken_from_the_newest_observation():
    """Observations that queued behind the last step's reward (the terminal state, then the simulator's reset and
    more) end that step with the first of them, and the next decision is taken from the newest alone."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', active=True)
    feed(loop, clock, np.zeros(N), 0)
    for stamp in (1, 2, 3):
        feed(loop, clock, np.full(N, 0.01 * stamp), stamp)
    loop.reward(RewardInfo(-1.0, True, True, 1))
    assert len(transitions) == 1 and transitions[0].terminated and np.allclose(transitions[0].next_obs[:N], 0.01)
    assert len(commands) == 2 and runtime.calls == 2 and np.allclose(runtime.obs_seen[-1][:N], 0.03)


def test_a_policy_action_beyond_one_moves_one_action_scale_and_is_recorded_clipped():
    """The policy's actions are in [-1, 1]; one beyond (the flow's output is unbounded) moves the arm action_scale,
    not more, even where max_delta would allow it, and the transition records the action executed, either sign."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', max_delta=0.5, async_chunks=False,
                                                       active=True)
    wanted = np.array([1.5, -1.5, -0.5, 0.5, 0.0, 3.0, -3.0])
    runtime.act = lambda obs, deterministic=False: wanted
    for k in range(2):
        feed(loop, clock, np.zeros(N), k)
        loop.tick(clock())
        loop.reward(RewardInfo(-1.0, False, False, k + 1))
    np.testing.assert_allclose(commands[0][0], 0.1 * np.clip(wanted, -1, 1))
    np.testing.assert_allclose(transitions[0].action, np.clip(wanted, -1, 1))


def test_lockstep_acts_again_on_the_current_observation_after_a_reactivation():
    """Deactivated and activated again (the simulator paused meanwhile), the loop acts on the observation it is sent
    next even when that is the one it already saw (the simulator's heartbeat repeats it, same stamp); an observation
    that waited for the learner before the deactivation is never acted on afterwards."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', max_learner_backlog=8, active=True)
    loop.backlog_report(50)                          # the learner is behind: the first observation waits
    feed(loop, clock, np.zeros(N), 0)
    assert not commands and loop.paused is not None
    loop.set_active(False)
    loop.set_active(True)
    loop.backlog_report(0)                           # caught up: nothing from before the deactivation is released
    assert len(commands) == 1 and np.array_equal(commands[-1][0], np.zeros(N)), 'only the deactivation hold'
    feed(loop, clock, np.zeros(N), 0)                # the heartbeat: same stamp as before
    assert len(commands) == 2 and runtime.calls == 1


def test_lockstep_reactivated_mid_decision_acts_on_the_heartbeat_without_waiting_for_a_restart():
    """Deactivated with a decision in flight, whose reward never comes (the simulator steps on the deactivation's
    hold while the loop is inactive): after the reactivation the simulator's heartbeat is acted on at once, not
    after the lockstep restart's timeout."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.set_active(False)
    loop.reward(RewardInfo(-1.0, False, False, 1))   # the simulator's step on the hold, while inactive
    feed(loop, clock, np.zeros(N), 1)
    loop.set_active(True)
    feed(loop, clock, np.zeros(N), 1)                # its heartbeat
    assert len(commands) == 3 and runtime.calls == 2 and loop.counters['lockstep_timeouts'] == 0
    assert not transitions, 'the decision cut off by the deactivation is not recorded'


def test_idle_restarts_only_a_lockstep_step_protocol():
    """Realtime decisions wait for ticks, not for rewards: however long nothing progressed, idle() keeps them."""
    loop, runtime, commands, transitions, clock = make(horizon=4, mode='realtime', lockstep_timeout_s=0.5, active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    pending = loop.pending
    clock.t += 5.0
    loop.idle()
    assert loop.counters['lockstep_timeouts'] == 0 and loop.pending is pending


def test_steady_lockstep_steps_are_progress_however_long_the_run():
    """lockstep_timeout_s bounds the wait for one step, not a run: steps that each come within it (here 10 of 0.4 s
    against a 1 s timeout, each paired reward and observation, chunks of 1 and of 3) never restart the protocol."""
    for horizon in (1, 3):
        loop, runtime, commands, transitions, clock = make(horizon=horizon, mode='lockstep', lockstep_timeout_s=1.0,
                                                           active=True)
        feed(loop, clock, np.zeros(N), 0)
        for k in range(1, 11):
            clock.t += 0.4
            loop.idle()
            loop.reward(RewardInfo(-1.0, False, False, k))
            feed(loop, clock, np.zeros(N), k)
        assert loop.counters['lockstep_timeouts'] == 0 and len(commands) == 11


def test_an_inactive_lockstep_loop_keeps_nothing_of_what_it_receives():
    """A deactivated policy node beside a running simulator: its observations and rewards are dropped as they come
    (nothing piles up for hours), and the activation acts on the next observation alone."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep')
    loop.task(TASK)
    for k in range(1000):
        feed(loop, clock, np.zeros(N), k)
        loop.reward(RewardInfo(-1.0, False, False, k))
    assert not commands and not loop.obs_q and not loop.rewards
    loop.set_active(True)
    feed(loop, clock, np.full(N, 0.1), 1000)
    assert len(commands) == 1 and runtime.calls == 1 and np.allclose(runtime.obs_seen[0][:N], 0.1)


def test_the_log_says_what_became_of_each_update_and_each_estop():
    """What an operator reads (the node's log): the version an update brought, why one was rejected and what runs
    instead, an e-stop engaged and released."""
    logs = []
    runtime = ScriptedRuntime()
    loop = ActorLoop(runtime, SafetyFilter(np.full(N, -3.0), np.full(N, 3.0), 0.1), ActorConfig(joint_names=JOINTS),
                     lambda points: None, lambda t: None, log=lambda level, text: logs.append((level, text)))
    loop.warmup(OBS_DIM, iters=1)
    loop.update(b'next')
    loop.update(b'corrupt')
    loop.estop(True)
    loop.estop(False)
    assert [level for level, _ in logs] == ['info', 'warning', 'warning', 'warning'], logs
    assert logs[0][1].startswith('policy update applied: version 1 (')
    assert logs[1][1] == 'policy update rejected (1 so far): bad update; keeping version 1'
    assert [text for _, text in logs[2:]] == ['E-STOP engaged: holding', 'e-stop released']


def test_lockstep_applies_an_update_at_once_and_counts_a_rejected_one():
    """The simulator waits for each action, so lockstep checks and applies an update on the spot."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', active=True)
    loop.update(b'next')
    assert runtime.version == 1 and loop.counters['updates_applied'] == 1
    assert runtime.threads['prepare'] == threading.current_thread().name
    loop.update(b'corrupt')
    assert runtime.version == 1 and loop.counters['updates_rejected'] == 1
    runtime.commit_refusal = 'raced with another update'    # checked, then refused at the swap (PolicyRuntime)
    loop.update(b'next')
    assert runtime.version == 1 and loop.counters['updates_rejected'] == 2 and loop.counters['updates_applied'] == 1


def test_updates_are_applied_in_arrival_order_across_a_deactivation():
    """An update that arrives while an earlier one is still being checked waits for it, even when the loop was
    deactivated meanwhile (an inactive loop otherwise applies an update at once)."""
    loop, runtime, commands, clock, release = checking_an_update_until_released()
    loop.set_active(False)
    loop.update(b'corrupt')
    assert loop.counters['updates_rejected'] == 0 and list(loop.incoming_updates) == [b'corrupt']
    release.set()
    loop.checking_update.result(10.0)
    loop.idle()                                      # no ticks while inactive: idle() swaps in what was checked
    assert runtime.version == 1 and loop.counters['updates_applied'] == 1
    futures.wait([loop.checking_update], 10.0)
    loop.idle()
    assert loop.counters['updates_rejected'] == 1 and runtime.version == 1


@pytest.mark.parametrize('planned', ['prefetch', 'temporal_ensemble'])
def test_realtime_episode_end_drops_what_was_planned_from_its_last_states(planned):
    """What was planned from the old episode's last states -- the next chunk inferred in the background, or the chunks
    a temporal ensemble averages -- is dropped when the episode ends: the new episode's first command comes from a
    fresh inference on its own first observation. Rewards after the end (none are due) and rewards with nothing in
    flight are ignored."""
    cfg = {'async_chunks': True} if planned == 'prefetch' else {'temporal_ensemble': True}
    loop, runtime, commands, transitions, clock = make(horizon=2, mode='realtime', **cfg, active=True)
    loop.reward(RewardInfo(-5.0, False, False, 0))   # nothing in flight yet
    for stamp in range(2):
        feed(loop, clock, np.full(N, 0.2), stamp)
        loop.tick(clock())
        loop.reward(RewardInfo(-1.0, stamp == 1, False, stamp + 1))
    loop.reward(RewardInfo(-7.0, True, False, 3))    # a late duplicate of the last one
    feed(loop, clock, np.full(N, 0.2), 2)            # the terminal observation
    if planned == 'prefetch':
        assert len(transitions) == 1 and transitions[0].reward == -2.0 and transitions[0].n_steps == 2
    feed(loop, clock, np.full(N, 0.5), 3)            # the next episode
    calls = runtime.calls
    loop.tick(clock())
    assert runtime.calls == calls + 1 and np.allclose(runtime.obs_seen[-1][:N], 0.5)
    np.testing.assert_allclose(commands[-1][0], 0.5 + runtime.calls / 10 * 0.1)   # the fresh chunk's first step alone


def test_a_reset_loop_is_inactive_and_has_forgotten_the_arm_and_the_task():
    """reset() (a runner reusing one loop): nothing is commanded until it is activated again, and then not from a
    joint state or a task received before the reset."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    assert len(commands) == 1
    loop.reset()
    loop.tick(clock())
    assert len(commands) == 1, 'inactive after a reset'
    loop.set_active(True)
    loop.tick(clock())
    assert len(commands) == 1 and loop.counters['no_observation'] == 1
    feed(loop, clock, np.full(N, 0.1), 1)
    loop.tick(clock())
    assert np.array_equal(commands[-1][0], np.full(N, 0.1)) and loop.safety.counters['no_task'] == 1


@pytest.mark.parametrize('size', [0, N + 2])
def test_a_policy_whose_action_is_not_whole_steps_of_every_joint_is_refused(size):
    runtime = ScriptedRuntime()
    runtime.act = lambda obs, deterministic=False: np.zeros(size)
    safety = SafetyFilter(np.full(N, -3.0), np.full(N, 3.0), 0.1, stale_timeout_s=0.5)
    loop = ActorLoop(runtime, safety, ActorConfig(joint_names=JOINTS), [].append, [].append)
    with pytest.raises(ValueError, match=f'policy act_dim {size} is not a multiple of {N} joints'):
        loop.warmup(OBS_DIM, iters=1)


def test_warmup_infers_at_least_once():
    """warmup_iters 0 (the node's parameter allows it) still runs one inference: it is how the loop learns H."""
    loop, runtime, *_ = make(horizon=3)
    loop.warmup(OBS_DIM, iters=0)
    assert runtime.calls == 1 and (loop.horizon, loop.act_dim) == (3, 3 * N)


@pytest.mark.parametrize('mode', ['lockstep', 'realtime'])
def test_an_action_of_the_wrong_size_after_warmup_holds_and_is_not_recorded(mode):
    """A runtime whose output changes size after warmup (a broken update, a loader bug) is no chunk to execute: the
    step holds at the measured position (the loop makes a wrong-sized output NaN: counted as a non-finite target),
    and no transition carries it."""
    loop, runtime, commands, transitions, clock = make(horizon=2, mode=mode, async_chunks=False, active=True)
    runtime.act = lambda obs, deterministic=False: np.zeros(3 * N)
    for k in range(3):
        feed(loop, clock, np.full(N, 0.2), k)
        if mode == 'realtime':
            loop.tick(clock())
        loop.reward(RewardInfo(-1.0, False, False, k + 1))
    assert len(commands) == 3 and all(np.array_equal(c, np.full((1, N), 0.2)) for c in commands)
    assert loop.safety.counters['nan_target'] == 3 and not transitions


def test_a_lockstep_restart_waits_for_its_timeout_then_acts_on_the_heartbeat():
    """No reward for lockstep_timeout_s (a message lost, the simulator restarted): idle() restarts the step protocol
    once, never before the timeout nor with nothing in flight, and the simulator's heartbeat -- its current
    observation again, same stamp -- is then acted on."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', lockstep_timeout_s=1.0, active=True)
    clock.t += 5.0
    loop.idle()
    assert loop.counters['lockstep_timeouts'] == 0, 'nothing in flight'
    feed(loop, clock, np.zeros(N), 0)
    assert len(commands) == 1
    clock.t += 0.9
    loop.idle()
    assert loop.counters['lockstep_timeouts'] == 0 and loop.pending is not None
    clock.t += 0.2
    loop.idle()
    loop.idle()
    assert loop.counters['lockstep_timeouts'] == 1 and loop.pending is None
    feed(loop, clock, np.zeros(N), 0)
    assert len(commands) == 2 and runtime.calls == 2


def test_lockstep_holds_mid_chunk_with_one_command_and_records_nothing_of_the_held_decision():
    """The simulator takes one step per command it receives: a hold mid-chunk is that observation's one command
    (a second one would step the simulator unseen). The next observation starts a fresh decision; the held one is
    not recorded, and the rest of it is not executed."""
    loop, runtime, commands, transitions, clock = make(horizon=3, mode='lockstep', active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.invalid('bad_task')
    loop.reward(RewardInfo(-1.0, False, False, 1))
    feed(loop, clock, np.full(N, 0.05), 1)           # the chunk's second step is due: hold instead
    assert len(commands) == 2 and np.array_equal(commands[-1][0], np.full(N, 0.05))
    assert loop.safety.counters['bad_task'] == 1 and runtime.calls == 1, 'no inference from an invalid observation'
    loop.task(TASK)
    loop.reward(RewardInfo(-1.0, False, False, 2))
    feed(loop, clock, np.full(N, 0.05), 2)
    assert len(commands) == 3 and runtime.calls == 2, 'a fresh decision from the valid observation'
    np.testing.assert_allclose(commands[-1][0], 0.05 + 0.2 * 0.1)
    for stamp in (3, 4, 5):                          # the fresh chunk's three steps; the last observation ends it
        loop.reward(RewardInfo(-1.0, False, False, stamp))
        feed(loop, clock, np.full(N, 0.01 * stamp), stamp)
    assert len(commands) == 6 and len(transitions) == 1 and np.allclose(transitions[0].obs[:N], 0.05)
    assert transitions[0].n_steps == 3


def test_a_measurement_exactly_stale_timeout_old_is_still_acted_on():
    """The safety filter and the check right before the send draw the line at the same age."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', active=True)
    feed(loop, clock, np.zeros(N), 0)
    clock.t += 0.5                                   # stale_timeout_s
    loop.tick(clock())
    assert len(commands) == 1 and runtime.calls == 1 and loop.counters['stale_commands_withheld'] == 0


def test_the_latency_figures_are_measured_from_the_right_instants():
    """stats() is what the policy node's status reports and the benchmarks read: obs -> command from the later of
    the joint state's arrival and the tick, a chunk's first step and its later steps from their tick; the counts of
    inferences and commands."""
    loop, runtime, commands, transitions, clock = make(horizon=2, mode='realtime', async_chunks=False)
    act = runtime.act

    def three_ms_inference(obs, deterministic=False):
        clock.t += 0.003
        return act(obs, deterministic)
    runtime.act = three_ms_inference
    loop.task(TASK)
    loop.set_active(True)
    feed(loop, clock, np.zeros(N), 0)                # measured at 100.000
    clock.t += 0.010
    wall = time.perf_counter()
    loop.tick(clock())                               # tick at 100.010, inference to 100.013
    wall = time.perf_counter() - wall
    assert 0 < loop.inference_s[0] <= wall           # the inference's own wall time (perf_counter, not the clock)
    clock.t = 100.028
    feed(loop, clock, np.zeros(N), 1)                # arrives at 100.028, after the tick of 100.025
    clock.t = 100.030
    loop.tick(100.025)
    np.testing.assert_allclose(loop.obs_to_command_s, [0.003, 0.002], atol=1e-9)
    np.testing.assert_allclose(loop.chunk_start_delay_s, [0.003], atol=1e-9)
    np.testing.assert_allclose(loop.chunk_step_delay_s, [0.005], atol=1e-9)
    stats = loop.stats()
    assert stats['obs_to_action_ms_p50'] == '2.500' and stats['chunk_step_delay_ms_p99'] == '5.000'
    assert stats['commands'] == 2 and stats['inferences'] == 1 and float(stats['inference_ms_p50']) > 0


def test_stats_before_any_step_and_with_the_safety_filters_counters():
    """A node reports status from its start: before any inference the latency figures are zeros; the safety
    filter's counters come with the loop's, prefixed."""
    loop, runtime, commands, transitions, clock = make(mode='realtime')
    stats = loop.stats()
    assert stats['inference_ms_p50'] == stats['obs_to_action_ms_p99'] == '0.000'
    assert (stats['policy_version'], stats['mode'], stats['estop'], stats['homing']) == (0, 'realtime', 0, 0)
    loop.set_active(True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())                               # no task yet: a hold
    assert loop.stats()['safety_no_task'] == 1 and loop.stats()['holds'] == 1


def chunk_with_a_stalled_background_inference():
    """Realtime, H = 2: the first chunk executed, the next one's inference started in the background and blocked
    until ``release`` is set (``returned`` is set once it returned)."""
    loop, runtime, commands, transitions, clock = make(horizon=2, mode='realtime', async_chunks=True, active=True)
    release, returned = threading.Event(), threading.Event()
    act = runtime.act

    def background_waits(obs, deterministic=False):
        if runtime.calls >= 1:                       # the first chunk's inference goes through, the next one waits
            release.wait(30.0)
            returned.set()
        return act(obs, deterministic)
    runtime.act = background_waits
    for stamp in range(2):
        feed(loop, clock, np.zeros(N), stamp)
        loop.tick(clock())
    assert loop.prefetch is not None and not loop.prefetch[1].done()
    return loop, commands, clock, release, returned


def release_once_asked(future, method: str, release: threading.Event) -> None:
    """The loop's next call of ``future.<method>()`` sees the inference still blocked, then lets it finish."""
    ask = getattr(future, method)

    def asked(*args):
        answer = ask(*args)
        release.set()
        return answer
    setattr(future, method, asked)


def test_a_late_background_inference_is_waited_for_and_counted():
    """The next chunk's inference outlasted the chunk (a busy CPU): the boundary tick waits for it, uses it, and
    counts it late."""
    loop, commands, clock, release, _ = chunk_with_a_stalled_background_inference()
    release_once_asked(loop.prefetch[1], 'done', release)   # still running when the tick looks, done just after
    feed(loop, clock, np.zeros(N), 2)
    loop.tick(clock())
    assert loop.counters['prefetch_late'] == 1 and loop.counters['prefetched_chunks'] == 1
    np.testing.assert_allclose(commands[-1][0], 0.02)   # chunk 2's first step


def test_a_realtime_chunk_interrupted_by_a_hold_is_not_resumed():
    """A step of the chunk was held (here: the joint states stopped for a tick): the rest of the chunk, planned from
    a state before the gap, is not executed; the next fresh tick infers afresh and the interrupted decision is not
    recorded."""
    loop, runtime, commands, transitions, clock = make(horizon=3, mode='realtime', async_chunks=False, active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    loop.reward(RewardInfo(-1.0, False, False, 1))
    clock.t += 0.6
    loop.tick(clock())                               # stale: nothing sent
    assert len(commands) == 1 and loop.safety.counters['stale'] == 1
    feed(loop, clock, np.full(N, 0.3), 1)
    loop.tick(clock())
    assert runtime.calls == 2 and np.allclose(commands[-1][0], 0.3 + 0.2 * 0.1), 'chunk 2 from the fresh state'
    for stamp in (2, 3, 4):                          # chunk 2 runs its three steps; the next tick finishes it
        loop.reward(RewardInfo(-1.0, False, False, stamp))
        feed(loop, clock, np.full(N, 0.3), stamp)
        loop.tick(clock())
    assert len(transitions) == 1 and np.allclose(transitions[0].obs[:N], 0.3) and transitions[0].n_steps == 3


def test_a_decision_whose_reward_never_came_is_dropped_and_counted():
    """The reward of a step was lost: a transition with no reward (n_steps 0) is nothing the learner can use."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', async_chunks=False, active=True)
    for stamp in range(3):
        feed(loop, clock, np.zeros(N), stamp)
        loop.tick(clock())
        if stamp:
            loop.reward(RewardInfo(-1.0, False, False, stamp))
    assert loop.counters['transitions_dropped'] == 1
    assert len(transitions) == 1 and transitions[0].n_steps == 1


def test_an_update_checked_during_a_chunk_is_swapped_in_before_the_next_chunk_is_inferred():
    loop, runtime, commands, transitions, clock = make(horizon=2, mode='realtime', async_chunks=True, active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    loop.update(b'next')
    loop.checking_update.result(10.0)
    feed(loop, clock, np.zeros(N), 1)
    loop.tick(clock())                               # the chunk's last step; the next chunk is inferred meanwhile
    feed(loop, clock, np.zeros(N), 2)
    loop.tick(clock())
    assert runtime.version == 1 and loop.pending.version == 1 and loop.counters['prefetched_chunks'] == 1


def test_a_reward_arriving_after_a_lockstep_restart_is_not_paired_with_a_later_step():
    """The restart gave up on a step whose reward then came late: that reward belongs to no decision in flight and
    must not be counted as the next step's."""
    loop, runtime, commands, transitions, clock = make(mode='lockstep', lockstep_timeout_s=1.0, active=True)
    feed(loop, clock, np.zeros(N), 0)
    clock.t += 1.5
    loop.idle()
    loop.reward(RewardInfo(-9.0, False, False, 1))   # late
    feed(loop, clock, np.zeros(N), 0)                # the heartbeat: a new decision
    loop.reward(RewardInfo(-1.0, False, False, 2))
    feed(loop, clock, np.full(N, 0.01), 1)
    assert len(transitions) == 1 and transitions[0].reward == -1.0


def test_an_episode_end_waits_for_the_background_inference_it_drops():
    """Dropping the next chunk at an episode end waits until its inference returned: an update may be swapped in
    right after, and the background thread must not be running the policy while it is replaced."""
    loop, commands, clock, release, returned = chunk_with_a_stalled_background_inference()
    future = loop.prefetch[1]
    try:
        future.result = lambda *args: (release.set(), futures.Future.result(future, *args))[1]   # waited for: released
        loop.reward(RewardInfo(-1.0, True, False, 2))
        assert returned.is_set() and loop.prefetch is None
    finally:
        release.set()                                # never leave the background thread blocked


def test_worker_restarts_lockstep_while_other_events_keep_arriving():
    """A simulator restarted mid-step never sends the reward the loop waits for; the learner's backlog reports
    (every 50 ms) keep the worker's queue busy, and the restart must happen all the same."""
    loop, runtime, commands, transitions, _ = make(mode='lockstep', lockstep_timeout_s=0.3, clock=time.monotonic,
                                                   active=True)
    feed(loop, time.monotonic, np.zeros(N), 1)
    assert len(commands) == 1 and loop.pending is not None       # waiting for a reward that will never come
    worker = ActorWorker(loop, on_error=lambda event, e: None, idle_s=0.1)
    worker.start()
    try:
        deadline = time.monotonic() + 5.0            # the restart is due after 0.3 s + at most one idle_s
        while loop.counters['lockstep_timeouts'] == 0 and time.monotonic() < deadline:
            worker.post('backlog_report', 0)
            time.sleep(0.005)
        restarts = loop.counters['lockstep_timeouts']    # read while the events still flow: stopping idles
    finally:
        worker.stop()
    assert restarts >= 1 and loop.pending is None


def test_worker_reports_the_event_it_is_stuck_in_and_where():
    """busy(): what a status shows of a worker that hangs in a call (here an update check that blocks)."""
    loop, runtime, *_ = make(mode='lockstep')
    entered, release = threading.Event(), threading.Event()

    def blocking_check():
        entered.set()
        release.wait(30.0)
    runtime.before_prepare = blocking_check
    worker = ActorWorker(loop, on_error=lambda event, e: None, idle_s=60.0)
    worker.start()
    try:
        assert worker.busy() is None                             # waiting for an event
        posted = time.monotonic()
        worker.post('update', b'next')
        assert entered.wait(10.0)
        event, seconds, where = worker.busy()
        assert event == 'update' and 0.0 <= seconds <= time.monotonic() - posted, (event, seconds)
        assert 'in blocking_check' in where, where
        assert where.count(' <- ') == 3, where                 # the four innermost frames
        release.set()
        deadline = time.monotonic() + 10.0
        while runtime.version != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert runtime.version == 1
        while worker.busy() is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert worker.busy() is None                             # done with it: waiting again
    finally:
        release.set()
        worker.stop()


def test_ticks_queued_behind_a_slow_step_are_coalesced_to_the_newest():
    """Realtime: ticks that queued while a step ran long (an inference that outlasted the control period) are not
    worked off one by one, late: the worker skips to the newest and counts the skipped."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', async_chunks=False, clock=time.monotonic,
                                                       active=True)
    entered, release = threading.Event(), threading.Event()
    act = runtime.act

    def first_inference_waits(obs, deterministic=False):
        if runtime.calls == 0:
            entered.set()
            release.wait(30.0)
        return act(obs, deterministic)
    runtime.act = first_inference_waits
    feed(loop, time.monotonic, np.zeros(N), 0)
    worker = ActorWorker(loop, on_error=lambda event, e: None, idle_s=60.0)
    worker.start()
    try:
        worker.post('tick', 1.0)
        assert entered.wait(10.0)
        for t in (2.0, 3.0, 4.0, 5.0):               # queued behind the first tick's inference
            worker.post('tick', t)
        release.set()
        deadline = time.monotonic() + 10.0
        while loop.tick_index + loop.counters['ticks_coalesced'] < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert (loop.tick_index, loop.counters['ticks_coalesced'], loop.tick_t) == (2, 3, 5.0)
    finally:
        release.set()
        worker.stop()


def test_a_stopped_worker_leaves_no_thread_of_the_loop_behind():
    """stop() ends the worker's thread at once, also one waiting a long idle_s for its next event, and closes the
    loop's own: the background inference and the update checks."""
    before = set(threading.enumerate())
    loop, runtime, commands, transitions, clock = make(horizon=2, mode='realtime', async_chunks=True, active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    loop.tick(clock())                               # the chunk's last step: the next one is inferred aside
    loop.update(b'next')                             # realtime and active: checked aside
    assert loop.prefetch is not None and loop.checking_update is not None
    worker = ActorWorker(loop, on_error=lambda event, e: None, idle_s=60.0)
    worker.start()
    worker.stop()
    assert not [t.name for t in set(threading.enumerate()) - before]


def test_an_inline_worker_acts_on_the_posting_thread_and_idles_when_told():
    """inline (lockstep, the composed sim actor): each event is handled within post(), on the caller's thread, with
    no thread of its own; idle() is the owner's periodic call (the lockstep restart); errors are counted, not raised."""
    loop, runtime, commands, transitions, _ = make(mode='lockstep', lockstep_timeout_s=0.05, clock=time.monotonic)
    errors = []
    worker = ActorWorker(loop, on_error=lambda event, e: errors.append((event, threading.get_ident())), inline=True)
    worker.start()
    handled_on = []
    act = loop.joint_state
    loop.joint_state = lambda *a: (handled_on.append((threading.get_ident(), worker.busy()[0])), act(*a))
    worker.post('task', TASK)
    worker.post('set_active', True)
    worker.post('joint_state', np.zeros(N), np.zeros(N), 0, time.monotonic())
    assert len(commands) == 1 and loop.pending is not None                 # acted before post() returned
    assert handled_on == [(threading.get_ident(), 'joint_state')] and worker.busy() is None
    time.sleep(0.1)                     # past lockstep_timeout_s: only idle() may restart the protocol
    assert loop.counters['lockstep_timeouts'] == 0
    worker.idle()
    assert loop.counters['lockstep_timeouts'] == 1 and loop.pending is None
    loop.joint_state = lambda *a: 1 / 0
    worker.post('joint_state', np.zeros(N), np.zeros(N), 0, time.monotonic())
    assert errors == [('joint_state', threading.get_ident())] and loop.counters['worker_errors'] == 1
    with pytest.raises(ValueError, match='no ticks'):
        worker.post('tick', time.monotonic())
    worker.stop()
    loop.joint_state = act
    worker.post('joint_state', np.zeros(N), np.zeros(N), 0, time.monotonic())   # stopped: dropped, nothing raised
    assert len(commands) == 1
    with pytest.raises(RuntimeError, match='inline'):
        ActorWorker(loop, on_error=lambda event, e: None).idle()


def test_temporal_ensemble_averages_overlapping_chunks_and_records_nothing():
    loop, runtime, commands, transitions, clock = make(horizon=3, mode='realtime', temporal_ensemble=True,
                                                       ensemble_decay=0.5, max_delta=1.0, action_scale=1.0, active=True)
    w = np.exp(-0.5 * np.arange(3))
    for k in range(1, 7):
        feed(loop, clock, np.zeros(N), k)
        loop.tick(clock())
        loop.reward(RewardInfo(-1.0, False, False, k))
        if k >= 3:
            # tick k is covered by chunk k - 2 (its step 2), chunk k - 1 (step 1) and chunk k (step 0)
            covering = np.array([(k - 2) / 10 + 0.02, (k - 1) / 10 + 0.01, k / 10])
            np.testing.assert_allclose(commands[-1][0], np.full(N, (w * covering).sum() / w.sum()))
    assert loop.counters['ensemble_steps'] == 6 and not transitions
    loop.update(b'next')
    loop.checking_update.result(10.0)
    feed(loop, clock, np.zeros(N), 7)
    loop.tick(clock())
    assert runtime.version == 1, 'updates are swapped in between ensemble steps too'
    loop.reward(RewardInfo(-1.0, True, False, 7))
    feed(loop, clock, np.zeros(N), 8)                # the terminal observation ends no recorded decision either
    assert not transitions
    loop.estop(True)
    sent = len(commands)
    loop.tick(clock())
    assert len(commands) == sent + 1 and np.array_equal(commands[-1][0], np.zeros(N))
    assert loop.safety.counters['estop'] == 2, 'held on the tick, for the e-stop'
    with pytest.raises(ValueError):
        ActorConfig(joint_names=JOINTS, mode='lockstep', temporal_ensemble=True)


def test_home_posture_between_episodes_is_rate_limited_and_ends_with_the_next_episode():
    loop, runtime, commands, transitions, clock = make(mode='realtime', home_speed=0.4)   # 0.02 rad per 20 Hz tick
    loop.task(TASK)
    loop.set_active(True)
    home = np.full(N, 0.5)
    loop.home(home)
    loop.episode(0)
    q = np.zeros(N)
    feed(loop, clock, q, 0)
    loop.tick(clock())
    loop.reward(RewardInfo(0.0, True, False, 1))     # success: the episode ends
    feed(loop, clock, q, 1)                          # the terminal observation
    assert len(transitions) == 1 and transitions[0].terminated
    calls = runtime.calls
    for k in range(5):
        loop.tick(clock())
        assert np.allclose(commands[-1][0] - q, 0.02), 'one rate-limited step towards home per tick'
        q = commands[-1][0]
        feed(loop, clock, q, 2 + k)
    loop.episode(0)                                  # the ended episode announced again (a latched message)
    assert runtime.calls == calls and loop.homing
    loop.episode(1)
    loop.tick(clock())
    assert not loop.homing and runtime.calls == calls + 1


def test_the_way_home_steps_down_too_stops_at_home_and_holds_on_an_estop():
    """Home below the arm: rate-limited steps down, a last shorter step onto home, then it stays there; an e-stop on
    the way is a hold at the measured position, not a step."""
    loop, runtime, commands, transitions, clock = make(mode='realtime', home_speed=0.4)   # 0.02 rad per 20 Hz tick
    loop.task(TASK)
    loop.set_active(True)
    q = np.full(N, 0.3)
    loop.home(q - 0.05)
    loop.homing = True                               # as after an episode's end
    targets = []
    for k in range(5):
        feed(loop, clock, q, k)
        loop.tick(clock())
        targets.append(commands[-1][0][0])
        q = commands[-1][0]
    np.testing.assert_allclose(targets, [0.28, 0.26, 0.25, 0.25, 0.25])
    assert loop.counters['homing_steps'] == 5
    q = np.full(N, 0.27)
    feed(loop, clock, q, 5)
    loop.estop(True)
    sent = len(commands)
    loop.tick(clock())                               # every tick on the way: a hold while the e-stop is engaged
    assert len(commands) == sent + 1 and np.array_equal(commands[-1][0], q) and loop.counters['homing_steps'] == 5


def test_a_home_posture_must_be_one_finite_position_per_joint():
    loop, *_ = make(mode='realtime')
    for bad in (np.full(N - 1, 0.5), np.array([0.5] * (N - 1) + [np.nan])):
        with pytest.raises(ValueError, match=f'home posture needs {N} finite joint positions'):
            loop.home(bad)
    loop.home(np.full(N, 0.5))
    loop.homing = True
    loop.home(None)                                  # no home posture: nothing to return to
    assert loop.home_q is None and not loop.homing


def test_in_process_lockstep_run_on_the_reach_task():
    """A runner drives the loop with a real MuJoCo env: every command is the env's next joint target, every reward
    pairs with the following observation, and the transitions match what the env produced."""
    from swfp_ros.sim import TASKS
    env = TASKS['panda_reach'][1]()
    env.reset(seed=1)
    loop, runtime, commands, transitions, clock = make(horizon=2, mode='lockstep', max_delta=0.1)
    loop.safety = SafetyFilter(env.joint_lower, env.joint_upper, 0.1, 0.5)
    loop.task(env.task_vector())
    loop.set_active(True)
    stamp, rewards = 0, []
    names, pos, vel, _ = env.joint_state()
    loop.joint_state(pos[:N], vel[:N], stamp, clock())
    while len(transitions) < 10:
        assert commands, 'the loop answers every observation'
        target = commands.pop(0)[0]
        q_before = env.joint_positions
        assert np.all(np.abs(target - q_before) <= 0.1 + 1e-12)
        _, r, terminated, _, _ = env.step_joint_targets(target)
        rewards.append(r)
        stamp += 1
        loop.reward(RewardInfo(r, terminated, False, env.elapsed_steps))
        loop.task(env.task_vector())
        loop.joint_state(env.joint_positions, env.joint_velocities, stamp, clock())
    assert all(t.n_steps == 2 for t in transitions)
    assert np.allclose([t.reward for t in transitions], np.add.reduceat(rewards[:20], np.arange(0, 20, 2)))
    assert all(np.array_equal(a.next_obs, b.obs) for a, b in zip(transitions, transitions[1:]))


@pytest.mark.parametrize('command_type', ['float64_array', 'trajectory'])
def test_a_stall_after_the_safety_filter_withholds_the_command(command_type):
    """The control thread descheduled (or the node's process stopped) right after the filter judged the measurement
    fresh: by the send it is older than stale_timeout_s and the arm may have been pushed meanwhile -- neither the
    policy step nor a hold at that measurement goes out."""
    loop, runtime, commands, transitions, clock = make(horizon=1, mode='realtime', command_type=command_type,
                                                       active=True)
    feed(loop, clock, np.zeros(N), 0)
    loop.tick(clock())
    assert len(commands) == 1

    def stalled(decide):
        def decide_then_stall(*args):
            result = decide(*args)
            clock.t += 0.6
            return result
        return decide_then_stall
    loop.safety.filter, loop.safety.hold = stalled(loop.safety.filter), stalled(loop.safety.hold)
    clock.t += 0.02
    feed(loop, clock, np.zeros(N), 1)
    loop.tick(clock())
    assert len(commands) == 1 and loop.counters['stale_commands_withheld'] == 1
    assert not loop.pending.record, 'a step that never went out is no decision to learn from'
    feed(loop, clock, np.zeros(N), 2)
    loop.invalid('bad_joint_state')                  # the next one invalid: a hold at the last valid one, due now
    loop.tick(clock())
    assert len(commands) == 1 and loop.counters['stale_holds_withheld'] == 1 and loop.counters['holds'] == 0


def test_trajectory_mode_sends_a_chunk_per_message_and_nothing_mid_trajectory_when_stale():
    loop, runtime, commands, transitions, clock = make(horizon=3, mode='realtime', command_type='trajectory',
                                                       active=True)
    q = np.zeros(N)
    for k in range(5):                               # chunks start at ticks 1 and 4
        feed(loop, clock, q, k)
        loop.tick(clock())
        clock.t += 0.05
        loop.reward(RewardInfo(-1.0, False, False, k + 1))
    assert runtime.calls == 2 and len(commands) == 2, 'one trajectory per chunk, the next after H ticks'
    points = commands[0]
    assert points.shape == (3, N) and np.all(np.abs(np.diff(np.vstack([q, points]), axis=0)) <= 0.1 + 1e-12)
    assert len(transitions) == 1 and transitions[0].n_steps == 3
    feed(loop, clock, q, 6)
    clock.t += 0.6                                   # tick 6, mid-trajectory: the joint states stopped
    loop.tick(clock())
    # no new chunk, and no hold at the stale measurement (the arm has moved along the trajectory since): the
    # controller finishes the points it has, each checked against a fresh measurement when sent
    assert len(commands) == 2 and runtime.calls == 2 and loop.counters['stale_holds_withheld'] == 1
    feed(loop, clock, q, 7)                          # fresh again: a new chunk from it replaces the trajectory
    loop.tick(clock())
    assert len(commands) == 3 and commands[-1].shape == (3, N) and runtime.calls == 3
    assert len(transitions) == 1, 'the interrupted trajectory is not recorded'


def test_warmup_observations_do_not_become_probe_states():
    """The warm-up acts on made-up (zero) observations; a runtime that keeps what it acted on as the probe states of
    its update checks must not keep those."""
    from swfp_ros.algo.blocks import Cascade
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    from swfp_ros.algo.runtime import PolicyRuntime
    runtime = PolicyRuntime(Cascade(FlowPolicy(OBS_DIM, N, FlowConfig(hidden=16, layers=2))), ObsNormalizer(OBS_DIM),
                            device='cpu', seed=0)
    loop = ActorLoop(runtime, SafetyFilter(np.full(N, -3.0), np.full(N, 3.0), 0.1), ActorConfig(joint_names=JOINTS),
                     lambda points: None, lambda t: None)
    loop.warmup(OBS_DIM, iters=5)
    assert runtime._n_observed == 0
    runtime.act(np.ones(OBS_DIM))
    assert runtime._n_observed == 1 and np.all(runtime._observed[0] == 1.0)


@pytest.mark.parametrize('bad,message', [
    ({'mode': 'sometimes'}, 'mode must be one of'),
    ({'command_type': 'velocity'}, 'command_type must be one of'),
    ({'joint_names': ()}, 'joint_names is empty'),
    ({'action_scale': 0.0}, 'action_scale must be positive and finite'),
    ({'control_rate': float('inf')}, 'control_rate must be positive and finite'),
    ({'lockstep_timeout_s': float('nan')}, 'lockstep_timeout_s must be positive and finite'),
    ({'home_speed': -0.5}, 'home_speed must be positive and finite'),
    ({'temporal_ensemble': True}, 'temporal_ensemble needs mode realtime and command_type float64_array'),
    ({'temporal_ensemble': True, 'mode': 'realtime', 'command_type': 'trajectory'}, 'temporal_ensemble needs'),
    ({'ensemble_decay': -0.01}, 'ensemble_decay must be >= 0'),
    ({'learner_wait_s': -1.0}, 'learner_wait_s must be >= 0 and finite'),
    ({'learner_wait_s': float('inf')}, 'learner_wait_s must be >= 0 and finite'),
])
def test_a_config_out_of_its_domain_is_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        ActorConfig(**{'joint_names': JOINTS, **bad})
    ActorConfig(joint_names=JOINTS, learner_wait_s=0.0, ensemble_decay=0.0)   # the edges of the domains are in it
