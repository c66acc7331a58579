"""act() runs a compiled forward (swfp_ros.algo.compiled); it must give exactly the actions of the eager modules:
``Cascade.sample(normalizer(obs), x0, clip=True)`` with the x0 a same-seeded generator draws, bit for bit, before and
after updates (compiled in the background, re-using the traced parts they share with the running policy)."""
import os
import subprocess
import sys

import numpy as np
import torch

from helpers import small_flow, trained_block
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.normalize import ObsNormalizer
from swfp_ros.algo.runtime import PolicyRuntime
from swfp_ros.algo.serialize import BlockUpdate

OBS, ACT = 5, 4


def policy(n_blocks):
    norm = ObsNormalizer(OBS).fit(np.random.default_rng(0).normal(2.0, 3.0, size=(100, OBS)))
    return Cascade(small_flow(OBS, ACT), [trained_block(OBS, ACT, seed=i, std=0.3) for i in range(n_blocks)]), norm


def eager_actions(cascade, norm, obs, seed, calls):
    """What act() computed before it was compiled: one generator draw per call inside Cascade.sample."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [cascade.sample(norm(torch.as_tensor(o, dtype=torch.float32).reshape(-1, OBS)), generator=gen,
                               clip=True).numpy() for o in [obs] * calls]


def test_act_is_the_eager_cascade_bit_for_bit():
    obs1 = np.random.default_rng(1).normal(size=OBS) * 4
    obs4 = np.random.default_rng(2).normal(size=(4, OBS)) * 4
    for n_blocks in (0, 3):
        cascade, norm = policy(n_blocks)
        for obs in (obs1, obs4):
            rt = PolicyRuntime(cascade, norm, device='cpu', seed=7)
            got = [rt.act(obs) for _ in range(3)]                            # stochastic: x0 from the generator
            want = eager_actions(cascade, norm, obs, 7, 3)
            for g, w in zip(got, want):
                assert np.array_equal(g.reshape(w.shape), w)
            assert not np.array_equal(got[0], got[1])                        # fresh noise per decision
            x0 = np.random.default_rng(3).normal(size=(np.atleast_2d(obs).shape[0], ACT)).astype(np.float32)
            with torch.no_grad():
                s = norm(torch.as_tensor(obs, dtype=torch.float32).reshape(-1, OBS))
                steered = cascade.sample(s, torch.as_tensor(x0), clip=True).numpy()
                det = cascade.sample(s, torch.zeros(len(s), ACT), clip=True).numpy()
            assert np.array_equal(rt.act(obs, noise=x0).reshape(steered.shape), steered)
            assert np.array_equal(rt.act(obs, deterministic=True).reshape(det.shape), det)


def test_updates_compile_the_new_policy_and_reuse_the_shared_parts():
    cascade, norm = policy(1)
    rt = PolicyRuntime(cascade, norm, device='cpu', seed=0)
    obs = np.random.default_rng(4).normal(size=(6, OBS))
    rt.act(obs)                                                  # observations for the probe states
    before = rt._snap[4]
    block = trained_block(OBS, ACT, seed=10, std=0.3, tau=0.02)
    rt.apply_update(BlockUpdate.from_block(1, block, rt.digest, 0.1))
    with torch.no_grad():
        s = norm(torch.as_tensor(obs, dtype=torch.float32))
        x0 = torch.randn(6, ACT, generator=torch.Generator().manual_seed(5))
        want = Cascade(cascade.base, [*cascade.blocks, block]).sample(s, x0, clip=True).numpy()
        without_new = cascade.sample(s, x0, clip=True).numpy()
    assert np.array_equal(rt.act(obs, noise=x0.numpy()), want)     # at once, compiled or not yet
    assert rt.wait_compiled(30.0) and rt.forward_kind == 'compiled'      # no CUDA graph on a CPU device
    after = rt._snap[4]
    assert after.traced_base is before.traced_base                                  # not traced again
    assert after.traced_blocks[0] is before.traced_blocks[0] and len(after.traced_blocks) == 2
    got = rt.act(obs, noise=x0.numpy())
    assert np.array_equal(got, want) and not np.array_equal(got, without_new)

    base_cascade, base_norm = policy(2)                          # a compaction / restart snapshot: all new parts
    rt.apply_update(BlockUpdate.from_policy(2, base_cascade, base_norm))
    assert rt.wait_compiled(30.0) and rt._snap[4].traced_base is not after.traced_base
    with torch.no_grad():
        want = base_cascade.sample(base_norm(torch.as_tensor(obs, dtype=torch.float32)), x0, clip=True).numpy()
    assert np.array_equal(rt.act(obs, noise=x0.numpy()), want)


def test_without_compile_updates_an_update_acts_with_the_eager_modules():
    """compile_updates=False (the policy node in realtime mode): no compile thread; the update's actions at once."""
    cascade, norm = policy(1)
    rt = PolicyRuntime(cascade, norm, device='cpu', seed=0, compile_updates=False)
    obs = np.random.default_rng(4).normal(size=(6, OBS))
    rt.act(obs)
    block = trained_block(OBS, ACT, seed=11, std=0.3, tau=0.02)
    rt.apply_update(BlockUpdate.from_block(1, block, rt.digest, 0.1))
    assert rt._compiling is None and not rt.wait_compiled(0.0) and rt.forward_kind == 'eager'
    x0 = np.random.default_rng(5).normal(size=(6, ACT)).astype(np.float32)
    with torch.no_grad():
        s = norm(torch.as_tensor(obs, dtype=torch.float32))
        want = Cascade(cascade.base, [*cascade.blocks, block]).sample(s, torch.as_tensor(x0), clip=True).numpy()
    assert np.array_equal(rt.act(obs, noise=x0), want)


def test_compiling_warns_nothing_outside_pytest():
    """TorchScript's deprecation and the tracer's shape-check warnings are expected, and filtered for exactly their
    sources when the module is imported (pytest resets filters per test, so this runs in a process of its own with
    every warning an error)."""
    code = ('from helpers import small_flow, trained_block\n'
            'from swfp_ros.algo.blocks import Cascade\n'
            'from swfp_ros.algo.normalize import ObsNormalizer\n'
            'from swfp_ros.algo.runtime import PolicyRuntime\n'
            'rt = PolicyRuntime(Cascade(small_flow(), [trained_block()]), ObsNormalizer(3), device="cpu")\n'
            'assert rt.wait_compiled(60)\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get('PYTHONPATH', '')]))
    run = subprocess.run([sys.executable, '-W', 'error', '-c', code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
