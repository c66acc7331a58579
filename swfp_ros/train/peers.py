"""The peers SWFP is compared with on the same BC checkpoint: DSRL (noise-space steering) and residual RL.

Both leave the BC flow frozen and train SB3's SAC on a gymnasium view of the task built around it:

- **DSRL** ("Steering Your Diffusion Policy with Latent Space Reinforcement Learning", Wagenmaker et al., CoRL 2025):
  SAC's action is the flow's initial noise x0 in [-b, b]^(H·A) (the whole chunk's noise for a chunked policy); the
  frozen flow decodes it deterministically into H actions, executed open loop. Sampling this action space means
  sampling the flow's own prior N(0, I) (clipped to the bound), so SAC's warm-up steps run the BC policy as it is, as
  DSRL's initial rollouts do.
- **Residual RL** (ResiP, Policy Decorator): the frozen flow samples a chunk a_BC as deployed (fresh noise); SAC sees
  the observation and a_BC and outputs r in [-1, 1]^(H·A); the executed chunk is clip(a_BC + scale·r, -1, 1). The
  actor's mean layer starts at zero, so the deterministic residual is exactly 0 and the start is BC exactly.

SAC observes the BC checkpoint's normalised observation (its frozen normaliser). Evaluation goes through the same
``evaluate_batched`` as every other method (same episodes and seeds); what is evaluated is the policy as deployed:
DSRL samples its noise policy (DSRL's evaluation default), residual RL adds the mean residual to the stochastic BC flow
(as ResiP does) — which is why the residual curve's first point equals BC's evaluation. The rewards of a chunk's
steps are summed into one transition; ``gamma`` discounts per decision (DSRL's multi-step wrapper does the same).
Runs are not resumable (SB3's replay is not checkpointed): an unfinished run starts over, as SAC from scratch does.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import resource
import time
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ..algo.checkpoint import load_policy
from ..algo.runtime import PolicyRuntime
from ..sim import make_env
from .finetune import CURVE, RunnerConfig, evaluate_batched, evaluation_seed, seeded_act

PEER_METHODS = ('dsrl', 'residual')


@dataclasses.dataclass
class PeerConfig:
    """SAC settings of both peers. DSRL's published values (its Robomimic configs) in comments; scaled down so that a
    run costs about what an SWFP run does on a 2-core CPU."""
    hidden: int = 256                 # actor and critic width (DSRL: 2048)
    layers: int = 3                   # hidden layers (DSRL: 3; DSRL also LayerNorms them, SB3's MLP does not)
    utd: int = 1                      # gradient steps per decision (DSRL: 20)
    batch_size: int = 256             # DSRL: 256
    lr: float = 3e-4                  # DSRL: 3e-4 (actor and critic)
    gamma: float = 0.99               # DSRL: 0.99
    tau: float = 0.005                # DSRL: 0.005
    learning_starts: int = 1000       # decisions before the first update (DSRL: 1501; SWFP's warm-up here: 1000)
    buffer_size: int = 1_000_000
    noise_bound: float = 1.5          # DSRL: |x0| <= 1.5 per dimension ("action_magnitude")
    dsrl_target_entropy: float = 0.0  # DSRL: target entropy 0 in noise space
    residual_scale: float = 0.1       # largest residual per action dimension, in [-1, 1] action units

    def __post_init__(self):
        if self.noise_bound <= 0 or not 0 < self.residual_scale <= 1 or self.utd < 1:
            raise ValueError('PeerConfig needs noise_bound > 0, 0 < residual_scale <= 1 and utd >= 1')

    @classmethod
    def from_overrides(cls, overrides: list[str] = ()) -> 'PeerConfig':
        """Defaults, then ``key=value`` items such as ``residual_scale=0.2``."""
        import yaml

        values = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for item in overrides:
            key, sep, raw = item.partition('=')
            if not sep or key.strip() not in names:
                raise ValueError(f'override {item!r}: expected key=value with key one of {sorted(names)}')
            values[key.strip()] = yaml.safe_load(raw)
        return cls(**values)


class FrozenBCEnv(gym.Env):
    """A task seen through a frozen BC flow: SAC's observation is the normalised observation, and one SAC step
    executes a whole chunk of H actions open loop (reward: their sum). Counts the env steps it has taken."""

    metadata = {'render_modes': []}

    def __init__(self, task: str, bc: PolicyRuntime, extra_obs: int = 0):
        self.env = make_env(task)
        self.bc = bc
        self.act_size = self.env.action_space.shape[0]
        clip = bc.normalizer.clip
        self.observation_space = spaces.Box(-clip, clip, shape=(bc.obs_dim + extra_obs,), dtype=np.float32)
        self.env_steps = 0
        self._obs = None

    def observe(self, obs: np.ndarray) -> np.ndarray:
        return normalise(self.bc, obs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs, info = self.env.reset(seed=seed)
        return self.observe(self._obs), info

    def run_chunk(self, chunk: np.ndarray):
        """Execute the actions of ``chunk`` [H·A] until the episode ends; returns the gymnasium step tuple."""
        total, terminated, truncated, info = 0.0, False, False, {}
        for action in np.asarray(chunk, np.float32).reshape(-1, self.act_size):
            self._obs, reward, terminated, truncated, info = self.env.step(action)
            total += reward
            self.env_steps += 1
            if terminated or truncated:
                break
        return self.observe(self._obs), total, terminated, truncated, info


class NoisePrior(spaces.Box):
    """The noise space [-b, b]^d, whose samples are the flow's prior N(0, I) clipped to the bound."""

    def sample(self, mask=None, probability=None):
        return np.clip(self.np_random.standard_normal(self.shape), self.low, self.high).astype(self.dtype)


