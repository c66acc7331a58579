"""The TD target against a hand computation (γ^n, min of the twins or of an ensemble's drawn pair, the target network,
termination, soft term), and the learner's next actions: drawn at the normalised next observation, once per policy version and stored slot."""
import numpy as np
import pytest
import torch

from swfp_ros.algo.blocks import RefinementBlock
from swfp_ros.algo.config import BlockConfig, CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.algo.critic import Critic
from swfp_ros.algo.flow import FlowPolicy
from swfp_ros.algo.learner import Learner
from swfp_ros.algo.normalize import ObsNormalizer

OBS, ACT = 3, 2
GAMMA = 0.9


def critic(soft=False, ensemble=2):
    torch.manual_seed(0)
    c = Critic(OBS, ACT, CriticConfig(hidden=16, layers=1, gamma=GAMMA, soft_target=soft, ensemble=ensemble))
    with torch.no_grad():  # the target network differs from the online one, and its two heads from each other
        for p in c.target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return c


def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return {'obs': torch.randn(n, OBS, generator=g), 'action': torch.rand(n, ACT, generator=g) * 2 - 1,
            'reward': torch.randn(n, generator=g), 'next_obs': torch.randn(n, OBS, generator=g),
            'next_action': torch.rand(n, ACT, generator=g) * 2 - 1,
            'terminated': torch.tensor([False, True, False, False, True, False]),
            'n_steps': torch.tensor([1, 1, 3, 5, 2, 8], dtype=torch.int32),
            'next_log_prob': torch.randn(n, generator=g)}


def by_hand(c, b):
    x = torch.cat([b['next_obs'], b['next_action']], -1)
    with torch.no_grad():
        q1, q2 = c.target.q1(x).squeeze(-1), c.target.q2(x).squeeze(-1)
    assert (q1 != q2).all()   # min and max differ everywhere
    bootstrap = torch.tensor([GAMMA ** int(n) * (0.0 if t else 1.0) for n, t in zip(b['n_steps'], b['terminated'])])
    return b['reward'] + bootstrap * torch.minimum(q1, q2)


def test_td_target_by_hand():
    c, b = critic(), batch()
    torch.testing.assert_close(c.td_target(b), by_hand(c, b))
    # the online network is not the target: same formula with it gives another value
    x = torch.cat([b['next_obs'], b['next_action']], -1)
    with torch.no_grad():
        online = torch.minimum(c.q.q1(x), c.q.q2(x)).squeeze(-1)
    assert not torch.allclose(online, torch.minimum(c.target.q1(x), c.target.q2(x)).squeeze(-1))


def test_ensemble_target_is_the_min_of_a_drawn_pair_and_blocks_climb_the_min_of_all():
    c, b = critic(ensemble=5), batch()
    x = torch.cat([b['next_obs'], b['next_action']], -1)
    with torch.no_grad():
        heads = [getattr(c.target, f'q{i + 1}')(x).squeeze(-1) for i in range(5)]
    pair = c.target_heads(np.random.default_rng(3))
    assert pair == [int(i) for i in np.random.default_rng(3).choice(5, 2, replace=False)] and len(set(pair)) == 2
    bootstrap = torch.tensor([GAMMA ** int(n) * (0.0 if t else 1.0) for n, t in zip(b['n_steps'], b['terminated'])])
    pair_min = torch.minimum(heads[pair[0]], heads[pair[1]])
    assert not torch.allclose(pair_min, torch.stack(heads).amin(0))   # a pair, not all five
    torch.testing.assert_close(c.td_target(b, heads=pair), b['reward'] + bootstrap * pair_min)
    with torch.no_grad():
        online = torch.stack([getattr(c.q, f'q{i + 1}')(torch.cat([b['obs'], b['action']], -1)).squeeze(-1)
                              for i in range(5)])
        torch.testing.assert_close(c.q_min(b['obs'], b['action']), online.amin(0))
    # one TD step trains every head
    before = [p.clone() for p in c.q.parameters()]
    c.update(b, rng=np.random.default_rng(0))
    assert all(not torch.equal(p0, p) for p0, p in zip(before, c.q.parameters()) if p.dim() == 2)


