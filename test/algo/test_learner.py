"""Learner: all-or-nothing validation of transitions; on a one-step bandit, blocks after critic warm-up raise reward."""
import numpy as np
import pytest
import torch

from helpers import identity_normalizer, small_flow, trained_block
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.config import BlockConfig, CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.algo.flow import FlowPolicy
from swfp_ros.algo.learner import Learner, validate_transitions
from swfp_ros.algo.naive import NaiveLearner, naive_loss

OBS, ACT = 2, 2
W = np.array([[0.8, -0.4], [0.3, 0.7]], np.float32)


def target(obs):
    return 0.6 * np.tanh(obs @ W)


def reward(obs, act):
    return -np.sum((act - target(obs)) ** 2, axis=1)


def make_learner(**kw):
    cfg = SwfpConfig(flow=FlowConfig(hidden=32, layers=2), critic=CriticConfig(hidden=64, layers=2, batch_size=128,
                                                                               lr=1e-3, polyak=0.05),
                     block=BlockConfig(hidden=32, train_steps=100, pool_size=1024, delta=0.2),
                     warmup_steps=1000, steps_per_block=250, utd=1.0, replay_capacity=10_000, **kw)
    flow = small_flow(OBS, ACT, hidden=32, layers=2)
    return Learner(flow, identity_normalizer(OBS), cfg, device='cpu')


def batch(rng, n=8, act=None):
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32) if act is None else act
    return obs, act, reward(obs, act), rng.normal(size=(n, OBS)).astype(np.float32), np.ones(n, bool), np.ones(n)


@pytest.mark.parametrize('field,bad', [
    ('obs', lambda x: np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x)),
    ('action', lambda x: x[:, :1]),
    ('action', lambda x: x * 3.0),  # outside [-1, 1]: not an executed action
    ('reward', lambda x: np.append(x, 0.0)),
    ('reward', lambda x: np.full_like(x, np.inf)),
    ('next_obs', lambda x: x[:-1]),
    ('terminated', lambda x: x.astype(float) * 0.5),
    ('n_steps', lambda x: x * 0),
])
def test_rejects_bad_transitions_and_stores_nothing(field, bad):
    learner = make_learner()
    rng = np.random.default_rng(0)
    names = ('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps')
    args = dict(zip(names, batch(rng)))
    args[field] = bad(args[field])
    with pytest.raises(ValueError, match=field):
        learner.add_transitions(**args)
    assert len(learner.replay) == 0 and learner.counters.env_steps == 0
    learner.add_transitions(*batch(rng))  # good data still goes in
    assert len(learner.replay) == 8


def test_rejects_batches_of_the_wrong_shape_whatever_their_size():
    learner = make_learner()
    obs, act, r, next_obs, term, n = batch(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r'obs must be \[obs_dim\] or \[batch, obs_dim\], got shape \(2, 4, 2\)'):
        learner.add_transitions(obs.reshape(2, 4, OBS), act, r, next_obs, term, n)
    with pytest.raises(ValueError, match=r'action: expected shape \(8, 2\), got \(16,\)'):
        learner.add_transitions(obs, act.reshape(-1), r, next_obs, term, n)   # the right count, flattened
    assert len(learner.replay) == 0


def test_single_unbatched_transition():
    learner = make_learner()
    learner.add_transitions(np.zeros(OBS), np.zeros(ACT), 1.0, np.zeros(OBS), True, 1)  # a one-step episode
    assert len(learner.replay) == 1 and learner.counters.env_steps == 1
    learner.add_transitions([[0.1, 0.2]], [[0.5, -0.5]], [1.0], [[0.3, 0.4]], [True], [1])   # plain lists
    assert len(learner.replay) == 2


def policy_reward(learner, rng, n=2000):
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    with torch.no_grad():
        a = learner.policy.sample(learner.normalizer(torch.as_tensor(obs)), generator=learner.gen).numpy()
    return reward(obs, a).mean()


