"""The policy's networks: the cascade (blocks of its sizes, frozen, actions clipped once at the end) and its base flow
(the shapes it takes, the flow-matching loss)."""
import pytest
import torch

from helpers import small_flow, trained_block
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.config import FlowConfig
from swfp_ros.algo.flow import FlowPolicy


def test_a_cascade_refuses_blocks_of_other_sizes():
    """At construction and on append: a block for another observation or action size would fail only when acting."""
    for obs_dim, act_dim in ((4, 2), (3, 1)):
        with pytest.raises(ValueError, match=f'block dims \\(obs {obs_dim}, act {act_dim}\\) do not match the cascade '
                                             f'\\(obs 3, act 2\\)'):
            Cascade(small_flow(), [trained_block(obs_dim, act_dim)])
        cascade = Cascade(small_flow(), [trained_block()])
        with pytest.raises(ValueError, match='do not match the cascade'):
            cascade.append(trained_block(obs_dim, act_dim))
        assert len(cascade.blocks) == 1
    cascade.append(trained_block())
    assert len(cascade.blocks) == 2 and not any(p.requires_grad for p in cascade.blocks[1].parameters())


def test_actions_clipped_at_the_end_both_ways_unless_asked_not_to():
    s = torch.zeros(512, 3)
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    wide = Cascade(small_flow(), [trained_block(std=400.0)])   # a block that pushes actions far past the bounds
    raw = wide.sample(s, x0, clip=False)
    assert (raw > 1).any() and (raw < -1).any()
    assert torch.equal(wide.sample(s, x0), raw.clamp(-1, 1))
    unbounded = Cascade(small_flow(), [trained_block(std=400.0)], clip=False)
    assert torch.equal(unbounded.sample(s, x0), raw)
    assert torch.equal(unbounded.sample(s, x0, clip=True), raw.clamp(-1, 1))
    assert not torch.allclose(raw, Cascade(wide.base).sample(s, x0, clip=False))    # the block is applied


@pytest.mark.parametrize('name,call', [
    ('FlowPolicy obs', lambda f: f.sample(torch.zeros(4, 5))),
    ('FlowPolicy obs', lambda f: f.sample(torch.zeros(3))),                      # unbatched
    ('FlowPolicy x0', lambda f: f.sample(torch.zeros(4, 3), x0=torch.zeros(4, 1))),
    ('FlowPolicy x0', lambda f: f.sample_with_log_prob(torch.zeros(4, 3), x0=torch.zeros(4, 2, 1))),
    ('FlowPolicy.loss obs', lambda f: f.loss(torch.zeros(4, 2), torch.zeros(4, 2))),
    ('FlowPolicy.loss actions', lambda f: f.loss(torch.zeros(4, 3), torch.zeros(4, 3))),
])
def test_the_base_flow_refuses_inputs_of_the_wrong_shape(name, call):
    with pytest.raises(ValueError, match=f'{name}: expected shape \\[batch, '):
        call(small_flow())


def test_a_chunked_flow_needs_whole_actions():
    with pytest.raises(ValueError, match='act_dim 3 is not a multiple of chunk H=2'):
        FlowPolicy(3, 3, FlowConfig(chunk=2))
    assert FlowPolicy(3, 4, FlowConfig(hidden=8, chunk=2)).act_dim == 4


def test_flow_matching_loss_regresses_the_straight_path_velocity():
    """Conditional flow matching on x_t = (1 - t)·x0 + t·a: the field is regressed on a - x0 at x_t, t ~ U(0, 1)
    drawn from the generator given (the reference computed here from the definition), with the x0 it is given:
    compaction distils the cascade with the noise that produced each action."""
    flow = small_flow()
    g = torch.Generator().manual_seed(0)
    s, a, x0 = torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    t = torch.rand(64, generator=torch.Generator().manual_seed(1))
    xt = (1 - t[:, None]) * x0 + t[:, None] * a
    expected = (flow.velocity(s, xt, t) - (a - x0)).pow(2).sum(-1).mean()
    assert flow.loss(s, a, generator=torch.Generator().manual_seed(1), x0=x0).item() == pytest.approx(expected.item())
