"""DemoDataset: save/load round trip, corrupt-file errors naming the file, BC stack;
BagRecorder: raw CDR bytes, message objects, custom types, unclosed bag."""
import json

import numpy as np
import pytest

from swfp_ros.data import BagRecorder, DemoDataset, Episode, IngestError, ingest, inspect_bag
from swfp_ros.data.bag_writer import standard_typestore
from swfp_ros.data.reader import BagSource


def small_ds():
    rng = np.random.default_rng(0)
    eps = [Episode(obs=rng.normal(size=(T, 4)), actions=rng.uniform(-1, 1, (T, 2)), rewards=np.arange(T, dtype=float),
                   success=s, timestamps=np.arange(T) * 0.05 if s else None, info={'seed': i})
           for i, (T, s) in enumerate([(5, True), (3, False)])]
    return DemoDataset(eps, task='panda_reach', obs_labels=['a', 'b', 'c', 'd'], action_labels=['u', 'v'],
                       control_rate_hz=20.0, provenance=[{'source': 'simulator', 'seed': 7}])


def test_save_load_round_trip(tmp_path):
    ds = small_ds()
    p = ds.save(tmp_path / 'd.npz')
    back = DemoDataset.load(p)
    assert len(back) == 2 and back.task == 'panda_reach' and back.control_rate_hz == 20.0
    assert back.obs_labels == ds.obs_labels and back.action_labels == ds.action_labels
    assert back.provenance == [{'source': 'simulator', 'seed': 7}] and back.format_version == 1
    for a, b in zip(ds, back):
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.rewards, b.rewards)
        assert a.success == b.success and a.info == b.info
    np.testing.assert_array_equal(back[0].timestamps, ds[0].timestamps)
    assert back[1].timestamps is None
    obs, act = back.stack()
    assert obs.shape == (8, 4) and act.shape == (8, 2) and obs.dtype == np.float32
    assert ds.save(tmp_path / 'plain') == tmp_path / 'plain.npz'     # the suffix added when missing
    assert DemoDataset.load(tmp_path / 'plain.npz').num_steps == 8


def test_empty_or_missing_datasets_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match='refusing to save an empty dataset'):
        DemoDataset(task='panda_reach').save(tmp_path / 'empty.npz')
    assert not (tmp_path / 'empty.npz').exists()
    with pytest.raises(FileNotFoundError, match='nothing.npz: no such dataset file'):
        DemoDataset.load(tmp_path / 'nothing.npz')
    with pytest.raises(ValueError, match='empty dataset'):
        DemoDataset().stack()
    with pytest.raises(ValueError, match='chunk must be >= 1, got 0'):
        small_ds().stack(chunk=0)


def test_chunked_bc_targets_repeat_the_last_action_at_episode_ends():
    ds = small_ds()
    obs, chunks = ds.stack(chunk=3)
    assert obs.shape == (8, 4) and chunks.shape == (8, 6)
    np.testing.assert_array_equal(chunks[0], ds[0].actions[0:3].reshape(-1))
    np.testing.assert_array_equal(chunks[3], ds[0].actions[[3, 4, 4]].reshape(-1))   # episode 0 ends after step 4
    np.testing.assert_array_equal(chunks[5], ds[1].actions[[0, 1, 2]].reshape(-1))   # episode 1 starts fresh


def _arrays(edit):
    """A damage that rewrites a saved dataset's arrays through ``edit`` (which changes their dict in place)."""
    def damage(path):
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        edit(arrays)
        with open(path, 'wb') as f:
            np.savez(f, **arrays)
    return damage


def _metadata(**changes):
    return _arrays(lambda a: a.update(metadata=np.array(json.dumps({**json.loads(str(a['metadata'])), **changes}))))


@pytest.mark.parametrize('damage,needle', [
    (lambda p: p.write_bytes(b'hello world'), 'not a valid'),
    (lambda p: p.write_bytes(p.read_bytes()[:200]), 'not a valid'),                     # truncated
    (_metadata(format_version=99), 'format_version 99'),
    (_metadata(format='something_else'), "format is 'something_else'"),
    (_arrays(lambda a: a.update(metadata=np.array('{"format": '))), 'metadata is not JSON'),
    (_arrays(lambda a: a.pop('actions')), "missing arrays ['actions']"),
    (_arrays(lambda a: a.update(rewards=np.zeros(3, np.float32))), 'rewards has'),
    (_arrays(lambda a: a.update(ep_lengths=np.array([5, 5]))), 'episode lengths'),
    (_arrays(lambda a: a.update(ep_success=np.array([True]))), '1 success flags for 2 episodes'),
    (_arrays(lambda a: a.update(obs=a['obs'][:, :3])), '4 obs_labels for dimension 3'),
    (_arrays(lambda a: a.update(obs=np.zeros(8, np.float32))), 'must be 2-D'),
])
def test_load_errors_name_the_file(tmp_path, damage, needle):
    p = small_ds().save(tmp_path / 'd.npz')
    damage(p)
    with pytest.raises(ValueError) as ei:
        DemoDataset.load(p)
    assert str(p) in str(ei.value) and needle in str(ei.value)
    assert str(ei.value).count('not a valid') == 1          # said once, not wrapped in itself


@pytest.mark.parametrize('fields,message', [
    ({'obs': np.zeros(3), 'actions': np.zeros((3, 1))}, 'must be 2-D, got \\(3,\\) and \\(3, 1\\)'),
    ({'obs': np.zeros((3, 2)), 'actions': np.zeros((3, 1, 1))}, 'must be 2-D'),
    ({'obs': np.zeros((3, 2)), 'actions': np.zeros((4, 1))}, '3 observations but 4 actions'),
    ({'obs': np.zeros((3, 2)), 'actions': np.zeros((3, 1)), 'rewards': np.zeros(2)}, '3 steps but 2 rewards'),
    ({'obs': np.zeros((3, 2)), 'actions': np.zeros((3, 1)), 'timestamps': [0.0, 0.1]}, '3 steps but 2 timestamps'),
])
def test_episode_validation(fields, message):
    with pytest.raises(ValueError, match=message):
        Episode(**fields)


