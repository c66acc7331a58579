"""What an actor checks before it swaps an update in: the signature (shared key), the version and parent rules, and
the new policy's output on probe states -- against blocks a real Learner trained and against forged ones."""
import os

import numpy as np
import pytest
import torch

from helpers import identity_normalizer, small_flow
from swfp_ros.algo import auth
from swfp_ros.algo.blocks import Cascade, RefinementBlock
from swfp_ros.algo.config import BlockConfig, CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.algo.learner import Learner
from swfp_ros.algo.runtime import PolicyRuntime, UpdateChecks
from swfp_ros.algo.serialize import BlockUpdate, UpdateRejected, policy_digest

OBS, ACT = 3, 2
KEY = b'k' * 40
OTHER_KEY = b'o' * 40


def make_learner(max_blocks=16, compaction_steps=50, warmup_steps=200):
    cfg = SwfpConfig(flow=FlowConfig(hidden=32, layers=2), critic=CriticConfig(hidden=32, layers=2, batch_size=64),
                     block=BlockConfig(hidden=32, train_steps=60, pool_size=512, delta=0.2, max_blocks=max_blocks,
                                       compaction_steps=compaction_steps),
                     warmup_steps=warmup_steps, steps_per_block=100, utd=0.5, replay_capacity=10_000)
    return Learner(small_flow(OBS, ACT, hidden=32, layers=2), identity_normalizer(OBS), cfg, device='cpu')


def feed(learner, rng, n):
    """Transitions whose reward prefers actions near (0.5, -0.5): the critic learns a slope, blocks follow it."""
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    rew = -np.sum((act - np.array([0.5, -0.5])) ** 2, axis=1)
    learner.add_transitions(obs, act, rew, rng.normal(size=(n, OBS)).astype(np.float32), np.ones(n, bool))


def learner_blocks(learner, n_blocks, rng):
    """Train until the learner has published ``n_blocks`` block updates; returns every update, in order."""
    ups = []
    while sum(u.kind == 'block' for u in ups) < n_blocks:
        feed(learner, rng, 50)
        ups += learner.update()
    return ups


def actor_of(learner, **checks):
    rt = PolicyRuntime(learner.policy, learner.normalizer, learner.counters.version, 'cpu', seed=0,
                       checks=UpdateChecks(**checks))
    rt.act(np.random.default_rng(1).normal(size=(32, OBS)))     # observations: the probe states
    return rt


def forged_block(parent, version, bias=1.0, w2_bound=0.05):
    """What an attacker publishes: a well-formed block whose output is shifted by ``bias`` (the issue's forgery)."""
    b = RefinementBlock(OBS, ACT, 32, 2, tau=1.0)
    with torch.no_grad():
        b.u[-1].bias.fill_(bias)
    return BlockUpdate.from_block(version, b, parent, w2_bound)


def test_learner_blocks_pass_the_checks_and_the_actor_matches_the_learner():
    torch.manual_seed(0)
    # the third block triggers a compaction: a new base (200 steps: a 50-step re-fit is 3x delta² away from the
    # cascade, and the compaction gate keeps the cascade)
    learner = make_learner(max_blocks=3, compaction_steps=200)
    rt = PolicyRuntime(learner.policy, learner.normalizer, 0, 'cpu', seed=0)
    rng = np.random.default_rng(0)
    ups = learner_blocks(learner, 3, rng)
    assert [u.kind for u in ups].count('base') == 1
    for u in ups:
        rt.act(rng.normal(size=(8, OBS)))
        rt.apply_update(u.to_bytes())
    assert rt.version == learner.counters.version and not rt.rejections
    assert rt.digest == policy_digest(learner.policy, learner.normalizer)
    s = rng.normal(size=(16, OBS)).astype(np.float32)
    with torch.no_grad():
        expected = learner.policy.sample(learner.normalizer(torch.as_tensor(s)), torch.zeros(16, ACT)).numpy()
    np.testing.assert_allclose(rt.act(s, deterministic=True), expected, atol=1e-6)


