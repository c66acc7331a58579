"""The in-process runner: demos -> BC checkpoint -> online fine-tuning with blocks, checkpoints and resume."""
import csv
import json

import numpy as np
import pytest
import torch

from swfp_ros.algo.checkpoint import checkpoint_info, load_learner, load_policy
from swfp_ros.algo.config import FlowConfig
from swfp_ros.algo.naive import NaiveLearner
from swfp_ros.train.demos import collect_demos
from swfp_ros.train.finetune import ChunkCollector, RunnerConfig, finetune
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


def test_finetune_trains_blocks_within_the_trust_region_and_resumes(bc_checkpoint, tmp_path):
    swfp = load_swfp_config(overrides=SMALL)
    run = RunnerConfig(task='panda_reach', env_steps=200, num_envs=4, eval_every=100, eval_episodes=4)
    from swfp_ros.data import DemoDataset
    demos = DemoDataset.load(bc_checkpoint / 'demos.npz')
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path), run, swfp, demos, log=lambda *_: None)
    assert [r['env_steps'] for r in rows][:2] == [0, 100] and rows[-1]['env_steps'] >= 200
    assert all(np.isfinite([r['critic_q_bias'], r['critic_q_mc_corr']]).all() for r in rows)
    blocks = [json.loads(line) for line in (tmp_path / 'blocks.jsonl').read_text().splitlines()]
    assert blocks, 'no block was trained'
    for block in blocks:
        if block['accepted']:
            assert block['w2_bound'] <= 1.25 * block['delta_sq'] + 1e-9
    learner = load_learner(str(tmp_path / 'learner.pt'))
    assert learner.counters.env_steps >= 200 and learner.counters.critic_updates > 0

    # Resume: a larger budget continues from the checkpoint instead of starting over.
    rows = finetune(str(bc_checkpoint / 'bc.pt'), str(tmp_path),
                    RunnerConfig(task='panda_reach', env_steps=300, num_envs=4, eval_every=100, eval_episodes=4),
                    swfp, demos, log=lambda *_: None)
    steps = [int(r['env_steps']) for r in _curve(tmp_path / 'curve.csv')]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] >= 300
    assert load_learner(str(tmp_path / 'learner.pt')).counters.env_steps >= 300


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
