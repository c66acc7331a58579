"""BlockUpdate wire format and PolicyRuntime's update discipline."""
import hashlib
import json
import struct
import threading

import numpy as np
import pytest
import torch

from helpers import identity_normalizer, small_flow, trained_block
from swfp_ros.algo.blocks import Cascade, RefinementBlock
from swfp_ros.algo.runtime import PolicyRuntime
from swfp_ros.algo.serialize import MAGIC, BlockUpdate, UpdateRejected


def runtime():
    return PolicyRuntime(Cascade(small_flow()), identity_normalizer(3), version=0, device='cpu', seed=0)


def block_update(version, block, parent='0' * 64, w2_bound=0.5):
    return BlockUpdate.from_block(version, block, parent, w2_bound)


def test_round_trip_block_and_base():
    b = trained_block()
    upd = block_update(1, b)
    back = BlockUpdate.from_bytes(upd.to_bytes(), obs_dim=3, act_dim=2)
    s, a = torch.randn(5, 3), torch.randn(5, 2)
    torch.testing.assert_close(back.build_block()(s, a), b(s, a))
    casc = Cascade(small_flow(), [b])
    snap = BlockUpdate.from_bytes(BlockUpdate.from_policy(7, casc, identity_normalizer(3)).to_bytes())
    casc2, _ = snap.build_policy()
    x0 = torch.randn(5, 2)
    torch.testing.assert_close(casc2.sample(s, x0), casc.sample(s, x0))
    assert (snap.version, snap.kind) == (7, 'base')


@pytest.mark.parametrize('damage,message', [('flip', 'checksum mismatch'), ('truncate', 'checksum mismatch'),
                                            ('magic', 'not an SWFP update of format'), ('empty', 'truncated: 0 bytes'),
                                            ('header only', 'truncated: 20 bytes')])
