"""Checkpoints: identical actions after a round trip, clear errors on damage, learner resume continues counters,
pickles refused unread, any state tree stored exactly."""
import json
import os
import pickle
import struct

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml

from helpers import identity_normalizer, small_flow
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.checkpoint import (CheckpointError, _digest, checkpoint_info, decode_tree, encode_tree,
                                      format_checkpoint_info, load_learner, load_policy, read_checkpoint, save_learner,
                                      save_policy, write_checkpoint)
from swfp_ros.algo.config import BlockConfig, CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.algo.learner import Learner
from swfp_ros.algo.normalize import ObsNormalizer
from swfp_ros.algo.runtime import PolicyRuntime


def test_policy_round_trip_identical_actions(tmp_path):
    norm = ObsNormalizer(3).fit(np.random.default_rng(0).normal(2.0, 3.0, size=(100, 3)))
    casc = Cascade(small_flow())
    path = str(tmp_path / 'bc.pt')
    save_policy(path, casc, norm)
    rt = load_policy(path, device='cpu')
    obs = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(rt.act(obs, deterministic=True),
                                  PolicyRuntime(casc, norm, device='cpu').act(obs, deterministic=True))
    x0 = torch.randn(16, 2)
    with torch.no_grad():
        torch.testing.assert_close(rt.cascade.sample(norm(torch.as_tensor(obs)), x0),
                                   casc.sample(norm(torch.as_tensor(obs)), x0), rtol=0, atol=0)


def _contents(path) -> tuple[dict, dict]:
    """(safetensors metadata, tensors) of a checkpoint file, read raw (no checks)."""
    from safetensors import safe_open
    with safe_open(str(path), 'pt') as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def _rewrite(path, change_tensor=lambda t: t, **changes):
    """Re-save a checkpoint with its tensors passed through ``change_tensor`` and some metadata entries changed
    (None removes one): a foreign, future or tampered file."""
    meta, tensors = _contents(path)
    meta = {k: v for k, v in {**meta, **changes}.items() if v is not None}
    safetensors.torch.save_file({k: change_tensor(t) for k, t in tensors.items()}, str(path), metadata=meta)


DAMAGE = {'truncate': 'truncated or corrupt', 'garbage': 'not an SWFP checkpoint', 'missing': 'no such file',
          'bitflip': 'damaged', 'foreign': 'not an SWFP checkpoint', 'future': 'format version 3',
          'directory': 'is a directory', 'under_a_file': r'cannot read it \(Not a directory\)',
          'edited_tree': 'damaged', 'edited_header': 'damaged', 'reshaped': 'damaged',
          'npz': r'a zip archive \(a .npz dataset\?\), not an SWFP checkpoint'}
# what inspecting (it reads the metadata only) cannot see
METADATA_ONLY_INTACT = ('bitflip', 'edited_tree', 'edited_header', 'reshaped')


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_checkpoint_names_the_file_and_the_problem(tmp_path, damage):
    path = tmp_path / 'policy.pt'
    save_policy(str(path), Cascade(small_flow()), identity_normalizer(3))
    data = path.read_bytes()
    if damage == 'truncate':
        path.write_bytes(data[:len(data) // 2])
    elif damage == 'garbage':
        path.write_bytes(b'not a checkpoint at all')
    elif damage == 'missing':
        path.unlink()
    elif damage == 'bitflip':   # one byte of the last tensor's data: the file still parses as safetensors
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:])
    elif damage == 'foreign':   # someone else's safetensors model
        _rewrite(path, format=None)
    elif damage == 'future':
        _rewrite(path, format_version='3')
    elif damage == 'reshaped':   # one tensor's bytes under another shape, the metadata as it was
        _rewrite(path, lambda t: t.reshape(-1) if t.dim() > 1 else t)
    elif damage.startswith('edited_'):   # the tree or header text changed, its sha256 left as it was
        key = damage.removeprefix('edited_')
        _rewrite(path, **{key: json.dumps(json.loads(_contents(path)[0][key]), indent=1)})
    elif damage == 'npz':            # a demonstration dataset given where a checkpoint belongs
        with open(path, 'wb') as f:
            np.savez(f, obs=np.zeros((2, 3)))
    elif damage == 'under_a_file':   # a path through a file: an OSError that is neither of the two above
        path = path / 'policy.pt'
    else:
        path.unlink()
        path.mkdir()
    # inspecting reads the metadata only, which a flipped tensor byte leaves intact; loading checks the digest
    for load in (load_policy, checkpoint_info) if damage not in METADATA_ONLY_INTACT else (load_policy,):
        with pytest.raises(CheckpointError, match=f'policy.pt.*{DAMAGE[damage]}'):
            load(str(path))


