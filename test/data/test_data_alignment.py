"""As-of alignment: never a later observation (ties allowed), staleness drops, grid timeline, decimation."""
import numpy as np
import pytest
from data_synth import float_array, joint_state

from swfp_ros.data import BagRecorder, ingest

MS = 1_000_000
T0 = 1_000_000_000_000


def write(path, events, storage='mcap'):
    """events: (t_ns, kind, value) with kind 'obs' | 'act' | 'episode' | 'reward' (value: (reward, success)) |
    'task' (value: its elements), written in the given order."""
    with BagRecorder(path, storage=storage) as rec:
        for t, kind, v in events:
            if kind == 'obs':
                rec.write('/joint_states', 'sensor_msgs/msg/JointState', joint_state(t, ('j1', 'j2'), [v, v]), t)
            elif kind == 'act':
                rec.write('/cmd', 'std_msgs/msg/Float64MultiArray', float_array([v, v]), t)
            elif kind in ('reward', 'task'):
                rec.write(f'/{kind}', 'std_msgs/msg/Float64MultiArray', float_array(list(v)), t)
            else:                                             # 'episode': a new episode starts
                rec.write('/episode', 'std_msgs/msg/Float64MultiArray', float_array([]), t)
    return path


def spec(**kw):
    d = {'control_rate_hz': 10.0, 'max_staleness': 0.15,
         'observation': [{'source': 'joint_state', 'topic': '/joint_states', 'joints': ['j2', 'j1']}],
         'action': {'source': 'array', 'topic': '/cmd', 'indices': [0, 1], 'scale': 10.0},
         'episodes': {'per_bag': True}}
    d.update(kw)
    return d


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_observation_1ms_after_action_is_not_used(tmp_path, storage):
    ev = [(T0, 'obs', 1.0), (T0 + 100 * MS, 'act', 1.0), (T0 + 101 * MS, 'obs', 2.0),
          (T0 + 200 * MS, 'act', 2.0), (T0 + 201 * MS, 'obs', 3.0)]
    ds = ingest(write(tmp_path / 'b', ev, storage), spec(), progress=False)
    np.testing.assert_array_equal(ds[0].obs[:, 0], [1.0, 2.0])   # never the observation 1 ms later


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_observation_with_same_timestamp_is_used_whatever_the_write_order(tmp_path, storage):
    # action written BEFORE the observation that carries the same timestamp: "at or before" includes it
    ev = [(T0, 'obs', 1.0), (T0 + 100 * MS, 'act', 1.0), (T0 + 100 * MS, 'obs', 7.0), (T0 + 150 * MS, 'obs', 8.0)]
    ds = ingest(write(tmp_path / 'b', ev, storage), spec(), progress=False)
    np.testing.assert_array_equal(ds[0].obs[:, 0], [7.0])


def test_stale_observation_drops_the_step(tmp_path):
    ev = [(T0, 'obs', 1.0), (T0 + 100 * MS, 'act', 1.0), (T0 + 400 * MS, 'act', 2.0),   # obs 400 ms old: dropped
          (T0 + 450 * MS, 'obs', 2.0), (T0 + 500 * MS, 'act', 3.0)]
    ds = ingest(write(tmp_path / 'b', ev), spec(), progress=False)
    np.testing.assert_allclose(ds[0].actions[:, 0], [0.1, 0.3], rtol=1e-6)
    rep = ds.report.bags[0]
    assert rep.dropped == {'stale_observation': 1}
    assert ds.provenance[0]['dropped'] == {'stale_observation': 1}


def test_action_before_any_observation_is_dropped(tmp_path):
    ev = [(T0, 'act', 1.0), (T0 + 1 * MS, 'obs', 1.0), (T0 + 100 * MS, 'act', 2.0)]
    ds = ingest(write(tmp_path / 'b', ev), spec(), progress=False)
    assert len(ds[0]) == 1 and ds.report.bags[0].dropped == {'no_observation_yet': 1}


def test_grid_timeline_takes_latest_action_and_observation(tmp_path):
    # actions at 5 Hz, grid at 10 Hz: every action is used twice, observations as of each tick
    ev = []
    for k in range(4):
        ev.append((T0 + k * 200 * MS, 'obs', float(k)))
        ev.append((T0 + k * 200 * MS, 'act', float(k)))
        ev.append((T0 + k * 200 * MS + 100 * MS, 'obs', k + 0.5))
    ds = ingest(write(tmp_path / 'b', ev), spec(timeline='grid', max_staleness=0.25), progress=False)
    np.testing.assert_allclose(ds[0].actions[:, 0], np.repeat([0, 0.1, 0.2, 0.3], 2)[:len(ds[0])])
    np.testing.assert_allclose(ds[0].obs[:, 0], [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5][:len(ds[0])])
    assert len(ds[0]) >= 7
    np.testing.assert_allclose(np.diff(ds[0].timestamps), 0.1, atol=1e-9)


