"""record (write_demo_bag) -> ingest -> the same arrays, on both storages, format v8 and v9, dirs and single files."""
import dataclasses

import numpy as np
import pytest
import yaml
from data_synth import RATE, SCALE, expected_obs

from swfp_ros.data import (DemoDataset, EpisodeRecord, default_panda_spec, default_panda_spec_dict, ingest,
                           write_demo_bag)
from swfp_ros.data.bag_writer import standard_typestore
from swfp_ros.data.inspect import format_summary, inspect_bag
from swfp_ros.data.reader import BagSource
from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS


def check_same(ds, episodes):
    assert len(ds) == len(episodes)
    for got, src in zip(ds, episodes):
        assert len(got) == len(src)
        np.testing.assert_allclose(got.obs, expected_obs(src), atol=1e-5)
        np.testing.assert_allclose(got.actions, src.action_delta, atol=1e-5)
        np.testing.assert_allclose(got.rewards, src.reward, atol=1e-5)
        assert got.success == src.success
        np.testing.assert_allclose(np.diff(got.timestamps), np.diff(src.time), atol=1e-6)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
@pytest.mark.parametrize('version', [8, 9])
def test_record_ingest_same_arrays(tmp_path, episodes, storage, version):
    bag = tmp_path / 'demo'
    info = write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage=storage, version=version)
    steps = sum(len(e) for e in episodes)
    assert (info['episodes'], info['steps']) == (len(episodes), steps)
    suffix = {'mcap': '.mcap', 'sqlite3': '.db3'}[storage]
    assert (bag / f'demo{suffix}').is_file()
    assert f'version: {version}' in (bag / 'metadata.yaml').read_text()
    ds = ingest([bag], default_panda_spec(action_scale=SCALE), progress=False)
    check_same(ds, episodes)
    assert ds.obs_labels[:2] == ['panda_joint1.position', 'panda_joint2.position']
    assert ds.obs_labels[-6:] == list(REACH_TASK_LABELS)
    assert ds.report.ok and not ds.report.failed
    prov = ds.provenance[0]
    assert prov['storage'] == storage and prov['format_version'] == version
    assert '/joint_states' in prov['topics'] and prov['time_range'][1] > prov['time_range'][0]
    s = inspect_bag(bag)
    assert s.storage_id == storage and s.format_version == version
    counts = {t.topic: t.count for t in s.topics}
    assert info['messages'] == s.message_count == sum(counts.values())
    assert counts['/joint_states'] == steps and counts['/swfp/episode'] == len(episodes)
    assert [t for t in s.topics if t.topic == '/clock'][0].rate_hz == pytest.approx(RATE)   # pauses do not count
    assert '/swfp/action' in format_summary(s)


@pytest.mark.parametrize('storage,suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_single_file_input(tmp_path, episodes, storage, suffix):
    bag = tmp_path / 'one'
    write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage=storage)
    # move the storage file out of its directory: no metadata.yaml next to it
    single = tmp_path / f'alone{suffix}'
    (bag / f'one{suffix}').rename(single)
    ds = ingest(single, default_panda_spec(action_scale=SCALE), progress=False)
    check_same(ds, episodes)
    assert inspect_bag(single).format_version == 9


def test_absolute_actions_and_all_task_labels(tmp_path, episodes):
    bag = tmp_path / 'abs'
    write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    d = default_panda_spec_dict('panda_push', action_scale=2.0)   # task: every element, labels from the layout
    d['action'] = {'source': 'array', 'topic': '/swfp/action', 'labels': list(PANDA_JOINTS),
                   'representation': 'absolute', 'offset': 0.5, 'scale': 2.0}
    ds = ingest([bag], d, progress=False)
    assert ds.obs_labels[-6:] == list(REACH_TASK_LABELS)
    for got, src in zip(ds, episodes):
        np.testing.assert_allclose(got.actions, np.clip((src.action_target - 0.5) / 2.0, -1, 1), atol=1e-5)
    assert ds.action_labels == list(PANDA_JOINTS)


@pytest.mark.parametrize('mode', ['time_gap', 'per_bag'])
def test_segmentation_modes(tmp_path, episodes, mode):
    bags = []
    if mode == 'per_bag':
        for i, ep in enumerate(episodes):
            write_demo_bag(tmp_path / f'b{i}', [ep], PANDA_JOINTS, REACH_TASK_LABELS, RATE)
            bags.append(tmp_path / f'b{i}')
    else:
        write_demo_bag(tmp_path / 'b', episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, episode_gap_s=1.0)
        bags = [tmp_path / 'b']
    d = default_panda_spec_dict(action_scale=SCALE, task_labels=REACH_TASK_LABELS)
    d['episodes'] = {'time_gap': 0.5} if mode == 'time_gap' else {'per_bag': True}
    ds = ingest(bags, d, progress=False)
    assert [len(e) for e in ds] == [len(e) for e in episodes]
    np.testing.assert_allclose(ds[1].obs, expected_obs(episodes[1]), atol=1e-5)
    assert len(ds.provenance) == len(bags)


