"""The in-process runner: demos -> BC checkpoint -> online fine-tuning with blocks, checkpoints and resume."""
import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from swfp_ros.algo.checkpoint import checkpoint_info, load_learner, load_policy
from swfp_ros.algo.config import FlowConfig
from swfp_ros.algo.naive import NaiveLearner
from swfp_ros.sim import make_env
from swfp_ros.train.demos import collect_demos
from swfp_ros.train.finetune import ChunkCollector, RunnerConfig, evaluate_runtime, finetune
from swfp_ros.train.pretrain import pretrain
from swfp_ros.train.settings import load_swfp_config

SMALL = ['warmup_steps=96', 'steps_per_block=96', 'block.train_steps=20', 'block.pool_size=256',
         'critic.batch_size=64', 'critic.hidden=64', 'block.hidden=32', 'replay_capacity=5000']


@pytest.fixture(scope='module')
def bc_checkpoint(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp('bc')
    demos, _ = collect_demos('panda_reach', episodes=4, noise_std=0.5, epsilon=0.1, seed=0, progress=False)
    demos.save(out / 'demos.npz')
    pretrain(demos, out / 'bc.pt', FlowConfig(hidden=64, layers=2), steps=50, progress=False)
    return out


def _curve(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bc_checkpoint_carries_normaliser_and_provenance(bc_checkpoint):
    runtime = load_policy(str(bc_checkpoint / 'bc.pt'), device='cpu')
    assert runtime.obs_dim == 20 and runtime.act_dim == 7
    info = checkpoint_info(str(bc_checkpoint / 'bc.pt'))
    assert info.task == 'panda_reach' and info.provenance[0]['source'] == 'simulator'
    assert len(info.obs_labels) == 20


def test_collector_transitions_start_where_the_env_was(bc_checkpoint):
    """Regression: obs was stored as a view of the row later overwritten with next_obs (obs == next_obs)."""
    collector = ChunkCollector('panda_reach', num_envs=2, gamma=0.99, seed=0)
    before = collector.obs.copy()
    transitions, steps = collector.collect(load_policy(str(bc_checkpoint / 'bc.pt'), device='cpu'))
    assert steps == 2 and transitions['stream'].tolist() == [0, 1]
    np.testing.assert_array_equal(transitions['obs'], before)
    np.testing.assert_array_equal(transitions['next_obs'], collector.obs)
    assert not np.allclose(transitions['obs'], transitions['next_obs'])


class ScriptedChunks:
    """A runtime's act() for the collector: the same chunk of H actions for every env ([envs, H * 7])."""

    def __init__(self, chunk: np.ndarray):
        self.chunk = chunk

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.tile(self.chunk.reshape(1, -1), (len(obs), 1))


def test_collector_discounts_within_a_chunk_and_pads_a_chunk_cut_by_the_episode_end():
    """Each decision against the same env stepped here by hand: reward = sum of gamma^k r_k over the steps the chunk
    ran, n_steps, next_obs; the 50-step limit cuts the 17th chunk of 3 after 2 steps: its last action is zeros
    (as the policy node pads it), the transition is truncated, not terminated."""
    gamma, horizon = 0.9, 3
    chunk = np.random.default_rng(0).uniform(-0.3, 0.3, (horizon, 7)).astype(np.float32)
    collector = ChunkCollector('panda_reach', num_envs=1, gamma=gamma, seed=5)
    reference = make_env('panda_reach')
    reference.reset(seed=5)
    for _ in range(17):
        transitions, steps = collector.collect(ScriptedChunks(chunk))
        rewards, ended = [], False
        for action in chunk:
            next_obs, reward, terminated, truncated, _ = reference.step(action)
            rewards.append(reward)
            if terminated or truncated:
                ended = True
                break
        n = len(rewards)
        assert steps == n and transitions['n_steps'][0] == n
        assert transitions['reward'][0] == pytest.approx(sum(gamma ** k * r for k, r in enumerate(rewards)), abs=1e-12)
        executed = chunk.copy()
        executed[n:] = 0.0
        np.testing.assert_array_equal(transitions['action'][0].reshape(horizon, 7), executed)
        np.testing.assert_allclose(transitions['next_obs'][0], next_obs)
    assert ended and n == 2 and not terminated and not transitions['terminated'][0]


def test_finetune_trains_blocks_within_the_trust_region_and_resumes(bc_checkpoint, tmp_path):
    swfp = load_swfp_config(overrides=SMALL)
    # a budget that is not a multiple of eval_every: the run still ends with an evaluation and a checkpoint
    run = RunnerConfig(task='panda_reach', env_steps=250, num_envs=4, eval_every=100, eval_episodes=4)
    from swfp_ros.data import DemoDataset
    demos = DemoDataset.load(bc_checkpoint / 'demos.npz')
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run, swfp, demos, log=lambda *_: None)
    assert [r['env_steps'] for r in rows] == [0, 100, 200, 252]
    assert all(np.isfinite([r['critic_q_bias'], r['critic_q_mc_corr']]).all() for r in rows)
    blocks = [json.loads(line) for line in (tmp_path / 'blocks.jsonl').read_text().splitlines()]
    assert blocks and any(b['accepted'] for b in blocks), blocks
    for block in blocks:
        if block['accepted']:
            assert block['w2_bound'] <= 1.25 * block['delta_sq'] + 1e-9
    assert rows[-1]['blocks'] >= 1 and rows[-1]['version'] == rows[-1]['blocks']
    # the actor ran exactly the learner's policy at every evaluation (each accepted block applied once)
    assert all(r['actor_learner_gap'] == 0.0 for r in rows), [r['actor_learner_gap'] for r in rows]
    learner = load_learner(str(tmp_path / 'learner.pt'))
    assert learner.counters.env_steps == 252 and learner.counters.critic_updates > 0
    assert learner.cfg.seed == run.seed
    # the learner's checkpoint still says what its policy was trained for: the BC checkpoint's task, labels, origin
    tuned_info, bc_info = checkpoint_info(str(tmp_path / 'learner.pt')), checkpoint_info(str(bc_checkpoint / 'bc.pt'))
    assert bc_info.task == 'panda_reach' and bc_info.obs_labels and bc_info.provenance
    assert (tuned_info.task, tuned_info.obs_labels, tuned_info.action_labels, tuned_info.provenance) == \
        (bc_info.task, bc_info.obs_labels, bc_info.action_labels, bc_info.provenance)

    # Resume: a larger budget continues from the checkpoint instead of starting over.
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path),
                    RunnerConfig(task='panda_reach', env_steps=300, num_envs=4, eval_every=100, eval_episodes=4),
                    swfp, demos, log=lambda *_: None)
    steps = [int(r['env_steps']) for r in _curve(tmp_path / 'curve.csv')]
    assert steps == [0, 100, 200, 252, 300]
    tuned = load_learner(str(tmp_path / 'learner.pt'))
    assert tuned.counters.env_steps == 300

    # A fine-tuned checkpoint as the starting policy of another run: continued, its blocks and version kept.
    rows = finetune(str(tmp_path / 'learner.pt'), str(tmp_path / 'again'),
                    RunnerConfig(task='panda_reach', env_steps=40, num_envs=4, eval_every=40, eval_episodes=4),
                    swfp, demos, log=lambda *_: None)
    again = load_learner(str(tmp_path / 'again' / 'learner.pt'))
    assert rows[0]['version'] == tuned.counters.version >= 1 and rows[0]['actor_learner_gap'] == 0.0
    assert len(again.policy.blocks) == len(tuned.policy.blocks) and again.counters.env_steps == 40


