"""The learner's transition journal (pure Python): records survive a reopen in order, a torn last record is cut off,
damage elsewhere is an error, pruning keeps what is not yet stored, and a killed writer loses nothing it wrote."""
import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from swfp_ros.ros import journal as J

N = 11


def rec(i):
    return np.arange(N, dtype=np.float64) + 1000.0 * i


def test_append_read_reopen_across_segments(tmp_path, monkeypatch):
    monkeypatch.setattr(J, 'SEGMENT_RECORDS', 8)
    j = J.TransitionJournal(tmp_path / 'inbox', N, 3, 2, first_transition=17)
    assert [j.append(rec(i)) for i in range(20)] == list(range(20))
    np.testing.assert_array_equal(j.read(5, 10), np.stack([rec(i) for i in range(5, 15)]))
    assert len(j.read(18, 100)) == 2 and len(j.read(20, 5)) == 0
    j.close()
    assert len(list((tmp_path / 'inbox').glob('*.seg'))) == 3
    j2 = J.TransitionJournal(tmp_path / 'inbox', N, 3, 2, first_transition=0)
    assert j2.written == 20 and j2.first_transition == 17          # the stored first_transition wins
    j2.append(rec(20))
    np.testing.assert_array_equal(j2.read(0, 100), np.stack([rec(i) for i in range(21)]))
    with pytest.raises(J.JournalError, match='needs'):
        J.TransitionJournal(tmp_path / 'inbox', N + 1, 3, 2)


