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


def test_log_densities_match_autograd_jacobians_of_nonlinear_maps_per_sample():
    """Closed forms above use constant Jacobians; here each sample's Jacobian differs, and must be taken at the input
    of its map (the Euler step's x_k, the block's a), not at its output."""
    from torch.autograd.functional import jacobian
    torch.manual_seed(0)
    d, K = 3, 4
    flow = FlowPolicy(2, d, FlowConfig(euler_steps=K, hidden=16, layers=2))
    with torch.no_grad():   # at the default init the field is nearly linear in x: curve it
        for layer in flow.velocity.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(3.0)
    block = RefinementBlock(2, d, hidden=16, layers=2, tau=0.5)
    torch.nn.init.normal_(block.u[-1].weight)
    s, x0 = torch.randn(5, 2), torch.randn(5, d)
    a, logp = Cascade(flow, [block], clip=False).sample_with_log_prob(s, x0)
    expected = []
    for i in range(len(s)):
        si, x, logdet = s[i:i + 1], x0[i], 0.0
        for k in range(K):
            t = torch.full((1,), k / K)
            step = lambda y: y + flow.velocity(si, y[None], t)[0] / K  # noqa: E731
            logdet = logdet + torch.linalg.slogdet(jacobian(step, x))[1]
            x = step(x).detach()
        logdet = logdet + torch.linalg.slogdet(jacobian(lambda y: block(si, y[None])[0], x))[1]
        expected.append(torch.distributions.MultivariateNormal(torch.zeros(d), torch.eye(d)).log_prob(x0[i]) - logdet)
        torch.testing.assert_close(a[i], block(si, x[None])[0].detach())
    torch.testing.assert_close(logp.detach(), torch.stack(expected).detach(), atol=1e-4, rtol=1e-4)
    with torch.no_grad():   # the block's own log-det as used by the JKO loss, per sample
        x_k = flow.sample(s, x0)
    torch.testing.assert_close(block.logabsdet(s, x_k).detach(), torch.stack(
        [torch.linalg.slogdet(jacobian(lambda y: block(s[i:i + 1], y[None])[0], x_k[i]))[1] for i in range(5)]))


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
