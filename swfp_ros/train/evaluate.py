"""Policy evaluation on the gymnasium tasks: the one place where episodes are rolled out for a score.

A policy here is any callable ``policy(obs) -> action`` returning one action (7,) or an action chunk (H, 7);
chunks are executed open loop, step by step, and cut short when the episode ends (chunking lives in the runner,
not in the environment).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Policy = Callable[[np.ndarray], np.ndarray]


def success_interval(successes: int, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95 % at z = 1.96). Unlike p ± z·sqrt(p(1-p)/n) it stays inside [0, 1]
    and is not empty at 0 or n successes. 100 episodes at 0.5 give ±0.10: a smaller difference between two such
    evaluations (two policies, or one policy on two sets of episode seeds) is not evidence of a difference."""
    if episodes < 1 or not 0 <= successes <= episodes:
        raise ValueError(f'need 0 <= successes <= episodes and episodes >= 1, got {successes} of {episodes}')
    p, zz = successes / episodes, z * z / episodes
    centre = (p + zz / 2) / (1 + zz)
    half = z * math.sqrt(p * (1 - p) / episodes + zz / (4 * episodes)) / (1 + zz)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalResult:
    success_rate: float
    success_interval: tuple[float, float]   # 95 % Wilson interval of success_rate
    mean_return: float
    mean_length: float
    episodes: int
    env_steps: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def run_episode(env, policy: Policy, seed: int | None = None, on_step: Callable | None = None):
    """Roll out one episode; returns (return, length, success). ``on_step(env)`` runs after the reset and each step."""
    obs, _ = env.reset(seed=seed)
    if on_step is not None:
        on_step(env)
    total, length, info = 0.0, 0, {'is_success': False}
    done = False
    while not done:
        chunk = np.asarray(policy(obs), dtype=np.float32).reshape(-1, env.action_space.shape[0])
        for action in chunk:
            obs, reward, terminated, truncated, info = env.step(action)
            total += reward
            length += 1
            if on_step is not None:
                on_step(env)
            done = terminated or truncated
            if done:
                break
    return total, length, bool(info.get('is_success', False))


def evaluate(env, policy: Policy, episodes: int, seed: int = 0, progress: bool | None = False) -> EvalResult:
    """Success rate and mean return over ``episodes`` episodes seeded ``seed, seed+1, ...``; ``progress``: a bar
    with ETA over the episodes (None: only on a terminal)."""
    from tqdm import tqdm
    if episodes < 1:
        raise ValueError('episodes must be >= 1')
    returns, lengths, successes = [], [], []
    for episode in tqdm(range(episodes), desc='eval', unit='episode',
                        disable=None if progress is None else not progress):
        ret, length, success = run_episode(env, policy, seed=seed + episode)
        returns.append(ret)
        lengths.append(length)
        successes.append(success)
    return EvalResult(success_rate=float(np.mean(successes)),
                      success_interval=success_interval(sum(successes), episodes), mean_return=float(np.mean(returns)),
                      mean_length=float(np.mean(lengths)), episodes=episodes, env_steps=int(np.sum(lengths)))
