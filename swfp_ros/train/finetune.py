"""In-process online fine-tuning (no ROS): act -> store -> critic updates -> one JKO block every N env steps ->
periodic evaluation -> logs and checkpoints, resumable.

What a run folder holds: ``learner.pt`` (the latest, resumed from), ``best.pt`` (the learner at its best evaluation so
far), ``learner_<env steps>.pt`` every ``keep_every`` evaluations, ``eval_<env steps>.gif`` (one rollout of the
policy as evaluated) every ``gif_every`` evaluations, ``curve.csv`` + ``curve.png`` (the evaluations),
``blocks.jsonl`` (each block's report), ``tensorboard/`` (scalars: :mod:`swfp_ros.train.monitor`), ``summary.json``.

The actor side is a :class:`PolicyRuntime` holding its own copy of the policy, fed with the learner's serialised
updates exactly as the ROS policy node is, so this runner exercises the same update path as the node graph; every
evaluation row reports the largest difference between the actor's and the learner's deterministic actions
(``actor_learner_gap``, 0 when they run the same policy). ``method='naive'`` swaps in the naive fine-tuning baseline
(same loop, same critic).

``run.seed`` seeds everything: the learner (``SwfpConfig.seed``), the actor's sampling noise, the environments and
the evaluation episodes, so a run repeats exactly on one machine. Evaluations draw their noise from a generator of
their own (``seeded_act``), so how often a run is evaluated does not change what it trains on. A run directory
resumes only with the settings it was started with (the same BC checkpoint, method, task, seed and algorithm
settings); a larger budget extends it.

Action chunks (H > 1) are executed open loop here, one env step at a time; a transition spans the steps actually
executed (``n_steps`` <= H, fewer when the episode ends inside the chunk) with the discounted reward sum over them.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import resource
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..algo.checkpoint import carried_info, load_learner, load_policy, save_learner
from ..algo.config import SwfpConfig
from ..algo.learner import Learner
from ..algo.naive import NaiveLearner
from ..algo.replay import FIELDS, NStepAssembler
from ..algo.runtime import PolicyRuntime
from ..data import DemoDataset
from ..files import write_text_atomic
from ..sim import make_env
from .monitor import ScalarLog

LEARNERS = {'swfp': Learner, 'naive': NaiveLearner}
CHECKPOINT = 'learner.pt'
CURVE = 'curve.csv'
BLOCKS = 'blocks.jsonl'
RUN = 'run.json'
BEST = 'best.pt'
TENSORBOARD = 'tensorboard'


@dataclasses.dataclass
class RunnerConfig:
    task: str = 'panda_reach'
    method: str = 'swfp'              # 'swfp' | 'naive'
    env_steps: int = 20_000           # budget of online env steps
    num_envs: int = 8                 # envs stepped together; one batched inference per step
    eval_every: int = 2_500           # env steps between evaluations (the first is at 0: the BC start)
    eval_episodes: int = 40
    seed: int = 0
    device: str = 'cpu'
    keep_every: int = 0               # evaluations between kept checkpoints learner_<env steps>.pt; 0 = none
    gif_every: int = 0                # evaluations between evaluation GIFs eval_<env steps>.gif; 0 = none


def evaluation_seed(run_seed: int) -> int:
    """The first env seed of a run's evaluation episodes (episode i: this + i), the same for every method, apart from
    the seeds its own collection uses."""
    return 1_000_000 + run_seed * 1000


def evaluate_runtime(runtime: PolicyRuntime, task: str, episodes: int, num_envs: int, seed: int,
                     record: bool = False) -> dict:
    """The stochastic policy (as deployed) on ``episodes`` episodes seeded ``seed + i``, ``num_envs`` at a time."""
    return evaluate_batched(seeded_act(runtime, seed), task, episodes, num_envs, seed, record)


def seeded_act(runtime: PolicyRuntime, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """``runtime.act`` with its noise drawn from a generator seeded with ``seed``, not from the runtime's own stream:
    an evaluation then depends on the policy and ``seed`` alone, and in a fine-tuning run it leaves the actor's stream
    where it was, so how often a run is evaluated (or filmed) does not change what it trains on."""
    noise = torch.Generator().manual_seed(seed)

    def act(obs: np.ndarray) -> np.ndarray:
        rows = len(obs) if np.ndim(obs) == 2 else 1
        return runtime.act(obs, noise=torch.randn(rows, runtime.act_dim, generator=noise).numpy())
    return act


def evaluate_batched(act: Callable[[np.ndarray], np.ndarray], task: str, episodes: int, num_envs: int,
                     seed: int, record: bool = False) -> dict:
    """Success rate and mean return of ``act(obs [B, obs_dim]) -> actions or chunks [B, H*7]``, batched over envs.

    ``record``: the result also holds 'episodes', each ``{'obs', 'action', 'step_rewards', 'final_obs',
    'terminated'}`` per decision (``Learner.critic_check`` compares the critic with their returns).
    """
    envs = [make_env(task) for _ in range(min(num_envs, episodes))]
    act_size = envs[0].action_space.shape[0]
    successes, returns, recorded = [], [], []
    next_episode = 0
    live = {}   # env index -> [current obs, return so far, decisions so far]

    def start(i: int) -> None:
        nonlocal next_episode
        live[i] = [envs[i].reset(seed=seed + next_episode)[0], 0.0, []]
        next_episode += 1

    for i in range(len(envs)):
        start(i)
    while live:
        ids = sorted(live)
        obs = np.stack([live[i][0] for i in ids])
        chunks = np.asarray(act(obs)).reshape(len(ids), -1, act_size)
        for i, chunk in zip(ids, chunks):
            step_rewards = []
            executed = chunk.copy()   # its unexecuted tail is zeroed below, as the collector stores it
            live[i][2].append((live[i][0], executed.reshape(-1), step_rewards))
            for action in chunk:
                o, r, terminated, truncated, info = envs[i].step(action)
                live[i][0] = o
                live[i][1] += r
                step_rewards.append(r)
                if terminated or truncated:
                    executed[len(step_rewards):] = 0.0
                    successes.append(bool(info['is_success']))
                    returns.append(live[i][1])
                    if record:
                        decisions = live[i][2]
                        recorded.append({'obs': np.stack([d[0] for d in decisions]),
                                         'action': np.stack([d[1] for d in decisions]),
                                         'step_rewards': [d[2] for d in decisions], 'final_obs': o,
                                         'terminated': bool(terminated)})
                    if next_episode < episodes:
                        start(i)
                    else:
                        del live[i]
                    break
    result = {'success_rate': float(np.mean(successes)), 'mean_return': float(np.mean(returns))}
    return {**result, 'episodes': recorded} if record else result


class ChunkCollector:
    """Steps ``num_envs`` envs with the runtime's chunks and returns the finished transitions."""

    def __init__(self, task: str, num_envs: int, gamma: float, seed: int):
        self.envs = [make_env(task) for _ in range(num_envs)]
        self.act_size = self.envs[0].action_space.shape[0]
        self.gamma = gamma
        self.obs = np.stack([env.reset(seed=seed + 10_000 * i)[0] for i, env in enumerate(self.envs)])

    def collect(self, runtime: PolicyRuntime) -> tuple[dict[str, np.ndarray], int]:
        """One decision per env; returns (transitions with each env's index as its stream, env steps taken)."""
        chunks = runtime.act(self.obs)
        out = {k: [] for k in ('obs', 'action', 'reward', 'next_obs', 'terminated', 'n_steps', 'stream')}
        steps = 0
        for i, (env, chunk) in enumerate(zip(self.envs, chunks)):
            reward_sum, n, terminated, truncated = 0.0, 0, False, False
            for action in chunk.reshape(-1, self.act_size):
                next_obs, r, terminated, truncated, _ = env.step(action)
                reward_sum += self.gamma ** n * r
                n += 1
                if terminated or truncated:
                    break
            steps += n
            executed = chunk.copy()
            executed[n * self.act_size:] = 0.0   # a chunk cut by the episode end: zeros, as the policy node pads it
            # obs[i] is copied: the row is overwritten with next_obs below (a view would make obs == next_obs)
            for key, value in (('obs', self.obs[i].copy()), ('action', executed), ('reward', reward_sum),
                               ('next_obs', next_obs), ('terminated', terminated), ('n_steps', n), ('stream', i)):
                out[key].append(value)
            if terminated or truncated:   # truncation bootstraps from next_obs: only termination is terminal
                next_obs, _ = env.reset()
            self.obs[i] = next_obs
        return {k: np.asarray(v) for k, v in out.items()}, steps


