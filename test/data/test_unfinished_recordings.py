"""Recordings whose recorder never finished them (killed, or a machine that lost power).

MCAP: no summary, no footer, the last chunk cut short. Every complete chunk must be read back exactly, and nothing
after the first record that is cut short or damaged; the oracle for where the chunks end is rosbags' own index of the
complete file. sqlite3: a write-ahead log or a rollback journal left beside the database; every committed message must
be read back, and nothing of the transaction in progress."""
import os
import signal
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import lz4.frame
import numpy as np
import pytest
from data_synth import RATE, SCALE, expected_obs, synth_episode
from rosbags.rosbag2.storage_mcap import McapReader

from swfp_ros.data import BagReadError, BagRecorder, BagWarning, default_panda_spec, ingest, open_bag, write_demo_bag
from swfp_ros.data import unfinished
from swfp_ros.data.bag_writer import standard_typestore
from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS

try:
    from compression import zstd          # Python 3.14
except ImportError:
    from backports import zstd

MAGIC = b'\x89MCAP0\r\n'
COMPRESS = {'': lambda raw: raw, 'zstd': zstd.compress, 'lz4': lz4.frame.compress}


def _long_episodes(n=10, steps=400):
    rng = np.random.default_rng(7)
    return [synth_episode(rng, T=steps, success=True) for _ in range(n)]


@pytest.fixture(scope='module')
def long_recording(tmp_path_factory):
    """A complete MCAP recording of several 1 MiB chunks (rosbags' chunk size), and all its messages."""
    bag = tmp_path_factory.mktemp('long') / 'demo'
    write_demo_bag(bag, _long_episodes(), PANDA_JOINTS, REACH_TASK_LABELS, RATE)
    path = next(bag.glob('*.mcap'))
    with open_bag(path) as b:
        messages = list(b.messages())
    return path, messages


def _unfinished(path: Path, compression: str) -> tuple[bytes, list[tuple[int, int, int]], list[int]]:
    """The data section of a complete MCAP file, as a writer that died before its summary leaves it, with every
    chunk re-compressed with ``compression`` and given a CRC (rosbags writes none); (start, end, messages) of each
    chunk in it, the counts from rosbags' index of the complete file; and where each of its records ends."""
    reader = McapReader(path)
    reader.open()
    counts = [sum(c.channel_count.values()) for c in sorted(reader.chunks, key=lambda c: c.chunk_start_offset)]
    reader.close()
    data = path.read_bytes()
    out, pos, chunks, record_ends = bytearray(data[:8]), 8, [], []
    while True:
        op, length = data[pos], int.from_bytes(data[pos + 1:pos + 9], 'little')
        if op == 0x0F:                                    # data end: the summary and footer follow
            break
        record = data[pos:pos + 9 + length]
        if op == 0x06:
            body = record[9:]
            start_time, end_time, size = body[:8], body[8:16], int.from_bytes(body[16:24], 'little')
            name_len = int.from_bytes(body[28:32], 'little')
            assert body[32:32 + name_len] == b''           # rosbags' chunks are uncompressed
            raw = body[32 + 8:]
            assert len(raw) == size
            packed = COMPRESS[compression](raw)
            name = compression.encode()
            body = (start_time + end_time + size.to_bytes(8, 'little')
                    + zlib.crc32(raw).to_bytes(4, 'little') + len(name).to_bytes(4, 'little') + name
                    + len(packed).to_bytes(8, 'little') + packed)
            record = bytes([0x06]) + len(body).to_bytes(8, 'little') + body
            chunks.append((len(out), len(out) + len(record), counts[len(chunks)]))
        out += record
        record_ends.append(len(out))
        pos += 9 + length
    assert len(chunks) == len(counts) >= 3
    return bytes(out), chunks, record_ends


def _message_record(channel_id: int, log_time: int, data: bytes) -> bytes:
    body = (channel_id.to_bytes(2, 'little') + bytes(4) + log_time.to_bytes(8, 'little')
            + log_time.to_bytes(8, 'little') + data)
    return bytes([0x05]) + len(body).to_bytes(8, 'little') + body


