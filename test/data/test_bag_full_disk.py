"""A recording that meets a full disk keeps what reached it and says what did not.

The disk fills for real: each recording runs in a child process under a file size limit (RLIMIT_FSIZE), which the
kernel enforces on writes the way a full disk refuses them; the limit is lifted later, as when space is freed. The bag
is then read back with the rosbags reader.
"""
import json
import subprocess
import sys
import textwrap

from rosbags.highlevel import AnyReader

from swfp_ros.data.bag_writer import standard_typestore

RECORD = textwrap.dedent('''
    import json, resource, sys
    import numpy as np
    from swfp_ros.data.bag_writer import BagRecorder, BagWriteError, standard_typestore
    path, storage, period, limit, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    T = standard_typestore().types
    rec = BagRecorder(path, storage=storage, commit_period_s=period).open()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    failed, full = [], True
    for i in range(n):
        msg = T['std_msgs/msg/Float64MultiArray'](layout=T['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0),
                                                  data=np.full(16, float(i)))
        try:
            rec.write('/x', 'std_msgs/msg/Float64MultiArray', msg, 1_000_000 + i)
        except BagWriteError as e:
            failed.append(i)
            message = str(e)
        except OSError:
            failed.append(i)
            message = None
        if full and failed and i >= failed[0] + 2_000:      # space again, a while after the first failure
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            full = False
    rec.close()
    print(json.dumps({'failed': failed, 'message': message if failed else None, 'count': rec.message_count,
                      'lost': rec.lost_messages}))
''')


def record(tmp_path, storage: str, commit_period_s: float, limit_bytes: int, n: int) -> tuple[dict, list[int]]:
    """(what the recording process reported, the message indices the bag holds)."""
    out = subprocess.run([sys.executable, '-c', RECORD, str(tmp_path / 'bag'), storage, str(commit_period_s),
                          str(limit_bytes), str(n)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report['failed'], 'the disk never filled: the test needs a smaller limit'
    with AnyReader([tmp_path / 'bag'], default_typestore=standard_typestore()) as reader:
        held = [int(reader.deserialize(raw, c.msgtype).data[0]) for c, _, raw in reader.messages()]
    return report, held


def test_sqlite3_a_commit_after_every_message_loses_only_the_messages_refused(tmp_path):
    report, held = record(tmp_path, 'sqlite3', 0.0, 200_000, 4_000)
    failed = set(report['failed'])
    assert held == [i for i in range(4_000) if i not in failed]
    assert report['lost'] == len(failed) and report['count'] == 4_000
    assert 'the 1 message(s) written since the last commit are lost' in report['message'], report['message']


def test_sqlite3_a_failure_rolls_back_to_the_last_commit_and_the_bag_goes_on(tmp_path):
    """Committed once, when the topic was added: SQLite writes its cache out once it is full, that write fails, and
    every message before it is rolled back (before commits were made, the topic went with them: a bag of 0 messages)."""
    report, held = record(tmp_path, 'sqlite3', 1e9, 200_000, 30_000)
    first = report['failed'][0]
    assert held == list(range(first + 1, 30_000)), held[:3]
    assert report['lost'] == first + 1 and report['count'] == 30_000     # the refused one included


def test_mcap_keeps_a_chunk_that_failed_to_reach_the_disk_and_writes_it_later(tmp_path):
    report, held = record(tmp_path, 'mcap', 1.0, 200_000, 10_000)
    assert held == list(range(10_000)) and report['lost'] == 0