def test_resume_refuses_other_settings_or_another_bc(bc_checkpoint, tmp_path):
    run = RunnerConfig(task='panda_reach', env_steps=8, num_envs=4, eval_every=100, eval_episodes=2)
    finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path / 'run'), run, load_swfp_config(overrides=SMALL),
             log=lambda *_: None)
    with pytest.raises(ValueError, match=r'block\.delta 0\.1 -> 0\.3'):
        finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path / 'run'), dataclasses.replace(run, env_steps=16),
                 load_swfp_config(overrides=[*SMALL, 'block.delta=0.3']), log=lambda *_: None)
    with pytest.raises(ValueError, match='seed 0 -> 1'):
        finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path / 'run'), dataclasses.replace(run, seed=1),
                 load_swfp_config(overrides=SMALL), log=lambda *_: None)
    other_bc = tmp_path / 'other.pt'
    from swfp_ros.data import DemoDataset
    pretrain(DemoDataset.load(bc_checkpoint / 'demos.npz'), other_bc, FlowConfig(hidden=64, layers=2), steps=5,
             progress=False)
    with pytest.raises(ValueError, match='bc_sha256'):
        finetune(str(other_bc), str(tmp_path / 'run'), run, load_swfp_config(overrides=SMALL), log=lambda *_: None)
    assert load_learner(str(tmp_path / 'run' / 'learner.pt')).counters.env_steps == 8   # nothing was trained


