"""The actor's forward pass, compiled: the cascade's own modules traced to TorchScript, chained and frozen.

Why: at batch 1 the network is tiny, and eager PyTorch spends most of a decision in Python (module calls, argument
checks): measured with benchmarks/bench_inference.py, eager ``Cascade.sample`` took ~3x a plain numpy forward of the
same weights, the frozen TorchScript chain ~1.05x. The math stays in one place: tracing records the ops that
``ObsNormalizer``, ``FlowPolicy.sample`` and ``RefinementBlock.forward`` run, so the compiled forward computes exactly
what they compute (the same ATen ops in the same order: bit-identical results, pinned by
test/algo/test_compiled_policy.py).

Every part is traced once and reused, so a block update traces only the new block, then re-chains and re-freezes
(freezing inlines the parts into one graph of constants, the fast part at batch 1). That still takes 0.25-0.5 s on a
busy 2-core CPU (default sizes, measured), so PolicyRuntime compiles an update in a background thread and acts with
the eager modules (EagerPolicy) until it is done.

On a CUDA device, a decision at batch 1 is a few dozen kernel launches of microseconds each: the launches, not the
math, set its time. CudaGraphPolicy captures the frozen forward into a CUDA graph once and replays it, one launch per
decision (benchmarks/bench_gpu.py on an H200, default flow, act() at batch 1, p50: 0.555 -> 0.146 ms with no blocks,
1.355 -> 0.308 ms with 16). It replays the same kernels on the same weights: the compiled forward's actions exactly.
"""
from __future__ import annotations

import threading
import warnings

import torch
from torch import nn

from .blocks import Cascade, RefinementBlock
from .normalize import ObsNormalizer

# Calls made right after compiling: TorchScript's profiling executor specialises a graph on its first runs, which are
# several ms slower; they happen here, off the control path, not on the first decisions after an update.
WARMUP_CALLS = 3

# TorchScript is deprecated in favour of torch.compile / torch.export, which compile for seconds per graph (a C++
# toolchain on CPU) where tracing a block takes milliseconds; it works in the pinned torch (2.13). The shape checks of
# our modules become constants in a trace (act() checks shapes before calling it). Both warnings are expected here,
# so they are filtered for exactly these sources (globally: a warnings.catch_warnings block is not thread-safe).
warnings.filterwarnings('ignore', message=r'`torch\.jit\.\w+` is deprecated', category=DeprecationWarning)
warnings.filterwarnings('ignore', category=torch.jit.TracerWarning, module=r'swfp_ros\.algo\.')


class _NormalizedBase(nn.Module):
    """(raw obs, x0) -> (normalised obs, base action x_K): the part of the chain that owns the normaliser."""

    def __init__(self, normalizer: ObsNormalizer, cascade: Cascade):
        super().__init__()
        self.normalizer, self.base = normalizer, cascade.base

    def forward(self, obs: torch.Tensor, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.normalizer(obs)
        return s, self.base.sample(s, x0)


class _Chain(nn.Module):
    """Base, then every block, then the actor's clip to [-1, 1] (always: an actor never emits out-of-range actions)."""

    def __init__(self, base: torch.jit.ScriptModule, blocks: list[torch.jit.ScriptModule]):
        super().__init__()
        self.base, self.blocks = base, nn.ModuleList(blocks)

    def forward(self, obs: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        s, a = self.base(obs, x0)
        for block in self.blocks:
            a = block(s, a)
        return a.clamp(-1.0, 1.0)


def _trace(module: nn.Module, *example: torch.Tensor) -> torch.jit.ScriptModule:
    return torch.jit.trace(module, example, check_trace=False)


class EagerPolicy:
    """The same call as CompiledPolicy, run by the modules themselves (while a compiled forward is being built)."""

    def __init__(self, normalizer: ObsNormalizer, cascade: Cascade):
        self.normalizer, self.cascade = normalizer, cascade
        self.obs_dim, self.act_dim = cascade.obs_dim, cascade.act_dim

    def __call__(self, obs: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.cascade.sample(self.normalizer(obs), x0, clip=True)


class CompiledPolicy:
    """``forward(obs [B, obs_dim] raw, x0 [B, act_dim]) -> actions [B, act_dim] clipped``, for a (normaliser,
    cascade) pair that is never modified afterwards (PolicyRuntime's snapshots). ``previous``: the compiled policy
    of a snapshot sharing modules with this one (the same base, a prefix of the blocks): its traced parts are reused.
    """

    def __init__(self, normalizer: ObsNormalizer, cascade: Cascade, device: torch.device,
                 previous: 'CompiledPolicy | None' = None):
        self.normalizer, self.base = normalizer, cascade.base
        self.obs_dim, self.act_dim = cascade.obs_dim, cascade.act_dim
        obs = torch.zeros(1, cascade.obs_dim, device=device)
        act = torch.zeros(1, cascade.act_dim, device=device)
        reuse = previous is not None and previous.base is cascade.base and previous.normalizer is normalizer
        with torch.no_grad():
            base = previous.traced_base if reuse else _trace(_NormalizedBase(normalizer, cascade).eval(), obs, act)
            kept = previous.traced_blocks if reuse else []
            self.traced_base = base
            self.traced_blocks: list[tuple[RefinementBlock, torch.jit.ScriptModule]] = [
                kept[i] if i < len(kept) and kept[i][0] is b else (b, _trace(b, obs, act))
                for i, b in enumerate(cascade.blocks)]
            chain = _Chain(base, [t for _, t in self.traced_blocks]).eval()
            self.forward = torch.jit.freeze(torch.jit.script(chain))
        with torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                self.forward(obs, act)

    def __call__(self, obs: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        # The graph's method itself (not nn.Module.__call__ and its hook checks), without a grad-mode context: its
        # weights are frozen constants, so with inputs that do not require grad it records no autograd graph.
        return self.forward.forward(obs, x0)


class CudaGraphPolicy:
    """A CompiledPolicy on a CUDA device whose batch-1 calls replay a CUDA graph of its forward (other batch sizes run
    the compiled forward itself). The graph reads and writes fixed buffers, so replays are serialised by a lock: one
    object may serve several threads, as a PolicyRuntime's snapshot does.

    Captured in ``thread_local`` error mode: it may be built in PolicyRuntime's background compile thread while the
    control thread keeps acting (and synchronising) on the default stream with the previous policy.
    """

    def __init__(self, compiled: CompiledPolicy, device: torch.device):
        self.compiled = compiled
        self.obs_dim, self.act_dim = compiled.obs_dim, compiled.act_dim
        self._lock = threading.Lock()
        self._obs = torch.zeros(1, self.obs_dim, device=device)
        self._x0 = torch.zeros(1, self.act_dim, device=device)
        # Warm-up on a side stream before capture, as CUDA graph capture requires (lazy initialisation, workspaces).
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(WARMUP_CALLS):
                compiled(self._obs, self._x0)
        torch.cuda.current_stream(device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph, capture_error_mode='thread_local'):
            self._out = compiled(self._obs, self._x0)

    def __call__(self, obs: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Actions for (obs, x0) as PolicyRuntime passes them; batch 1 returns a host tensor (copied under the lock,
        before another thread's replay overwrites the output buffer)."""
        if obs.shape[0] != 1:
            return self.compiled(obs, x0)
        with self._lock:
            self._obs.copy_(obs)
            self._x0.copy_(x0)
            self._graph.replay()
            return self._out.cpu()