def test_a_learner_on_a_published_policy_continues_its_version_and_its_actors_take_its_blocks():
    rng = np.random.default_rng(0)
    published = make_learner()
    learner_blocks(published, 2, rng)                 # a fine-tuned policy at version 2, running on an actor
    actor = actor_of(published)
    learner = Learner.on_policy(published.policy, published.normalizer, published.counters.version, published.cfg)
    assert learner.counters.version == 2 and len(learner.policy.blocks) == 2
    first = learner_blocks(learner, 1, rng)[0]
    assert first.version == 3 and actor.apply_update(first) == 3   # the actor's parent and version: it applies


def test_runtime_owns_its_modules():
    """The in-process runner builds its actor from the learner's cascade, which the learner then trains in place
    (appends blocks, re-fits the base): the actor must not see that (it used to, and then applied the published block
    a second time); only published updates reach it, each exactly once."""
    learner_policy, norm = Cascade(small_flow()), identity_normalizer(3)
    rt = PolicyRuntime(learner_policy, norm, 0, 'cpu', seed=0)
    obs = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
    before = rt.act(obs, deterministic=True)
    parent = rt.digest
    block = RefinementBlock(3, 2, 16, 2, 0.1)
    with torch.no_grad():
        block.u[-1].bias.fill_(0.3)                      # a block that moves the actions
    learner_policy.append(block)                         # what Learner._improve does to its policy
    assert len(rt.cascade.blocks) == 0 and not any(p.requires_grad for p in rt.cascade.parameters())
    np.testing.assert_array_equal(rt.act(obs, deterministic=True), before)
    rt.apply_update(BlockUpdate.from_block(1, block, parent, 0.05).to_bytes())
    assert len(rt.cascade.blocks) == 1
    with torch.no_grad():
        learner_actions = learner_policy.sample(torch.as_tensor(obs), torch.zeros(32, 2)).numpy()
    np.testing.assert_array_equal(rt.act(obs, deterministic=True), learner_actions)
    with torch.no_grad():                                # what the naive learner does to its base
        for p in learner_policy.base.parameters():
            p.add_(1.0)
        norm.mean.add_(1.0)
    np.testing.assert_array_equal(rt.act(obs, deterministic=True), learner_actions)


def test_unseeded_actors_draw_different_noise():
    cascade, norm = Cascade(small_flow()), identity_normalizer(3)
    obs = np.zeros((4, 3), np.float32)
    first, second = (PolicyRuntime(cascade, norm, 0, 'cpu').act(obs) for _ in range(2))
    assert not np.array_equal(first, second)          # a fixed default seed would give every actor the same noise
    seeded = (PolicyRuntime(cascade, norm, 0, 'cpu', seed=3).act(obs) for _ in range(2))
    np.testing.assert_array_equal(*seeded)


def test_signed_learner_blocks_accepted_forged_rejected_only_with_the_key():
    torch.manual_seed(0)
    learner = make_learner()
    rng = np.random.default_rng(0)
    keyed, open_ = actor_of(learner), actor_of(learner)
    keyed.set_update_key(KEY)
    real = learner_blocks(learner, 2, rng)
    # v1 from the learner, signed: both accept
    for rt in (keyed, open_):
        assert rt.apply_update(auth.sign(real[0].to_bytes(), KEY)) == 1
    # an attacker's v2 (right version and parent, a small claim it honours: bias 0.1 per joint)
    forged = forged_block(keyed.digest, 2, bias=0.1, w2_bound=0.05).to_bytes()
    assert open_.apply_update(forged) == 2                     # without a key, nothing tells it from the learner
    with pytest.raises(UpdateRejected, match='unsigned') as e:
        keyed.apply_update(forged)
    assert e.value.reason == 'unsigned'
    with pytest.raises(UpdateRejected, match='another key'):
        keyed.apply_update(auth.sign(forged, OTHER_KEY))
    tampered = bytearray(auth.sign(real[1].to_bytes(), KEY))
    tampered[-100] ^= 0x01                                     # one bit of the learner's signed v2
    with pytest.raises(UpdateRejected, match='signature does not match'):
        keyed.apply_update(bytes(tampered))
    assert keyed.rejections == {'unsigned': 1, 'bad_signature': 2} and keyed.version == 1
    assert keyed.apply_update(auth.sign(real[1].to_bytes(), KEY)) == 2   # the learner's own v2 still goes in
    with pytest.raises(UpdateRejected, match='out of order'):
        keyed.apply_update(auth.sign(real[1].to_bytes(), KEY))         # a replay of it
    assert keyed.digest == policy_digest(learner.policy, learner.normalizer)
    with pytest.raises(ValueError, match=f'update key too short: 31 bytes, at least {auth.MIN_KEY_BYTES}'):
        keyed.set_update_key(b'k' * 31)
    keyed.set_update_key(None)                                  # unsigned updates accepted again
    assert keyed.apply_update(forged_block(keyed.digest, 3, bias=0.1, w2_bound=0.05).to_bytes()) == 3