def _chunk_record(records: bytes, time: int) -> bytes:
    body = (time.to_bytes(8, 'little') * 2 + len(records).to_bytes(8, 'little') + bytes(4) + bytes(4)
            + len(records).to_bytes(8, 'little') + records)
    return bytes([0x06]) + len(body).to_bytes(8, 'little') + body


def _string(text: str) -> bytes:
    return len(text.encode()).to_bytes(4, 'little') + text.encode()


def _record(op: int, body: bytes) -> bytes:
    return bytes([op]) + len(body).to_bytes(8, 'little') + body


def _header(profile: str = 'ros2') -> bytes:
    return _record(0x01, _string(profile) + _string('a test'))


def _schema(sid: int, name: str, text: str) -> bytes:
    return _record(0x03, sid.to_bytes(2, 'little') + _string(name) + _string('ros2msg') + _string(text))


def _channel(cid: int, sid: int, topic: str) -> bytes:
    return _record(0x04, cid.to_bytes(2, 'little') + sid.to_bytes(2, 'little') + _string(topic) + _string('cdr')
                   + bytes(4))


def _descriptors_under(folder: Path) -> list[str]:
    """What this process's open file descriptors point at inside ``folder`` (deleted files included)."""
    targets = []
    for fd in Path('/proc/self/fd').iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:                     # the descriptor that listed /proc/self/fd, closed by now
            continue
    return [t for t in targets if Path(t).is_relative_to(folder)]


