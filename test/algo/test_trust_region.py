"""No accepted block violates E||M(a) - a||² <= tolerance·δ² (nor its per-state 95th percentile bound), whatever
the critic; the dual ascent does the work the shrink step only backs up; held-out states are never trained on; a block
is accepted only if the critic predicts an improvement on them."""
import math

import pytest
import torch

from helpers import saved_bytes, small_flow
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.config import BlockConfig
from swfp_ros.algo.jko import train_block

CRITICS = {
    'huge_gradient': lambda s, a: 1e6 * a.sum(-1),
    'steep_and_curved': lambda s, a: 1e4 * torch.sin(5 * a).sum(-1) + 1e3 * (a * s[:, :2]).sum(-1),
    'moderate': lambda s, a: -(a - 0.5).pow(2).sum(-1),
}


@pytest.mark.parametrize('name', CRITICS)
# (10 steps, lr 0.05): the block overshoots before the dual can catch up, so shrinking must hold the bound.
@pytest.mark.parametrize('steps,lr', [(10, 0.05), (150, 1e-3)])
def test_accepted_blocks_respect_trust_region(name, steps, lr):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cascade = Cascade(small_flow())
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=steps, lr=lr, batch_size=128, pool_size=1024, q_scale='none')
    log_lambda, accepted = None, 0
    for _ in range(3):
        block, rep = train_block(cascade, CRITICS[name], torch.randn(1024, 3, generator=gen), cfg, log_lambda, gen)
        log_lambda = rep.log_lambda
        assert (block is not None) == rep.accepted
        if block is not None:
            accepted += 1
            assert rep.w2_bound <= cfg.tolerance * cfg.delta ** 2 + 1e-7, rep
            # and independently of the report: measure the published block on fresh states
            with torch.no_grad():
                s = torch.randn(2048, 3, generator=gen)
                a = cascade.sample(s, generator=gen, clip=False)
                assert (block(s, a) - a).pow(2).sum(-1).mean() <= cfg.tolerance * cfg.delta ** 2 * 1.1
            cascade.append(block)
    assert accepted >= 1  # the property was exercised, not vacuous


def test_violating_block_is_shrunk_not_accepted_as_is():
    gen = torch.Generator().manual_seed(0)
    # Adam's step does not scale with the gradient, so overshoot is forced with a large lr and too few dual steps.
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=10, lr=0.05, batch_size=128, pool_size=1024, q_scale='none')
    block, rep = train_block(Cascade(small_flow()), CRITICS['huge_gradient'], torch.randn(1024, 3), cfg, None, gen)
    assert rep.reason == 'shrunk' and rep.shrink < 0.5 and rep.accepted
    assert abs(rep.w2_bound - cfg.delta ** 2) < 1e-3


def test_block_without_predicted_improvement_is_rejected():
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=20, pool_size=512)
    block, rep = train_block(Cascade(small_flow()), lambda s, a: 0.0 * a.sum(-1), torch.randn(512, 3), cfg, None, gen)
    assert block is None and not rep.accepted and rep.reason == 'no_improvement'


def test_block_that_lowers_held_out_q_is_rejected():
    """A critic whose held-out verdict disagrees with the one the block climbed (training runs with gradients,
    validation without): the block moves, and the held-out ΔQ it is judged by is negative."""
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=50, pool_size=512)
    q = lambda s, a: a.sum(-1) if torch.is_grad_enabled() else -a.sum(-1)  # noqa: E731
    block, rep = train_block(Cascade(small_flow()), q, torch.randn(512, 3, generator=gen), cfg, None, gen)
    assert rep.w2_bound > 0.1 * cfg.delta ** 2 and rep.delta_q < 0, rep
    assert block is None and rep.reason == 'no_improvement'


def test_dual_ascent_tightens_when_violated_and_relaxes_when_slack():
    """With a critic whose pull would move actions ~100δ at λ's starting value, the dual alone must bring the
    displacement back to δ² (no shrink); with one pulling ~nothing, λ must fall from its start."""
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=300, lr=1e-2, batch_size=128, pool_size=1024, q_scale='none')
    start = math.log(1.0 / (2.0 * cfg.delta))
    cascade, states = Cascade(small_flow(), clip=False), torch.randn(1024, 3, generator=gen)
    block, strong = train_block(cascade, lambda s, a: 100.0 * a.sum(-1), states, cfg, None, gen)
    assert strong.log_lambda > start + 3.0, strong
    assert strong.shrink == 1.0 and strong.w2_bound <= cfg.tolerance * cfg.delta ** 2, strong
    _, weak = train_block(cascade, lambda s, a: 1e-4 * a.sum(-1), states, cfg, None, gen)
    assert weak.log_lambda < start - 1.0 and weak.w2_bound < 0.5 * cfg.delta ** 2, weak


def test_per_state_displacement_p95_is_bounded_and_reported():
    """A critic steep on 10 % of the states only: the mean displacement can meet δ² while those states move ~10δ².
    The accepted block's per-state 95th percentile, measured here on fresh states, stays within its bound."""
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=64, train_steps=300, batch_size=256, pool_size=2048, q_scale='none')

    def q(s, a):
        return torch.where(s[:, 0] > 1.2816, 10.0, 1e-3) * a.sum(-1)

    cascade = Cascade(small_flow(), clip=False)
    block, rep = train_block(cascade, q, torch.randn(2048, 3, generator=gen), cfg, None, gen)
    bound = cfg.tolerance * cfg.state_p95 * cfg.delta ** 2
    assert block is not None and rep.reason == 'shrunk' and rep.w2_state_p95 <= bound, rep
    assert rep.w2_bound < cfg.delta ** 2   # the per-state bound, not the mean, was the binding one
    with torch.no_grad():
        s = torch.randn(4000, 3, generator=gen).repeat_interleave(8, 0)
        a = cascade.sample(s, generator=gen, clip=False)
        per_state = (block(s, a) - a).pow(2).sum(-1).view(-1, 8).mean(1)
    assert torch.quantile(per_state, 0.95) <= 1.2 * bound