def test_forged_blocks_rejected_by_the_probe_checks():
    torch.manual_seed(0)
    learner = make_learner()
    rt = actor_of(learner)
    d = rt.digest
    a0 = rt.act(np.zeros(OBS), deterministic=True)
    cases = {
        'trust_region': forged_block(d, 1, bias=1.0, w2_bound=0.05),      # moves 2.0 for a claim of 0.05
        'claim_too_large': forged_block(d, 1, bias=1.0, w2_bound=5.0),    # honest about it, but over max_block_w2
        'out_of_order': forged_block(d, 2, bias=0.0),
        'wrong_parent': forged_block(policy_digest(Cascade(small_flow(OBS, ACT, seed=5)),
                                                   identity_normalizer(OBS)), 1, bias=0.0),
    }
    nan_block = RefinementBlock(OBS, ACT, 32, 2, tau=1.0)     # finite weights, infinite output
    with torch.no_grad():
        nan_block.u[0].weight.fill_(1e30)
        nan_block.u[-1].weight.fill_(1e30)
    cases['non_finite_output'] = BlockUpdate.from_block(1, nan_block, d, 0.05)
    for reason, upd in cases.items():
        with pytest.raises(UpdateRejected) as e:
            rt.apply_update(upd.to_bytes())
        assert e.value.reason == reason, (reason, str(e.value))
    assert rt.version == 0 and sum(rt.rejections.values()) == len(cases)
    np.testing.assert_array_equal(rt.act(np.zeros(OBS), deterministic=True), a0)
    assert rt.apply_update(forged_block(d, 1, bias=0.1, w2_bound=0.05).to_bytes()) == 1   # within its claim


def test_base_version_rules():
    torch.manual_seed(0)
    learner = make_learner()
    rt = actor_of(learner)
    rng = np.random.default_rng(0)
    learner_blocks(learner, 1, rng)
    snap = learner.snapshot()                                  # v1: base + 1 block
    assert rt.apply_update(snap.to_bytes()) == 1
    n_before = len(rt.cascade.blocks)
    assert rt.apply_update(learner.snapshot().to_bytes()) == 1 and len(rt.cascade.blocks) == n_before  # same policy
    hidden = Cascade(learner.policy.base, [*learner.policy.blocks, RefinementBlock(OBS, ACT, 16, 2, 0.5)])
    nan_base = small_flow(OBS, ACT, hidden=32, layers=2)       # finite weights, infinite actions
    with torch.no_grad():
        for p in nan_base.parameters():
            p.fill_(1e30)
    cases = {
        'same_version_differs': BlockUpdate.from_policy(1, hidden, learner.normalizer),
        'older': BlockUpdate.from_policy(0, learner.policy, learner.normalizer),
        'version_jump': BlockUpdate.from_policy(2 ** 40, learner.policy, learner.normalizer),
        'incompatible': BlockUpdate.from_policy(5, Cascade(small_flow(OBS, ACT, hidden=16)), learner.normalizer),
        'non_finite_output': BlockUpdate.from_policy(2, Cascade(nan_base), learner.normalizer),
    }
    for reason, upd in cases.items():
        with pytest.raises(UpdateRejected) as e:
            rt.apply_update(upd.to_bytes())
        assert e.value.reason == reason, (reason, str(e.value))
    assert rt.version == 1
    assert rt.apply_update(BlockUpdate.from_policy(1 + 1000, hidden, learner.normalizer).to_bytes()) == 1001


