"""Change-of-variables log-density against closed forms and a numerical normalisation check."""
import numpy as np
import torch

from swfp_ros.algo.bc import train_bc
from swfp_ros.algo.blocks import Cascade, RefinementBlock
from swfp_ros.algo.config import FlowConfig
from swfp_ros.algo.flow import FlowPolicy


def gaussian_logpdf(x, mean, cov):
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x)


class LinearField(torch.nn.Module):
    """v(s, x, t) = A x + b: each Euler step is affine, so π is an exact Gaussian pushforward."""

    def __init__(self, A, b):
        super().__init__()
        self.A, self.b = A, b

    def forward(self, s, x, t):
        return x @ self.A.T + self.b


def test_flow_log_prob_matches_gaussian_pushforward():
    torch.manual_seed(0)
    d, K = 3, 4
    flow = FlowPolicy(2, d, FlowConfig(euler_steps=K, hidden=8, layers=1))
    A = 0.5 * torch.randn(d, d)
    b = torch.randn(d)
    flow.velocity = LinearField(A, b)
    step = torch.eye(d) + A / K  # x_{k+1} = (I + A/K) x_k + b/K
    L, c = torch.eye(d), torch.zeros(d)
    for _ in range(K):
        L, c = step @ L, step @ c + b / K
    x, logp = flow.sample_with_log_prob(torch.zeros(64, 2))
    torch.testing.assert_close(logp, gaussian_logpdf(x, c, L @ L.T), atol=1e-4, rtol=1e-4)


def test_block_log_prob_matches_affine_map():
    torch.manual_seed(0)
    d = 2
    flow = FlowPolicy(1, d, FlowConfig(hidden=8, layers=1))
    torch.nn.init.zeros_(flow.velocity.net[-1].weight)
    torch.nn.init.zeros_(flow.velocity.net[-1].bias)  # base = N(0, I)
    block = RefinementBlock(1, d, hidden=8, layers=0, tau=0.5)  # layers=0: u is one Linear on [s, a]
    B = torch.tensor([[0.4, -0.3], [0.2, 0.8]])
    with torch.no_grad():
        block.u[-1].weight.copy_(torch.cat([torch.zeros(d, 1), B], 1))
        block.u[-1].bias.copy_(torch.tensor([1.0, -2.0]))
    cascade = Cascade(flow, [block], clip=False)
    a, logp = cascade.sample_with_log_prob(torch.zeros(64, 1))
    M = torch.eye(d) + 0.5 * B  # M(a) = (I + τB) a + τc
    torch.testing.assert_close(logp, gaussian_logpdf(a, 0.5 * torch.tensor([1.0, -2.0]), M @ M.T), atol=1e-4,
                               rtol=1e-4)


def test_trained_flow_density_is_normalised():
    rng = np.random.default_rng(0)
    n = 4000
    obs = np.zeros((n, 1), np.float32)
    acts = np.clip(rng.normal([0.3, -0.2], [0.25, 0.15], size=(n, 2)), -1, 1).astype(np.float32)
    flow, _, _ = train_bc(obs, acts, FlowConfig(hidden=64, layers=2), steps=1500, batch=256, lr=2e-3,
                          progress=False, device='cpu')
    x0 = torch.randn(8000, 2, generator=torch.Generator().manual_seed(2))
    x, logp = flow.sample_with_log_prob(torch.zeros(8000, 1), x0)
    x, logp = x.detach(), logp.detach()
    # Normalisation with log π known only at its own samples: E_{x~π}[q(x)/π(x)] = ∫ q = 1 for any density q inside
    # π's support. q = a slightly narrowed Gaussian fit keeps the ratio bounded. A wrong Jacobian term (missing Δ,
    # wrong sign) rescales π and fails this.
    q = torch.distributions.MultivariateNormal(x.mean(0), 0.7 * torch.cov(x.T))
    integral = torch.exp(q.log_prob(x) - logp).mean().item()
    assert abs(integral - 1.0) < 0.1, integral