def test_damaged_bytes_rejected_with_what_is_wrong(damage, message):
    raw = bytearray(block_update(1, trained_block()).to_bytes())
    if damage == 'flip':
        raw[len(raw) // 2] ^= 0x01
    elif damage == 'truncate':
        raw = raw[:-100]
    elif damage == 'magic':
        raw[0:4] = b'XXXX'
    elif damage == 'empty':
        raw = b''
    else:
        raw = raw[:20]
    with pytest.raises(UpdateRejected, match=message) as e:
        BlockUpdate.from_bytes(bytes(raw))
    assert e.value.reason == 'corrupt'


def test_wrong_dims_and_nonfinite_rejected():
    upd = block_update(1, trained_block(obs_dim=4))
    with pytest.raises(UpdateRejected, match='obs 4'):
        BlockUpdate.from_bytes(upd.to_bytes(), obs_dim=3, act_dim=2)
    bad = trained_block()
    with torch.no_grad():
        bad.u[0].weight[0, 0] = float('nan')
    with pytest.raises(UpdateRejected, match='non-finite'):
        BlockUpdate.from_bytes(block_update(1, bad).to_bytes())
    lying = block_update(1, trained_block())
    lying.meta['hidden'] = 32  # header says one architecture, tensors are another
    with pytest.raises(UpdateRejected, match='architecture'):
        BlockUpdate.from_bytes(lying.to_bytes())


def test_runtime_applies_in_order_rejects_out_of_order_and_keeps_acting():
    rt = runtime()
    obs = np.random.default_rng(0).normal(size=3)
    a0 = rt.act(obs, deterministic=True)
    assert a0.shape == (2,) and np.all(np.abs(a0) <= 1)
    with pytest.raises(UpdateRejected, match='out of order'):
        rt.apply_update(block_update(2, trained_block(), rt.digest).to_bytes())
    assert rt.version == 0
    np.testing.assert_array_equal(rt.act(obs, deterministic=True), a0)  # rejected: unchanged
    assert rt.apply_update(block_update(1, trained_block(), rt.digest).to_bytes()) == 1
    a1 = rt.act(obs, deterministic=True)
    assert not np.allclose(a1, a0)
    with pytest.raises(UpdateRejected):
        rt.apply_update(block_update(1, trained_block(seed=2), rt.digest).to_bytes())  # replay of v1
    with pytest.raises(UpdateRejected):
        rt.apply_update(b'garbage')
    np.testing.assert_array_equal(rt.act(obs, deterministic=True), a1)
    # a base (compaction/snapshot) replaces everything and may skip versions
    snap = BlockUpdate.from_policy(5, Cascade(small_flow(seed=3)), identity_normalizer(3))
    assert rt.apply_update(snap.to_bytes()) == 5 and len(rt.cascade.blocks) == 0
    with pytest.raises(UpdateRejected, match='older'):
        rt.apply_update(BlockUpdate.from_policy(4, Cascade(small_flow()), identity_normalizer(3)))
    assert rt.act(np.zeros((6, 3))).shape == (6, 2)
    with pytest.raises(ValueError):
        rt.act(np.zeros(4))


def test_swap_between_inferences_under_threads():
    rt = runtime()
    errors, stop = [], threading.Event()

    def actor():
        while not stop.is_set():
            try:
                a = rt.act(np.zeros((4, 3)))
                assert a.shape == (4, 2) and np.isfinite(a).all()
            except Exception as e:  # noqa: BLE001 - surfaced below
                errors.append(e)

    t = threading.Thread(target=actor)
    t.start()
    for v in range(1, 21):
        rt.apply_update(block_update(v, trained_block(seed=v), rt.digest).to_bytes())
    stop.set()
    t.join()
    assert not errors and rt.version == 20 and len(rt.cascade.blocks) == 20


def test_a_digest_names_every_part_of_the_policy():
    """The digest a block's parent check rests on changes with the parent, the block's architecture, any one of its
    weights (to the last bit), its tensors' shapes and a base's settings; and a snapshot of a cascade has the digest its
    blocks chain to."""
    b = trained_block()
    upd = block_update(1, b)
    d = upd.digest()
    assert upd.digest(parent='1' * 64) != d
    assert BlockUpdate.from_block(1, RefinementBlock(3, 2, 16, 3, tau=0.1), '0' * 64, 0.5).digest() != \
        BlockUpdate.from_block(1, RefinementBlock(3, 2, 16, 2, tau=0.1), '0' * 64, 0.5).digest()
    for name, t in upd.tensors.items():
        nudged = t.clone()
        nudged.view(-1)[0] = torch.nextafter(nudged.view(-1)[0], torch.tensor(np.inf))
        assert BlockUpdate(1, 'block', 3, 2, upd.meta, {**upd.tensors, name: nudged}).digest() != d, name
        assert BlockUpdate(1, 'block', 3, 2, upd.meta, {**upd.tensors, name: t.view(1, -1)}).digest() != d, name
    rt = runtime()
    casc = Cascade(small_flow(), [b])
    assert BlockUpdate.from_policy(1, casc, identity_normalizer(3)).digest() == block_update(1, b, rt.digest).digest()
    # a base's digest also names what acts on the same weights: its integration steps and its action clipping
    base = BlockUpdate.from_policy(1, Cascade(small_flow()), identity_normalizer(3))
    for meta in ({**base.meta, 'clip': not base.meta['clip']},
                 {**base.meta, 'flow': {**base.meta['flow'], 'euler_steps': base.meta['flow']['euler_steps'] + 1}}):
        assert BlockUpdate(1, 'base', 3, 2, meta, base.tensors).digest() != base.digest()


def test_a_block_trained_on_a_sibling_policy_is_refused():
    """Two blocks of the same architecture on the same parent (e.g. a learner restarted from an older checkpoint): the
    actor that applied one refuses the next block of the other branch as built on another policy."""
    rt = runtime()
    parent = rt.digest
    assert rt.apply_update(block_update(1, trained_block(seed=1), parent).to_bytes()) == 1
    sibling = block_update(1, trained_block(seed=2), parent)
    with pytest.raises(UpdateRejected) as e:
        rt.apply_update(block_update(2, trained_block(seed=3), sibling.digest()).to_bytes())
    assert e.value.reason == 'wrong_parent'


@pytest.mark.parametrize('parent', ['', 'g' * 64, 'g' + '0' * 63, '0' * 63, 'A' * 64, None])
def test_a_block_whose_parent_is_not_a_digest_is_corrupt(parent):
    upd = block_update(1, trained_block())
    upd.meta['parent'] = parent
    with pytest.raises(UpdateRejected, match='valid parent digest') as e:
        BlockUpdate.from_bytes(upd.to_bytes(), obs_dim=3, act_dim=2)
    assert e.value.reason == 'corrupt'


def _with_header(update: BlockUpdate, edit) -> bytes:
    """``update``'s bytes with ``edit`` applied to the parsed header, re-encoded with a valid checksum (what a buggy or
    hostile sender could produce)."""
    raw = update.to_bytes()[:-32]
    start = len(MAGIC) + 8
    (hlen,) = struct.unpack('<Q', raw[len(MAGIC):start])
    header = json.loads(raw[start:start + hlen])
    edit(header)
    head = json.dumps(header).encode()
    body = MAGIC + struct.pack('<Q', len(head)) + head + raw[start + hlen:]
    return body + hashlib.sha256(body).digest()


def _set(*path, value):
    def edit(header):
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


@pytest.mark.parametrize('kind,edit,message,reason', [
    ('block', _set('version', value=-1), 'version >= 0', 'corrupt'),
    ('block', _set('tensors', 0, 'offset', value=10**9), 'extends past the payload', 'corrupt'),
    ('block', lambda header: header['tensors'][1].update(offset=sum(t['nbytes'] for t in header['tensors']) - 4),
     'extends past the payload', 'corrupt'),   # a weight matrix starting 4 bytes before the end
    ('block', _set('meta', 'w2_bound', value=0.0), 'valid parent digest and w2_bound', 'corrupt'),
    ('block', _set('meta', 'w2_bound', value=-0.5), 'valid parent digest and w2_bound', 'corrupt'),
    ('block', _set('meta', 'w2_bound', value=float('inf')), 'valid parent digest and w2_bound', 'corrupt'),
    ('block', _set('meta', 'w2_bound', value='wide'), 'valid parent digest and w2_bound', 'corrupt'),
    ('base', _set('meta', 'blocks', value=[{'hidden': 16, 'layers': 10**6}]), 'declares more layers', 'incompatible'),
    ('base', lambda header: header['meta'].pop('clip'), 'bad architecture', 'incompatible'),
])
def test_a_malformed_header_is_refused_for_what_is_wrong_with_it(kind, edit, message, reason):
    update = block_update(1, trained_block()) if kind == 'block' else \
        BlockUpdate.from_policy(1, Cascade(small_flow()), identity_normalizer(3))
    with pytest.raises(UpdateRejected, match=message) as e:
        BlockUpdate.from_bytes(_with_header(update, edit), obs_dim=3, act_dim=2)
    assert e.value.reason == reason


def test_a_block_missing_a_tensor_does_not_fit_its_architecture():
    upd = block_update(1, trained_block())
    upd.tensors.pop(sorted(upd.tensors)[0])
    with pytest.raises(UpdateRejected) as e:
        BlockUpdate.from_bytes(upd.to_bytes(), obs_dim=3, act_dim=2).build_block()
    assert e.value.reason == 'incompatible'


def test_a_block_is_not_built_as_a_policy_nor_a_base_as_a_block():
    block, base = block_update(1, trained_block()), BlockUpdate.from_policy(1, Cascade(small_flow()),
                                                                         identity_normalizer(3))
    with pytest.raises(UpdateRejected, match="a 'block' update, not a base"):
        block.build_policy()
    with pytest.raises(UpdateRejected, match="a 'base' update, not a block"):
        base.build_block()