def test_soft_target_subtracts_the_temperature_times_the_log_density():
    c, b = critic(soft=True), batch()
    bootstrap = torch.tensor([GAMMA ** int(n) * (0.0 if t else 1.0) for n, t in zip(b['n_steps'], b['terminated'])])
    torch.testing.assert_close(c.td_target(b, temperature=0.7), by_hand(c, b) - bootstrap * 0.7 * b['next_log_prob'])
    torch.testing.assert_close(c.td_target(b, temperature=0.0), by_hand(c, b))
    hard = critic(soft=False)      # a hard target ignores the temperature
    torch.testing.assert_close(hard.td_target(b, temperature=0.7), by_hand(hard, b))


def test_an_ensemble_needs_the_generator_that_draws_its_target_pair():
    c = critic(ensemble=5)
    with pytest.raises(ValueError, match='draws its target pair: pass an rng'):
        c.update(batch())
    assert critic().target_heads(None) is None       # a twin critic uses both heads, no draw


class CollapseField(torch.nn.Module):
    """v(s, x, t) = (g(s) - x)/(1 - t) with g(s) = 0.5·s[:, :ACT]: the last Euler step lands every x on g(s), so the
    policy is deterministic and its action reveals the (normalised) state it was given."""

    def forward(self, s, x, t):
        return (0.5 * s[:, :ACT] - x) / (1 - t[:, None])


def learner_with(policy_field=None, capacity=100, soft=False, demo_next_obs=None, alpha=None):
    flow = FlowPolicy(OBS, ACT, FlowConfig(hidden=16, layers=1))
    if policy_field is not None:
        flow.velocity = policy_field
    norm = ObsNormalizer(OBS)
    norm.mean.fill_(3.0)
    norm.std.fill_(2.0)
    cfg = SwfpConfig(critic=CriticConfig(hidden=16, layers=1, batch_size=8, n_step=1, soft_target=soft),
                     block=BlockConfig(alpha=(0.5 if soft else 0.0) if alpha is None else alpha),
                     replay_capacity=capacity)
    demos = None if demo_next_obs is None else {
        'obs': np.zeros((1, OBS)), 'action': np.zeros((1, ACT)), 'reward': np.ones(1),
        'next_obs': np.asarray([demo_next_obs], np.float32), 'terminated': np.zeros(1), 'n_steps': np.ones(1)}
    return Learner(flow, norm, cfg, demo_transitions=demos)


def add_one(learner, next_obs):
    learner.add_transitions(np.zeros(OBS), np.zeros(ACT), 1.0, np.asarray(next_obs, np.float32), False, 1)


def test_next_actions_are_drawn_at_the_normalised_next_observation():
    learner = learner_with(CollapseField())
    raw = np.array([4.0, 1.0, 9.0], np.float32)
    add_one(learner, raw)
    b = learner._batches(2)
    normalised = (torch.as_tensor(raw) - 3.0) / 2.0
    torch.testing.assert_close(b['next_obs'], normalised.expand(2, 8, OBS))
    torch.testing.assert_close(b['next_action'], (0.5 * normalised[:ACT]).expand(2, 8, ACT))


def test_next_actions_are_redrawn_after_a_new_policy_version_and_for_an_overwritten_slot():
    learner = learner_with(capacity=1)
    add_one(learner, [1.0, 2.0, 3.0])
    first = learner._batches(3)['next_action']
    assert (first == first[0, 0]).all()          # one slot: one draw, reused by every minibatch of the version
    assert (learner._batches(1)['next_action'] == first[0, 0]).all()
    block = RefinementBlock(OBS, ACT, 8, 1, tau=0.5)
    torch.nn.init.normal_(block.u[-1].weight)
    learner.policy.append(block)
    learner.counters.version += 1                 # what publishing the block does
    again = learner._batches(1)['next_action'][0, 0]
    assert not torch.equal(again, first[0, 0])
    # the slot is overwritten by a new transition: its next action is drawn for it, not kept from the old one
    learner = learner_with(CollapseField(), capacity=1)
    add_one(learner, [5.0, 5.0, 5.0])
    learner._batches(1)
    add_one(learner, [1.0, -1.0, 0.0])
    torch.testing.assert_close(learner._batches(1)['next_action'][0, 0], torch.tensor([-0.5, -1.0]))