def test_blocks_raise_reward_on_bandit():
    learner = make_learner()
    rng = np.random.default_rng(0)
    before = policy_reward(learner, rng)
    updates = []
    while learner.counters.blocks_trained < 4:
        obs = rng.normal(size=(50, OBS)).astype(np.float32)
        with torch.no_grad():
            act = learner.policy.sample(learner.normalizer(torch.as_tensor(obs)), generator=learner.gen).numpy()
        learner.add_transitions(*batch(rng, 50, act)[:2], reward(obs, act), obs, np.ones(50, bool), np.ones(50))
        updates += learner.update()
    after = policy_reward(learner, rng)
    reports = [(r.reason, round(r.w2_bound, 4), round(r.delta_q, 3)) for r in learner.reports]
    print(f'mean reward {before:.3f} -> {after:.3f}; blocks {reports}; critic {learner.critic_metrics}')
    assert [u.version for u in updates] == list(range(1, len(updates) + 1))
    assert len(updates) >= 2
    assert after > before + 0.1
    assert all(r.w2_bound <= 1.25 * 0.2 ** 2 + 1e-7 for r in learner.reports if r.accepted)


def test_a_block_carries_its_dual_variable_and_report_and_a_rejected_one_publishes_nothing():
    learner = make_learner()
    rng, c = np.random.default_rng(0), learner.counters
    while c.blocks_trained < 1:
        learner.add_transitions(*batch(rng, 100))
        ups = learner.update()
    assert [u.kind for u in ups] == ['block'] and c.version == c.blocks_accepted == 1
    assert learner.log_lambda == learner.reports[-1].log_lambda      # the next block starts from it
    assert not any(p.requires_grad for p in learner.policy.parameters())   # only blocks and the critic are trained
    learner.critic.q_min = lambda s, a: a.sum(-1) * 0.0              # a flat critic: no block predicts a gain
    while c.blocks_trained < 2:
        learner.add_transitions(*batch(rng, 100))
        assert learner.update() == []
    assert (c.blocks_accepted, c.version, len(learner.policy.blocks)) == (1, 1, 1)
    assert len(learner.reports) == 2 and not learner.reports[-1].accepted
    assert learner.log_lambda == learner.reports[-1].log_lambda


def test_the_learner_seeds_its_critic_from_its_config():
    def critic_weights(seed, torch_seed):
        torch.manual_seed(torch_seed)
        learner = make_learner(seed=seed)
        return torch.cat([p.flatten() for p in learner.critic.parameters()])
    assert torch.equal(critic_weights(3, 0), critic_weights(3, 1))
    assert not torch.equal(critic_weights(3, 0), critic_weights(4, 0))


def test_a_normaliser_of_another_size_is_refused():
    with pytest.raises(ValueError, match='normaliser dim 3 != policy obs_dim 2'):
        Learner(small_flow(OBS, ACT), identity_normalizer(OBS + 1), make_learner().cfg)


def test_compaction_replaces_base_and_keeps_behaviour():
    learner = make_learner()
    learner.cfg.block.max_blocks, learner.cfg.block.compaction_steps = 2, 300
    rng = np.random.default_rng(1)
    updates = []
    while learner.counters.compactions == 0 and learner.counters.blocks_trained < 8:
        obs = rng.normal(size=(50, OBS)).astype(np.float32)
        with torch.no_grad():
            act = learner.policy.sample(learner.normalizer(torch.as_tensor(obs)), generator=learner.gen).numpy()
        learner.add_transitions(obs, act, reward(obs, act), obs, np.ones(50, bool), np.ones(50))
        before = learner.policy
        updates += learner.update()
    assert learner.counters.compactions == 1 and len(learner.policy.blocks) == 0
    assert updates[-1].kind == 'base' and updates[-1].version == learner.counters.version
    m = learner.compaction_metrics
    assert m['published'] and m['distance'] <= learner.cfg.block.compaction_tolerance * learner.cfg.block.delta ** 2
    assert m['q_after'] >= m['q_before'] - 0.1 * abs(m['q_before']) - 0.05

    # Measured (true reward), not only critic-predicted: the compacted base against the cascade it replaced.
    obs = np.random.default_rng(7).normal(size=(4000, OBS)).astype(np.float32)
    gen = torch.Generator().manual_seed(0)

    def true_reward(policy):
        with torch.no_grad():
            act = policy.sample(learner.normalizer(torch.as_tensor(obs)), generator=gen).numpy()
        return reward(obs, act).mean()

    old, new = true_reward(before), true_reward(learner.policy)
    assert len(before.blocks) >= 1
    assert new >= old - 0.1 * abs(old) - 0.02, (old, new)