def demo_transitions(dataset: DemoDataset, swfp: SwfpConfig) -> dict[str, np.ndarray]:
    """Demonstrations as replay transitions, built the way online data is: each episode replayed as decisions of H
    demo actions (one chain per start offset, so every step starts a decision), joined into n-step windows by the same
    :class:`NStepAssembler`. A chunk cut short by the episode end is zero-padded, as the policy node pads it.

    A demo that did not succeed ended at a time limit and has no observation after its last step: that step is
    dropped, and the windows before it bootstrap from its observation (the truncation target).
    """
    horizon, gamma = swfp.flow.chunk, swfp.critic.gamma
    nstep = NStepAssembler(swfp.critic.n_step, gamma)
    windows = []
    for e, ep in enumerate(dataset.episodes):
        usable = len(ep) if ep.success else len(ep) - 1
        for offset in range(min(horizon, usable)):
            chain = {k: [] for k in FIELDS}
            for t in range(offset, usable, horizon):
                n = min(horizon, usable - t)
                action = np.zeros((horizon, ep.actions.shape[1]), np.float32)
                action[:n] = ep.actions[t:t + n]
                for key, value in (('obs', ep.obs[t]), ('action', action.reshape(-1)),
                                   ('reward', np.dot(gamma ** np.arange(n), ep.rewards[t:t + n])),
                                   ('next_obs', ep.obs[min(t + n, len(ep) - 1)]),
                                   ('terminated', ep.success and t + n == usable), ('n_steps', n)):
                    chain[key].append(value)
            batch = {k: np.asarray(v) for k, v in chain.items()}
            windows.append(nstep.add(batch, np.full(len(batch['obs']), e * horizon + offset)))
    windows.append(nstep.flush())
    out = {k: np.concatenate([w[k] for w in windows]) for k in FIELDS}
    if not len(out['obs']):
        raise ValueError('the demonstrations hold no transitions (every episode is a single unsuccessful step)')
    return out