@pytest.mark.parametrize('cut_short', [False, True])
def test_resume_after_a_stop_between_checkpoints_logs_each_block_once(bc_checkpoint, tmp_path, cut_short):
    """A run that stops after logging blocks but before its next checkpoint: the resumed run trains those blocks again;
    blocks.jsonl and curve.csv must then hold each block and evaluation once, as an uninterrupted run does. Also when
    each log's last line was cut short (a power cut, or a disk that filled, while it was appended): a resume that
    parsed it failed on it (TypeError), and never resumed."""
    import shutil
    swfp = load_swfp_config(overrides=SMALL)
    run = lambda steps: RunnerConfig(task='panda_reach', env_steps=steps, num_envs=4, eval_every=100,  # noqa: E731
                                     eval_episodes=2)
    go = lambda steps: finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run(steps), swfp,  # noqa: E731
                                log=lambda *_: None)
    go(100)
    shutil.copy(tmp_path / 'learner.pt', tmp_path / 'at100.pt')
    go(300)
    uninterrupted = (tmp_path / 'blocks.jsonl').read_text()
    assert len(uninterrupted.splitlines()) >= 2
    shutil.copy(tmp_path / 'at100.pt', tmp_path / 'learner.pt')   # as if it had stopped right after the 100 checkpoint
    if cut_short:
        for log in ('blocks.jsonl', 'curve.csv'):
            text = (tmp_path / log).read_text()
            (tmp_path / log).write_text(text[:-9])
    go(300)
    assert (tmp_path / 'blocks.jsonl').read_text() == uninterrupted
    assert [int(r['env_steps']) for r in _curve(tmp_path / 'curve.csv')] == [0, 100, 200, 300]


def test_an_evaluation_row_cut_short_after_its_checkpoint_is_evaluated_again(bc_checkpoint, tmp_path):
    """The run stopped (a power cut, a disk that filled) while appending the row of the evaluation it had just
    checkpointed: the resume drops the row cut short and evaluates that point again."""
    swfp = load_swfp_config(overrides=SMALL)
    go = lambda steps: finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path),  # noqa: E731
                                RunnerConfig(task='panda_reach', env_steps=steps, num_envs=4, eval_every=100,
                                             eval_episodes=2), swfp, log=lambda *_: None)
    go(100)
    curve = tmp_path / 'curve.csv'
    curve.write_text(curve.read_text()[:-9])
    rows = go(200)
    assert [r['env_steps'] for r in rows] == [0, 100, 200]
    assert [int(r['env_steps']) for r in _curve(curve)] == [0, 100, 200]
    assert all(v != '' for r in _curve(curve) for v in r.values())


def test_a_stop_request_ends_the_run_after_the_step_under_way_and_it_resumes(bc_checkpoint, tmp_path):
    """should_stop() True once the evaluation at 100 env steps is logged: the run ends at its next poll with
    KeyboardInterrupt, its checkpoint that evaluation's; the same call then resumes to the end of the budget."""
    swfp = load_swfp_config(overrides=SMALL)
    run = RunnerConfig(task='panda_reach', env_steps=300, num_envs=4, eval_every=100, eval_episodes=2)
    logged_100 = lambda: (tmp_path / 'curve.csv').is_file() and len(_curve(tmp_path / 'curve.csv')) >= 2  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run, swfp, log=lambda *_: None, should_stop=logged_100)
    assert load_learner(str(tmp_path / 'learner.pt')).counters.env_steps == 100
    assert [int(r['env_steps']) for r in _curve(tmp_path / 'curve.csv')] == [0, 100]
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run, swfp, log=lambda *_: None)
    assert [r['env_steps'] for r in rows] == [0, 100, 200, 300]