def test_oversized_and_huge_declared_architecture_refused_before_building():
    rt = PolicyRuntime(Cascade(small_flow()), identity_normalizer(3), 0, 'cpu', checks=UpdateChecks(max_bytes=4096))
    big = BlockUpdate.from_block(1, RefinementBlock(3, 2, 64, 2, 0.1), rt.digest, 0.05).to_bytes()
    with pytest.raises(UpdateRejected, match='over the limit') as e:
        rt.apply_update(big)
    assert e.value.reason == 'oversized'
    lying = BlockUpdate.from_block(1, RefinementBlock(3, 2, 16, 2, 0.1), rt.digest, 0.05)
    lying.meta['hidden'] = 10 ** 9               # building it for real would need ~100 GB
    with pytest.raises(UpdateRejected, match='do not fit the declared architecture') as e:
        rt.apply_update(lying.to_bytes())
    assert e.value.reason == 'incompatible'
    lying.meta.update(hidden=16, layers=10 ** 7)
    with pytest.raises(UpdateRejected, match='more layers than it carries tensors'):
        rt.apply_update(lying.to_bytes())


def test_key_file(tmp_path):
    good = tmp_path / 'key'
    good.write_text(os.urandom(32).hex() + '\n')
    good.chmod(0o600)
    assert len(auth.load_key(good)) == 64
    good.chmod(0o644)
    with pytest.raises(auth.KeyFileError, match='chmod 600'):
        auth.load_key(good)
    short = tmp_path / 'short'
    short.write_text(' ' + 'k' * 31 + '\n')       # 31 bytes once the whitespace around it is removed
    short.chmod(0o600)
    with pytest.raises(auth.KeyFileError, match='31 bytes, at least 32'):
        auth.load_key(short)
    short.write_text('k' * 32)                      # exactly the minimum
    assert auth.load_key(short) == b'k' * 32
    with pytest.raises(auth.KeyFileError, match='cannot read'):
        auth.load_key(tmp_path / 'missing')


def test_signature_is_over_the_whole_payload():
    payload = os.urandom(1000)
    signed = auth.sign(payload, KEY)
    assert auth.verify(signed, KEY) == payload and auth.verify(signed, None) == payload
    for i in range(0, len(signed), 97):            # any flipped byte, in header, mac or payload, is caught
        bad = bytearray(signed)
        bad[i] ^= 0x80
        with pytest.raises(UpdateRejected):
            auth.verify(bytes(bad), KEY)
    for cut in (len(auth.SIGNED_MAGIC), len(auth.SIGNED_MAGIC) + 20):   # the envelope's header itself cut short
        with pytest.raises(UpdateRejected, match=f'signed update truncated: {cut} bytes') as e:
            auth.verify(signed[:cut], KEY)
        assert e.value.reason == 'bad_signature'


def test_block_count_and_claim_limits_are_inclusive():
    """max_blocks counts the cascade after the update: a block that makes exactly that many is applied, the next one
    is refused, and so is a base carrying more; a claim of exactly max_block_w2 may be made."""
    torch.manual_seed(0)
    rt = actor_of(make_learner(), max_blocks=2, max_block_w2=0.05)
    for version in (1, 2):
        assert rt.apply_update(forged_block(rt.digest, version, bias=0.0, w2_bound=0.05).to_bytes()) == version
    with pytest.raises(UpdateRejected) as e:
        rt.apply_update(forged_block(rt.digest, 3, bias=0.0, w2_bound=0.05).to_bytes())
    assert e.value.reason == 'too_many_blocks'
    full = rt.cascade
    assert rt.apply_update(BlockUpdate.from_policy(3, full, rt.normalizer).to_bytes()) == 3
    over = Cascade(full.base, [*full.blocks, full.blocks[0]], clip=full.clip)
    with pytest.raises(UpdateRejected) as e:
        rt.apply_update(BlockUpdate.from_policy(4, over, rt.normalizer).to_bytes())
    assert e.value.reason == 'too_many_blocks' and rt.version == 3