def test_episode_fields_are_normalised():
    ep = Episode(obs=[[0, 1], [2, 3]], actions=[[0.5], [1]], rewards=[[1], [2]], timestamps=[[0], [0.05]],
                 success=np.float32(1.0))
    assert ep.obs.dtype == ep.actions.dtype == ep.rewards.dtype == np.float32 and ep.rewards.shape == (2,)
    assert ep.timestamps.dtype == np.float64 and ep.timestamps.tolist() == [0.0, 0.05]
    assert ep.success is True                      # a plain bool, whatever the recorder gave
    bare = Episode(obs=np.zeros((2, 2)), actions=np.zeros((2, 1)))
    assert bare.rewards.tolist() == [0.0, 0.0] and bare.timestamps is None and bare.success is False


def test_dataset_checks_dimensions():
    labelled = DemoDataset(obs_labels=['a', 'b', 'c', 'd'], action_labels=['u', 'v'])   # the labels set the dims
    with pytest.raises(ValueError, match='4 obs_labels but obs_dim is 5'):
        labelled.add_episode(obs=np.zeros((2, 5)), actions=np.zeros((2, 2)))
    with pytest.raises(ValueError, match='2 action_labels but act_dim is 3'):
        labelled.add_episode(obs=np.zeros((2, 4)), actions=np.zeros((2, 3)))
    ds = small_ds()                                            # then the episodes already there
    for obs_dim, act_dim in ((5, 2), (4, 3)):
        with pytest.raises(ValueError, match=f'episode dims \\({obs_dim}, {act_dim}\\) differ from the dataset '
                                             f'\\(4, 2\\)'):
            ds.add_episode(obs=np.zeros((2, obs_dim)), actions=np.zeros((2, act_dim)))
    added = ds.add_episode(obs=np.ones((2, 4)), actions=np.zeros((2, 2)), success=True)
    assert ds.episodes[-1] is added and len(ds) == 3 and ds.num_steps == 10


def test_dataset_sizes_and_success_rate():
    ds = small_ds()
    assert (ds.num_steps, ds.obs_dim, ds.act_dim, ds.success_rate) == (8, 4, 2, 0.5)
    assert ds.successes.tolist() == [True, False]
    labelled = DemoDataset(obs_labels=['a', 'b', 'c'], action_labels=['u'])    # empty: the labels tell the dims
    assert (labelled.obs_dim, labelled.act_dim, labelled.num_steps, labelled.success_rate) == (3, 1, 0, 0.0)
    with pytest.raises(ValueError, match='empty dataset without obs_labels has no obs_dim'):
        DemoDataset().obs_dim
    with pytest.raises(ValueError, match='empty dataset without action_labels has no act_dim'):
        DemoDataset().act_dim


def test_recorder_raw_cdr_and_messages(tmp_path):
    ts = standard_typestore()
    A = ts.types['std_msgs/msg/Float64MultiArray']
    L = ts.types['std_msgs/msg/MultiArrayLayout']
    B = ts.types['std_msgs/msg/Bool']
    raw = bytes(ts.serialize_cdr(A(layout=L(dim=[], data_offset=0), data=np.array([1.5, 2.5])), A.__msgtype__))
    with BagRecorder(tmp_path / 'rec', storage='sqlite3', version=8) as rec:
        rec.write('/a', A.__msgtype__, raw, 10)                    # raw bytes, as from a raw subscription
        rec.write('/a', A.__msgtype__, memoryview(raw), 20)
        rec.write('/a', A.__msgtype__, np.frombuffer(raw, np.uint8), 25)   # raw bytes held in a numpy array
        rec.write('/estop', 'std_msgs/msg/Bool', B(data=True), 30)  # a message object
        with pytest.raises(KeyError, match='not in the typestore'):
            rec.write('/x', 'nope_msgs/msg/Nope', b'\x00\x01\x00\x00', 40)
    s = inspect_bag(tmp_path / 'rec')
    assert {t.topic: t.count for t in s.topics} == {'/a': 3, '/estop': 1}
    with BagSource(tmp_path / 'rec') as bag:
        assert [bytes(data) for _, _, _, data in bag.messages(['/a'])] == [raw] * 3
    assert s.format_version == 8 and s.storage_id == 'sqlite3'


def test_unclosed_recorder_bag_is_reported_as_truncated(tmp_path):
    ts = standard_typestore()
    A = ts.types['std_msgs/msg/Float64MultiArray']
    L = ts.types['std_msgs/msg/MultiArrayLayout']
    rec = BagRecorder(tmp_path / 'crash').open()
    for k in range(5):
        rec.write('/a', A.__msgtype__, A(layout=L(dim=[], data_offset=0), data=np.array([k * 1.0])), k * 10**8)
    rec._writer.storage.bio.flush()   # the process dies here: no summary, no footer, no metadata.yaml
    spec = {'control_rate_hz': 10.0, 'episodes': {'per_bag': True},
            'observation': [{'source': 'array', 'topic': '/a', 'indices': [0]}],
            'action': {'source': 'array', 'topic': '/a', 'indices': [0]}}
    with pytest.warns(Warning):
        with pytest.raises(IngestError) as ei:
            ingest([tmp_path / 'crash'], spec, progress=False)
    assert str(tmp_path / 'crash' / 'crash.mcap') in str(ei.value)
    rec.abort()