def test_a_seed_repeats_a_run_exactly_and_seeds_the_learner(bc_checkpoint, tmp_path):
    swfp = load_swfp_config(overrides=[*SMALL, 'warmup_steps=48', 'steps_per_block=48'])

    def go(name, seed):
        run = RunnerConfig(task='panda_reach', env_steps=100, num_envs=2, eval_every=100, eval_episodes=2, seed=seed)
        rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path / name), run, swfp, log=lambda *_: None)
        return [{k: v for k, v in r.items() if k != 'wall_s'} for r in rows], load_learner(str(tmp_path / name /
                                                                                                'learner.pt'))

    (rows_a, a), (rows_b, b), (_, c) = go('a', 0), go('b', 0), go('c', 1)
    assert a.counters.blocks_trained >= 1 and rows_a == rows_b
    for p, q in zip(a.critic.parameters(), b.critic.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert (a.cfg.seed, c.cfg.seed) == (0, 1)
    assert not all(torch.equal(p, q) for p, q in zip(a.critic.parameters(), c.critic.parameters()))


def test_evaluating_a_run_more_often_trains_the_same_learner(bc_checkpoint, tmp_path):
    """Evaluations (and the rollouts filmed beside them) draw their noise from their own seeded generator, not from
    the actor's stream."""
    swfp = load_swfp_config(overrides=[*SMALL, 'warmup_steps=48', 'steps_per_block=48'])

    def learner_evaluated_every(eval_every):
        run = RunnerConfig(task='panda_reach', env_steps=100, num_envs=2, eval_every=eval_every, eval_episodes=2,
                           gif_every=5 if eval_every < 100 else 0)
        out = tmp_path / f'every{eval_every}'
        finetune(str(bc_checkpoint / 'bc.pt'), str(out), run, swfp, log=lambda *_: None)
        return load_learner(str(out / 'learner.pt'))

    often, rarely = learner_evaluated_every(20), learner_evaluated_every(100)
    assert often.counters.blocks_trained >= 1
    for p, q in zip([*often.critic.parameters(), *often.policy.parameters()],
                    [*rarely.critic.parameters(), *rarely.policy.parameters()]):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_an_evaluation_depends_on_its_seed_alone_and_leaves_the_runtime_stream(bc_checkpoint):
    evaluated, untouched = (load_policy(str(bc_checkpoint / 'bc.pt'), device='cpu', seed=0) for _ in range(2))
    other_seed = load_policy(str(bc_checkpoint / 'bc.pt'), device='cpu', seed=1)
    results = [evaluate_runtime(r, 'panda_reach', 2, 2, seed=3) for r in (evaluated, evaluated, other_seed)]
    assert results[0] == results[1] == results[2]
    obs = np.zeros((2, evaluated.obs_dim), np.float32)
    np.testing.assert_array_equal(evaluated.act(obs), untouched.act(obs))


def test_recorded_evaluation_pads_a_chunk_cut_by_the_episode_end(bc_checkpoint, tmp_path):
    """The critic check must see the actions as replay stores them: a chunk's unexecuted tail as zeros."""
    from swfp_ros.data import DemoDataset
    from swfp_ros.train.finetune import evaluate_batched
    pretrain(DemoDataset.load(bc_checkpoint / 'demos.npz'), tmp_path / 'bc4.pt', FlowConfig(hidden=64, layers=2,
                                                                                             chunk=4), steps=5,
             progress=False)
    runtime = load_policy(str(tmp_path / 'bc4.pt'), device='cpu', seed=0)
    episodes = evaluate_batched(runtime.act, 'panda_reach', 2, 2, seed=0, record=True)['episodes']
    cut = 0
    for ep in episodes:
        executed = len(ep['step_rewards'][-1])
        cut += executed < 4
        assert (ep['action'][-1][executed * 7:] == 0).all() and (ep['action'][-1][:executed * 7] != 0).any()
    assert cut >= 1   # 50-step episodes end inside a chunk of 4 (unless one succeeded on a multiple of 4)


def test_eval_seed_repeats_the_evaluation_exactly(bc_checkpoint):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(sys.executable).with_name('swfp')
    cmd = [str(script), 'eval', '--task', 'panda_reach', '--policy', str(bc_checkpoint / 'bc.pt'), '--episodes', '3',
           '--seed', '999']
    outputs = [subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout.splitlines()[-1]
               for _ in range(2)]
    assert outputs[0] == outputs[1] and json.loads(outputs[0])['episodes'] == 3


def test_chunked_bc_fine_tunes_with_chunked_demos_in_replay(bc_checkpoint, tmp_path):
    from swfp_ros.data import DemoDataset
    demos = DemoDataset.load(bc_checkpoint / 'demos.npz')
    pretrain(demos, tmp_path / 'bc4.pt', FlowConfig(hidden=64, layers=2, chunk=4), steps=50, progress=False)
    assert load_policy(str(tmp_path / 'bc4.pt')).act_dim == 28
    run = RunnerConfig(task='panda_reach', env_steps=200, num_envs=4, eval_every=200, eval_episodes=4)
    finetune(str(tmp_path / 'bc4.pt'), str(tmp_path / 'run'), run, load_swfp_config(overrides=SMALL), demos,
             log=lambda *_: None)
    learner = load_learner(str(tmp_path / 'run' / 'learner.pt'), demo_transitions=None)
    assert learner.cfg.flow.chunk == 4 and learner.counters.blocks_trained >= 1
    n_steps = learner.replay.data['n_steps'][:len(learner.replay)]
    assert n_steps.max() == 4 * learner.cfg.critic.n_step and n_steps.min() >= 1   # windows of whole chunks


def test_naive_baseline_runs_in_the_same_harness(bc_checkpoint, tmp_path):
    swfp = load_swfp_config(overrides=SMALL)
    run = RunnerConfig(task='panda_reach', method='naive', env_steps=200, num_envs=4, eval_every=200,
                       eval_episodes=4)
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run, swfp, log=lambda *_: None)
    assert rows[-1]['version'] >= 1   # the naive learner republished its whole base at least once
    assert isinstance(load_learner(str(tmp_path / 'learner.pt'), learner_cls=NaiveLearner), NaiveLearner)