def test_held_out_states_are_a_random_subset_never_trained_on():
    """The pool arrives ordered (online states, then demonstrations): the held-out fifth must be drawn from all of it
    and never reach a training step. Each state carries its index in coordinate 0."""
    gen = torch.Generator().manual_seed(0)
    seen = {'train': set(), 'held_out': set()}

    def q(s, a):
        seen['train' if torch.is_grad_enabled() else 'held_out'].update(s[:, 0].round().long().tolist())
        return -(a - 0.5).pow(2).sum(-1)

    states = torch.zeros(1000, 3)
    states[:, 0] = torch.arange(1000.0)
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=100, batch_size=128, pool_size=1000)
    train_block(Cascade(small_flow()), q, states, cfg, None, gen)
    assert len(seen['held_out']) == 200 and not seen['held_out'] & seen['train']
    first_half = sum(i < 500 for i in seen['held_out']) / 200
    assert 0.4 < first_half < 0.6, first_half


class CollapseField(torch.nn.Module):
    """The last Euler step lands every x on 0.5·s[:, :2]: a policy without spread within a state (but across them)."""

    def forward(self, s, x, t):
        return (0.5 * s[:, :2] - x) / (1 - t[:, None])


def test_spread_is_measured_within_a_state():
    gen = torch.Generator().manual_seed(0)
    flow = small_flow()
    flow.velocity = CollapseField()
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=50, pool_size=512)
    _, rep = train_block(Cascade(flow), CRITICS['moderate'], torch.randn(512, 3, generator=gen), cfg, None, gen)
    assert rep.spread < 1e-5, rep            # across states the actions differ by ~0.5: that is not spread


@pytest.mark.parametrize('alpha', [0.0, 0.1])
def test_validation_keeps_no_graph_and_skips_the_log_det_at_alpha_zero(alpha):
    from swfp_ros.algo.jko import _validate
    from swfp_ros.algo.blocks import RefinementBlock
    block = RefinementBlock(3, 2, 16, 2, tau=0.1).requires_grad_(False)
    s, a = torch.randn(64, 3), torch.randn(64, 2)
    stats = {}
    used = saved_bytes(lambda: stats.update(_validate(block, CRITICS['moderate'], s, a, 4, True, alpha)))
    if alpha == 0:
        assert stats['logdet'] is None and used == 0
    else:   # one forward graph for the Jacobian's backward pass, and no second-order graph
        with torch.no_grad():
            assert used == saved_bytes(lambda: block.logabsdet(s, a))
        assert math.isfinite(stats['logdet'])


def test_lambda_never_falls_below_its_floor():
    """λ may fall to a tenth of the JKO weight 1/(2δ) (a step of at most 10δ), never lower: a carried λ below the floor
    is raised to it, and a critic with no pull drives λ down to exactly the floor. A stopped block carries λ too."""
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=16, train_steps=40, dual_step=1.0, pool_size=256, q_scale='none')
    floor = math.log(1.0 / (2.0 * cfg.delta)) - math.log(10.0)
    cascade, states, no_pull = Cascade(small_flow()), torch.randn(256, 3, generator=gen), lambda s, a: 0.0 * a.sum(-1)
    _, rep = train_block(cascade, no_pull, states, cfg, None, gen)
    assert rep.log_lambda == pytest.approx(floor), rep
    block, stopped = train_block(cascade, no_pull, states, cfg, -100.0, gen, should_stop=lambda: True)
    assert block is None and not stopped.accepted and stopped.reason == 'stopped'
    assert stopped.log_lambda == pytest.approx(floor), stopped


def test_entropy_counts_towards_the_improvement():
    """α > 0 and a critic with no opinion: the block can only gain entropy (log det > 0), which is an improvement of
    its objective, α·E log det, and is accepted as one."""
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=32, alpha=0.5, train_steps=100, pool_size=512, q_scale='none')
    block, rep = train_block(Cascade(small_flow()), lambda s, a: 0.0 * a.sum(-1), torch.randn(512, 3, generator=gen),
                             cfg, None, gen)
    assert rep.logdet > 0 and rep.improvement == pytest.approx(cfg.alpha * rep.logdet), rep
    assert block is not None and rep.accepted, rep


def test_a_critic_that_is_not_finite_on_held_out_states_rejects_the_block():
    """Training sees a finite critic (with gradients), validation a NaN one: the report is not finite, so the block
    is rejected as such, not judged by comparisons that NaN makes false."""
    gen = torch.Generator().manual_seed(0)
    cfg = BlockConfig(delta=0.1, hidden=32, train_steps=20, pool_size=512)
    q = lambda s, a: a.sum(-1) if torch.is_grad_enabled() else torch.full_like(a[:, 0], float('nan'))  # noqa: E731
    block, rep = train_block(Cascade(small_flow()), q, torch.randn(512, 3, generator=gen), cfg, None, gen)
    assert block is None and rep.reason == 'non_finite', rep


@pytest.mark.parametrize('shape', [(64,), (64, 4), (1, 3)])
def test_states_of_the_wrong_shape_are_refused(shape):
    cfg = BlockConfig(delta=0.1, hidden=16, train_steps=1, pool_size=64)
    with pytest.raises(ValueError, match=r'expected states \[N>=2, 3\]'):
        train_block(Cascade(small_flow()), CRITICS['moderate'], torch.randn(*shape), cfg)
