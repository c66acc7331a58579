"""The online SWFP learner (§4): replay -> critic updates -> one JKO block every `steps_per_block` env steps."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from .bc import fit_flow
from .blocks import Cascade
from .config import SwfpConfig, resolve_device
from .critic import Critic
from .flow import FlowPolicy
from .jko import BlockReport, grad_norm_scale, train_block
from .normalize import ObsNormalizer
from .replay import FIELDS, NStepAssembler, ReplayBuffer, batch_indices, pool_indices
from .serialize import BlockUpdate, policy_digest


@dataclass
class Counters:
    env_steps: int = 0            # Σ n_steps of the online transitions received
    transitions: int = 0
    critic_updates: int = 0
    owed_updates: float = 0.0     # utd · env steps not yet spent (waits while replay is smaller than a batch)
    blocks_trained: int = 0
    blocks_accepted: int = 0
    compactions: int = 0          # published
    compactions_rejected: int = 0
    version: int = 0              # policy version: +1 per published update
    next_block_at: int = 0        # env step of the next block


def validate_transitions(obs, action, reward, next_obs, terminated, n_steps, obs_dim: int, act_dim: int,
                         max_steps: int) -> dict[str, np.ndarray]:
    """Batched (or single) transitions -> arrays of a common batch size (copies: the caller may reuse its buffers);
    ValueError naming the bad field."""
    obs = np.asarray(obs, np.float32)
    single = obs.ndim == 1
    b = 1 if single else (obs.shape[0] if obs.ndim == 2 else -1)
    if b < 0:
        raise ValueError(f'obs must be [obs_dim] or [batch, obs_dim], got shape {obs.shape}')
    out = {}
    n_steps = np.full(b, max_steps) if n_steps is None else n_steps
    for name, x, shape, dtype in (('obs', obs, (b, obs_dim), np.float32), ('action', action, (b, act_dim), np.float32),
                                  ('reward', reward, (b,), np.float32), ('next_obs', next_obs, (b, obs_dim), np.float32),
                                  ('terminated', terminated, (b,), np.float32), ('n_steps', n_steps, (b,), np.float64)):
        x = np.array(x, dtype)
        if x.size != int(np.prod(shape)) or (not single and x.shape != shape):
            raise ValueError(f'{name}: expected shape {shape}{" (or unbatched)" if single else ""}, got {x.shape}')
        x = x.reshape(shape)
        if not np.isfinite(x).all():
            raise ValueError(f'{name}: contains NaN or inf')
        out[name] = x
    if np.abs(out['action']).max(initial=0) > 1.0 + 1e-5:
        raise ValueError(f"action: must be the executed action in [-1, 1], max |a| = {np.abs(out['action']).max():.3g}")
    if not np.isin(out['terminated'], (0.0, 1.0)).all():
        raise ValueError('terminated: must be boolean (0/1)')
    if (out['n_steps'] != np.round(out['n_steps'])).any() or (out['n_steps'] < 1).any() or \
            (out['n_steps'] > max_steps).any():
        raise ValueError(f'n_steps: must be integers in [1, {max_steps}] (env steps in the chunk)')
    out['terminated'] = out['terminated'].astype(np.bool_)
    out['n_steps'] = out['n_steps'].astype(np.int32)
    return out


class NextActions:
    """a' ~ π_n(·|s') for every slot of a replay buffer, drawn once per policy version.

    π_n only changes when an update is published, so a TD target needs no policy pass of its own: the entries a batch
    touches are drawn when first needed under the current version (one batched pass for many minibatches) and reused
    until the next version. With 16 blocks the policy pass was half the cost of a critic update.
    """

    def __init__(self, capacity: int, act_dim: int, device: torch.device, log_prob: bool):
        self.action = torch.zeros(capacity, act_dim, device=device)
        self.log_prob = torch.zeros(capacity, device=device) if log_prob else None
        self.version = torch.full((capacity,), -1, dtype=torch.int64, device=device)

    def invalidate(self, idx: np.ndarray) -> None:
        self.version[torch.as_tensor(idx, device=self.version.device)] = -1

    def fill(self, idx: torch.Tensor, next_obs, policy: Cascade, version: int, generator: torch.Generator) -> None:
        """Draw the stale entries among slots ``idx``; ``next_obs(slots)`` gives their normalised next observations."""
        stale = torch.unique(idx[self.version[idx] != version])
        if not len(stale):   # the one host sync of a round of critic updates
            return
        s2 = next_obs(stale)
        if self.log_prob is None:
            self.action[stale] = policy.sample(s2, generator=generator)
        else:
            a2, logp = policy.sample_with_log_prob(s2, generator=generator)
            self.action[stale] = a2.clamp(-1, 1) if policy.clip else a2
            self.log_prob[stale] = logp
        self.version[stale] = version


class Learner:
    """SWFP learner. `policy` is the current Cascade; `update()` returns the BlockUpdates to publish, in order."""

    def __init__(self, base_policy: FlowPolicy, obs_normalizer: ObsNormalizer, cfg: SwfpConfig | None = None,
                 demo_transitions: dict[str, np.ndarray] | None = None, device: str = 'cpu'):
        # The base flow is given, so its architecture (chunk H included) is what cfg.flow describes.
        self.cfg = dataclasses.replace(cfg or SwfpConfig(), flow=dataclasses.replace(base_policy.cfg))
        self.device = resolve_device(device)
        if obs_normalizer.dim != base_policy.obs_dim:
            raise ValueError(f'normaliser dim {obs_normalizer.dim} != policy obs_dim {base_policy.obs_dim}')
        self.obs_dim, self.act_dim = base_policy.obs_dim, base_policy.act_dim
        torch.manual_seed(self.cfg.seed)  # critic initialisation
        self.normalizer = obs_normalizer.to(self.device).requires_grad_(False)
        self.policy = Cascade(base_policy.to(self.device).requires_grad_(False))
        self.critic = Critic(self.obs_dim, self.act_dim, self.cfg.critic).to(self.device)
        self.replay = ReplayBuffer(self.obs_dim, self.act_dim, self.cfg.replay_capacity)
        self.nstep = NStepAssembler(self.cfg.critic.n_step, self.cfg.critic.gamma)
        self.demo = None
        if demo_transitions is not None:  # already n-step windows (DemoDataset.transitions(n_step=...))
            d = self._validate(**{k: demo_transitions.get(k) for k in FIELDS},
                               max_steps=self.cfg.flow.chunk * self.cfg.critic.n_step)
            self.demo = ReplayBuffer(self.obs_dim, self.act_dim, len(d['obs']))
            self.demo.add(d)
        soft = self.cfg.critic.soft_target and self.cfg.block.alpha > 0
        self.next_actions = {name: NextActions(buf.capacity, self.act_dim, self.device, soft)
                             for name, buf in self._sources()}
        self.rng = np.random.default_rng(self.cfg.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        self.log_lambda: float | None = None  # JKO dual variable, carried across blocks
        self.counters = Counters(next_block_at=self.cfg.warmup_steps)
        self.reports: list[BlockReport] = []
        self._critic_metrics: dict[str, torch.Tensor] = {}
        self.compaction_metrics: dict[str, float] = {}

    @classmethod
    def on_policy(cls, cascade: Cascade, obs_normalizer: ObsNormalizer, version: int, cfg: SwfpConfig | None = None,
                  demo_transitions: dict[str, np.ndarray] | None = None, device: str = 'cpu') -> 'Learner':
        """A fresh learner (new critic, empty replay) that continues ``cascade`` at ``version``: a BC policy, or one
        already fine-tuned, whose blocks it keeps. Its first block is then version + 1 with that cascade as its
        parent, so actors running the same checkpoint apply it; a learner on the base flow alone would restart at
        version 0 on another policy, whose blocks those actors refuse and whose first compaction would replace
        theirs."""
        learner = cls(cascade.base, obs_normalizer, cfg, demo_transitions, device)
        for block in cascade.blocks:
            learner.policy.append(block.to(learner.device))
        learner.counters.version = int(version)
        return learner

    # --- data ------------------------------------------------------------------------------------------------------
    def _validate(self, obs, action, reward, next_obs, terminated, n_steps=None,
                  max_steps: int | None = None) -> dict[str, np.ndarray]:
        return validate_transitions(obs, action, reward, next_obs, terminated, n_steps, self.obs_dim, self.act_dim,
                                    max_steps or self.cfg.flow.chunk)

    def add_transitions(self, obs, action, reward, next_obs, terminated, n_steps=None, stream=None) -> None:
        """Take online one-decision transitions (all or nothing), in time order per stream.

        n_steps: env steps each transition spans (default H). stream: the actor each came from (default: one actor);
        consecutive transitions of a stream are joined into n-step windows before they reach the replay.
        """
        d = self._validate(obs, action, reward, next_obs, terminated, n_steps)
        streams = np.zeros(len(d['obs']), np.int64) if stream is None else np.broadcast_to(stream, len(d['obs']))
        windows = self.nstep.add(d, streams)
        if len(windows['obs']):
            self.next_actions['online'].invalidate(self.replay.add(windows))
        steps = int(d['n_steps'].sum())
        self.counters.transitions += len(d['obs'])
        self.counters.env_steps += steps
        self.counters.owed_updates += self.cfg.utd * steps

    def _sources(self) -> list[tuple[str, ReplayBuffer]]:
        return [('online', self.replay)] + ([('demo', self.demo)] if self.demo is not None else [])

    def _available(self) -> int:
        return sum(len(buf) for _, buf in self._sources())

    def _tensors(self, buf: ReplayBuffer, idx: np.ndarray, fields=FIELDS) -> dict[str, torch.Tensor]:
        """Slots ``idx`` of ``buf`` on the device, observations normalised."""
        t = {k: torch.as_tensor(v, device=self.device) for k, v in buf.get(idx, fields).items()}
        for k in ('obs', 'next_obs'):
            if k in t:
                t[k] = self.normalizer(t[k])
        return t

    def _batches(self, count: int) -> dict[str, torch.Tensor]:
        """``count`` critic minibatches at once ([count, batch, ...]) at the demo ratio, with their next actions."""
        idx = batch_indices(len(self.replay), len(self.demo) if self.demo is not None else 0, count,
                            self.cfg.critic.batch_size, self.cfg.demo_ratio, self.rng)
        parts = []
        for (name, buf), slots in zip(self._sources(), idx):
            if not slots.size:
                continue
            t = self._tensors(buf, slots)
            cache, flat = self.next_actions[name], torch.as_tensor(slots.reshape(-1), device=self.device)
            cache.fill(flat, lambda stale: self._tensors(buf, stale.cpu().numpy(), ('next_obs',))['next_obs'],
                       self.policy, self.counters.version, self.gen)
            t['next_action'] = cache.action[flat].view(*slots.shape, -1)
            if cache.log_prob is not None:
                t['next_log_prob'] = cache.log_prob[flat].view(slots.shape)
            parts.append(t)
        return {k: torch.cat([p[k] for p in parts], 1) for k in parts[0]}

    def _states(self, n: int) -> torch.Tensor:
        """Up to n distinct replay states (normalised) at the demo ratio: the pool a block or a compaction uses."""
        idx = pool_indices(len(self.replay), len(self.demo) if self.demo is not None else 0, n,
                           self.cfg.demo_ratio, self.rng)
        return torch.cat([self._tensors(buf, slots, ('obs',))['obs'] for (_, buf), slots in zip(self._sources(), idx)])

    # --- training --------------------------------------------------------------------------------------------------
    @property
    def critic_metrics(self) -> dict[str, float]:
        """TD loss, mean Q and mean target of the last critic update."""
        return {k: v.item() for k, v in self._critic_metrics.items()}

    def _temperature(self, batch: dict[str, torch.Tensor]) -> float:
        """The soft target's temperature in Q units: α, times E||∇_a Q̄|| at the batch's (s', a') under the blocks'
        gradient-norm scaling (their objective is -Q/scale - α·log-det, i.e. temperature α·scale)."""
        alpha = self.cfg.block.alpha
        if not (self.cfg.critic.soft_target and alpha > 0):
            return 0.0
        if self.cfg.block.q_scale != 'grad_norm':
            return alpha
        q_target = lambda s, a: self.critic.target(s, a).amin(0)  # noqa: E731
        return alpha * grad_norm_scale(q_target, batch['next_obs'], batch['next_action'], clip=False).item()

    def update(self, max_critic_updates: int | None = None, should_stop: Callable[[], bool] | None = None,
               max_batches: int = 64) -> list[BlockUpdate]:
        """Spend the owed critic updates (at most ``max_critic_updates`` in this call; the rest stays owed); then, if a
        block is due, train/validate/publish it (and compact if full). ``should_stop`` is asked between critic updates
        and train steps: True ends the call early, with what is not done still owed or due.

        Minibatches are drawn ``max_batches`` at a time, so that their next actions come from one policy pass.
        """
        c = self.counters
        stop = should_stop or (lambda: False)
        if self._available() >= self.cfg.critic.batch_size and c.owed_updates >= 1:
            n = int(c.owed_updates) if max_critic_updates is None else min(int(c.owed_updates), max_critic_updates)
            for first in range(0, n, max_batches):
                batches = self._batches(min(max_batches, n - first))
                for i in range(len(batches['obs'])):
                    if stop():
                        return []
                    batch = {k: v[i] for k, v in batches.items()}
                    self._critic_metrics = self.critic.update(batch, self._temperature(batch), self.rng)
                    c.owed_updates -= 1
                    c.critic_updates += 1
            if c.owed_updates >= 1:     # capped: a due block waits until the critic has caught up
                return []
        if c.env_steps < c.next_block_at or self._available() < 2:
            return []
        due = c.next_block_at
        while c.next_block_at <= c.env_steps:  # one block per call even after a long gap
            c.next_block_at += self.cfg.steps_per_block
        out = self._improve(should_stop)
        if out is None:                         # stopped before the block was done: it is due again
            c.next_block_at = due
            return []
        return out

    def _improve(self, should_stop: Callable[[], bool] | None = None) -> list[BlockUpdate] | None:
        """The next block (and a compaction when the cascade is full); None when stopped before the block was done."""
        self.critic.requires_grad_(False)  # frozen while a block climbs it
        try:
            block, report = train_block(self.policy, self.critic.q_min, self._states(self.cfg.block.pool_size),
                                        self.cfg.block, self.log_lambda, self.gen, should_stop)
        finally:
            self.critic.q.requires_grad_(True)
        if report.reason == 'stopped':
            return None
        self.log_lambda = report.log_lambda
        self.reports.append(report)
        self.counters.blocks_trained += 1
        if block is None:
            return []
        parent = policy_digest(self.policy, self.normalizer)   # actors check that the block extends this policy
        self.policy.append(block)
        self.counters.blocks_accepted += 1
        self.counters.version += 1
        bc = self.cfg.block
        out = [BlockUpdate.from_block(self.counters.version, block, parent, w2_bound=bc.tolerance * bc.delta ** 2)]
        if len(self.policy.blocks) >= self.cfg.block.max_blocks:
            base = self.compact(should_stop)    # None (stopped or not published): the block stands and the
            if base is not None:                # compaction is tried again after the next block
                out.append(base)
        return out

    def compact(self, should_stop: Callable[[], bool] | None = None) -> BlockUpdate | None:
        """Re-fit the base flow to samples of the current cascade on replay states (§3); publish it (a 'base' update
        that restarts the cascade) only if it reproduces the cascade, else keep the cascade and return None. None (and
        nothing changed) too when ``should_stop`` ended the fit.

        The gate (BlockConfig.compaction_tolerance, compaction_value_tolerance) is measured on held-out states with
        paired noise: E||base'(x0) - cascade(x0)||² of the executed actions, and the critic's value of both.
        """
        bc = self.cfg.block
        states = self._states(bc.pool_size)
        order = torch.randperm(len(states), generator=self.gen, device=self.device)
        n_hold = max(1, int(len(states) * bc.holdout_frac))
        s_ho, s_fit = states[order[:n_hold]], states[order[n_hold:]].repeat(4, 1)
        with torch.no_grad():  # several actions per state: the fit sees the policy's spread, not one sample
            x0 = torch.randn(len(s_fit), self.act_dim, generator=self.gen, device=self.device)
            a_fit = self.policy.sample(s_fit, x0, clip=False)  # pre-clip: the clip stays at the end
        base = copy.deepcopy(self.policy.base).requires_grad_(True)  # warm start from the current base
        # Distil the cascade's map x0 -> a (paired noise), not only its marginal: measured on the bandit test, an
        # unpaired re-fit lost 13% of the true reward of the cascade it replaced.
        losses = fit_flow(base, s_fit, a_fit, bc.compaction_steps, self.cfg.critic.batch_size, bc.compaction_lr,
                          self.gen, tag='compaction', x0=x0, should_stop=should_stop)
        if should_stop is not None and should_stop():
            return None
        new = Cascade(base.requires_grad_(False), clip=self.policy.clip)
        with torch.no_grad():
            x0 = torch.randn(len(s_ho), self.act_dim, generator=self.gen, device=self.device)
            a_old, a_new = self.policy.sample(s_ho, x0), new.sample(s_ho, x0)
            q_old, q_new = self.critic.q_min(s_ho, a_old).mean(), self.critic.q_min(s_ho, a_new).mean()
            distance = (a_new - a_old).pow(2).sum(-1).mean()
        scale = grad_norm_scale(self.critic.q_min, s_ho, a_old, clip=False)
        distance, q_old, q_new, value_drop = torch.stack([distance, q_old, q_new, (q_old - q_new) / scale]).tolist()
        published = distance <= bc.compaction_tolerance * bc.delta ** 2 and \
            value_drop <= bc.compaction_value_tolerance * bc.delta
        self.compaction_metrics = {'fm_loss': float(np.mean(losses[-100:])), 'distance': distance,
                                   'q_before': q_old, 'q_after': q_new, 'value_drop': value_drop,
                                   'published': published}
        if not published:
            self.counters.compactions_rejected += 1
            return None
        self.policy = new
        self.counters.compactions += 1
        self.counters.version += 1
        return self.snapshot()

    def snapshot(self) -> BlockUpdate:
        """The whole current policy as a 'base' update at the current version (for actors that join late)."""
        return BlockUpdate.from_policy(self.counters.version, self.policy, self.normalizer)

    # --- diagnostics -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def critic_check(self, episodes: list[dict]) -> dict[str, float]:
        """The critic against the returns actually obtained (§9: check the critic before blaming the policy update).

        ``episodes``: recorded evaluation episodes (``evaluate_batched(..., record=True)``). Every decision's discounted
        return to the episode's end, bootstrapped with the critic only where a time limit cut the episode (as the TD
        target is), is compared with Q(s, a) of the action taken: q_bias = mean(Q - return), q_mc_corr = their
        correlation over decisions (NaN when undefined). A critic trained on broken transitions shows up here first.
        """
        gamma, q_all, mc_all = self.cfg.critic.gamma, [], []
        generator = torch.Generator(device=self.device).manual_seed(0)  # leaves the learner's RNG streams alone
        for ep in episodes:
            s = self.normalizer(torch.as_tensor(np.asarray(ep['obs']), dtype=torch.float32, device=self.device))
            a = torch.as_tensor(np.asarray(ep['action']), dtype=torch.float32, device=self.device)
            q_all.append(self.critic.q_min(s, a).cpu().numpy())
            ret = 0.0
            if not ep['terminated']:
                s_end = self.normalizer(torch.as_tensor(np.asarray(ep['final_obs'])[None], dtype=torch.float32,
                                                        device=self.device))
                ret = self.critic.q_min(s_end, self.policy.sample(s_end, generator=generator)).item()
            mc = []
            for rewards in reversed(ep['step_rewards']):
                for r in reversed(rewards):
                    ret = float(r) + gamma * ret
                mc.append(ret)
            mc_all.append(np.asarray(mc[::-1]))
        q, mc = np.concatenate(q_all), np.concatenate(mc_all)
        corr = float(np.corrcoef(q, mc)[0, 1]) if len(q) > 1 and q.std() > 0 and mc.std() > 0 else float('nan')
        return {'q_mean': float(q.mean()), 'mc_return_mean': float(mc.mean()), 'q_bias': float((q - mc).mean()),
                'q_mc_corr': corr}

    # --- resume ----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        snap = self.snapshot()
        return {
            'config': self.cfg.to_dict(), 'policy': {'meta': snap.meta, 'tensors': snap.tensors,
                                                     'obs_dim': self.obs_dim, 'act_dim': self.act_dim},
            'critic': self.critic.state_dict_full(), 'log_lambda': self.log_lambda,
            'counters': asdict(self.counters), 'reports': [r.to_dict() for r in self.reports],
            'replay': self.replay.state_dict(), 'nstep': self.nstep.state_dict(),
            # a generator's state is specific to its device type (CPU: 5,056 bytes, CUDA: 16): recorded with it
            'rng': {'numpy': self.rng.bit_generator.state,
                    'torch': {'device': self.gen.device.type, 'state': self.gen.get_state()},
                    'torch_global': torch.get_rng_state()},     # a new block's layers are initialised from it
        }

    @classmethod
    def from_state_dict(cls, d: dict, device: str = 'cpu', demo_transitions=None) -> 'Learner':
        p = d['policy']
        cascade, norm = BlockUpdate(0, 'base', p['obs_dim'], p['act_dim'], p['meta'], p['tensors']).build_policy()
        learner = cls.on_policy(cascade, norm, 0, SwfpConfig.from_dict(d['config']), demo_transitions, device)
        learner.critic.load_state_dict_full(d['critic'])
        learner.log_lambda = d['log_lambda']
        learner.counters = Counters(**d['counters'])
        learner.reports = [BlockReport(**r) for r in d['reports']]
        learner.replay.load_state_dict(d['replay'])
        learner.nstep.load_state_dict(d['nstep'])
        learner.rng.bit_generator.state = d['rng']['numpy']
        restore_generator(learner.gen, d['rng']['torch'])
        torch.set_rng_state(d['rng']['torch_global'])
        return learner


def restore_generator(gen: torch.Generator, saved: dict) -> None:
    """Set ``gen`` to a saved generator state; a state from another device type (a checkpoint written on a GPU
    machine resumed on a CPU one, or the reverse) cannot be carried over, so ``gen`` is re-seeded from a hash of it:
    deterministic, but a different random stream from the one the saving machine would have continued."""
    if saved['device'] == gen.device.type:
        gen.set_state(saved['state'])
    else:
        digest = hashlib.sha256(np.asarray(saved['state'].cpu(), np.uint8).tobytes()).digest()
        gen.manual_seed(int.from_bytes(digest[:8], 'little') >> 1)
