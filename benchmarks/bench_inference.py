"""Inference at batch 1 against its floor: ``PolicyRuntime.act`` (one decision, stochastic as deployed) vs a numpy
forward pass of the same weights (the floor: no framework overhead at all; this numpy copy of the network exists only
here, to measure against), and vs the eager ``Cascade.sample`` that act() ran before it used the compiled forward
(swfp_ros.algo.compiled). Cascades with 0 and 16 refinement blocks, default sizes (flow 3x256, K = 4; blocks 2x128),
reach's observation size, 1 torch thread. Prints a table and a final JSON line; the ratio is measured within one run,
the calls of both interleaved so that load from other jobs hits both alike.

Usage: python benchmarks/bench_inference.py [--calls 3000] [--blocks 0 16]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

OBS_DIM, ACT_DIM = 17, 7


def make_runtime(n_blocks: int, seed: int = 0):
    from swfp_ros.algo.blocks import Cascade, RefinementBlock
    from swfp_ros.algo.flow import FlowPolicy
    from swfp_ros.algo.normalize import ObsNormalizer
    from swfp_ros.algo.runtime import PolicyRuntime
    torch.manual_seed(seed)
    blocks = []
    for _ in range(n_blocks):
        b = RefinementBlock(OBS_DIM, ACT_DIM, 128, 2, 0.1)
        torch.nn.init.normal_(b.u[-1].weight, std=0.01)        # a trained block is not the identity
        blocks.append(b)
    norm = ObsNormalizer(OBS_DIM).fit(np.random.default_rng(seed).normal(size=(256, OBS_DIM)))
    return PolicyRuntime(Cascade(FlowPolicy(OBS_DIM, ACT_DIM), blocks), norm, device='cpu', seed=seed)


class NumpyFloor:
    """The cascade's forward pass in plain numpy, float32, with the runtime's weights (a benchmark-only copy)."""

    def __init__(self, runtime):
        c, n = runtime.cascade, runtime.normalizer
        as_np = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
        linears = lambda seq: [(as_np(m.weight).T.copy(), as_np(m.bias))  # noqa: E731
                               for m in seq if isinstance(m, torch.nn.Linear)]
        self.mean, self.std, self.clip = as_np(n.mean), as_np(n.std), n.clip
        self.flow = linears(c.base.velocity.net)
        self.freqs = as_np(c.base.velocity.freqs)
        self.k = c.base.cfg.euler_steps
        self.blocks = [(linears(b.u), float(b.tau)) for b in c.blocks]
        self.rng = np.random.default_rng(0)

    @staticmethod
    def mlp(x, layers):
        for w, b in layers[:-1]:
            x = x @ w + b
            x = x / (1.0 + np.exp(-x))          # SiLU
        w, b = layers[-1]
        return x @ w + b

    def act(self, obs, x0=None):
        s = np.clip((np.asarray(obs, np.float32) - self.mean) / self.std, -self.clip, self.clip)
        x = self.rng.standard_normal(ACT_DIM, dtype=np.float32) if x0 is None else x0
        dt = np.float32(1.0 / self.k)
        for k in range(self.k):
            ang = np.float32(k * dt) * self.freqs
            x = x + dt * self.mlp(np.concatenate([s, x, np.sin(ang), np.cos(ang)]), self.flow)
        for layers, tau in self.blocks:
            x = x + np.float32(tau) * self.mlp(np.concatenate([s, x]), layers)
        return np.clip(x, -1.0, 1.0)


def measure(n_blocks: int, calls: int) -> dict:
    rt = make_runtime(n_blocks)
    floor = NumpyFloor(rt)
    obs = np.random.default_rng(1).normal(size=OBS_DIM).astype(np.float32)
    # The floor computes the same function: checked on the deterministic policy (x0 = 0) before timing it.
    max_diff = float(np.abs(rt.act(obs, deterministic=True) - floor.act(obs, np.zeros(ACT_DIM, np.float32))).max())
    for _ in range(200):
        rt.act(obs)
        floor.act(obs)
    norm, cascade, gen = rt.normalizer, rt.cascade, torch.Generator().manual_seed(0)

    @torch.no_grad()
    def eager(o):
        return cascade.sample(norm(torch.as_tensor(o.reshape(1, -1))), generator=gen, clip=True).numpy()[0]
    for _ in range(200):
        eager(obs)
    t_rt, t_np, t_eager = [], [], []
    for _ in range(calls):
        t = time.perf_counter()
        eager(obs)
        t_eager.append(time.perf_counter() - t)
        t = time.perf_counter()
        rt.act(obs)
        t_rt.append(time.perf_counter() - t)
        t = time.perf_counter()
        floor.act(obs)
        t_np.append(time.perf_counter() - t)
    p = lambda x, q: float(np.percentile(x, q) * 1e3)  # noqa: E731
    return {'blocks': n_blocks, 'act_ms_p50': p(t_rt, 50), 'act_ms_p99': p(t_rt, 99), 'numpy_ms_p50': p(t_np, 50),
            'numpy_ms_p99': p(t_np, 99), 'eager_ms_p50': p(t_eager, 50), 'ratio_p50': p(t_rt, 50) / p(t_np, 50),
            'eager_ratio_p50': p(t_eager, 50) / p(t_np, 50), 'max_abs_diff': max_diff}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--calls', type=int, default=3000)
    ap.add_argument('--blocks', type=int, nargs='+', default=[0, 16])
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [measure(n, args.calls) for n in args.blocks]
    print(f'{"blocks":>6} {"act p50":>9} {"act p99":>9} {"numpy p50":>10} {"numpy p99":>10} {"act/numpy":>9} '
          f'{"eager p50":>10} {"eager/numpy":>11} {"|diff|":>8}')
    for r in rows:
        print(f'{r["blocks"]:6d} {r["act_ms_p50"]:8.3f}ms {r["act_ms_p99"]:8.3f}ms {r["numpy_ms_p50"]:9.3f}ms '
              f'{r["numpy_ms_p99"]:9.3f}ms {r["ratio_p50"]:9.2f} {r["eager_ms_p50"]:9.3f}ms '
              f'{r["eager_ratio_p50"]:11.2f} {r["max_abs_diff"]:8.1e}')
    print(json.dumps({'torch': torch.__version__, 'threads': torch.get_num_threads(), 'rows': rows}))


if __name__ == '__main__':
    main()