class NoiseSteeringEnv(FrozenBCEnv):
    """DSRL: the action is the initial noise x0 of the BC flow, decoded deterministically into the executed chunk."""

    def __init__(self, task: str, bc: PolicyRuntime, bound: float):
        super().__init__(task, bc)
        self.action_space = NoisePrior(-bound, bound, shape=(bc.act_dim,), dtype=np.float32)

    def step(self, noise):
        return self.run_chunk(self.bc.act(self._obs, noise=noise))


class ResidualEnv(FrozenBCEnv):
    """Residual RL: the observation carries the BC flow's sampled chunk, the action is a residual in [-1, 1]^(H·A)
    and the executed chunk is clip(a_BC + scale·r, -1, 1)."""

    def __init__(self, task: str, bc: PolicyRuntime, scale: float):
        super().__init__(task, bc, extra_obs=bc.act_dim)
        self.scale = scale
        self.action_space = spaces.Box(-1.0, 1.0, shape=(bc.act_dim,), dtype=np.float32)
        self._base = None

    def observe(self, obs: np.ndarray) -> np.ndarray:
        self._base = self.bc.act(obs)
        return np.concatenate([normalise(self.bc, obs), self._base]).astype(np.float32)

    def step(self, residual):
        return self.run_chunk(apply_residual(self._base, residual, self.scale))


def normalise(bc: PolicyRuntime, obs: np.ndarray) -> np.ndarray:
    """Observations as the BC flow sees them (its frozen normaliser), float32."""
    with torch.no_grad():
        return bc.normalizer(torch.as_tensor(np.asarray(obs, np.float32), device=bc.device)).cpu().numpy()


