"""SAC from scratch (stable-baselines3) in the same harness as SWFP: same env, budget and evaluation seeds.

BC-only needs no code of its own (evaluate the BC checkpoint); naive fine-tuning is ``finetune(method='naive')``.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from ..sim import make_env
from .finetune import CURVE, RunnerConfig, evaluate_batched, evaluation_seed


def train_sac(out_dir: str, run: RunnerConfig, log=print) -> list[dict]:
    """SAC with SB3 defaults for continuous control (one env, one gradient step per env step after 1k random
    steps), evaluated every ``run.eval_every`` env steps with the stochastic policy, like SWFP."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    start = time.perf_counter()

    def evaluate(model, steps: int) -> None:
        result = evaluate_batched(lambda obs: model.predict(obs, deterministic=False)[0], run.task,
                                  run.eval_episodes, run.num_envs, seed=evaluation_seed(run.seed))
        rows.append({'env_steps': steps, **result, 'wall_s': round(time.perf_counter() - start, 2)})
        log(f"[sac {run.task} seed {run.seed}] {steps:>6d} env steps: success {result['success_rate']:.2f}")

    class PeriodicEval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % run.eval_every == 0:
                evaluate(self.model, self.num_timesteps)
            return True

    model = SAC('MlpPolicy', make_env(run.task), learning_starts=1000, seed=run.seed, device=run.device, verbose=0)
    evaluate(model, 0)
    model.learn(total_timesteps=run.env_steps, callback=PeriodicEval())
    with (out / CURVE).open('w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
