"""PolicyRuntime: the actor side (ROS policy node, runners). Acts with the current cascade, swaps in updates safely."""
from __future__ import annotations

import copy
import dataclasses
import math
import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from . import auth
from .blocks import Cascade
from .compiled import CompiledPolicy, CudaGraphPolicy, EagerPolicy
from .config import resolve_device
from .normalize import ObsNormalizer
from .serialize import MAX_UPDATE_BYTES, BlockUpdate, UpdateRejected, policy_digest


@dataclass(frozen=True)
class UpdateChecks:
    """What an actor checks before it swaps an update in, beyond the format's own checks (checksum, finite weights,
    architecture) and the signature (when a key is set).

    Order: a block must be the next version and extend exactly the running policy (its ``parent`` digest); a base must
    not be older than the policy, not more than ``max_version_jump`` ahead, and at the same version it must be the
    running policy itself (a restarted learner's snapshot); it must keep the running flow's architecture. Then the new
    policy is run on probe states: its actions must be finite, and a block's mean displacement E||M(a) - a||^2 on them
    must stay within ``probe_slack`` times the trust region it claims, which may not exceed ``max_block_w2``.
    """
    max_bytes: int = MAX_UPDATE_BYTES
    # Versions count published updates: one per accepted block plus one per compaction (with config/learner.yaml's
    # block every 1k env steps, one version per ~940 env steps at the most). A policy started from an older checkpoint
    # than that behind a learner must be started from the learner's checkpoint instead. Bounds how far a forged base
    # can push the version (and lock the real learner's blocks out as "out of order").
    max_version_jump: int = 1000
    max_block_w2: float = 1.0         # largest claimable trust region, in [-1, 1] action units (delta 0.3 claims 0.11)
    # Probe states are not the learner's held-out states: a block moves more on some. Measured with
    # benchmarks/bench_update_checks.py (reach, delta 0.1 and 0.3, 22 learner blocks): up to 3.3x its claim on the
    # newest observed states (0.9x on the held-out ones, 1.7x on synthetic ones), hence 10. A forged block that
    # saturates the actions (~1 per joint: d2 ~ act_dim = 7) exceeds a claim of 0.0125 (delta 0.1) by 560x.
    probe_slack: float = 10.0
    probe_states: int = 64            # states per check (x one action each)
    probe_min_observed: int = 16      # fewer observations seen so far -> synthetic states (normalised N(0, I))
    max_blocks: int = 256             # cascade length after the update (a learner compacts at block.max_blocks)


@dataclass(frozen=True)
class PreparedUpdate:
    """An update that passed every check against the policy running at ``checked_against``, with its new snapshot
    built (None: the update is the running policy itself), ready for PolicyRuntime.commit_update."""
    version: int
    checked_against: int
    snap: tuple | None


PROBE_MEMORY = 256                    # recent observations kept as probe states
PROBE_SEED = 1234                     # fixed: a check gives the same verdict for the same update and states


