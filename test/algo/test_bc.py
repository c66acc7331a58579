"""Behaviour cloning's own contract: refused inputs in their own words, a seed that repeats the fit, the normaliser
fitted to the demonstrations, the loss curve and its logging, and a fit (or training) a stop request ends early."""
import numpy as np
import pytest
import torch

from helpers import small_flow
from swfp_ros.algo.bc import fit_flow, train_bc
from swfp_ros.algo.config import FlowConfig

CFG = FlowConfig(hidden=16, layers=1)


def demos(n=64, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(2.0, 3.0, size=(n, obs_dim)).astype(np.float32)
    return obs, np.tanh(obs[:, :act_dim]).astype(np.float32)


def fit(obs, acts, **kw):
    return train_bc(obs, acts, CFG, **{'steps': 5, 'batch': 16, 'progress': False, 'device': 'cpu', **kw})


@pytest.mark.parametrize('change,message', [
    (lambda o, a: (o[0], a),
     r'need obs \[N, obs_dim\] and actions \[N, act_dim\] with the same N>0, got \(3,\) and \(64, 2\)'),
    (lambda o, a: (o, a[:, 0]), r'got \(64, 3\) and \(64,\)'),
    (lambda o, a: (o, a[:-1]), r'got \(64, 3\) and \(63, 2\)'),
    (lambda o, a: (o[:0], a[:0]), r'same N>0, got \(0, 3\) and \(0, 2\)'),
    (lambda o, a: (np.where(np.arange(o.size).reshape(o.shape) == 7, np.nan, o), a), 'contain NaN or inf'),
    (lambda o, a: (o, np.where(np.arange(a.size).reshape(a.shape) == 7, np.inf, a)), 'contain NaN or inf'),
    (lambda o, a: (o, a * 1.5), r'actions must be scaled to \[-1, 1\], max \|a\| = 1\.'),
])
def test_refuses_demonstrations_it_cannot_fit(change, message):
    with pytest.raises(ValueError, match=message):
        fit(*change(*demos()))


def test_actions_on_the_bounds_and_plain_lists_are_accepted():
    obs, acts = demos()
    acts[0] = [1.0, -1.0]
    flow, _, _ = fit(obs.tolist(), acts.tolist())
    assert (flow.obs_dim, flow.act_dim) == (3, 2)


def test_a_seed_repeats_the_fit_and_another_seed_does_not():
    obs, acts = demos()

    def weights(seed, torch_seed):
        torch.manual_seed(torch_seed)            # whatever the global stream: the seed decides
        flow, _, metrics = fit(obs, acts, seed=seed)
        return torch.cat([p.flatten() for p in flow.parameters()]), metrics['losses']
    (w0, l0), (w1, l1), (w2, _) = weights(3, 0), weights(3, 1), weights(4, 0)
    assert torch.equal(w0, w1) and l0 == l1
    assert not torch.equal(w0, w2)


def test_normaliser_is_fitted_to_the_observations_and_the_metrics_report_the_loss_curve():
    obs, acts = demos(n=200)
    flow, norm, metrics = fit(obs, acts, steps=150)
    np.testing.assert_allclose(norm.mean.numpy(), obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), obs.std(0), rtol=1e-4)
    assert (flow.obs_dim, flow.act_dim, flow.training, flow.cfg) == (3, 2, False, CFG)
    assert len(metrics['losses']) == 150
    assert metrics['final_loss'] == pytest.approx(np.mean(metrics['losses'][-100:]))


class Scalars:
    def __init__(self):
        self.steps = []

    def add_scalar(self, tag, value, step):
        assert tag == 'distil/flow_matching_loss' and np.isfinite(value)
        self.steps.append(step)


@pytest.mark.parametrize('steps,logged', [(7, [0, 3, 6]), (8, [0, 3, 6, 7])])
def test_fit_logs_every_log_every_steps_and_the_last(steps, logged):
    s, a = torch.randn(32, 3), torch.rand(32, 2) * 2 - 1
    writer = Scalars()
    losses = fit_flow(small_flow(), s, a, steps, 16, 1e-3, torch.Generator().manual_seed(0), log_every=3,
                      writer=writer, tag='distil')
    assert writer.steps == logged and len(losses) == steps


def test_a_stop_request_ends_the_fit_before_its_next_step():
    s, a = torch.randn(32, 3), torch.rand(32, 2) * 2 - 1
    calls = []
    flow = small_flow()
    before = [p.clone() for p in flow.parameters()]
    losses = fit_flow(flow, s, a, 50, 16, 1e-3, torch.Generator().manual_seed(0),
                      should_stop=lambda: calls.append(1) or len(calls) > 4)
    assert len(losses) == 4 and len(calls) == 5
    assert any(not torch.equal(p, q) for p, q in zip(before, flow.parameters()))


def test_a_stop_request_ends_bc_training_with_keyboard_interrupt():
    """Not a partly trained flow returned as if done (pretrain would save it)."""
    obs, acts = demos()
    calls = []
    with pytest.raises(KeyboardInterrupt):
        train_bc(obs, acts, CFG, steps=20, batch=16, progress=False, device='cpu',
                 should_stop=lambda: calls.append(1) or len(calls) > 5)
    assert len(calls) == 6


def test_fit_works_with_less_data_than_a_batch():
    s, a = torch.randn(5, 3), torch.rand(5, 2) * 2 - 1
    losses = fit_flow(small_flow(), s, a, 3, 256, 1e-3, torch.Generator().manual_seed(0))
    assert len(losses) == 3 and np.isfinite(losses).all()