def _read(path):
    """(messages, BagWarnings) of the bag or storage file at ``path``; the bag's files are all closed after it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', BagWarning)
        try:
            with open_bag(path) as bag:
                messages = list(bag.messages())
        finally:
            assert _descriptors_under(Path(path).parent) == []
    return messages, [str(w.message) for w in caught if issubclass(w.category, BagWarning)]


@pytest.mark.parametrize('compression', ['', 'zstd', 'lz4'])
def test_a_recording_cut_anywhere_reads_every_complete_chunk_and_nothing_else(long_recording, tmp_path,
                                                                                compression):
    path, full = long_recording
    data, chunks, record_ends = _unfinished(path, compression)
    cuts = {8, 9, 40, len(data)} | {end + d for _start, end, _n in chunks for d in (-1, 0, 1)}
    cuts |= set(np.linspace(0, len(data), 12, dtype=int)[1:-1].tolist())
    f = tmp_path / 'cut.mcap'
    for cut in sorted(c for c in cuts if 8 <= c <= len(data)):
        f.write_bytes(data[:cut])
        n = sum(count for _start, end, count in chunks if end <= cut)
        if n == 0:
            with pytest.raises(BagReadError, match='never finished: no whole header|no complete chunk of messages'):
                _read(f)
            continue
        with warnings.catch_warnings(record=True) as caught, open_bag(f) as bag:
            warnings.simplefilter('always', BagWarning)
            messages = list(bag.messages())
            assert (bag.start_time, bag.end_time, bag.message_count) == (full[0][2], full[n - 1][2], n), cut
        warned = [str(w.message) for w in caught]
        assert messages == full[:n], cut
        whole = max(end for end in record_ends if end <= cut)
        assert len(warned) == 1 and str(f) in warned[0], (cut, warned)
        assert f'read {n} messages from its complete records, up to byte {whole} of {cut}' in warned[0], warned
        assert (f'dropped the {cut - whole} bytes' in warned[0]) == (whole < cut), (cut, warned)
        if cut - whole >= 9:                            # the next record's head is whole: its size is known
            size = 9 + int.from_bytes(data[whole + 1:whole + 9], 'little')
            assert f'(a record cut short at byte {whole} ({whole + size - cut} of its {size} bytes missing))' \
                in warned[0], warned


def test_a_recorder_killed_while_writing_the_index_loses_no_message(long_recording, tmp_path):
    """Cut after the data section, in the summary rosbags writes at close: every message is read, and the bag's time
    range is that of its messages."""
    path, full = long_recording
    data = path.read_bytes()
    f = tmp_path / 'indexless.mcap'
    f.write_bytes(data[:-100])
    with warnings.catch_warnings(record=True) as caught, open_bag(f) as bag:
        warnings.simplefilter('always', BagWarning)
        assert list(bag.messages()) == full
        assert (bag.start_time, bag.end_time) == (full[0][2], full[-1][2])
    assert 'dropped the' in str(caught[0].message) and '(the end of its data section: only its index follows)' in \
        str(caught[0].message)


@pytest.mark.parametrize('records, why', [
    (bytes([0x05]) + (10).to_bytes(8, 'little') + bytes(10), 'a message record too short for its header'),
    (bytes([0x05]) + bytes(4), 'a record cut short inside a chunk'),
    (bytes([0x05]) + (40).to_bytes(8, 'little') + bytes(30), 'a record that overruns its chunk'),
])
def test_a_chunk_whose_records_do_not_parse_ends_the_read(long_recording, tmp_path, records, why):
    path, full = long_recording
    data, chunks, _ = _unfinished(path, '')
    end = chunks[0][1]
    f = tmp_path / 'short.mcap'
    f.write_bytes(data[:end] + _chunk_record(records, 2 * 10**18) + data[end:])
    messages, warned = _read(f)
    assert messages == full[:chunks[0][2]]
    assert f'an unreadable record at byte {end} ({why})' in warned[0], warned


@pytest.mark.parametrize('compression', ['', 'zstd', 'lz4'])
def test_a_damaged_chunk_ends_the_read_before_it(long_recording, tmp_path, compression):
    """A chunk that fails its CRC or its decompression is not read, nor anything after it, however whole."""
    path, full = long_recording
    data, chunks, _ = _unfinished(path, compression)
    start, end, _ = chunks[1]
    damaged = bytearray(data)
    damaged[(start + end) // 2] ^= 0x5A
    f = tmp_path / 'damaged.mcap'
    f.write_bytes(bytes(damaged))
    messages, warned = _read(f)
    assert messages == full[:chunks[0][2]]
    assert f'an unreadable record at byte {start} (chunk' in warned[0], warned


def test_messages_come_back_in_time_order_across_chunks_whose_times_overlap(tmp_path):
    """A recorder writes in arrival order; a late message can carry a time that an earlier chunk spans."""
    strings = standard_typestore().types['std_msgs/msg/String']
    stamps = [10**18 + 1_000_000 * i - (1_500_000_001 if i % 997 == 0 and i else 0) for i in range(3500)]
    with BagRecorder(tmp_path / 'shuffled') as recorder:
        for i, t in enumerate(stamps):
            recorder.write('/late', strings.__msgtype__, strings(data=f'{i:04d}' + 'x' * 996), t)
    path = next((tmp_path / 'shuffled').glob('*.mcap'))
    data, chunks, _ = _unfinished(path, 'zstd')
    f = tmp_path / 'cut.mcap'
    f.write_bytes(data[:chunks[2][1]])
    messages, _ = _read(f)
    n = sum(count for _start, _end, count in chunks[:3])
    assert [t for _topic, _type, t, _raw in messages] == sorted(stamps[:n])
    assert sorted(int(raw[8:12]) for *_, raw in messages) == list(range(n))


def _unchunked(data: bytes, chunks) -> tuple[bytes, int, list[int]]:
    """``data`` (from _unfinished('')) as a writer with chunking off leaves it, every record of every chunk straight
    in the file; how many bytes its message records take, and where each ends."""
    unchunked, message_bytes, message_ends = bytearray(data[:chunks[0][0]]), 0, []
    for start, end, _ in chunks:
        name_len = int.from_bytes(data[start + 9 + 28:start + 9 + 32], 'little')
        raw = data[start + 9 + 40 + name_len:end]
        pos = 0
        while pos < len(raw):
            length = int.from_bytes(raw[pos + 1:pos + 9], 'little')
            unchunked += raw[pos:pos + 9 + length]
            if raw[pos] == 0x05:
                message_ends.append(len(unchunked))
                message_bytes += 9 + length
            pos += 9 + length
    return bytes(unchunked), message_bytes, message_ends


def test_messages_written_outside_chunks_are_read_up_to_the_cut(long_recording, tmp_path):
    """A writer with chunking off puts each message straight in the file; each whole one counts."""
    path, full = long_recording
    data, chunks, _ = _unfinished(path, '')
    unchunked, _, message_ends = _unchunked(data, chunks)
    f = tmp_path / 'unchunked.mcap'
    for cut in (message_ends[0], message_ends[0] + 5, message_ends[len(message_ends) // 2] - 1, len(unchunked)):
        f.write_bytes(bytes(unchunked[:cut]))
        n = sum(end <= cut for end in message_ends)
        with pytest.warns(BagWarning, match='never finished'), open_bag(f) as bag:
            assert list(bag.messages()) == full[:n] and bag.message_count == n


def test_messages_written_outside_chunks_are_read_back_in_stretches_of_a_mebibyte(long_recording, tmp_path):
    """Not one read per message: consecutive message records form runs that hold every message byte once, each
    ending at _STRETCH_BYTES or more, before a record that is not a message (a channel defined as its topic first
    appears), or at the end."""
    path, full = long_recording
    data, chunks, _ = _unfinished(path, '')
    unchunked, message_bytes, _ = _unchunked(data, chunks)
    f = tmp_path / 'unchunked.mcap'
    f.write_bytes(unchunked)
    reader = unfinished.UnfinishedMcapReader(f)
    reader.open()
    try:
        sizes = [run.size for run in reader._runs]
        assert sum(sizes) == message_bytes and reader.message_count == len(full)
        assert all(run.size >= unfinished._STRETCH_BYTES or unchunked[run.offset + run.size] != 0x05
                   for run in reader._runs[:-1]), sizes
        assert message_bytes // unfinished._STRETCH_BYTES >= 3 and len(sizes) < 12, sizes
    finally:
        reader.close()


@pytest.mark.parametrize('in_chunk', [False, True])
def test_a_message_on_a_channel_never_defined_ends_the_read(long_recording, tmp_path, in_chunk):
    path, full = long_recording
    data, chunks, _ = _unfinished(path, '')
    f = tmp_path / 'stray.mcap'
    end = chunks[0][1]
    stray = _message_record(99, 2 * 10**18, b'\0' * 8)
    f.write_bytes(data[:end] + (_chunk_record(stray, 2 * 10**18) if in_chunk else stray) + data[end:])
    messages, warned = _read(f)
    assert messages == full[:chunks[0][2]]
    assert f'an unreadable record at byte {end} (a message on channel 99, which the file has not defined)' \
        in warned[0], warned


def test_channels_a_chunk_defines_carry_its_own_messages(tmp_path):
    """rosbag2's writer defines schemas and channels inside the chunks; a channel's id need not be its schema's (two
    topics of one type share a schema)."""
    string = 'std_msgs/msg/String'
    records = (_schema(1, string, 'string data') + _channel(1, 1, '/a') + _channel(2, 1, '/b')
               + _message_record(2, 10, b'\0\x01\0\0\x02\0\0\0b\0') + _message_record(1, 20, b'\0\x01\0\0\x02\0\0\0a\0'))
    f = tmp_path / 'defined_in_chunk.mcap'
    f.write_bytes(MAGIC + _header() + _chunk_record(records, 10))
    messages, warned = _read(f)
    assert [m[:3] for m in messages] == [('/b', string, 10), ('/a', string, 20)]
    assert 'read 2 messages' in warned[0], warned


@pytest.mark.parametrize('first, why', [(_message_record(1, 0, b''), 'its first record is not an MCAP header'),
                                        (_header(profile=''), 'its profile is not ros2')])
def test_an_mcap_file_that_is_not_a_ros2_recording_is_refused(tmp_path, first, why):
    f = tmp_path / 'other.mcap'
    f.write_bytes(MAGIC + first)
    with pytest.raises(BagReadError, match=f'an MCAP file never finished: {why}'):
        _read(f)


def test_a_recording_cut_right_after_its_header_reads_to_the_end_of_the_header(tmp_path):
    f = tmp_path / 'header_only.mcap'
    f.write_bytes(MAGIC + _header())
    reader = unfinished.UnfinishedMcapReader(f)
    reader.open()
    reader.close()
    size = f.stat().st_size
    assert (reader.read_bytes, reader.stop_reason, reader.message_count) == (size, f'the end of the file (byte {size})',
                                                                              0)


def test_messages_are_streamed_one_chunk_at_a_time(long_recording, tmp_path, monkeypatch):
    """The merge in time order decompresses a chunk only when its first message is due (a bag is never loaded
    whole): taking the first message decompresses one chunk."""
    path, _ = long_recording
    data, _, _ = _unfinished(path, 'zstd')
    f = tmp_path / 'streamed.mcap'
    f.write_bytes(data)
    with pytest.warns(BagWarning, match='never finished'), open_bag(f) as bag:
        decompressed = []
        real = unfinished._decompress
        monkeypatch.setattr(unfinished, '_decompress', lambda *a: decompressed.append(a) or real(*a))
        next(bag.messages())
        assert len(decompressed) == 1


def test_a_zero_filled_tail_after_a_power_cut_is_dropped(long_recording, tmp_path):
    """A file system may leave a file's last blocks allocated but zeroed when power is lost."""
    path, full = long_recording
    data, chunks, _ = _unfinished(path, '')
    end = chunks[1][1]
    f = tmp_path / 'zeros.mcap'
    f.write_bytes(data[:end] + bytes(4096))
    messages, warned = _read(f)
    assert messages == full[:chunks[0][2] + chunks[1][2]]
    assert 'dropped the 4096 bytes after it (no record at byte' in warned[0] and 'opcode 0x00' in warned[0], warned


