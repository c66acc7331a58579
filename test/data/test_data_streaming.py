"""A large bag streams: peak traced memory far below the bag's size, and the reader is consumed lazily."""
import importlib
import tracemalloc

import numpy as np
import pytest

from swfp_ros.data import BagRecorder, ingest
from swfp_ros.data import reader as reader_mod
from swfp_ros.data.bag_writer import standard_typestore

N_JOINTS = 90          # wide joint states (~2 kB each) so the bag is big while the dataset stays small
N_MSGS = 8_000         # joint states at 1 kHz; actions at 20 Hz


def big_bag(path, storage):
    ts = standard_typestore()
    T = ts.types
    names = [f'j{i}' for i in range(N_JOINTS)]
    Time, Header = T['builtin_interfaces/msg/Time'], T['std_msgs/msg/Header']
    JS, A, L = T['sensor_msgs/msg/JointState'], T['std_msgs/msg/Float64MultiArray'], T['std_msgs/msg/MultiArrayLayout']
    rng = np.random.default_rng(0)
    with BagRecorder(path, storage=storage) as rec:
        for k in range(N_MSGS):
            t = 10**15 + k * 1_000_000
            pos = np.full(N_JOINTS, float(k))
            msg = JS(header=Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id=''), name=names,
                     position=pos, velocity=rng.normal(size=N_JOINTS), effort=rng.normal(size=N_JOINTS))
            rec.write('/joint_states', 'sensor_msgs/msg/JointState', ts.serialize_cdr(msg, JS.__msgtype__), t)
            if k % 50 == 0:
                rec.write('/cmd', 'std_msgs/msg/Float64MultiArray',
                          A(layout=L(dim=[], data_offset=0), data=np.array([0.0])), t)
    return path


SPEC = {'control_rate_hz': 20.0, 'max_staleness': 0.01, 'episodes': {'per_bag': True},
        'observation': [{'source': 'joint_state', 'topic': '/joint_states', 'joints': ['j3', 'j0']}],
        'action': {'source': 'array', 'topic': '/cmd', 'indices': [0]}}


def _bag_bytes(path):
    return sum(f.stat().st_size for f in path.iterdir())


def test_peak_memory_far_below_bag_size(tmp_path):
    bag = big_bag(tmp_path / 'big', 'mcap')
    size = _bag_bytes(bag)
    assert size > 15e6
    tracemalloc.start()
    try:
        ds = ingest([bag], SPEC, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ds[0]) == N_MSGS // 50
    np.testing.assert_array_equal(ds[0].obs[:, 0], np.arange(0, N_MSGS, 50))   # obs as of each action
    assert peak < size / 4, f'peak traced memory {peak / 1e6:.1f} MB vs bag {size / 1e6:.1f} MB'


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_reader_is_consumed_lazily(tmp_path, monkeypatch, storage):
    """When the first step is made, only the messages up to it have been pulled from the storage."""
    bag = big_bag(tmp_path / 'big', storage)
    pulled = []
    orig = reader_mod._guarded

    def counting(path, gen):
        for item in orig(path, gen):
            pulled.append(item[2])
            yield item
    monkeypatch.setattr(reader_mod, '_guarded', counting)
    ingest_mod = importlib.import_module('swfp_ros.data.ingest')
    seen_at_first_step = []
    orig_fin = ingest_mod._BagIngest._finalize

    def fin(self, *a):
        if not seen_at_first_step:
            seen_at_first_step.append(len(pulled))
        return orig_fin(self, *a)
    monkeypatch.setattr(ingest_mod._BagIngest, '_finalize', fin)
    ds = ingest([bag], SPEC, progress=False)
    assert len(pulled) == N_MSGS + N_MSGS // 50
    assert seen_at_first_step[0] < 10           # the first action is finalised right after it, not after the bag
    assert len(ds[0]) == N_MSGS // 50