class ShiftField(torch.nn.Module):
    """v = (-3, 0): every x moves by -3 in the first coordinate, so the policy's action there lies below -1."""

    def forward(self, s, x, t):
        return torch.tensor([-3.0, 0.0]).expand_as(x)


def test_soft_next_actions_are_the_clipped_draw_with_the_log_density_of_the_unclipped_one():
    learner = learner_with(ShiftField(), capacity=1, soft=True)
    add_one(learner, [5.0, -1.0, 3.0])
    gen = torch.Generator().set_state(learner.gen.get_state())     # the draw the learner is about to make
    a2, logp = learner.policy.sample_with_log_prob(learner.normalizer(torch.tensor([[5.0, -1.0, 3.0]])),
                                                   generator=gen)
    b = learner._batches(1)
    assert a2[0, 0] < -1.0
    torch.testing.assert_close(b['next_action'][0, 0], a2[0].clamp(-1, 1))
    torch.testing.assert_close(b['next_log_prob'][0, 0], logp[0])


@pytest.mark.parametrize('version', [0, 1, 5])
def test_next_actions_are_drawn_whatever_version_the_learner_starts_at(version):
    learner = learner_with(CollapseField(), capacity=1)
    learner.counters.version = version            # a learner continuing a published policy (Learner.on_policy)
    add_one(learner, [5.0, 5.0, 5.0])
    torch.testing.assert_close(learner._batches(1)['next_action'][0, 0], torch.tensor([0.5, 0.5]))
    add_one(learner, [1.0, -1.0, 0.0])            # overwrites the slot
    torch.testing.assert_close(learner._batches(1)['next_action'][0, 0], torch.tensor([-0.5, -1.0]))
    learner = learner_with(CollapseField(), demo_next_obs=[7.0, -1.0, 0.0])   # demonstrations only
    learner.counters.version = version
    torch.testing.assert_close(learner._batches(1)['next_action'][0, 0], torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize('soft,alpha', [(True, 0.0), (False, 0.5)])
def test_next_log_densities_are_drawn_only_for_a_soft_target_at_positive_alpha(soft, alpha):
    learner = learner_with(soft=soft, alpha=alpha)
    add_one(learner, [1.0, 2.0, 3.0])
    b = {k: v[0] for k, v in learner._batches(1).items()}
    assert 'next_log_prob' not in b and learner._temperature(b) == 0.0


def test_soft_temperature_is_alpha_times_the_target_gradient_norm():
    learner = learner_with(soft=True)
    for k in range(8):
        add_one(learner, [k, 1.0, 2.0])
    b = {k: v[0] for k, v in learner._batches(1).items()}
    a = b['next_action'].clone().requires_grad_(True)
    q = torch.minimum(*learner.critic.target(b['next_obs'], a)).sum()
    grad, = torch.autograd.grad(q, a)
    assert np.isclose(learner._temperature(b), 0.5 * grad.norm(dim=-1).mean().item(), rtol=1e-5)
    assert 'next_log_prob' in b and torch.isfinite(b['next_log_prob']).all()
    learner.cfg.block.q_scale = 'none'                # blocks climb Q itself: the temperature is α
    assert learner._temperature(b) == 0.5


@pytest.mark.parametrize('heads', [2, 5])
def test_each_head_is_a_layer_norm_mlp(heads):
    """Every hidden layer of every Q head (and of its target copy) is Linear -> LayerNorm -> SiLU, the critic of
    docs/algorithm.md §4; a head without the LayerNorm would train without any error to show it."""
    critic = Critic(5, 2, CriticConfig(hidden=16, layers=3, ensemble=heads))
    heads_found = [m for m in critic.modules() if isinstance(m, torch.nn.Sequential)]
    assert len(heads_found) == 2 * heads                     # the online heads and their targets
    for head in heads_found:
        kinds = [type(m).__name__ for m in head]
        assert kinds == ['Linear', 'LayerNorm', 'SiLU'] * 3 + ['Linear'], kinds
