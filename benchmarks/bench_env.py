"""Env steps per second for each task: the env alone (random actions) and with the scripted expert in the loop.

    python benchmarks/bench_env.py [--steps 3000]

Prints a table and, last, one JSON line with the figures.
"""
import argparse
import json
import time

import numpy as np

from swfp_ros.sim import TASKS, make_env
from swfp_ros.sim.experts import make_expert


def steps_per_second(task: str, steps: int, with_expert: bool) -> float:
    env = make_env(task)
    obs, _ = env.reset(seed=0)
    expert = make_expert(env, seed=0) if with_expert else None
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        action = expert(obs) if expert else rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=3000)
    args = parser.parse_args()
    figures = {}
    for task in TASKS:
        alone = steps_per_second(task, args.steps, with_expert=False)
        expert = steps_per_second(task, args.steps, with_expert=True)
        figures[task] = {'env_steps_per_s': round(alone, 1), 'with_expert_steps_per_s': round(expert, 1)}
        print(f'{task:12s} env alone {alone:8.1f} steps/s   with expert {expert:8.1f} steps/s '
              f'(1 step = 25 physics steps of 2 ms)')
    print(json.dumps(figures))


if __name__ == '__main__':
    main()
