"""On a CUDA device act() replays a CUDA graph of the compiled forward at batch 1 (swfp_ros.algo.compiled.
CudaGraphPolicy): the actions of the eager cascade, a fresh observation and noise on every call, a new graph after an
update (captured in the background while the old policy keeps acting), and threads acting at once each served their
own actions.

These need a GPU, which CI machines lack: they run wherever CUDA is (they ran on an H200, see the README's GPU
figures); without one, test_compiled_policy.py covers the compiled forward the graph replays."""
import copy
import threading

import numpy as np
import pytest
import torch

from helpers import small_flow, trained_block
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.normalize import ObsNormalizer
from swfp_ros.algo.runtime import PolicyRuntime
from swfp_ros.algo.serialize import BlockUpdate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

OBS, ACT = 5, 4
# TorchScript may fuse the compiled forward's CUDA kernels differently from eager: equal to float32 rounding.
ATOL = 1e-5


def policy(n_blocks):
    norm = ObsNormalizer(OBS).fit(np.random.default_rng(0).normal(2.0, 3.0, size=(100, OBS)))
    return Cascade(small_flow(OBS, ACT), [trained_block(OBS, ACT, seed=i, std=0.3) for i in range(n_blocks)]), norm


def eager_on_cuda(cascade, norm, obs, x0):
    cascade, norm = copy.deepcopy(cascade).cuda(), copy.deepcopy(norm).cuda()
    with torch.no_grad():
        s = norm(torch.as_tensor(obs, dtype=torch.float32, device='cuda').reshape(-1, OBS))
        a = cascade.sample(s, torch.as_tensor(x0, device='cuda').reshape(-1, ACT), clip=True)
    return a.cpu().numpy().reshape(np.shape(x0))


def test_batch_one_replays_a_graph_with_the_compiled_forwards_actions():
    cascade, norm = policy(3)
    graphed = PolicyRuntime(cascade, norm, device='cuda', seed=7)
    plain = PolicyRuntime(cascade, norm, device='cuda', seed=7, cuda_graph=False)
    assert (graphed.forward_kind, plain.forward_kind) == ('cuda_graph', 'compiled')
    rng = np.random.default_rng(1)
    for obs in rng.normal(size=(20, OBS)) * 4:            # a new observation every call
        got = graphed.act(obs)                            # stochastic: x0 from same-seeded generators
        assert got.shape == (ACT,) and np.array_equal(got, plain.act(obs))
        x0 = rng.normal(size=ACT).astype(np.float32)
        np.testing.assert_allclose(graphed.act(obs, noise=x0), eager_on_cuda(cascade, norm, obs, x0), atol=ATOL)
        assert np.abs(graphed.act(obs, deterministic=True)).max() <= 1.0


def test_other_batch_sizes_run_the_compiled_forward():
    cascade, norm = policy(2)
    rt = PolicyRuntime(cascade, norm, device='cuda', seed=0)
    rng = np.random.default_rng(2)
    obs, x0 = rng.normal(size=(5, OBS)) * 4, rng.normal(size=(5, ACT)).astype(np.float32)
    np.testing.assert_allclose(rt.act(obs, noise=x0), eager_on_cuda(cascade, norm, obs, x0), atol=ATOL)


def test_an_update_is_captured_in_the_background_while_the_old_policy_acts():
    cascade, norm = policy(1)
    rt = PolicyRuntime(cascade, norm, device='cuda', seed=0)
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(6, OBS)) * 4
    rt.act(obs)                                           # observations for the probe states
    block = trained_block(OBS, ACT, seed=10, std=0.3, tau=0.02)
    rt.apply_update(BlockUpdate.from_block(1, block, rt.digest, 0.1))
    kinds = set()
    while not rt.wait_compiled(0.0):                      # acting (and synchronising) during the capture
        kinds.add(rt.forward_kind)
        rt.act(obs[0])
    assert kinds <= {'eager'} and rt.forward_kind == 'cuda_graph'
    updated = Cascade(cascade.base, [*cascade.blocks, block])
    for o in obs:
        x0 = rng.normal(size=ACT).astype(np.float32)
        got = rt.act(o, noise=x0)
        np.testing.assert_allclose(got, eager_on_cuda(updated, norm, o, x0), atol=ATOL)
        assert not np.allclose(got, eager_on_cuda(cascade, norm, o, x0), atol=ATOL)


def test_threads_acting_at_once_each_get_their_own_actions():
    cascade, norm = policy(3)
    rt = PolicyRuntime(cascade, norm, device='cuda', seed=0)
    obs = np.random.default_rng(4).normal(size=(4, OBS)) * 4
    want = [rt.act(o, deterministic=True) for o in obs]
    wrong = []

    def act_many(i):
        for _ in range(300):
            if not np.array_equal(rt.act(obs[i], deterministic=True), want[i]):
                wrong.append(i)

    threads = [threading.Thread(target=act_many, args=(i,)) for i in range(len(obs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