def test_actions_faster_than_control_rate_are_decimated(tmp_path):
    ev = [(T0, 'obs', 0.0)]
    for k in range(1, 51):                                    # 100 Hz actions for 0.5 s, control rate 10 Hz
        ev.append((T0 + k * 10 * MS, 'obs', float(k)))
        ev.append((T0 + k * 10 * MS, 'act', float(k)))
    ds = ingest(write(tmp_path / 'b', ev), spec(), progress=False)
    dt = np.diff(ds[0].timestamps)
    assert 4 <= len(ds[0]) <= 6 and np.all(dt >= 0.075 - 1e-9), dt
    assert ds.report.bags[0].dropped['decimated_to_control_rate'] >= 40


def test_the_grid_keeps_its_phase_when_actions_arrive_between_ticks(tmp_path):
    """The grid is anchored at the first action: later actions between ticks are taken as of the next tick, they do
    not move the ticks (a teleoperator's 5 Hz stream 30 ms late against a 10 Hz control grid)."""
    ev = [(T0 - 50 * MS, 'obs', 0.0)]
    for ms in (0, 230, 430, 630):
        ev += [(T0 + ms * MS, 'obs', ms / 1000), (T0 + ms * MS, 'act', ms / 100)]
    ev.append((T0 + 700 * MS, 'obs', 0.7))
    ds = ingest(write(tmp_path / 'b', ev), spec(timeline='grid', max_staleness=0.25), progress=False)
    np.testing.assert_allclose(ds[0].timestamps - T0 * 1e-9, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], atol=1e-9)
    np.testing.assert_allclose(ds[0].actions[:, 0], [0.0, 0.0, 0.0, 0.23, 0.23, 0.43, 0.43, 0.63], atol=1e-6)
    assert ds.provenance[0]['messages_read'] == len(ev)


def test_decimation_restarts_after_a_pause_and_counts_duplicate_stamps(tmp_path):
    """After a pause longer than a period the next action starts the schedule afresh (the missed periods do not let
    the next actions through at 100 Hz); two actions with one timestamp make one step, the later one."""
    ev = [(T0 - 50 * MS, 'obs', 0.0)]
    for start in (0, 1000):                                  # 100 Hz for 0.3 s, a 0.7 s pause, 100 Hz again
        for k in range(30):
            t = T0 + (start + 10 * k) * MS
            ev += [(t, 'obs', float(start + k)), (t, 'act', float(k))]
            if start and not k:
                ev.append((t, 'act', 5.0))                   # a second action with the first one's stamp
    ds = ingest(write(tmp_path / 'b', ev), spec(max_staleness=2.0), progress=False)
    # a step is due a period after the last, an action up to a quarter period early counts (75 ms at 10 Hz)
    np.testing.assert_allclose(ds[0].timestamps - T0 * 1e-9, [0.0, 0.08, 0.18, 0.28, 1.0, 1.08, 1.18, 1.28],
                               atol=1e-9)
    assert ds[0].actions[4, 0] == pytest.approx(0.5)          # the later of the two at 1.0 s (5.0 / scale 10)
    assert ds.report.bags[0].dropped['duplicate_action_timestamp'] == 1


def test_the_grid_never_carries_an_action_into_the_next_episode(tmp_path):
    """A new episode on the grid timeline waits for its own first action: the last one of the episode before is not
    held over into it."""
    ev = [(T0 - 60 * MS, 'episode', 0), (T0 - 50 * MS, 'obs', 0.0)]
    for ms, kind, v in ((0, 'act', 1.0), (50, 'obs', 0.05), (100, 'act', 2.0), (150, 'episode', 0), (160, 'obs', 0.16),
                        (230, 'act', 3.0), (250, 'obs', 0.25), (330, 'obs', 0.33)):
        ev.append((T0 + ms * MS, kind, v))
    ds = ingest(write(tmp_path / 'b', ev), spec(timeline='grid', max_staleness=0.25,
                                                episodes={'episode_topic': '/episode'}), progress=False)
    assert [len(e) for e in ds] == [2, 2]
    np.testing.assert_allclose(ds[1].timestamps - T0 * 1e-9, [0.23, 0.33], atol=1e-9)
    np.testing.assert_allclose(ds[1].actions[:, 0], [0.3, 0.3], atol=1e-6)