@pytest.mark.parametrize('key, edit, message', [
    ('tree', lambda text: '{not json', r'corrupt metadata \(tree is not JSON'),
    ('tree', lambda text: '{"__float__": "x"}', "malformed payload: bad float 'x'"),
    ('header', lambda text: text.replace('"kind": "policy"', '"kind": "robot"'), "unknown kind 'robot'"),
])
def test_malformed_metadata_is_refused_even_under_a_matching_digest(tmp_path, key, edit, message):
    """The sha256 proves the file is intact, not that its writer was careful: metadata that is not JSON, a payload
    tree that does not decode, a kind this code does not know -- each under a digest computed over it -- are
    refused for what they are."""
    from swfp_ros.algo import checkpoint
    path = tmp_path / 'policy.pt'
    save_policy(str(path), Cascade(small_flow()), identity_normalizer(3))
    meta, tensors = _contents(path)
    meta[key] = edit(meta[key])
    _rewrite(path, **{key: meta[key], 'sha256': checkpoint._digest(meta['header'], meta['tree'], tensors)})
    with pytest.raises(CheckpointError, match=f'policy.pt: {message}'):
        load_policy(str(path))


def test_tensors_that_cannot_be_read_after_good_metadata_are_refused_in_one_sentence(tmp_path, monkeypatch):
    path = tmp_path / 'policy.pt'
    save_policy(str(path), Cascade(small_flow()), identity_normalizer(3))

    def unreadable(*args, **kwargs):
        raise OSError('short read')
    monkeypatch.setattr(safetensors.torch, 'load_file', unreadable)
    with pytest.raises(CheckpointError, match=r'policy.pt: unreadable \(truncated or corrupt\?\): short read'):
        load_policy(str(path))


def _replace_while_reading(monkeypatch, path, replacements: int):
    """Make the first ``replacements`` tensor reads find ``path`` atomically replaced (by a checkpoint of version 1,
    2, ...) after its metadata was read: what a reader sees while a learner keeps checkpointing."""
    load_file, done = safetensors.torch.load_file, []

    def load_after_a_writer(*args, **kwargs):
        if len(done) < replacements:
            done.append(True)
            save_policy(str(path), Cascade(small_flow(seed=len(done))), identity_normalizer(3), version=len(done))
        return load_file(*args, **kwargs)
    monkeypatch.setattr(safetensors.torch, 'load_file', load_after_a_writer)


def test_a_checkpoint_replaced_while_it_is_read_is_read_again_not_called_damaged(tmp_path, monkeypatch):
    path = tmp_path / 'policy.pt'
    save_policy(str(path), Cascade(small_flow()), identity_normalizer(3), version=0)
    _replace_while_reading(monkeypatch, path, replacements=1)
    assert read_checkpoint(str(path))[1]['version'] == 1


def test_a_checkpoint_replaced_on_every_read_is_refused_in_one_sentence(tmp_path, monkeypatch):
    path = tmp_path / 'policy.pt'
    save_policy(str(path), Cascade(small_flow()), identity_normalizer(3), version=0)
    _replace_while_reading(monkeypatch, path, replacements=100)
    with pytest.raises(CheckpointError, match=r'policy.pt: replaced 3 times while being read'):
        read_checkpoint(str(path))