def test_compaction_that_does_not_reproduce_the_cascade_is_not_published():
    """One re-fitting step leaves the old base: far from the cascade it should replace. It must not reach the actors;
    the cascade is kept and compaction is tried again after the next accepted block."""
    learner = make_learner()
    learner.cfg.block.max_blocks, learner.cfg.block.compaction_steps = 2, 1
    rng = np.random.default_rng(1)
    updates = []
    while learner.counters.compactions_rejected < 2 and learner.counters.blocks_trained < 12:
        obs = rng.normal(size=(50, OBS)).astype(np.float32)
        with torch.no_grad():
            act = learner.policy.sample(learner.normalizer(torch.as_tensor(obs)), generator=learner.gen).numpy()
        learner.add_transitions(obs, act, reward(obs, act), obs, np.ones(50, bool), np.ones(50))
        updates += learner.update()
    m = learner.compaction_metrics
    assert learner.counters.compactions_rejected == 2 and learner.counters.compactions == 0, m
    assert m['distance'] > learner.cfg.block.delta ** 2 and not m['published']
    assert [u.kind for u in updates] == ['block'] * learner.counters.blocks_accepted
    assert len(learner.policy.blocks) == learner.counters.blocks_accepted == 3


def compacted(q_sign, distance_tolerance=1e9, value_tolerance=1e9):
    """compact() on a cascade of one block with replay states and the critic Q = q_sign·3·a_0 (E||∇_a Q|| = 3); the
    same every call, so only the tolerances differ between calls."""
    learner = make_learner()
    bc = learner.cfg.block
    bc.compaction_steps, bc.compaction_tolerance, bc.compaction_value_tolerance = 30, distance_tolerance, value_tolerance
    learner.policy.append(trained_block(OBS, ACT))
    learner.add_transitions(*batch(np.random.default_rng(0), 600))
    learner.critic.q_min = lambda s, a: q_sign * 3.0 * a[:, 0]
    return learner, learner.compact()


def test_compaction_is_published_only_within_both_the_distance_and_the_value_tolerance():
    sign = 1.0 if compacted(1.0)[0].compaction_metrics['value_drop'] > 0 else -1.0   # a re-fit that loses value
    learner, update = compacted(sign)
    m, delta = learner.compaction_metrics, learner.cfg.block.delta
    d, v = m['distance'], m['value_drop']
    assert d > 0 and v > 0 and update is not None and update.kind == 'base'
    assert v == pytest.approx((m['q_before'] - m['q_after']) / 3.0, rel=1e-5)   # in units of E||∇_a Q||
    for distance_tolerance, value_tolerance in [(0.5 * d / delta ** 2, 1e9), (1e9, 0.5 * v / delta)]:
        learner, update = compacted(sign, distance_tolerance, value_tolerance)
        assert update is None and not learner.compaction_metrics['published']
        assert (learner.counters.compactions_rejected, len(learner.policy.blocks)) == (1, 1)
    learner, update = compacted(sign, 2 * d / delta ** 2, 2 * v / delta)
    assert update is not None and learner.compaction_metrics['published'] and learner.counters.compactions == 1
    assert len(learner.policy.blocks) == 0 and not any(p.requires_grad for p in learner.policy.parameters())