def apply_residual(base: np.ndarray, residual: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(base + scale * np.asarray(residual, np.float32), -1.0, 1.0)


def make_peer(method: str, task: str, bc: PolicyRuntime, cfg: PeerConfig, seed: int = 0, device: str = 'cpu'):
    """(SB3 SAC model, its training env) for ``method`` ('dsrl' | 'residual') on the frozen ``bc``."""
    from stable_baselines3 import SAC

    class TimedSAC(SAC):
        """SAC that adds up the time spent in its gradient steps (the per-update cost of the benchmark)."""
        train_s, train_updates = 0.0, 0

        def train(self, gradient_steps: int, batch_size: int = 64) -> None:
            tick = time.perf_counter()
            super().train(gradient_steps, batch_size)
            self.train_s += time.perf_counter() - tick
            self.train_updates += gradient_steps

    if method == 'dsrl':
        env, target_entropy = NoiseSteeringEnv(task, bc, cfg.noise_bound), cfg.dsrl_target_entropy
    elif method == 'residual':
        env, target_entropy = ResidualEnv(task, bc, cfg.residual_scale), 'auto'
    else:
        raise ValueError(f'unknown peer method {method!r}; choose one of {PEER_METHODS}')
    model = TimedSAC('MlpPolicy', env, learning_rate=cfg.lr, buffer_size=cfg.buffer_size,
                     learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, tau=cfg.tau, gamma=cfg.gamma,
                     train_freq=1, gradient_steps=cfg.utd, target_entropy=target_entropy,
                     policy_kwargs={'net_arch': [cfg.hidden] * cfg.layers}, seed=seed, device=device, verbose=0)
    if method == 'residual':   # a zero mean residual: the deterministic start is the BC flow exactly
        torch.nn.init.zeros_(model.actor.mu.weight)
        torch.nn.init.zeros_(model.actor.mu.bias)
    return model, env


def deployed_policy(method: str, model, bc: PolicyRuntime, cfg: PeerConfig, seed: int):
    """``act(obs [B, obs_dim]) -> chunks [B, H·A]`` of the trained peer, as it would be deployed (module docstring).
    Residual RL's BC samples draw their noise as every evaluation does (``seeded_act``: a generator seeded ``seed``)."""
    if method == 'dsrl':
        return lambda obs: bc.act(obs, noise=model.predict(normalise(bc, obs), deterministic=False)[0])
    sample_bc = seeded_act(bc, seed)

    def residual_act(obs):
        base = sample_bc(obs)
        residual = model.predict(np.concatenate([normalise(bc, obs), base], axis=-1), deterministic=True)[0]
        return apply_residual(base, residual, cfg.residual_scale)
    return residual_act


def train_peer(bc_checkpoint: str, out_dir: str, run: RunnerConfig, cfg: PeerConfig, log=print,
               should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """DSRL or residual RL (``run.method``) from a BC checkpoint for ``run.env_steps`` env steps, evaluated every
    ``run.eval_every`` env steps on the harness's evaluation episodes. Writes curve.csv and summary.json.
    ``should_stop()``: polled after each SAC step; True ends the run there with KeyboardInterrupt (nothing written)."""
    from stable_baselines3.common.callbacks import BaseCallback

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The training env and the evaluation each own a copy of the frozen flow; evaluations draw their own noise.
    model, env = make_peer(run.method, run.task, load_policy(bc_checkpoint, device=run.device, seed=run.seed + 1),
                           cfg, seed=run.seed, device=run.device)
    rows: list[dict] = []
    start = time.perf_counter()

    eval_bc, eval_seed = load_policy(bc_checkpoint, device=run.device), evaluation_seed(run.seed)

    def evaluate(steps: int) -> None:
        result = evaluate_batched(deployed_policy(run.method, model, eval_bc, cfg, eval_seed), run.task,
                                  run.eval_episodes, run.num_envs, seed=eval_seed)
        rows.append({'env_steps': steps, **result, 'wall_s': round(time.perf_counter() - start, 2),
                     'gradient_updates': model.train_updates})
        log(f"[{run.method} {run.task} seed {run.seed}] {steps:>6d} env steps: success {result['success_rate']:.2f}, "
            f"return {result['mean_return']:.2f}")

    class Harness(BaseCallback):
        """Evaluates every ``eval_every`` env steps (not SAC steps: a chunk is H env steps) and stops at the budget."""
        next_eval = run.eval_every

        def _on_step(self) -> bool:
            if should_stop is not None and should_stop():
                raise KeyboardInterrupt
            if env.env_steps >= self.next_eval:
                evaluate(env.env_steps)
                self.next_eval += run.eval_every
            return env.env_steps < run.env_steps

    evaluate(0)
    model.learn(total_timesteps=run.env_steps, callback=Harness())
    with (out / CURVE).open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {'timing': {'gradient_ms_per_update': 1e3 * model.train_s / max(model.train_updates, 1),
                          'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
               'config': {'runner': dataclasses.asdict(run), 'peer': dataclasses.asdict(cfg)}}
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    return rows