class _Evil:
    """A pickle payload that, when unpickled, runs a shell command creating ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('writer', ['torch.save', 'pickle'])
def test_malicious_pickle_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, writer):
    marker = tmp_path / 'payload_ran'
    evil = tmp_path / 'evil.pt'
    payload = {'format': 'swfp-checkpoint', 'format_version': 1, 'kind': 'policy', 'x': _Evil(marker)}
    if writer == 'torch.save':
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=4))
    with open(evil, 'rb') as f:      # the payload is live: unpickling the file does run it
        pickle.load(f) if writer == 'pickle' else torch.load(f, weights_only=False)
    assert marker.exists()
    marker.unlink()
    for load in (load_policy, load_learner, checkpoint_info):
        with pytest.raises(CheckpointError, match='evil.pt: a pickle .* refused unread'):
            load(str(evil))
    assert not marker.exists()


def test_a_zip_archive_that_cannot_be_listed_is_refused_as_a_possible_pickle(tmp_path):
    """A torch.save file is a zip; one whose member list cannot be read is not given the benefit of the doubt."""
    damaged = tmp_path / 'damaged.pt'
    damaged.write_bytes(b'PK\x03\x04' + b'\xa5' * 200)
    with pytest.raises(CheckpointError, match='damaged.pt: a pickle .* refused unread'):
        load_policy(str(damaged))


def test_any_state_tree_round_trips_exactly(tmp_path):
    """What a learner's state holds: nested dicts with int keys, tuples, numpy arrays of every dtype used, numpy
    scalars, PCG64 state (128-bit ints), torch generator bytes, non-finite floats, empty and shared tensors."""
    base = torch.arange(12.0)
    tree = {'rng': {'numpy': np.random.default_rng(7).bit_generator.state, 'torch': torch.Generator().get_state(),
                    'legacy': np.random.RandomState(3).get_state()},
            'replay': {np.dtype(t).name: np.ones((4, 2), t)
                       for t in (np.float32, np.bool_, np.int32, np.uint32, np.float64)},
            'open': {3: [{'reward': np.float32(0.25), 'terminated': np.bool_(True), 'obs': np.zeros(0, np.float32),
                          'n_steps': np.array(5, np.int32)}]},   # a 0-d array stays 0-d
            'floats': [float('nan'), float('inf'), -0.0, 1e-300], 'views': [base[:4], base[4:], base],
            'same_tensor_twice': [base, base], 'one_element_stride_0': torch.ones(()).expand(1),
            'transposed': torch.arange(6.0).reshape(2, 3).t(),
            'needs_grad': torch.ones(3, requires_grad=True), 'a/b': torch.zeros(1), 'a': {'b': torch.ones(1)},
            'tricky_keys': {'__tensor__': 'not a tensor', None: 1, 2.5: 'x'}, 'mixed_keys': {'a': 1, 2: 'b'},
            'tuple': (1, ('a', None)),
            'optimizer': torch.optim.Adam([torch.nn.Parameter(torch.ones(2))]).state_dict()}
    write_checkpoint(str(tmp_path / 'state.pt'), 'learner', tree)
    header, back = read_checkpoint(str(tmp_path / 'state.pt'))

    def same(a, b):
        assert type(a) is type(b), (a, b)
        if isinstance(a, dict):
            assert list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        elif isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        elif isinstance(a, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b)
        elif isinstance(a, float) and np.isnan(a):
            assert np.isnan(b)
        else:
            assert a == b and str(a) == str(b)
        return True
    same(tree, back)
    assert back['rng']['numpy']['state']['state'] > 2 ** 64          # the big int survived
    rng = np.random.default_rng()
    rng.bit_generator.state = back['rng']['numpy']
    assert rng.random() == np.random.default_rng(7).random()
    with pytest.raises(TypeError, match='open/3/0/obj'):
        encode_tree({'open': {3: [{'obj': object()}]}})


def test_the_format_of_given_content_never_changes():
    """Every checkpoint already written holds its tree in this encoding and carries this digest of its content: a
    change to either would make them unreadable, or all "damaged". Pinned on content that takes each path (an empty
    tensor, a one-element tensor of stride 0, a transposed one, each marker); before changing either, raise
    FORMAT_VERSION and keep reading this one."""
    tensors = {'b': torch.arange(6, dtype=torch.float64).reshape(2, 3).t(), 'a': torch.zeros(0),
               'c': torch.ones(()).expand(1), 'd': torch.tensor([1, -2], dtype=torch.int64)}
    assert _digest('{"kind": "policy"}', '{"policy": 1}', tensors) == \
        'f3d0384420da8a346f7456b4ddd2379c2f80f4e3218081e10f7af4b8c3a71adf'
    tree, named = encode_tree({'x': (1, np.float32(0.5)), 'n': float('nan'), 'k': {2: 'b'}, 't': torch.ones(1),
                               'a': np.zeros(2, np.int32)})
    assert json.dumps(tree) == ('{"x": {"__tuple__": [1, {"__numpy__": "<f4", "value": 0.5}]}, "n": {"__float__": '
                                '"nan"}, "k": {"__dict__": [[2, "b"]]}, "t": {"__tensor__": "t", "numpy": false}, '
                                '"a": {"__tensor__": "a", "numpy": true}}')
    assert list(named) == ['t', 'a']


@pytest.mark.parametrize('tree, message', [
    ({'labels': np.array(['a', 'b'])}, 'cannot store labels: numpy dtype <U1'),
    ({'label': np.str_('a')}, 'cannot store label: numpy dtype <U1'),
    ({'pairs': {(1, 2): 3}}, r'cannot store pairs: dict key \(1, 2\)'),
    ({'seen': {1, 2}}, 'cannot store seen: set is not a tensor, array, container or plain value'),
])
def test_what_a_checkpoint_cannot_hold_is_refused_by_its_path(tree, message):
    with pytest.raises(TypeError, match=message):
        encode_tree(tree)


@pytest.mark.parametrize('tree, message', [
    ({'__dict__': [[1]]}, 'malformed key/value pairs'),
    ({'__dict__': [[{'a': 1}, 2]]}, 'malformed key/value pairs'),
    ({'__dict__': ['ab']}, 'malformed key/value pairs'),
    ({'__float__': '1e5'}, "bad float '1e5'"),
    ({'__tuple__': 'abc'}, 'expected a list, got str'),
])
def test_a_malformed_tree_is_refused_for_what_is_wrong(tree, message):
    with pytest.raises(ValueError, match=message):
        decode_tree(tree, {})


def test_the_extra_header_comes_back_as_it_was_written(tmp_path):
    extra = {'labels': ('ee_x', 'goal_x'), 'limit': float('inf'), 'by_index': {0: 'a'}}
    write_checkpoint(str(tmp_path / 'x.pt'), 'policy', {'w': torch.ones(2)}, extra=extra)
    header, _ = read_checkpoint(str(tmp_path / 'x.pt'))
    assert header['extra'] == extra and isinstance(header['extra']['labels'], tuple)


def test_the_extra_header_takes_plain_values_only(tmp_path):
    with pytest.raises(TypeError, match=r"extra holds arrays \(\['labels'\]\); it is for plain values only"):
        write_checkpoint(str(tmp_path / 'x.pt'), 'policy', {}, extra={'labels': np.zeros(2)})
    assert not list(tmp_path.iterdir())


def test_a_tree_referring_to_a_tensor_the_file_does_not_hold_is_refused():
    """The digest proves the file is intact, not that whoever wrote it was careful: a tree that refers to a tensor it
    does not carry is malformed, never read as None."""
    with pytest.raises(ValueError, match="reference to a tensor 'missing' the file does not hold"):
        decode_tree({'w': {'__tensor__': 'missing', 'numpy': False}}, {})


def test_checkpoint_info_reports_task_labels_provenance_and_version(tmp_path):
    path = str(tmp_path / 'bc.pt')
    extra = {'task': 'panda_reach', 'obs_labels': ['a', 'b', 'c'], 'action_labels': ['j1', 'j2'],
             'control_rate_hz': 20.0, 'provenance': [{'source': 'rosbag2', 'bag': '/bags/x', 'episodes': 3,
                                                      'steps': 90}, {'source': 'sim'}, 'recorded by hand'],
             'bc': {'steps': 10, 'final_loss': 0.5}}
    save_policy(path, Cascade(small_flow()), identity_normalizer(3), version=4, extra=extra)
    info = checkpoint_info(path)
    assert (info.kind, info.format_version, info.task, info.obs_labels, info.action_labels) == \
        ('policy', 2, 'panda_reach', ['a', 'b', 'c'], ['j1', 'j2'])
    assert (info.obs_dim, info.act_dim, info.policy_version, info.blocks) == (3, 2, 4, 0)
    assert info.provenance == extra['provenance'] and info.bc == extra['bc'] and info.flow['hidden'] == 32
    lines = format_checkpoint_info(info).splitlines()    # what `swfp inspect` prints
    for line in ('Task:           panda_reach', 'Observations:   3: a, b, c', 'Actions:        2: j1, j2',
                 'Control rate:   20.0 Hz', 'BC:             steps 10, final_loss 0.5',
                 'Provenance:     /bags/x (3 episodes, 90 steps)', 'Provenance:     sim',
                 'Provenance:     recorded by hand'):
        assert line in lines, (line, lines)
    assert lines[6].startswith('Policy:         version 4, 0 refinement block(s); flow: ')
    save_policy(path, Cascade(small_flow()), identity_normalizer(3))
    lines = format_checkpoint_info(checkpoint_info(path)).splitlines()
    for line in ('Task:           (not recorded)', 'Observations:   3: (not recorded)',
                 'Control rate:   (not recorded) Hz'):
        assert line in lines, (line, lines)
    assert not any(line.startswith(('BC:', 'Config:', 'Counters:', 'Provenance:')) for line in lines)
    with open(path, 'rb') as f:     # a standard safetensors file: JSON header first, nothing executable
        (n,) = struct.unpack('<Q', f.read(8))
        assert json.loads(f.read(n))['__metadata__']['format'] == 'swfp-checkpoint'


def test_wrong_kind_rejected(tmp_path):
    path = str(tmp_path / 'policy.pt')
    save_policy(path, Cascade(small_flow()), identity_normalizer(3))
    with pytest.raises(CheckpointError, match='not a learner'):
        load_learner(path)


def learner():
    cfg = SwfpConfig(flow=FlowConfig(hidden=32, layers=2), critic=CriticConfig(hidden=32, layers=2, batch_size=32),
                     block=BlockConfig(hidden=16, train_steps=20, pool_size=256), warmup_steps=64,
                     steps_per_block=64, utd=0.5, replay_capacity=1000)
    return Learner(small_flow(), identity_normalizer(3), cfg, device='cpu')


def feed(lr, rng, n=32):
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    lr.add_transitions(obs, act, -np.abs(act).sum(1), obs, np.ones(n, bool))
    return lr.update()


def test_learner_resume_continues(tmp_path):
    a, rng = learner(), np.random.default_rng(0)
    for _ in range(6):
        feed(a, rng)
    assert a.counters.blocks_trained >= 1 and a.counters.critic_updates > 0  # there is state to resume
    path = str(tmp_path / 'learner.pt')
    torch_stream = torch.get_rng_state()              # new blocks are initialised from it: resumed as well
    save_learner(path, a, extra={'task': 'panda_reach'})
    saved_version = a.counters.version
    info = checkpoint_info(path)
    assert info.kind == 'learner' and info.task == 'panda_reach' and info.counters == vars(a.counters)
    assert info.config == a.cfg.to_dict() and info.replay_size == len(a.replay)
    lines = format_checkpoint_info(info).splitlines()
    assert f'Config:         {json.dumps(a.cfg.to_dict())}' in lines
    assert any(line.startswith('Counters:       ') and line.endswith(f'; replay {len(a.replay)} transitions')
               for line in lines), lines
    torch.manual_seed(99)
    b = load_learner(path)
    assert torch.equal(torch.get_rng_state(), torch_stream)
    assert b.counters == a.counters and len(b.replay) == len(a.replay) and b.log_lambda == a.log_lambda
    assert [r.to_dict() for r in b.reports] == [r.to_dict() for r in a.reports]
    assert len(b.policy.blocks) == len(a.policy.blocks)
    s, x0 = torch.randn(8, 3), torch.randn(8, 2)
    with torch.no_grad():
        torch.testing.assert_close(b.policy.sample(s, x0), a.policy.sample(s, x0), rtol=0, atol=0)
        torch.testing.assert_close(b.critic.q_min(s, x0.clamp(-1, 1)), a.critic.q_min(s, x0.clamp(-1, 1)))
    # same RNG streams: the next update is the same on both
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    feed(a, rng_a), feed(b, rng_b)
    assert b.counters == a.counters and b.counters.env_steps == 7 * 32
    torch.testing.assert_close(b.critic.q_min(s, x0.clamp(-1, 1)), a.critic.q_min(s, x0.clamp(-1, 1)))
    rt = load_policy(path, device='cpu')  # a learner checkpoint also serves actors
    assert rt.version == saved_version


def test_loading_a_learner_leaves_the_callers_global_numpy_rng_alone(tmp_path):
    """The learner draws from generators of its own, which its checkpoint carries; loading one reseeds nothing of
    the process it is loaded into."""
    path = str(tmp_path / 'learner.pt')
    save_learner(path, learner())
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    load_learner(path)
    assert np.random.random() == expected


def test_a_learner_checkpoint_that_does_not_fit_this_code_is_refused(tmp_path):
    path = str(tmp_path / 'learner.pt')
    save_learner(path, learner())
    header, d = read_checkpoint(path)
    del d['learner']['critic']
    write_checkpoint(path, 'learner', d, header['extra'])
    with pytest.raises(CheckpointError, match="learner.pt: does not match this code/config: KeyError: 'critic'"):
        load_learner(path)


def test_a_policy_with_non_finite_weights_is_refused_at_load(tmp_path):
    """A diverged run can save NaN weights with a perfectly good digest: loading checks the weights themselves."""
    path = str(tmp_path / 'policy.pt')
    cascade = Cascade(small_flow())
    with torch.no_grad():
        next(cascade.parameters()).view(-1)[0] = float('nan')
    save_policy(path, cascade, identity_normalizer(3))
    with pytest.raises(CheckpointError, match='policy.pt: bad policy data: .*non-finite values'):
        load_policy(path)


def test_a_payload_that_is_not_a_policy_is_refused_by_inspection(tmp_path):
    path = str(tmp_path / 'policy.pt')
    write_checkpoint(path, 'policy', {'policy': {}, 'version': 0})
    with pytest.raises(CheckpointError, match=r"policy.pt: malformed payload \(KeyError: 'obs_dim'\)"):
        checkpoint_info(path)


def test_learner_state_resumes_on_the_other_device_type():
    """A generator's state is device-specific (CPU 5,056 bytes, CUDA 16): a state written on a GPU machine must resume
    on a CPU one (and the reverse: the same mapping) instead of failing in Generator.set_state."""
    import struct
    a, rng = learner(), np.random.default_rng(0)
    for _ in range(3):
        feed(a, rng)
    d = a.state_dict()
    assert d['rng']['torch']['device'] == 'cpu'
    # exactly what a CUDA generator's get_state() holds: its seed and its offset
    cuda_state = torch.tensor(list(struct.pack('<QQ', 1234, 96)), dtype=torch.uint8)
    written_on_gpu = {**d, 'rng': {**d['rng'], 'torch': {'device': 'cuda', 'state': cuda_state}}}
    b, c = Learner.from_state_dict(written_on_gpu), Learner.from_state_dict(written_on_gpu)
    assert b.counters == a.counters and len(b.replay) == len(a.replay)
    draws = [torch.randn(4, generator=x.gen) for x in (a, b, c)]
    torch.testing.assert_close(draws[1], draws[2])             # re-seeded deterministically from the saved state
    assert not torch.equal(draws[0], draws[1])
    # ... not restarted at the run's seed (which would repeat the noise it began with); another state, another stream
    assert not torch.equal(draws[1], torch.randn(4, generator=torch.Generator().manual_seed(a.cfg.seed)))
    later = torch.tensor(list(struct.pack('<QQ', 1234, 100)), dtype=torch.uint8)
    other = Learner.from_state_dict({**d, 'rng': {**d['rng'], 'torch': {'device': 'cuda', 'state': later}}})
    assert not torch.equal(torch.randn(4, generator=other.gen), draws[1])
    same_device = Learner.from_state_dict(d)                   # same device type: the exact stream continues
    torch.testing.assert_close(torch.randn(4, generator=same_device.gen), draws[0])
    feed(b, np.random.default_rng(1))                          # and it trains on
    assert b.counters.critic_updates > a.counters.critic_updates


def test_config_round_trip_through_yaml():
    cfg = SwfpConfig(block=BlockConfig(delta=0.2, alpha=0.01), warmup_steps=123)
    back = SwfpConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match='unknown'):
        SwfpConfig.from_dict({**cfg.to_dict(), 'typo_key': 1})
    with pytest.raises(ValueError, match='q_scale'):
        BlockConfig(q_scale='mean_abs')
