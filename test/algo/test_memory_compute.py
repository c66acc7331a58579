"""A block update does not back-propagate through the base flow: its saved-activation memory stays flat from K=4
to K=32, while naive fine-tuning's grows with K (the contrast shows the measurement can fail). The matching time
figures are a benchmark (benchmarks/bench_block_cost.py): timings on shared cores are no test."""
import torch

from helpers import saved_bytes, small_flow
from swfp_ros.algo.blocks import Cascade, RefinementBlock
from swfp_ros.algo.flow import mlp
from swfp_ros.algo.jko import block_loss
from swfp_ros.algo.naive import naive_loss

OBS, ACT = 8, 4
# A critic of the default size (3x256): a block update's cost is mostly its forward/backward.
Q = mlp(OBS + ACT, 256, 3, 1, layer_norm=True).requires_grad_(False)


def q_fn(s, a):
    return Q(torch.cat([s, a], -1)).squeeze(-1)


def block_update_bytes(K):
    casc = Cascade(small_flow(OBS, ACT, hidden=256, layers=3, euler_steps=K))
    s = torch.randn(128, OBS)
    with torch.no_grad():
        a = casc.sample(s, clip=False)  # as in train_block: π_n samples carry no graph
    block = RefinementBlock(OBS, ACT, 128, 2, 0.1)
    return saved_bytes(lambda: block_loss(block, q_fn, s, a, 0.0, alpha=0.1, q_scale=1.0)[0].backward())


def naive_update_bytes(K):
    casc = Cascade(small_flow(OBS, ACT, hidden=256, layers=3, euler_steps=K).requires_grad_(True))
    return saved_bytes(lambda: naive_loss(casc, q_fn, torch.randn(128, OBS), 1.0).backward())


def test_block_update_memory_flat_in_K_naive_grows():
    b4, b32 = block_update_bytes(4), block_update_bytes(32)
    n4, n32 = naive_update_bytes(4), naive_update_bytes(32)
    print(f'saved-tensor bytes: block K=4 {b4} K=32 {b32}; naive K=4 {n4} K=32 {n32}')
    assert b32 / b4 < 1.5
    assert n32 / n4 > 4
