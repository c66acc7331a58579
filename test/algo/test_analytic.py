"""JKO refinements of N(0, I) under Q(a) = -||a - μ||²/2 converge to the Boltzmann target N(μ, αI)."""
import torch

from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.config import BlockConfig, FlowConfig
from swfp_ros.algo.flow import FlowPolicy
from swfp_ros.algo.jko import train_block

MU = torch.tensor([2.0, 1.0])
ALPHA = 0.5


def test_converges_to_boltzmann_target_within_trust_region():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    base = FlowPolicy(1, 2, FlowConfig(hidden=16, layers=1))
    torch.nn.init.zeros_(base.velocity.net[-1].weight)  # zero velocity: π_0 = N(0, I) exactly
    torch.nn.init.zeros_(base.velocity.net[-1].bias)
    cascade = Cascade(base, clip=False)  # μ lies outside [-1, 1]: this target is unbounded
    # Unscaled Q: dividing by E||∇Q|| would change the effective temperature and hence the target.
    cfg = BlockConfig(delta=0.3, alpha=ALPHA, q_scale='none', hidden=64, train_steps=200, pool_size=4096)
    q = lambda s, a: -0.5 * (a - MU).pow(2).sum(-1)  # noqa: E731
    states, log_lambda, converged_at = torch.zeros(4096, 1), None, None
    for n in range(1, 13):
        block, rep = train_block(cascade, q, states, cfg, log_lambda, gen)
        log_lambda = rep.log_lambda
        assert rep.w2_bound <= cfg.tolerance * cfg.delta ** 2 + 1e-9
        if block is not None:
            assert rep.accepted
            cascade.append(block)
        with torch.no_grad():
            a = cascade.sample(torch.zeros(20_000, 1), generator=gen)
        mean, cov = a.mean(0), torch.cov(a.T)
        if ((mean - MU).abs() <= 0.05 * MU).all() and (cov - ALPHA * torch.eye(2)).abs().max() <= 0.05:
            converged_at = converged_at or n
        if converged_at and n >= converged_at + 2:  # and it stays there
            break
    print(f'converged at block {converged_at}; mean {mean.tolist()} cov {cov.tolist()}')
    assert converged_at is not None, f'not converged: mean {mean.tolist()}, cov {cov.tolist()}'
    assert converged_at >= 8  # the W2 lower bound is 7.6 blocks of δ = 0.3: faster would break the trust region
    assert ((mean - MU).abs() <= 0.05 * MU).all() and (cov - ALPHA * torch.eye(2)).abs().max() <= 0.05