def test_a_recorder_killed_mid_recording_still_ingests_every_step_it_wrote_whole(tmp_path):
    """The path a user takes: a recording process SIGKILLed halfway (no metadata.yaml, no MCAP footer), then ingest.
    Every episode read back matches what was recorded, step for step; only the unfinished chunk is lost."""
    bag = tmp_path / 'killed'
    child = f'''
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from data_synth import RATE
from test_unfinished_recordings import _long_episodes
from swfp_ros.data import bag_writer
from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS
writes = 0
write = bag_writer.BagRecorder.write
def write_then_die(self, *args, **kwargs):
    global writes
    write(self, *args, **kwargs)
    writes += 1
    if writes == 12_000:
        os.kill(os.getpid(), signal.SIGKILL)
bag_writer.BagRecorder.write = write_then_die
bag_writer.write_demo_bag({str(bag)!r}, _long_episodes(), PANDA_JOINTS, REACH_TASK_LABELS, RATE)
'''
    r = subprocess.run([sys.executable, '-c', child], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    mcap = next(bag.glob('*.mcap'))
    assert not (bag / 'metadata.yaml').exists() and mcap.read_bytes()[-8:] != MAGIC

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', BagWarning)
        ds = ingest([bag], default_panda_spec(action_scale=SCALE), progress=False)
    warned = [str(w.message) for w in caught if issubclass(w.category, BagWarning)]
    assert any('never finished' in w and str(mcap) in w for w in warned), warned
    recorded = _long_episodes()
    steps = sum(len(ep) for ep in ds)
    assert 1 <= len(ds) < len(recorded) and steps > 1500, [len(ep) for ep in ds]   # ~ 2 of ~ 2.4 MiB written
    for got, ep in zip(ds, recorded):
        np.testing.assert_allclose(got.obs, expected_obs(ep)[:len(got)], atol=1e-5)
    assert all(len(got) == len(ep) for got, ep in zip(ds[:-1], recorded)), 'only the last episode may be cut short'
    assert os.path.getsize(mcap) > 2 * 2**20


SQLITE_CHILD = '''
import os, signal, sys
from swfp_ros.data import BagRecorder
from swfp_ros.data.bag_writer import standard_typestore
strings = standard_typestore().types['std_msgs/msg/String']
path, journal_mode, committed, in_progress = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
recorder = BagRecorder(path, storage='sqlite3', commit_period_s=3600)   # commits only where this script says
recorder.open()
database = recorder._writer.storage.conn            # rosbags' writer has no pragma option: set them as rosbag2 does
database.execute(f'PRAGMA journal_mode={journal_mode}')
database.execute('PRAGMA cache_size=20')            # a small cache spills the transaction in progress to the file
recorder.add_topic('/s', strings.__msgtype__)
for i in range(committed + in_progress):
    recorder.write('/s', strings.__msgtype__, strings(data=f'{i:05d}' + 'x' * 200), 10**18 + 1000 * i)
    if i + 1 == committed:
        database.commit()
os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.parametrize('journal_mode,sidecar', [('WAL', '-wal'), ('DELETE', '-journal')])
def test_an_unclosed_sqlite3_recording_reads_what_was_committed_and_nothing_else(tmp_path, monkeypatch,
                                                                                  journal_mode, sidecar):
    """WAL is rosbag2's resilient preset; DELETE is SQLite's default (rosbag2's and rosbags'). Read as rosbags alone
    reads them, the first lost committed messages silently: all 1,000 in the log, and 93 of 1,000 under the pages
    of the transaction in progress."""
    bag = tmp_path / 'killed'
    r = subprocess.run([sys.executable, '-c', SQLITE_CHILD, str(bag), journal_mode, '1000', '3000'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    database = bag / 'killed.db3'
    assert database.with_name(database.name + sidecar).stat().st_size > 0
    before = {f.name: f.read_bytes() for f in bag.iterdir()}
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
    (tmp_path / 'tmp').mkdir()

    with warnings.catch_warnings(record=True) as caught, open_bag(bag) as source:
        warnings.simplefilter('always', BagWarning)
        messages = list(source.messages())
        assert len(list((tmp_path / 'tmp').iterdir())) == 1                   # the recovered copy
    assert [int(raw[8:13]) for *_, raw in messages] == list(range(1000))
    warned = [str(w.message) for w in caught]
    assert any(str(database) in w and f'recovered with its killed.db3{sidecar}' in w for w in warned), warned
    assert {f.name: f.read_bytes() for f in bag.iterdir()} == before          # the recording is only read
    assert not any((tmp_path / 'tmp').iterdir())                              # the copy is removed at close
    assert _descriptors_under(tmp_path) == []                                 # and no connection holds it open


def test_an_empty_journal_left_by_a_clean_close_is_not_a_recovery(tmp_path, episodes):
    """SQLite's TRUNCATE and PERSIST journal modes leave an empty or zeroed journal after every commit."""
    bag = tmp_path / 'closed'
    write_demo_bag(bag, episodes, PANDA_JOINTS, REACH_TASK_LABELS, RATE, storage='sqlite3')
    (bag / 'closed.db3-journal').touch()
    messages, warned = _read(bag)
    assert len(messages) > 0 and warned == []


def test_an_unclosed_sqlite3_file_sqlite_cannot_recover_is_refused_naming_it(tmp_path):
    bag = tmp_path / 'garbled'
    bag.mkdir()
    (bag / 'garbled.db3').write_bytes(b'not a database' * 100)
    (bag / 'garbled.db3-wal').write_bytes(b'\0' * 4096)
    with pytest.raises(BagReadError, match=r'garbled.db3: .*never closed \(its garbled.db3-wal is still there\) that '
                                           r'SQLite cannot recover'):
        _read(bag)


RECORDER_CHILD = '''
import os, signal, sys, types
from swfp_ros.data import BagRecorder, bag_writer
from swfp_ros.data.bag_writer import standard_typestore
clock = [0.0]
bag_writer.time = types.SimpleNamespace(monotonic=lambda: clock[0])
strings = standard_typestore().types['std_msgs/msg/String']
recorder = BagRecorder(sys.argv[1], storage=sys.argv[2])          # commit_period_s: 1 s
for i in range(int(sys.argv[3])):
    clock[0] += 0.25                                              # a quarter second per message
    recorder.write('/s', strings.__msgtype__, strings(data=f'{i:05d}' + 'x' * 200), 10**18 + 1000 * i)
os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_a_killed_recorder_loses_only_what_it_wrote_since_its_last_period(tmp_path, storage):
    """BagRecorder hands what it wrote to the operating system every commit_period_s (1 s). A message every quarter
    second from t = 0.25 s: the topic is added at the first, so hand-overs follow messages 4, 8, ..., 1004; killed
    after message 1006, it has lost 1005 and 1006 only (an MCAP chunk left to fill up to 1 MiB had lost them all)."""
    bag = tmp_path / 'killed'
    r = subprocess.run([sys.executable, '-c', RECORDER_CHILD, str(bag), storage, '1007'], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr)
    messages, _ = _read(bag)
    assert [int(raw[8:13]) for *_, raw in messages] == list(range(1005))