def test_rotation_keeps_one_segment_open(tmp_path, monkeypatch):
    """The learner appends for days: each full segment's file is closed when the next one opens (a leaked descriptor
    per segment would end in EMFILE), and close() closes the last."""
    monkeypatch.setattr(J, 'SEGMENT_RECORDS', 2)

    def open_segments():   # this journal's segment files open in this process
        targets = (os.path.realpath(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd'))
        return sum(t.startswith(str(tmp_path)) and t.endswith('.seg') for t in targets)

    j = J.TransitionJournal(tmp_path, N, 3, 2)
    for i in range(20):
        j.append(rec(i))
    assert len(list(tmp_path.glob('*.seg'))) == 10 and open_segments() == 1
    j.close()
    assert open_segments() == 0


def test_prune_keeps_unstored_records(tmp_path, monkeypatch):
    monkeypatch.setattr(J, 'SEGMENT_RECORDS', 8)
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    for i in range(30):
        j.append(rec(i))
    assert j.disk_bytes() == 30 * j.record_bytes
    assert j.prune(17) == 2                      # segments 0-7 and 8-15 are below 17; 16-23 holds 17
    assert j.disk_bytes() == 14 * j.record_bytes  # what the learner node reports as journal_mb
    np.testing.assert_array_equal(j.read(16, 20), np.stack([rec(i) for i in range(16, 30)]))
    with pytest.raises(J.JournalError, match='pruned'):
        j.read(3, 2)
    j.close()
    assert J.TransitionJournal(tmp_path, N, 3, 2).written == 30


def test_torn_tail_cut_off_damage_elsewhere_refused(tmp_path):
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    for i in range(5):
        j.append(rec(i))
    j.close()
    seg = next(tmp_path.glob('*.seg'))
    with open(seg, 'ab') as f:
        f.write(rec(5).tobytes()[:50])           # a write cut short by a kill
    j2 = J.TransitionJournal(tmp_path, N, 3, 2)
    assert j2.written == 5 and j2.torn_bytes == 50
    j2.append(rec(5))                            # goes where the torn record was
    np.testing.assert_array_equal(j2.read(0, 10), np.stack([rec(i) for i in range(6)]))
    j2.close()
    data = bytearray(seg.read_bytes())
    data[j2.record_bytes + 3] ^= 0xFF            # record 1 of 5: damage, not a torn write
    seg.write_bytes(bytes(data))
    with pytest.raises(J.JournalError, match='record 1 fails its checksum'):
        J.TransitionJournal(tmp_path, N, 3, 2)


def test_killed_writer_loses_nothing_it_wrote(tmp_path):
    """SIGKILL a process that appends as fast as it can: every record whose append returned (it prints the count
    after each) is in the journal when it is reopened."""
    code = textwrap.dedent(f'''
        import sys, numpy as np
        from swfp_ros.ros.journal import TransitionJournal
        j = TransitionJournal(sys.argv[1], {N}, 3, 2)
        i = 0
        while True:
            j.append(np.full({N}, float(i)))
            i += 1
            print(i, flush=True)
    ''')
    p = subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    acknowledged = 0
    for line in p.stdout:
        acknowledged = int(line)
        if acknowledged >= 5000:
            break
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    assert j.written >= acknowledged
    data = j.read(0, j.written)
    np.testing.assert_array_equal(data[:, 0], np.arange(j.written))


def test_a_last_record_left_garbled_by_a_power_cut_is_cut_off(tmp_path):
    """A power cut can leave the file extended over a record whose bytes never reached the disk: whole-sized, failing
    its checksum. Only as the very last record is that a torn write; it is cut off and the next append replaces it."""
    j = J.TransitionJournal(tmp_path / 'a' / 'b' / 'inbox', N, 3, 2)        # folders created as needed
    for i in range(5):
        j.append(rec(i))
    j.close()
    seg = next((tmp_path / 'a' / 'b' / 'inbox').glob('*.seg'))
    data = bytearray(seg.read_bytes())
    data[-j.record_bytes:] = bytes(j.record_bytes)                           # record 4: zeros
    seg.write_bytes(bytes(data))
    j2 = J.TransitionJournal(tmp_path / 'a' / 'b' / 'inbox', N, 3, 2)
    assert j2.written == 4 and j2.torn_bytes == j.record_bytes
    j2.append(rec(9))
    np.testing.assert_array_equal(j2.read(0, 10), np.stack([rec(i) for i in (0, 1, 2, 3, 9)]))


def test_a_journal_that_lost_or_gained_files_is_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(J, 'SEGMENT_RECORDS', 4)
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    for i in range(12):                          # segments 0, 4, 8
        j.append(rec(i))
    j.close()
    with pytest.raises(ValueError, match='needs 11 values'):
        j.append(np.zeros(N + 1))
    middle = tmp_path / f'{4:012d}.seg'
    kept = middle.read_bytes()
    middle.write_bytes(kept[:-10])               # short, and not the last segment: damage, not a torn write
    with pytest.raises(J.JournalError, match='not a whole number of records'):
        J.TransitionJournal(tmp_path, N, 3, 2)
    middle.unlink()
    with pytest.raises(J.JournalError, match='a segment is missing'):
        J.TransitionJournal(tmp_path, N, 3, 2)
    middle.write_bytes(kept)
    (tmp_path / 'copy.seg').write_bytes(b'')
    with pytest.raises(J.JournalError, match='not a journal segment name'):
        J.TransitionJournal(tmp_path, N, 3, 2)
    (tmp_path / 'copy.seg').unlink()
    (tmp_path / 'journal.json').write_text('{"format": ')
    with pytest.raises(J.JournalError, match='journal.json: unreadable'):
        J.TransitionJournal(tmp_path, N, 3, 2)


def test_reading_checks_every_record_again(tmp_path):
    """A record damaged or cut away on disk after the journal was opened is an error when it is read, never data."""
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    for i in range(4):
        j.append(rec(i))
    seg = next(tmp_path.glob('*.seg'))
    data = bytearray(seg.read_bytes())
    data[2 * j.record_bytes + 5] ^= 0xFF
    seg.write_bytes(bytes(data))
    np.testing.assert_array_equal(j.read(0, 2), np.stack([rec(0), rec(1)]))
    with pytest.raises(J.JournalError, match='record 2 fails its checksum'):
        j.read(1, 3)
    os.truncate(seg, 2 * j.record_bytes)
    with pytest.raises(J.JournalError, match='missing'):
        j.read(0, 4)


def test_prune_at_segment_boundaries_removes_the_files_and_keeps_the_one_being_written(tmp_path, monkeypatch):
    monkeypatch.setattr(J, 'SEGMENT_RECORDS', 8)
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    j.sync()                                     # nothing written yet: nothing to sync, no error
    for i in range(32):                          # segments 0, 8, 16, 24
        j.append(rec(i))
    assert j.prune(16) == 2                      # every record of segments 0 and 8 precedes 16
    assert sorted(p.name for p in tmp_path.glob('*.seg')) == [f'{16:012d}.seg', f'{24:012d}.seg']
    assert j.prune(10 ** 6) == 1                 # all stored: the segment being written stays
    assert [p.name for p in tmp_path.glob('*.seg')] == [f'{24:012d}.seg']
    j.close()
    j.close()                                    # idempotent
    reopened = J.TransitionJournal(tmp_path, N, 3, 2)
    np.testing.assert_array_equal(reopened.read(24, 8), np.stack([rec(i) for i in range(24, 32)]))


def test_a_record_written_in_part_is_not_journaled_and_the_next_takes_its_place(tmp_path):
    """A full disk (here: a file size limit, which the kernel enforces the same way) can write part of a record and
    report the short count. That record must not count as journaled, and the next append must still land on the
    record boundary: a torn record in the middle of a segment would make the journal unreadable for good."""
    limit = 5 * (8 * N + 8) + 40                           # five whole records, then 40 bytes of the sixth
    code = textwrap.dedent(f'''
        import resource, signal, sys, numpy as np
        from swfp_ros.ros.journal import TransitionJournal
        j = TransitionJournal(sys.argv[1], {N}, 3, 2)      # its metadata file written before the limit is set
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # over the limit: an error from write(), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        for i in range(7):
            try:
                print(i, j.append(np.full({N}, float(i))), flush=True)
            except OSError as e:
                print(i, 'refused', j.written, e, flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # space again
        print(7, j.append(np.full({N}, 7.0)), flush=True)
    ''')
    out = subprocess.run([sys.executable, '-c', code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line.split(' ', 3) for line in out.stdout.splitlines()]
    assert [line[:3] for line in lines] == [['0', '0'], ['1', '1'], ['2', '2'], ['3', '3'], ['4', '4'],
                                            ['5', 'refused', '5'], ['6', 'refused', '5'], ['7', '5']], out.stdout
    assert 'written in part' in lines[5][3], lines[5]      # the short write says what happened
    j = J.TransitionJournal(tmp_path, N, 3, 2)
    assert j.written == 6 and j.torn_bytes == 0
    np.testing.assert_array_equal(j.read(0, 10)[:, 0], [0, 1, 2, 3, 4, 7])


def test_a_segment_that_cannot_be_created_refuses_the_record_and_the_next_append_creates_it(tmp_path, monkeypatch):
    """Creating a segment can fail (a full disk; here an os.open that says so). The full segment's descriptor is
    closed by then: the next append must create the segment, not fsync and close that number again (EBADF, as it did,
    or another file's descriptor once the number is reused)."""
    monkeypatch.setattr(J, 'SEGMENT_RECORDS', 4)
    j = J.TransitionJournal(tmp_path / 'inbox', N, 3, 2)
    for i in range(4):
        j.append(rec(i))

    def no_space(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device', str(path))
    real_open = os.open
    monkeypatch.setattr(os, 'open', no_space)
    with pytest.raises(OSError, match='No space left'):
        j.append(rec(4))
    monkeypatch.setattr(os, 'open', real_open)
    other = os.open(tmp_path / 'other', os.O_WRONLY | os.O_CREAT)    # may take the closed segment's number
    try:
        assert j.append(rec(4)) == 4
        os.fstat(other)                                               # still open: not the journal's to close
    finally:
        os.close(other)
    j.close()
    np.testing.assert_array_equal(J.TransitionJournal(tmp_path / 'inbox', N, 3, 2).read(0, 10),
                                  np.stack([rec(i) for i in range(5)]))
