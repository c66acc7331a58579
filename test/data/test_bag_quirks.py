"""What real rosbag2 recordings look like beyond the happy path: single MCAP files (whose embedded metadata says 0
messages), file-compressed bags, storage files in subdirectories, a wrong serialization format, metadata.yaml
fallbacks that must keep the ROS distro. Every bag is written here by rosbags (the same files rosbag2 writes)."""
import re
import shutil
import warnings
from array import array

import numpy as np
import pytest
import yaml
from data_synth import RATE, SCALE, expected_obs, float_array
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from swfp_ros.data import BagRecorder, BagWarning, IngestError, default_panda_spec, ingest, write_demo_bag
from swfp_ros.data.bag_writer import standard_typestore
from swfp_ros.data.inspect import format_summary, inspect_bag, median_rate
from swfp_ros.data.reader import BagSource
from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS


@pytest.fixture
def demo_bag(tmp_path, episodes):
    bag = tmp_path / 'demo'
    write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    return bag


def _quietly(fn, *args, **kwargs):
    """fn(...) and the BagWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', BagWarning)
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, BagWarning)]


def _edit_metadata(bag, edit):
    path = bag / 'metadata.yaml'
    doc = yaml.safe_load(path.read_text())
    edit(doc['rosbag2_bagfile_information'])
    path.write_text(yaml.safe_dump(doc))


def _assert_same_steps(ds, episodes):
    assert len(ds) == len(episodes)
    for got, ep in zip(ds, episodes):
        np.testing.assert_allclose(got.obs, expected_obs(ep), atol=1e-5)


def _as_rosbag2_writes_it(mcap):
    """rosbag2 embeds its metadata record when it opens an MCAP file, so the record says 0 messages (rosbags writes
    it at close, with the true counts): zero the counts in place, keeping every length."""
    data = mcap.read_bytes()
    zeroed = re.sub(rb'message_count: (\d+)', lambda m: b'message_count: 0' + b' ' * (len(m.group(1)) - 1), data)
    assert zeroed != data and len(zeroed) == len(data)
    mcap.write_bytes(zeroed)


def test_single_mcap_file_reads_without_a_false_count_warning(demo_bag, episodes):
    single = next(demo_bag.glob('*.mcap'))
    _as_rosbag2_writes_it(single)
    summary = inspect_bag(single)
    assert summary.warnings == []
    assert summary.storage_id == 'mcap' and summary.message_count > 0
    ds, caught = _quietly(ingest, single, default_panda_spec(action_scale=SCALE), progress=False)
    assert caught == []
    _assert_same_steps(ds, episodes)


@pytest.mark.parametrize('storage, suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_a_lone_storage_file_tells_its_format_version_and_writer_from_what_it_embeds(tmp_path, episodes, storage,
                                                                                      suffix):
    """A storage file copied away from its metadata.yaml still says which rosbag2 format and which writer made it
    (the sqlite3 metadata table, the MCAP 'rosbag2' metadata record)."""
    write_demo_bag(tmp_path / 'bag', episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage=storage)
    lone = tmp_path / f'lone{suffix}'
    shutil.copy(next((tmp_path / 'bag').glob(f'*{suffix}')), lone)
    summary = inspect_bag(lone)
    assert (summary.storage_id, summary.format_version, summary.ros_distro) == (storage, 9, 'rosbags')
    assert 'format version: 9   recorded by: rosbags' in format_summary(summary)


def test_file_compressed_bag_names_its_storage(tmp_path, episodes):
    src = tmp_path / 'plain'
    write_demo_bag(src, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    bag = tmp_path / 'compressed'
    writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    from rosbags.rosbag2 import Reader
    with Reader(src) as reader, writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=standard_typestore())
                 for c in reader.connections}
        for c, t, raw in reader.messages():
            writer.write(conns[c.id], t, raw)
    assert [p.name for p in bag.iterdir() if p.name != 'metadata.yaml'][0].endswith('.mcap.zstd')
    summary = inspect_bag(bag)
    assert summary.storage_id == 'mcap' and 'Storage:        mcap' in format_summary(summary)
    _assert_same_steps(ingest(bag, default_panda_spec(action_scale=SCALE), progress=False), episodes)


@pytest.mark.parametrize('layout', ['subdirectory', 'prefixed_with_bag_name'])
def test_relative_file_paths_with_folders(demo_bag, episodes, layout):
    storage = next(demo_bag.glob('*.mcap'))
    if layout == 'subdirectory':            # relative to the bag folder, inside a subfolder
        (demo_bag / 'data').mkdir()
        listed = f'data/{storage.name}'
        storage.rename(demo_bag / listed)
    else:                                   # early rosbag2: '<bag folder name>/<file>'
        listed = f'{demo_bag.name}/{storage.name}'
    _edit_metadata(demo_bag, lambda m: m.update(relative_file_paths=[listed]))
    summary = inspect_bag(demo_bag)
    assert summary.warnings == [] and summary.files == [storage.name]
    ds, caught = _quietly(ingest, demo_bag, default_panda_spec(action_scale=SCALE), progress=False)
    assert caught == []
    _assert_same_steps(ds, episodes)


def test_relative_file_path_outside_the_bag_is_not_followed(tmp_path, demo_bag):
    outside = tmp_path / 'elsewhere.mcap'
    shutil.copy(next(demo_bag.glob('*.mcap')), outside)
    _edit_metadata(demo_bag, lambda m: m.update(relative_file_paths=['../elsewhere.mcap']))
    summary = inspect_bag(demo_bag)
    (warning,) = summary.warnings
    assert 'not inside the bag directory' in warning and 'falling back' in warning
    assert summary.files == [next(demo_bag.glob('*.mcap')).name]


def test_wrong_serialization_format_in_metadata_is_reported(demo_bag, episodes):
    def edit(meta):
        for t in meta['topics_with_message_count']:
            if t['topic_metadata']['name'] == '/swfp/action':
                t['topic_metadata']['serialization_format'] = 'wrong_format'
    _edit_metadata(demo_bag, edit)
    ds, caught = _quietly(ingest, demo_bag, default_panda_spec(action_scale=SCALE), progress=False)
    assert len(caught) == 1 and '/swfp/action' in caught[0] and "'wrong_format'" in caught[0]
    _assert_same_steps(ds, episodes)      # the storage file itself says CDR, and is what is read


def test_non_cdr_topic_is_refused_naming_it(tmp_path, demo_bag):
    """A bag whose storage records /swfp/task as JSON: ingest names the topic instead of decoding it as CDR."""
    from rosbags.rosbag2 import Reader
    bag = tmp_path / 'json_task'
    with Reader(demo_bag) as reader, Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=standard_typestore(),
                                             serialization_format='json' if c.topic == '/swfp/task' else 'cdr')
                 for c in reader.connections}
        for c, t, raw in reader.messages():
            writer.write(conns[c.id], t, raw)
    summary = inspect_bag(bag)
    assert {t.topic: t.serialization_format for t in summary.topics}['/swfp/task'] == 'json'
    assert '(serialized as json)' in format_summary(summary)
    with pytest.raises(IngestError) as ei:
        ingest(bag, default_panda_spec(action_scale=SCALE), progress=False)
    (msg,) = ei.value.report.errors.values()
    assert "topic '/swfp/task' is serialized as json" in msg and 'only CDR' in msg


def test_ros_distro_survives_a_metadata_fallback(demo_bag):
    _edit_metadata(demo_bag, lambda m: m.update(ros_distro='kilted', message_count=m['message_count'] + 5))
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter('always')
        summary = inspect_bag(demo_bag)
    (warning,) = summary.warnings
    assert 'metadata.yaml says' in warning
    assert not [w for w in escaped if issubclass(w.category, BagWarning)]    # reported in the summary, not twice
    text = format_summary(summary)
    assert summary.ros_distro == 'kilted' and 'recorded by: kilted' in text and f'Warning: {warning}' in text


def test_a_rate_needs_two_messages_with_time_between_them():
    assert median_rate(array('q', [0, 10**8])) == pytest.approx(10.0)
    assert median_rate(array('q', [5])) is None and median_rate(array('q')) is None
    assert median_rate(array('q', [3, 3, 3])) is None


def test_an_empty_bag_has_no_times_and_no_clock(tmp_path):
    """A recorder stopped before any message arrived (the graph never came up) leaves a valid, empty bag."""
    BagRecorder(tmp_path / 'empty').open().close()
    summary = inspect_bag(tmp_path / 'empty')
    assert (summary.message_count, summary.topics, summary.duration_s) == (0, [], 0.0)
    assert summary.to_dict()['clock'] is None
    text = format_summary(summary)
    assert 'Clock:          -' in text and 'Start:          -' in text and 'End:            -' in text


@pytest.mark.parametrize('storage, suffix', [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_a_bag_split_into_files_counts_and_reads_every_file(tmp_path, storage, suffix):
    """rosbag2 splits a long recording into several storage files (--max-bag-size, --max-bag-duration) listed in one
    metadata.yaml: a topic counts its messages in every file, and they are read in time order across the files."""
    bag = tmp_path / 'split'
    bag.mkdir()
    names = [f'split_{i}{suffix}' for i in range(2)]
    for i, name in enumerate(names):
        with BagRecorder(tmp_path / f'part{i}', storage=storage) as rec:
            for k in range(5 * i, 5 * i + 5):
                rec.write('/cmd', 'std_msgs/msg/Float64MultiArray', float_array([k]), 10**12 + k * 10**8)
        shutil.copy(next((tmp_path / f'part{i}').glob(f'*{suffix}')), bag / name)
    meta = yaml.safe_load((tmp_path / 'part0' / 'metadata.yaml').read_text())
    info = meta['rosbag2_bagfile_information']
    (topic,) = info['topics_with_message_count']
    info.update(relative_file_paths=names, message_count=10)
    topic['message_count'] = 10
    (bag / 'metadata.yaml').write_text(yaml.safe_dump(meta))
    summary = inspect_bag(bag)
    assert summary.warnings == [] and {t.topic: t.count for t in summary.topics} == {'/cmd': 10}
    store = standard_typestore()
    with BagSource(bag) as source:
        values = [store.deserialize_cdr(raw, msgtype).data[0] for _, msgtype, _, raw in source.messages()]
    assert values == list(range(10))