def test_the_grid_pauses_while_no_fresh_action_arrives_and_resumes_with_the_next(tmp_path):
    """A teleoperator stops sending for half a second: ticks whose latest action is older than max_staleness make
    no steps (counted once per pause), and the grid restarts at the next action."""
    ev = [(T0 - 50 * MS, 'obs', 0.0)]
    for ms in (0, 100, 200, 800, 900):
        ev += [(T0 + ms * MS, 'obs', ms / 1000), (T0 + ms * MS, 'act', ms / 100)]
    ev.append((T0 + 1000 * MS, 'obs', 1.0))
    ds = ingest(write(tmp_path / 'b', ev), spec(timeline='grid', max_staleness=0.25), progress=False)
    np.testing.assert_allclose(ds[0].timestamps - T0 * 1e-9, [0.0, 0.1, 0.2, 0.3, 0.4, 0.8, 0.9, 1.0], atol=1e-9)
    np.testing.assert_allclose(ds[0].actions[:, 0], [0.0, 0.1, 0.2, 0.2, 0.2, 0.8, 0.9, 0.9], atol=1e-6)
    assert ds.report.bags[0].dropped == {'grid_no_fresh_action': 1}


@pytest.mark.parametrize('clip, expected', [(True, [0.5, 1.0, -1.0]), (False, [0.5, 1.5, -2.0])])
def test_actions_beyond_the_scale_are_clipped_to_the_policy_range_when_asked(tmp_path, clip, expected):
    ev = [(T0, 'obs', 0.0)]
    for k, v in enumerate((5.0, 15.0, -20.0)):
        ev += [(T0 + (k + 1) * 100 * MS, 'obs', 0.0), (T0 + (k + 1) * 100 * MS, 'act', v)]
    d = spec()
    d['action']['clip'] = clip
    ds = ingest(write(tmp_path / 'b', ev), d, progress=False)
    np.testing.assert_allclose(ds[0].actions[:, 0], expected, atol=1e-6)


REWARD = {'reward': {'source': 'array', 'topic': '/reward', 'indices': [0]},
          'success': {'source': 'array', 'topic': '/reward', 'indices': [1], 'threshold': 0.5}}


def test_a_reward_belongs_to_the_last_step_before_it_and_success_counts_only_within_an_episode(tmp_path):
    ev = [(T0, 'reward', (9.0, 1.0)),                 # before the first episode: neither a reward nor a success
          (T0 + 10 * MS, 'episode', None), (T0 + 20 * MS, 'obs', 1.0),
          (T0 + 50 * MS, 'reward', (7.0, 0.0)),        # in the episode, before its first step: no step to take it
          (T0 + 100 * MS, 'act', 1.0), (T0 + 101 * MS, 'obs', 2.0), (T0 + 150 * MS, 'reward', (0.5, 0.0)),
          (T0 + 200 * MS, 'act', 2.0), (T0 + 201 * MS, 'obs', 3.0), (T0 + 250 * MS, 'reward', (2.0, 0.5)),
          (T0 + 300 * MS, 'act', 3.0), (T0 + 301 * MS, 'obs', 4.0)]
    ds = ingest(write(tmp_path / 'b', ev), spec(episodes={'episode_topic': '/episode'}, **REWARD), progress=False)
    assert len(ds) == 1 and ds[0].rewards.tolist() == [0.5, 2.0, 0.0] and not ds[0].success   # 0.5: not above
    ev += [(T0 + 350 * MS, 'reward', (1.0, 1.0))]
    ds = ingest(write(tmp_path / 'c', ev), spec(episodes={'episode_topic': '/episode'}, **REWARD), progress=False)
    assert ds[0].rewards.tolist() == [0.5, 2.0, 1.0] and ds[0].success


def test_a_bag_whose_labels_differ_from_the_first_bags_is_refused_and_the_others_kept(tmp_path):
    def bag(name, task):
        return write(tmp_path / name, [(T0, 'obs', 1.0), (T0, 'task', task), (T0 + 100 * MS, 'act', 1.0),
                                       (T0 + 101 * MS, 'obs', 2.0)])
    d = spec()
    d['observation'].append({'source': 'array', 'topic': '/task', 'all': True})   # its size: the first message's
    ds = ingest([bag('two', [1.0, 2.0]), bag('three', [1.0, 2.0, 3.0]), bag('again', [3.0, 4.0])], d, progress=False)
    assert len(ds) == 2 and [b.ok for b in ds.report.bags] == [True, False, True]
    assert ds.obs_labels == ['j2.position', 'j1.position', '/task[0]', '/task[1]']
    assert "labels (['j2.position', 'j1.position', '/task[0]', '/task[1]', '/task[2]']" in ds.report.bags[1].error
    assert "differ from the first bag's" in ds.report.bags[1].error


def test_a_bags_report_counts_its_episodes_steps_messages_and_time_range(tmp_path):
    """What `swfp ingest` prints per bag."""
    ev = [(T0, 'obs', 1.0), (T0 + 100 * MS, 'act', 1.0), (T0 + 101 * MS, 'obs', 2.0), (T0 + 200 * MS, 'act', 2.0)]
    (report,) = ingest(write(tmp_path / 'b', ev), spec(), progress=False).report.bags
    assert (report.ok, report.episodes, report.steps, report.messages) == (True, 1, 2, 4)
    assert report.time_range == pytest.approx((T0 * 1e-9, (T0 + 200 * MS) * 1e-9))