def test_ingested_dataset_saves_and_loads(tmp_path, episodes):
    bag = tmp_path / 'demo'
    write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    ds = ingest([bag], default_panda_spec(action_scale=SCALE), progress=False)
    path = ds.save(tmp_path / 'demos.npz')
    back = DemoDataset.load(path)
    check_same(back, episodes)
    assert back.schema == ds.schema and back.schema['action']['representation'] == 'delta'
    assert back.provenance[0]['bag'].endswith('demo')
    assert back.obs_labels == ds.obs_labels and back.control_rate_hz == RATE


def test_episodes_given_as_lists_record_the_same_arrays(tmp_path, episodes):
    """EpisodeRecord takes array-likes: plain lists, as a user's own recording script may hold them, are converted."""
    as_lists = [EpisodeRecord(time=e.time.tolist(), joint_pos=e.joint_pos.tolist(), joint_vel=e.joint_vel.tolist(),
                              task=e.task.tolist(), action_target=e.action_target.tolist(),
                              action_delta=e.action_delta.tolist(), reward=e.reward.tolist(), success=e.success)
                for e in episodes]
    write_demo_bag(tmp_path / 'demo', as_lists, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    check_same(ingest([tmp_path / 'demo'], default_panda_spec(action_scale=SCALE), progress=False), episodes)


def test_each_reward_message_carries_its_step_and_only_an_episodes_last_its_ending(tmp_path, episodes):
    """/swfp/reward as the sim bridge publishes it: [reward, terminated, truncated, step]; the last step of an episode
    that succeeded is terminated, of one that did not truncated (the time limit); and the bag says what wrote it."""
    write_demo_bag(tmp_path / 'demo', episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    ts = standard_typestore()
    with BagSource(tmp_path / 'demo') as bag:
        rewards = [ts.deserialize_cdr(raw, msgtype).data for _, msgtype, _, raw in bag.messages(['/swfp/reward'])]
    expected = [[ep.reward[i], ep.success and i == len(ep) - 1, not ep.success and i == len(ep) - 1, i]
                for ep in episodes for i in range(len(ep))]
    np.testing.assert_allclose(np.array(rewards), np.array(expected, np.float64))
    custom = yaml.safe_load((tmp_path / 'demo' / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert custom['custom_data'] == {'swfp.control_rate_hz': str(RATE), 'swfp.joint_names': ','.join(PANDA_JOINTS),
                                     'swfp.task_labels': ','.join(REACH_TASK_LABELS)}


def test_the_demo_bag_timeline(tmp_path, episodes):
    """Step i of an episode at its start + (time[i] - time[0]) with header stamps equal to the log times, its action
    action_latency_s later, the reward of step i when step i + 1 is observed (the last one a control period after the
    last step), and the next episode episode_gap_s after that; an episode of one step is written too."""
    late = [dataclasses.replace(ep, time=ep.time + 3.0) for ep in episodes]    # recorded mid-run: time[0] = 3 s
    first = episodes[0]
    one_step = EpisodeRecord(time=first.time[:1], joint_pos=first.joint_pos[:1], joint_vel=first.joint_vel[:1],
                             task=first.task[:1], action_target=first.action_target[:1], reward=first.reward[:1])
    start, gap, latency, period = 10**18, 0.5, 0.01, round(1e9 / RATE)
    info = write_demo_bag(tmp_path / 'demo', late + [one_step], PANDA_JOINTS, REACH_TASK_LABELS, RATE,
                          start_time_ns=start, episode_gap_s=gap, action_latency_s=latency)
    assert info['episodes'] == len(episodes) + 1
    steps, rewards, cursor = [], [], start
    for ep in late + [one_step]:
        at = cursor + np.round((ep.time - ep.time[0]) * 1e9).astype(np.int64)
        end = int(at[-1]) + period
        steps += at.tolist()
        rewards += at[1:].tolist() + [end]
        cursor = end + round(gap * 1e9)
    ts = standard_typestore()
    with BagSource(tmp_path / 'demo') as bag:
        times = {topic: [] for topic in ('/joint_states', '/swfp/action', '/swfp/reward')}
        for topic, msgtype, t, raw in bag.messages(list(times)):
            times[topic].append(t)
            if topic == '/joint_states':
                stamp = ts.deserialize_cdr(raw, msgtype).header.stamp
                assert stamp.sec * 10**9 + stamp.nanosec == t
    assert times['/joint_states'] == steps
    assert times['/swfp/action'] == [t + round(latency * 1e9) for t in steps]
    assert times['/swfp/reward'] == rewards
