"""Small shared builders for the algo tests."""
import torch

from swfp_ros.algo.blocks import RefinementBlock
from swfp_ros.algo.config import FlowConfig
from swfp_ros.algo.flow import FlowPolicy
from swfp_ros.algo.normalize import ObsNormalizer


def small_flow(obs_dim=3, act_dim=2, hidden=32, layers=2, euler_steps=4, seed=0):
    torch.manual_seed(seed)
    return FlowPolicy(obs_dim, act_dim, FlowConfig(hidden=hidden, layers=layers, euler_steps=euler_steps))


def trained_block(obs_dim=3, act_dim=2, seed=1, std=1.0, tau=0.1):
    """A refinement block that is not the identity a new one is (its last layer drawn), so applying it moves actions."""
    torch.manual_seed(seed)
    b = RefinementBlock(obs_dim, act_dim, 16, 2, tau)
    torch.nn.init.normal_(b.u[-1].weight, std=std)
    return b


def identity_normalizer(dim):
    return ObsNormalizer(dim)


def saved_bytes(fn) -> int:
    """Bytes of tensors autograd saves for backward while fn() runs (deterministic)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total
