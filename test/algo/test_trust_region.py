"""No accepted block violates E||M(a) - a||² <= tolerance·δ², whatever the critic."""
import pytest
import torch

from helpers import small_flow
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
