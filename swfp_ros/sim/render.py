"""Offscreen rendering of rollouts to GIF and PNG (the sim package defaults MUJOCO_GL to egl)."""
from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def record_rollouts(env, policy, episodes: int, seed: int = 0, every: int = 1) -> tuple[list[np.ndarray], list[bool]]:
    """Frames (every ``every``-th control step) of ``episodes`` rollouts, and each episode's success."""
    from ..train.evaluate import run_episode

    frames, successes = [], []
    for episode in range(episodes):
        step = [0]

        def grab(e):
            if step[0] % every == 0:
                frames.append(e.render())
            step[0] += 1

        _, _, success = run_episode(env, policy, seed=seed + episode, on_step=grab)
        successes.append(success)
    return frames, successes


def save_gif(frames: list[np.ndarray], path: str | Path, fps: int = 20) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    return path


def save_png(frame: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, frame)
    return path