def test_unknown_method_is_a_clear_error(bc_checkpoint, tmp_path):
    with pytest.raises(ValueError, match='unknown method'):
        finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), RunnerConfig(method='ppo'), load_swfp_config())


def event_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under ``log_dir``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_finetune_monitoring_tensorboard_curve_png_best_and_kept_checkpoints(bc_checkpoint, tmp_path):
    swfp = load_swfp_config(overrides=SMALL)
    run = RunnerConfig(task='panda_reach', env_steps=200, num_envs=4, eval_every=100, eval_episodes=4, keep_every=2,
                       gif_every=2)
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run, swfp, log=lambda *_: None, progress=False)
    scalars = event_scalars(tmp_path / 'tensorboard')
    for tag in ('eval/success_rate', 'eval/mean_return', 'eval/q_bias', 'critic/td_loss', 'block/w2_bound',
                'block/accepted', 'block/lambda', 'learner/replay_size', 'time/wall_s', 'time/critic_ms_per_update',
                'time/block_s'):
        assert scalars.get(tag), f'no {tag} in {sorted(scalars)}'
    assert [s for s, _ in scalars['eval/success_rate']] == [r['env_steps'] for r in rows]
    assert [v for _, v in scalars['eval/success_rate']] == pytest.approx([r['success_rate'] for r in rows])
    blocks = [json.loads(line) for line in (tmp_path / 'blocks.jsonl').read_text().splitlines()]
    assert [v for _, v in scalars['block/w2_bound']] == pytest.approx([b['w2_bound'] for b in blocks])
    assert (tmp_path / 'curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    best_row = max(range(len(rows)), key=lambda i: (rows[i]['success_rate'], -i))
    assert checkpoint_info(str(tmp_path / 'best.pt')).counters['env_steps'] == rows[best_row]['env_steps']
    kept = sorted(p.name for p in tmp_path.glob('learner_*.pt'))
    assert kept == sorted(f'learner_{r["env_steps"]}.pt' for r in rows[::2])
    gifs = sorted(tmp_path.glob('eval_*.gif'))
    assert [g.name for g in gifs] == sorted(f'eval_{r["env_steps"]}.gif' for r in rows[::2])
    import imageio.v2 as imageio
    frames = imageio.mimread(gifs[0])
    assert len(frames) > 5 and frames[0].std() > 0     # a rendered scene, not a blank image