def test_naive_loss_is_minus_the_mean_value_over_its_scale_through_the_sampler():
    policy, s = Cascade(small_flow(OBS, ACT).requires_grad_(True)), torch.randn(64, OBS)
    q_fn = lambda s, a: (a * torch.tensor([1.0, -2.0])).sum(-1) + s[:, 0]      # noqa: E731
    loss = naive_loss(policy, q_fn, s, 4.0, torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = -q_fn(s, policy.sample(s, generator=torch.Generator().manual_seed(0))).mean() / 4.0
    torch.testing.assert_close(loss.detach(), want)
    loss.backward()                                   # the graph runs through every Euler step into the base
    assert all(p.grad is not None for p in policy.base.velocity.parameters())


def test_naive_learner_climbs_the_critic_and_publishes_the_whole_base():
    cfg = make_learner().cfg
    cfg.block.train_steps = 100
    naive = NaiveLearner(small_flow(OBS, ACT, hidden=32, layers=2), identity_normalizer(OBS), cfg)
    naive.add_transitions(*batch(np.random.default_rng(0), 300))
    target = torch.tensor([0.5, -0.5])
    naive.critic.q_min = lambda s, a: -((a - target) ** 2).sum(-1)     # a known critic: the target's neighbourhood
    s = torch.randn(1000, OBS, generator=torch.Generator().manual_seed(1))

    def value():
        with torch.no_grad():
            return naive.critic.q_min(s, naive.policy.sample(s, generator=torch.Generator().manual_seed(2))).mean()
    before = value()
    ups = naive._improve()
    after = value()
    print(f'E Q {before:.3f} -> {after:.3f}')
    assert after > before + 0.05
    assert [u.kind for u in ups] == ['base'] and ups[0].version == naive.counters.version == 1
    assert not any(p.requires_grad for p in naive.policy.parameters())           # the base frozen again
    assert all(p.requires_grad for p in naive.critic.q.parameters())             # the critic trainable again


def test_naive_learner_swaps_in_and_publishes_bases():
    cfg = make_learner().cfg
    cfg.block.train_steps = 20
    naive = NaiveLearner(small_flow(OBS, ACT, hidden=32, layers=2), identity_normalizer(OBS), cfg)
    rng = np.random.default_rng(0)
    before = [p.clone() for p in naive.policy.base.parameters()]
    updates = []
    while naive.counters.blocks_trained < 1:
        naive.add_transitions(*batch(rng, 100))
        updates += naive.update()
    assert [u.kind for u in updates] == ['base'] and updates[0].version == 1
    assert any(not torch.equal(p, q) for p, q in zip(before, naive.policy.base.parameters()))


def demo_learner(n_online, n_demo, demo_ratio=0.5, n_step=1):
    """Online transitions carry obs[0] in [5, 6) and reward 0, demonstrations obs[0] ~ N(0, 1) and reward 1."""
    rng = np.random.default_rng(0)
    names = ('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps')
    demos = dict(zip(names, batch(rng, n_demo)))
    demos['reward'][:] = 1.0
    cfg = make_learner().cfg
    cfg.demo_ratio, cfg.critic.n_step = demo_ratio, n_step
    learner = Learner(small_flow(OBS, ACT, hidden=32, layers=2), identity_normalizer(OBS), cfg,
                      demo_transitions=demos)
    online = dict(zip(names, batch(rng, n_online)))
    online['obs'][:, 0] = 5.0 + rng.uniform(size=n_online)
    online['reward'][:] = 0.0
    learner.add_transitions(**online)
    return learner


def test_critic_batches_hold_the_demo_ratio():
    learner = demo_learner(50, 50, demo_ratio=0.25)
    b = learner._batches(3)
    assert b['reward'].shape == (3, 128) and (b['reward'].sum(1) == 32).all()


def test_block_pool_is_distinct_states_at_the_demo_ratio():
    """The pool a block is trained and validated on: no state twice (held-out states must not reappear in training),
    online and demonstration states at the demo ratio even when there are few online ones."""
    learner = demo_learner(200, 3000, demo_ratio=0.5)
    pool = learner._states(4096)
    assert len(torch.unique(pool, dim=0)) == len(pool) == 400
    assert (pool[:, 0] >= 5).sum() == 200
    learner = demo_learner(3000, 3000, demo_ratio=0.25)
    pool = learner._states(1000)
    assert len(torch.unique(pool, dim=0)) == len(pool) == 1000 and (pool[:, 0] >= 5).sum() == 750


def test_reused_input_buffers_do_not_change_stored_transitions():
    """A caller (a ROS callback, a vectorised env) may refill the same arrays for every call: the learner must keep
    copies, also in the n-step windows still open."""
    learner = demo_learner(0, 300, n_step=3)
    obs, act = np.zeros((1, OBS), np.float32), np.zeros((1, ACT), np.float32)
    reward, next_obs = np.zeros(1, np.float32), np.zeros((1, OBS), np.float32)
    for t in range(4):
        obs[:], act[:], reward[:], next_obs[:] = t, 0.1 * t, t, t + 1   # in place, as a reused buffer is
        learner.add_transitions(obs, act, reward, next_obs, np.zeros(1, bool), np.ones(1))
    stored = learner.replay.get(np.arange(len(learner.replay)))
    assert stored['obs'][:, 0].tolist() == [0, 1] and stored['next_obs'][:, 0].tolist() == [3, 4]
    np.testing.assert_allclose(stored['action'][:, 0], [0.0, 0.1])
    np.testing.assert_allclose(stored['reward'], [0 + 0.99 * 1 + 0.99 ** 2 * 2, 1 + 0.99 * 2 + 0.99 ** 2 * 3],
                               rtol=1e-6)


def test_validated_transitions_share_no_memory_with_the_input():
    rng = np.random.default_rng(0)
    given = dict(zip(('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps'), batch(rng, 4)))
    given = {k: np.asarray(v, np.float32) for k, v in given.items()}   # already the stored dtype: no conversion copy
    out = validate_transitions(**given, obs_dim=OBS, act_dim=ACT, max_steps=1)
    assert not any(np.shares_memory(out[k], given[k]) for k in out)


def test_critic_updates_are_owed_per_env_step_with_chunks():
    cfg = make_learner().cfg
    cfg.utd = 0.5
    learner = Learner(FlowPolicy(OBS, ACT, FlowConfig(hidden=16, layers=1, chunk=2)), identity_normalizer(OBS), cfg)
    rng = np.random.default_rng(0)
    for _ in range(4):   # 4 x 64 decisions of a 2-step chunk = 512 env steps
        obs, act, r, next_obs, term, _ = batch(rng, 64)
        learner.add_transitions(obs, act, r, next_obs, term, np.full(64, 2))
        learner.update()
    assert learner.counters.env_steps == 512 and learner.counters.critic_updates == 256
    assert learner.counters.transitions == 256


def test_demo_transitions_feed_the_critic_before_online_data():
    rng = np.random.default_rng(0)
    names = ('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps')
    demos = dict(zip(names, batch(rng, 300)))
    base = make_learner()
    learner = Learner(small_flow(OBS, ACT, hidden=32, layers=2), identity_normalizer(OBS), base.cfg,
                      demo_transitions=demos)
    learner.add_transitions(*batch(rng, 4))
    learner.update()
    assert learner.counters.critic_updates == 4 and len(learner.demo) == 300
    with pytest.raises(ValueError, match='reward'):
        Learner(small_flow(OBS, ACT), identity_normalizer(OBS), base.cfg,
                demo_transitions={**demos, 'reward': demos['reward'][:-1]})


def test_critic_check_compares_q_with_bootstrapped_returns():
    learner = make_learner()
    learner.cfg.critic.gamma = 0.5
    learner.critic.q_min = lambda s, a: s[:, 0]           # a "critic" whose value is the first observation
    obs = lambda *x0: np.array([[x, 0.0] for x in x0], np.float32)  # noqa: E731
    episodes = [
        # success after two decisions: returns 1 + 0.5 * 1 = 1.5 and 1
        {'obs': obs(3, 2), 'action': np.zeros((2, ACT)), 'step_rewards': [[1.0], [1.0]], 'final_obs': obs(9)[0],
         'terminated': True},
        # time limit after one decision: 2 + 0.5 * Q(final) = 2 + 0.5 * 2 = 3
        {'obs': obs(5), 'action': np.zeros((1, ACT)), 'step_rewards': [[2.0]], 'final_obs': obs(2)[0],
         'terminated': False},
    ]
    check = learner.critic_check(episodes)
    q, mc = np.array([3.0, 2.0, 5.0]), np.array([1.5, 1.0, 3.0])
    np.testing.assert_allclose([check['q_mean'], check['mc_return_mean'], check['q_bias']],
                               [q.mean(), mc.mean(), (q - mc).mean()], rtol=1e-6)
    np.testing.assert_allclose(check['q_mc_corr'], np.corrcoef(q, mc)[0, 1], rtol=1e-6)