def finetune(bc_checkpoint: str, out_dir: str, run: RunnerConfig, swfp: SwfpConfig,
             demos: DemoDataset | None = None, log=print, progress: bool | None = None,
             should_stop: Callable[[], bool] | None = None) -> list[dict]:
    """Fine-tune from a BC checkpoint; resumes from ``out_dir/learner.pt`` if present. Returns the evaluation rows,
    the last one at the end of the budget.

    ``progress``: a progress bar with ETA over the env-step budget (None: only on a terminal).
    ``should_stop()``: polled before each step (an evaluation, or a collection and its update); True ends the run
    there with KeyboardInterrupt, its logs closed, the checkpoint of the last evaluation kept for a resume."""
    from tqdm import tqdm
    pyplot()   # loaded now, not at the first curve.png (see pyplot)
    if run.method not in LEARNERS:
        raise ValueError(f'unknown method {run.method!r}; choose one of {sorted(LEARNERS)}')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(run.seed)
    bc = load_policy(bc_checkpoint, device=run.device)
    passed_on = carried_info(bc_checkpoint)   # task, labels and provenance, passed on to learner.pt
    # the BC flow's architecture (chunk H included); the run's seed seeds the learner too
    swfp = dataclasses.replace(swfp, flow=bc.cascade.base.cfg, seed=run.seed)
    identity = {'bc_sha256': hashlib.sha256(Path(bc_checkpoint).read_bytes()).hexdigest(), 'method': run.method,
                'task': run.task, 'seed': run.seed}
    demo = demo_transitions(demos, swfp) if demos is not None else None
    if (out / CHECKPOINT).is_file():
        learner = load_learner(str(out / CHECKPOINT), device=run.device, demo_transitions=demo,
                               learner_cls=LEARNERS[run.method])
        _check_resume(out, identity, learner.cfg, swfp)
        _reconcile_logs(out, learner)
        log(f'resumed from {out / CHECKPOINT} at {learner.counters.env_steps} env steps')
    else:
        learner = LEARNERS[run.method].on_policy(bc.cascade, bc.normalizer, bc.version, swfp, demo, device=run.device)
        for stale in (CURVE, BLOCKS):   # logs of an earlier run in this directory that left no checkpoint
            (out / stale).unlink(missing_ok=True)
        (out / RUN).write_text(json.dumps({**identity, 'bc': str(bc_checkpoint)}, indent=1))
    runtime = PolicyRuntime(learner.policy, learner.normalizer, learner.counters.version, run.device, seed=run.seed)
    collector = ChunkCollector(run.task, run.num_envs, swfp.critic.gamma, seed=run.seed + learner.counters.env_steps)
    rows = _read_curve(out / CURVE)
    timing = {'critic_s': 0.0, 'critic_updates': 0, 'block_s': 0.0, 'blocks': 0}
    next_eval = (rows[-1]['env_steps'] // run.eval_every + 1) * run.eval_every if rows else learner.counters.env_steps
    start = time.perf_counter() - (rows[-1]['wall_s'] if rows else 0.0)
    scalars = ScalarLog(out / TENSORBOARD)
    bar = tqdm(total=run.env_steps, initial=min(learner.counters.env_steps, run.env_steps), unit='step',
               desc=f'{run.method} {run.task}', disable=None if progress is None else not progress)
    if log is print and not bar.disable:
        log = bar.write                         # lines above the bar, not through it
    try:
        _run(learner, runtime, collector, run, out, rows, next_eval, start, passed_on, timing, scalars, bar, log,
             should_stop or (lambda: False))
    finally:
        bar.close()
        scalars.close()
    summary = {'timing': {'critic_ms_per_update': 1e3 * timing['critic_s'] / max(timing['critic_updates'], 1),
                          'block_s_per_block': timing['block_s'] / max(timing['blocks'], 1),
                          'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
               'config': {'runner': dataclasses.asdict(run), 'swfp': learner.cfg.to_dict()}}
    write_text_atomic(out / 'summary.json', json.dumps(summary, indent=1))
    return rows


def _check_resume(out: Path, identity: dict, saved: SwfpConfig, requested: SwfpConfig) -> None:
    """A run directory continues only the run it holds: anything else would train on silently ignored settings."""
    path = out / RUN
    if not path.is_file():
        raise ValueError(f'{out}: has {CHECKPOINT} but no {RUN}, so the run it holds cannot be identified; '
                         f'use a new output directory')
    started = json.loads(path.read_text())
    differences = [f'{k} {started.get(k)!r} -> {v!r}' for k, v in identity.items() if started.get(k) != v]
    flat_saved, flat_requested = _flatten(saved.to_dict()), _flatten(requested.to_dict())
    differences += [f'{k} {flat_saved.get(k)!r} -> {flat_requested.get(k)!r}' for k in sorted(set(flat_saved) |
                    set(flat_requested)) if flat_saved.get(k) != flat_requested.get(k)]
    if differences:
        raise ValueError(f'{out}: resuming a run started with other settings ({"; ".join(differences)}); use a new '
                         f'output directory, or the settings the run was started with')


def _flatten(d: dict, prefix: str = '') -> dict:
    flat = {}
    for k, v in d.items():
        flat.update(_flatten(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
    return flat


def _reconcile_logs(out: Path, learner) -> None:
    """Drop what the logs recorded after the checkpoint being resumed (a run stopped between an evaluation and the
    next one leaves its later blocks in blocks.jsonl): they are trained, logged and evaluated again. So is a curve
    row cut short (no newline: a power cut, or a disk that filled, while it was appended), even that of the checkpoint
    itself (written just after it). Each log is replaced whole."""
    blocks = out / BLOCKS
    if blocks.is_file():
        lines = blocks.read_text().splitlines(keepends=True)
        write_text_atomic(blocks, ''.join(lines[:len(learner.reports)]))
    curve = out / CURVE
    if curve.is_file():
        text = curve.read_text()
        rows = list(csv.DictReader(io.StringIO(text[:text.rfind('\n') + 1])))
        kept = [row for row in rows if int(row['env_steps']) <= learner.counters.env_steps]
        if kept:
            kept_text = io.StringIO()
            writer = csv.DictWriter(kept_text, fieldnames=list(kept[0]))
            writer.writeheader()
            writer.writerows(kept)
            write_text_atomic(curve, kept_text.getvalue())
        else:
            curve.unlink()


def _run(learner, runtime, collector, run: RunnerConfig, out: Path, rows: list[dict], next_eval: int, start: float,
         passed_on: dict, timing: dict, scalars: ScalarLog, bar, log, should_stop: Callable[[], bool]) -> None:
    """The loop: evaluate when due (checkpoints, curve, scalars), collect one decision per env, update."""
    while True:
        if should_stop():
            raise KeyboardInterrupt
        steps_done = learner.counters.env_steps
        finished = steps_done >= run.env_steps
        if steps_done >= next_eval or (finished and (not rows or rows[-1]['env_steps'] < steps_done)):
            rows.append(_evaluate_row(runtime, learner, run, steps_done, time.perf_counter() - start))
            # checkpoint first: interrupted between the two, a resume re-evaluates this point instead of skipping it
            save_learner(str(out / CHECKPOINT), learner, extra=passed_on)
            if rows[-1]['success_rate'] > max((r['success_rate'] for r in rows[:-1]), default=-1.0):
                shutil.copyfile(out / CHECKPOINT, out / f'{BEST}.tmp')
                (out / f'{BEST}.tmp').replace(out / BEST)
            if run.keep_every and (len(rows) - 1) % run.keep_every == 0:
                shutil.copyfile(out / CHECKPOINT, out / f'learner_{steps_done}.pt')
            if run.gif_every and (len(rows) - 1) % run.gif_every == 0:
                _write_gif(out / f'eval_{steps_done}.gif', runtime, run)
            _append_curve(out / CURVE, rows[-1])
            plot_rows(out / 'curve.png', rows, f'{run.method} on {run.task} (seed {run.seed})')
            row = rows[-1]
            scalars.scalars('eval', {'success_rate': row['success_rate'], 'mean_return': row['mean_return'],
                                     'q_bias': row['critic_q_bias'], 'q_mc_corr': row['critic_q_mc_corr']}, steps_done)
            scalars.scalars('time', {'wall_s': row['wall_s']}, steps_done)
            scalars.flush()
            log(f"[{run.method} {run.task} seed {run.seed}] {steps_done:>6d} env steps: success "
                f"{rows[-1]['success_rate']:.2f}, return {rows[-1]['mean_return']:.2f}, blocks {rows[-1]['blocks']}, "
                f"critic bias {rows[-1]['critic_q_bias']:+.2f} (corr {rows[-1]['critic_q_mc_corr']:.2f})")
            next_eval = (steps_done // run.eval_every + 1) * run.eval_every
        if finished:
            return
        transitions, steps = collector.collect(runtime)
        learner.add_transitions(**transitions)
        bar.update(min(steps, max(run.env_steps - bar.n, 0)))
        critic_before = learner.counters.critic_updates
        blocks_before = learner.counters.blocks_trained
        tick = time.perf_counter()
        updates = learner.update(should_stop=should_stop)
        elapsed = time.perf_counter() - tick
        done = learner.counters.critic_updates - critic_before
        if done:
            scalars.critic(learner.critic_metrics, steps_done)
        if learner.counters.blocks_trained > blocks_before:
            timing['block_s'] += elapsed
            timing['blocks'] += 1
            _log_block(out / BLOCKS, learner, steps_done)
            if learner.reports:
                scalars.block(learner.reports[-1], steps_done)
            scalars.scalars('time', {'block_s': elapsed}, steps_done)
        else:
            timing['critic_s'] += elapsed
            timing['critic_updates'] += done
            if done:
                scalars.scalars('time', {'critic_ms_per_update': 1e3 * elapsed / done}, steps_done)
        scalars.scalars('learner', {'replay_size': len(learner.replay),
                                    'blocks_accepted': learner.counters.blocks_accepted}, steps_done)
        for update in updates:
            runtime.apply_update(update.to_bytes())   # the same validated byte path as the ROS policy node


def _write_gif(path: Path, runtime: PolicyRuntime, run: RunnerConfig) -> None:
    """One rollout of the policy as evaluated (stochastic, the first evaluation seed), rendered offscreen."""
    from ..sim.render import record_rollouts, save_gif
    env = make_env(run.task, render_mode='rgb_array', width=240, height=180)
    try:
        seed = evaluation_seed(run.seed)
        frames, _ = record_rollouts(env, seeded_act(runtime, seed), episodes=1, seed=seed, every=2)
    finally:
        env.close()
    save_gif(frames, path, fps=10)


def pyplot():
    """matplotlib.pyplot on the Agg backend. finetune loads it before its loop: a Ctrl-C landing inside the import of
    one of matplotlib's C extensions (at the first curve.png) became "ImportError: initialization failed" and then an
    abort at interpreter exit instead of the interrupt's exit 130."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_rows(path: Path, rows: list[dict], title: str) -> None:
    """The evaluations' success rate and mean return against env steps (PNG)."""
    plt = pyplot()
    steps = [r['env_steps'] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(steps, [r['success_rate'] for r in rows], 'o-')
    top.set_ylabel('success rate')
    top.set_ylim(-0.02, 1.02)
    top.set_title(title)
    bottom.plot(steps, [r['mean_return'] for r in rows], 'o-', color='tab:green')
    bottom.set_ylabel('mean return')
    bottom.set_xlabel('env steps')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _evaluate_row(runtime, learner, run: RunnerConfig, env_steps: int, wall_s: float) -> dict:
    result = evaluate_runtime(runtime, run.task, run.eval_episodes, run.num_envs, seed=evaluation_seed(run.seed),
                              record=True)
    episodes = result.pop('episodes')
    check = learner.critic_check(episodes)
    obs = np.concatenate([ep['obs'] for ep in episodes])
    with torch.no_grad():
        s = learner.normalizer(torch.as_tensor(obs, dtype=torch.float32, device=learner.device))
        learner_actions = learner.policy.sample(s, torch.zeros(len(s), learner.act_dim, device=learner.device),
                                                clip=True).cpu().numpy()
    gap = float(np.abs(runtime.act(obs, deterministic=True) - learner_actions).max())
    return {'env_steps': env_steps, **result, 'wall_s': round(wall_s, 2), 'version': runtime.version,
            'blocks': learner.counters.blocks_accepted, 'critic_updates': learner.counters.critic_updates,
            'critic_q_bias': round(check['q_bias'], 4), 'critic_q_mc_corr': round(check['q_mc_corr'], 4),
            'actor_learner_gap': gap}


def _log_block(path: Path, learner, env_steps: int) -> None:
    """One JSON line per trained JKO block (its held-out report); the naive baseline trains no blocks."""
    if learner.reports:
        with path.open('a') as f:
            f.write(json.dumps({'env_steps': env_steps, **learner.reports[-1].to_dict()}) + '\n')


def _read_curve(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: float(v) if k not in ('env_steps', 'version', 'blocks', 'critic_updates') else int(v)
                 for k, v in row.items()} for row in csv.DictReader(f)]


def _append_curve(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open('a', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