def test_probe_states_are_the_latest_observations_acted_on():
    """The checks run a new policy on states like those it will act on: the recent observations (normalised), once
    enough were seen, single and batched alike; before that, synthetic N(0, I) states."""
    torch.manual_seed(0)
    rt = actor_of(make_learner())
    rt.clear_observations()
    synthetic, _ = rt._probes(rt.normalizer)
    assert synthetic.abs().max() <= 3.0
    for row in np.full((8, OBS), 7.0):
        rt.act(row)
    rt.act(np.full((8, OBS), 7.0))
    observed, _ = rt._probes(rt.normalizer)
    expected = rt.normalizer(torch.full((1, OBS), 7.0))
    torch.testing.assert_close(observed, expected.expand_as(observed))


def test_an_update_prepared_against_a_policy_that_was_replaced_meanwhile_is_refused():
    """prepare_update runs aside while the policy acts; if another update was committed in between, committing the
    first would drop the other's change: it is refused as 'raced' (counted) and the newer policy kept."""
    torch.manual_seed(0)
    rt = actor_of(make_learner())
    first = rt.prepare_update(forged_block(rt.digest, 1, bias=0.0).to_bytes())
    other = rt.prepare_update(forged_block(rt.digest, 1, bias=0.05).to_bytes())
    assert rt.commit_update(other) == 1
    kept = rt.digest
    with pytest.raises(UpdateRejected) as e:
        rt.commit_update(first)
    assert e.value.reason == 'raced' and rt.rejections['raced'] == 1 and rt.digest == kept


def test_act_refuses_observations_and_noise_of_the_wrong_shape_or_not_finite_and_acts_on_after():
    rt = PolicyRuntime(Cascade(small_flow()), identity_normalizer(OBS), 0, 'cpu', seed=0)
    for bad in (np.zeros(OBS + 1), np.zeros((4, OBS + 1)), np.zeros((2, 4, OBS))):
        with pytest.raises(ValueError, match=rf'expected obs \[{OBS}\] or \[B, {OBS}\]'):
            rt.act(bad)
    for value in (np.nan, np.inf, -np.inf):
        obs = np.zeros((5, OBS))
        obs[3, 1] = value
        with pytest.raises(ValueError, match='NaN or inf'):
            rt.act(obs)
        with pytest.raises(ValueError, match='NaN or inf'):
            rt.act(obs[3])
    for noise in (np.zeros((5, ACT + 1)), np.zeros((4, ACT)), np.full((5, ACT), np.nan)):
        with pytest.raises(ValueError, match=rf'noise must be 5 x {ACT} finite values'):
            rt.act(np.zeros((5, OBS)), noise=noise)
    assert rt.act(np.zeros(OBS)).shape == (ACT,) and rt.act(np.zeros((5, OBS))).shape == (5, ACT)


def test_a_local_update_object_is_checked_like_bytes():
    """A BlockUpdate handed over in-process skips only the signature: its dimensions and weights are checked as the
    network path checks them, refused with the reason and counted, and the policy stays as it was."""
    rt = PolicyRuntime(Cascade(small_flow()), identity_normalizer(OBS), 0, 'cpu', seed=0)
    other_obs = BlockUpdate.from_block(1, RefinementBlock(OBS + 1, ACT, 16, 2, 0.1), rt.digest, 0.05)
    nan_block = RefinementBlock(OBS, ACT, 16, 2, 0.1)
    with torch.no_grad():
        nan_block.u[-1].bias.fill_(float('nan'))
    cases = {'incompatible': other_obs, 'non_finite': BlockUpdate.from_block(1, nan_block, rt.digest, 0.05)}
    for reason, upd in cases.items():
        with pytest.raises(UpdateRejected) as e:
            rt.apply_update(upd)
        assert e.value.reason == reason, (reason, str(e.value))
    assert rt.version == 0 and rt.rejections == {'incompatible': 1, 'non_finite': 1}