class PolicyRuntime:
    """act() reads one immutable (normaliser, cascade, version, digest, forward) snapshot; apply_update() checks an
    update and builds a new snapshot off to the side (prepare_update), then swaps the reference under a lock
    (commit_update), so a swap never lands in the middle of an inference. A control loop can run the two halves on
    different threads: the checks off the control thread, the swap between two inferences. The runtime owns copies
    of the modules it is given: a learner that keeps training its own cascade never changes what the actor runs.

    The forward is the compiled one (swfp_ros.algo.compiled) from the start; after an update, the eager modules act
    until a background thread has compiled the new policy (a few hundred ms on a busy CPU, which would otherwise stall
    the control loop that applies the update), then the compiled forward is swapped in. Both give the same actions.

    ``compile_updates = False`` keeps the eager modules after an update instead: tracing and freezing hold the
    interpreter lock for tens of ms at a time, so the compile thread delays a wall-clock control loop running beside
    it (when the background compile came in, the longest realtime tick gap at a block swap went from 41 ms to
    56-120 ms), while eager inference costs 0.2-0.7 ms, nothing at a 20-50 Hz control rate. The policy node sets it in realtime
    mode; in lockstep, throughput matters and a late tick costs nothing.

    On a CUDA device the compiled forward is replayed from a CUDA graph at batch 1 (``cuda_graph``, the default; see
    swfp_ros.algo.compiled.CudaGraphPolicy): the same actions, a fraction of the launch overhead. ``forward_kind`` says
    which forward is running."""

    def __init__(self, cascade: Cascade, normalizer: ObsNormalizer, version: int = 0, device: str = 'auto',
                 seed: int | None = None, checks: UpdateChecks | None = None, compile_updates: bool = True,
                 cuda_graph: bool = True):
        self.device = resolve_device(device)
        self.checks = checks or UpdateChecks()
        self.compile_updates = compile_updates
        self.cuda_graph = cuda_graph and self.device.type == 'cuda'
        # Per UpdateRejected.reason. Replaced, never changed in place: other threads (a node's status) read it while
        # updates are checked on their own thread.
        self.rejections: Counter[str] = Counter()
        self._key: bytes | None = None
        self._lock = threading.Lock()
        self._gen = torch.Generator(device=self.device)
        # Unseeded actors draw a fresh seed: the generator's fixed default would give every actor the same noise.
        if seed is None:
            self._gen.seed()
        else:
            self._gen.manual_seed(seed)
        self._observed = np.zeros((PROBE_MEMORY, cascade.obs_dim), np.float32)
        self._n_observed = 0
        cascade, normalizer = copy.deepcopy(cascade), copy.deepcopy(normalizer)
        self._compiled: CompiledPolicy | None = None    # the latest compiled forward (its traced parts are reused)
        self._compiling: threading.Thread | None = None
        self._snap = self._snapshot(cascade, normalizer, version, policy_digest(cascade, normalizer))
        self._compile(self._snap)

    def _snapshot(self, cascade: Cascade, normalizer: ObsNormalizer, version: int, digest: str):
        normalizer = normalizer.to(self.device).eval()
        cascade = cascade.to(self.device).eval().requires_grad_(False)
        return normalizer, cascade, version, digest, EagerPolicy(normalizer, cascade)

    def _compile(self, snap: tuple) -> None:
        """Compile ``snap``'s policy, then swap its compiled forward in if ``snap`` is still the running policy."""
        compiled = CompiledPolicy(snap[0], snap[1], self.device, self._compiled)
        forward = CudaGraphPolicy(compiled, self.device) if self.cuda_graph else compiled
        with self._lock:
            self._compiled = compiled
            if self._snap is snap:
                self._snap = (*snap[:4], forward)

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for the background compilation of the latest update; True when the running forward is compiled."""
        thread = self._compiling
        if thread is not None:
            thread.join(timeout)
        return not isinstance(self._snap[4], EagerPolicy)

    @property
    def forward_kind(self) -> str:
        """What act() runs now: 'eager' (an update not compiled yet), 'compiled' or 'cuda_graph'."""
        return {EagerPolicy: 'eager', CompiledPolicy: 'compiled', CudaGraphPolicy: 'cuda_graph'}[type(self._snap[4])]

    @property
    def version(self) -> int:
        return self._snap[2]

    @property
    def digest(self) -> str:
        """policy_digest of the running policy (what a block's ``parent`` must name)."""
        return self._snap[3]

    @property
    def cascade(self) -> Cascade:
        return self._snap[1]

    @property
    def normalizer(self) -> ObsNormalizer:
        return self._snap[0]

    @property
    def obs_dim(self) -> int:
        return self._snap[1].obs_dim

    @property
    def act_dim(self) -> int:
        return self._snap[1].act_dim

    def set_update_key(self, key: bytes | None) -> None:
        """With a key, only updates signed with it (``auth.sign``) are accepted; None accepts unsigned ones again."""
        if key is not None and len(key) < auth.MIN_KEY_BYTES:
            raise ValueError(f'update key too short: {len(key)} bytes, at least {auth.MIN_KEY_BYTES}')
        self._key = key

    def clear_observations(self) -> None:
        """Forget the observations kept as probe states (e.g. after a warm-up on made-up observations)."""
        with self._lock:
            self._n_observed = 0

    def act(self, obs: np.ndarray, deterministic: bool = False, noise: np.ndarray | None = None) -> np.ndarray:
        """obs [obs_dim] or [B, obs_dim] (raw) -> action(s) in [-1, 1], flattened chunk [act_dim] or [B, act_dim].

        Stochastic: fresh x0 ~ N(0, I) per decision. Deterministic: x0 = 0. ``noise`` (shaped like the actions): the x0
        to decode, for a caller that steers the noise (the DSRL baseline); deterministic is noise = 0. The actions are
        those of ``cascade.sample(normalizer(obs), x0, clip=True)``, computed by the snapshot's compiled forward.
        """
        # At batch 1 the forward is ~0.15 ms, so the checks and conversions around it are kept to a few us each.
        forward = self._snap[4]  # one consistent snapshot for the whole inference
        obs_dim, act_dim = forward.obs_dim, forward.act_dim
        o = np.asarray(obs, np.float32)
        single = o.ndim == 1
        o2 = o.reshape(1, -1) if single else o
        if o2.ndim != 2 or o2.shape[1] != obs_dim:
            raise ValueError(f'act: expected obs [{obs_dim}] or [B, {obs_dim}], got {o.shape}')
        if not math.isfinite(o2.sum(dtype=np.float64)):   # NaN and inf propagate; float32 values cannot overflow it
            raise ValueError('act: observation contains NaN or inf')
        b = len(o2)
        x0 = None
        if noise is not None:
            n = np.asarray(noise, np.float32)
            if n.size != b * act_dim or not np.isfinite(n).all():
                raise ValueError(f'act: noise must be {b} x {act_dim} finite values, got shape {n.shape}')
            x0 = torch.as_tensor(n.reshape(b, act_dim), device=self.device)
        elif deterministic:
            x0 = torch.zeros(b, act_dim, device=self.device)
        with self._lock:  # the generator is shared between threads
            if x0 is None:   # the draw Cascade.sample makes with a generator, so a seed gives the same actions
                x0 = torch.randn(b, act_dim, generator=self._gen, device=self.device)
            if single:
                self._observed[self._n_observed % PROBE_MEMORY] = o2[0]
                self._n_observed += 1
            else:
                for row in o2[-PROBE_MEMORY:]:
                    self._observed[self._n_observed % PROBE_MEMORY] = row
                    self._n_observed += 1
        # Clipped even for a clip=False (unbounded toy) cascade: an actor never emits out-of-range actions.
        a = forward(torch.as_tensor(o2, device=self.device), x0).cpu().numpy()
        return a[0] if single else a

    # --- updates ---------------------------------------------------------------------------------------------------
    def apply_update(self, update: bytes | BlockUpdate) -> int:
        """Check, then swap atomically; returns the new version. Raises UpdateRejected (its ``reason`` also counted in
        ``rejections``) and keeps the old policy. Bytes are the network path (signature, size, format); a
        BlockUpdate object comes from local code and skips the signature."""
        return self.commit_update(self.prepare_update(update))

    def prepare_update(self, update: bytes | BlockUpdate) -> PreparedUpdate:
        """Every check of apply_update and the new policy's modules, without swapping them in: the slow part (tens of
        ms on a busy CPU), which may run on another thread while act() goes on. Raises UpdateRejected (counted)."""
        try:
            return self._prepare_update(update)
        except UpdateRejected as e:
            self._count_rejection(e.reason)
            raise

    def commit_update(self, prepared: PreparedUpdate) -> int:
        """Swap a prepared update in (a reference swap under the lock); returns the running version. Raises
        UpdateRejected ('raced', counted) when another update was swapped in since it was prepared."""
        with self._lock:
            if self._snap[2] != prepared.checked_against:
                self._count_rejection('raced')
                raise UpdateRejected(f'update v{prepared.version} raced with another update (policy now '
                                     f'v{self._snap[2]})', 'raced')
            if prepared.snap is None:
                return prepared.version                # the running policy itself (a learner's restart snapshot)
            self._snap = prepared.snap
            if self.compile_updates:
                # Not a daemon: the interpreter waits for it at exit (a daemon thread inside torch at exit aborts the
                # process: 'terminate called without an active exception').
                self._compiling = threading.Thread(target=self._compile, args=(prepared.snap,), name='swfp-compile')
                self._compiling.start()
        return prepared.version

    def _count_rejection(self, reason: str) -> None:
        self.rejections = self.rejections + Counter({reason: 1})

    def _prepare_update(self, update: bytes | BlockUpdate) -> PreparedUpdate:
        norm, cascade, version, digest, _ = self._snap
        c = self.checks
        if isinstance(update, BlockUpdate):
            update.validate(cascade.obs_dim, cascade.act_dim)
            upd = update
        else:
            payload = auth.verify(update, self._key)
            upd = BlockUpdate.from_bytes(payload, cascade.obs_dim, cascade.act_dim, max_bytes=c.max_bytes)
        if upd.kind == 'block':
            new = self._check_block(upd, norm, cascade, version, digest)
        else:
            new = self._check_base(upd, cascade, version, digest)
        return PreparedUpdate(upd.version, version, None if new is None else self._snapshot(*new))

    def _check_block(self, upd: BlockUpdate, norm, cascade: Cascade, version: int, digest: str):
        c = self.checks
        if upd.version != version + 1:
            raise UpdateRejected(f'block update v{upd.version} out of order: policy is at v{version}', 'out_of_order')
        if upd.meta['parent'] != digest:
            raise UpdateRejected(f'block update v{upd.version} extends another policy (parent {upd.meta["parent"][:12]}'
                                 f', running {digest[:12]})', 'wrong_parent')
        claim = float(upd.meta['w2_bound'])
        if claim > c.max_block_w2:
            raise UpdateRejected(f'block update v{upd.version} claims a trust region of {claim:.3g} '
                                 f'(E||M(a)-a||^2), over the limit of {c.max_block_w2:.3g}', 'claim_too_large')
        if len(cascade.blocks) + 1 > c.max_blocks:
            raise UpdateRejected(f'block update v{upd.version} would make {len(cascade.blocks) + 1} blocks '
                                 f'(limit {c.max_blocks})', 'too_many_blocks')
        block = upd.build_block().to(self.device)
        s, x0 = self._probes(norm)
        with torch.no_grad():
            a = cascade.sample(s, x0, clip=False)   # pre-clip, as the learner measures its trust region
            m = block(s, a)
        if not torch.isfinite(m).all():
            raise UpdateRejected(f'block update v{upd.version} gives non-finite actions on probe states',
                                 'non_finite_output')
        d2 = (m - a).pow(2).sum(-1).mean().item()
        if d2 > c.probe_slack * claim:
            raise UpdateRejected(f'block update v{upd.version} moves actions by E||M(a)-a||^2 = {d2:.3g} on probe '
                                 f'states, over {c.probe_slack:g} x its claimed {claim:.3g}', 'trust_region')
        return (Cascade(cascade.base, [*cascade.blocks, block], clip=cascade.clip), norm, upd.version,
                upd.digest(digest))

    def _check_base(self, upd: BlockUpdate, cascade: Cascade, version: int, digest: str):
        c = self.checks
        if upd.version < version:
            raise UpdateRejected(f'base update v{upd.version} is older than the policy (v{version})', 'older')
        if upd.version > version + c.max_version_jump:
            raise UpdateRejected(f'base update v{upd.version} jumps more than {c.max_version_jump} versions ahead of '
                                 f'the policy (v{version})', 'version_jump')
        new_digest = upd.digest()
        if upd.version == version:
            if new_digest == digest:
                return None
            raise UpdateRejected(f'base update v{upd.version} is a different policy at the running version',
                                 'same_version_differs')
        if upd.meta['flow'] != dataclasses.asdict(cascade.base.cfg):
            raise UpdateRejected(f'base update v{upd.version} changes the flow architecture {upd.meta["flow"]} '
                                 f'(running {dataclasses.asdict(cascade.base.cfg)})', 'incompatible')
        if len(upd.meta['blocks']) > c.max_blocks:
            raise UpdateRejected(f'base update v{upd.version} has {len(upd.meta["blocks"])} blocks '
                                 f'(limit {c.max_blocks})', 'too_many_blocks')
        new_cascade, new_norm = upd.build_policy()
        new_cascade, new_norm = new_cascade.to(self.device), new_norm.to(self.device)
        s, x0 = self._probes(new_norm)
        with torch.no_grad():
            a = new_cascade.sample(s, x0, clip=False)
        if not torch.isfinite(a).all():
            raise UpdateRejected(f'base update v{upd.version} gives non-finite actions on probe states',
                                 'non_finite_output')
        return new_cascade, new_norm, upd.version, new_digest

    def _probes(self, norm: ObsNormalizer) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised probe states, x0 noise): recent observations when enough were seen, else N(0, I) states."""
        c = self.checks
        gen = torch.Generator(device='cpu').manual_seed(PROBE_SEED)
        with self._lock:
            n = min(self._n_observed, PROBE_MEMORY)
            observed = self._observed[:n].copy()
        if n >= c.probe_min_observed:
            idx = torch.randint(n, (c.probe_states,), generator=gen)
            s = norm(torch.as_tensor(observed, device=self.device)[idx.to(self.device)])
        else:
            s = torch.randn(c.probe_states, self.obs_dim, generator=gen).clamp(-3, 3).to(self.device)
        return s, torch.randn(c.probe_states, self.act_dim, generator=gen).to(self.device)
