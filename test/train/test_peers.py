"""DSRL and residual RL on a frozen BC flow: their starts, their wrappers, and runs through the harness."""
import csv
import json

import numpy as np
import pytest
import torch

from swfp_ros.algo.checkpoint import load_policy
from swfp_ros.algo.config import FlowConfig
from swfp_ros.sim import make_env
from swfp_ros.train.demos import collect_demos
from swfp_ros.train.finetune import RunnerConfig, evaluate_batched, evaluate_runtime
from swfp_ros.train.peers import NoiseSteeringEnv, PeerConfig, deployed_policy, make_peer, train_peer
from swfp_ros.train.pretrain import pretrain

SMALL = PeerConfig(hidden=32, layers=2, batch_size=32, learning_starts=60)


@pytest.fixture(scope='module')
def bc(tmp_path_factory):
    """BC checkpoints on panda_reach: one action per decision (bc1) and chunks of 3 (bc3)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp('bc')
    demos, _ = collect_demos('panda_reach', episodes=4, noise_std=0.5, epsilon=0.1, seed=0, progress=False)
    pretrain(demos, out / 'bc1.pt', FlowConfig(hidden=64, layers=2), steps=50, progress=False)
    pretrain(demos, out / 'bc3.pt', FlowConfig(hidden=64, layers=2, chunk=3), steps=50, progress=False)
    return out


def _bc_rollout(runtime, seed, decisions):
    """Observations and rewards of the deterministic BC policy (x0 = 0), chunks executed open loop."""
    env = make_env('panda_reach')
    obs, _ = env.reset(seed=seed)
    trace, rewards = [obs], []
    for _ in range(decisions):
        for action in runtime.act(obs, deterministic=True).reshape(-1, 7):
            obs, reward, *_ = env.step(action)
            trace.append(obs)
            rewards.append(reward)
    return np.stack(trace), rewards


@pytest.mark.parametrize('chunk', [1, 3])
def test_dsrl_zero_noise_is_the_bc_flows_deterministic_action(bc, chunk):
    runtime = load_policy(str(bc / f'bc{chunk}.pt'), device='cpu')
    env = NoiseSteeringEnv('panda_reach', runtime, bound=1.5)
    assert env.action_space.shape == (7 * chunk,)    # the whole chunk's noise is one action
    steered, _ = env.reset(seed=11)
    trace, rewards = [env._obs], []
    for _ in range(6):
        steered, reward, *_ = env.step(np.zeros(7 * chunk, np.float32))
        trace.append(env._obs)
        rewards.append(reward)
    expected, bc_rewards = _bc_rollout(runtime, 11, 6)
    np.testing.assert_array_equal(np.stack(trace), expected[::chunk])
    np.testing.assert_allclose(rewards, np.add.reduceat(bc_rewards, np.arange(0, 6 * chunk, chunk)), rtol=1e-12)
    assert env.env_steps == 6 * chunk
    np.testing.assert_allclose(steered, (env._obs - runtime.normalizer.mean.numpy()) / runtime.normalizer.std.numpy(),
                               rtol=1e-5, atol=1e-5)    # SAC sees the BC normaliser's view


def test_dsrl_steers_the_flow_with_bounded_noise_drawn_from_its_prior(bc):
    runtime = load_policy(str(bc / 'bc1.pt'), device='cpu')
    env = NoiseSteeringEnv('panda_reach', runtime, bound=1.5)
    obs, _ = env.reset(seed=3)
    noise = np.full(7, 1.2, np.float32)
    decoded = runtime.act(env._obs, noise=noise)
    assert not np.allclose(decoded, runtime.act(env._obs, deterministic=True))
    reference = make_env('panda_reach')
    reference.reset(seed=3)
    np.testing.assert_array_equal(env.step(noise)[0], env.observe(reference.step(decoded)[0]))
    env.action_space.seed(0)
    samples = np.stack([env.action_space.sample() for _ in range(4000)])
    # N(0, 1) clipped at 1.5 (not uniform on the box): std 0.882, and 13.4 % of the values on the bounds.
    assert np.abs(samples).max() <= 1.5 and abs(samples.std() - 0.882) < 0.02
    assert abs(np.mean(np.abs(samples) == 1.5) - 0.134) < 0.02
    with pytest.raises(ValueError, match='noise'):
        runtime.act(env._obs, noise=np.zeros(6))
    with pytest.raises(ValueError, match='noise'):
        runtime.act(env._obs, noise=np.full(7, np.nan))


def test_residual_policy_starts_at_bc_exactly(bc):
    ckpt = str(bc / 'bc1.pt')
    model, env = make_peer('residual', 'panda_reach', load_policy(ckpt, device='cpu', seed=1), SMALL, seed=0)
    obs, _ = env.reset(seed=5)
    assert obs.shape == (20 + 7,)                     # observation and the BC flow's sampled action
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], np.zeros(7, np.float32))
    # Deployed (evaluation) policy = stochastic BC flow + mean residual: identical to BC's own evaluation.
    start = evaluate_runtime(load_policy(ckpt, device='cpu', seed=0), 'panda_reach', 6, 3, seed=77)
    peer = deployed_policy('residual', model, load_policy(ckpt, device='cpu', seed=0), SMALL, seed=77)
    assert evaluate_batched(peer, 'panda_reach', 6, 3, seed=77) == start
    # A residual of +1 moves every action by the scale, within [-1, 1].
    env.reset(seed=5)
    reference = make_env('panda_reach')
    reference.reset(seed=5)
    moved = np.clip(env._base + SMALL.residual_scale, -1, 1)
    np.testing.assert_array_equal(env.step(np.ones(7, np.float32))[0][:20], env.observe(reference.step(moved)[0])[:20])


@pytest.mark.parametrize('method', ['dsrl', 'residual'])
def test_peers_run_through_the_harness(bc, tmp_path, method):
    ckpt = str(bc / 'bc3.pt')
    run = RunnerConfig(task='panda_reach', method=method, env_steps=240, num_envs=4, eval_every=120, eval_episodes=4)
    rows = train_peer(ckpt, str(tmp_path), run, SMALL, log=lambda *_: None)
    steps = [r['env_steps'] for r in rows]   # the first env-step count at or past each evaluation point
    assert steps[0] == 0 and 120 <= steps[1] < 123 and 240 <= steps[2] < 243 and len(steps) == 3
    updates = [r['gradient_updates'] for r in rows]   # one per decision (of <= 3 env steps) after the warm-up
    assert updates[0] == 0 and updates == sorted(updates) and 0 < updates[2] <= steps[2] - SMALL.learning_starts
    assert all(0.0 <= r['success_rate'] <= 1.0 and np.isfinite(r['mean_return']) for r in rows)
    with open(tmp_path / 'curve.csv') as f:
        assert [int(r['env_steps']) for r in csv.DictReader(f)] == steps
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['timing']['gradient_ms_per_update'] > 0 and summary['config']['peer']['hidden'] == 32
    if method == 'residual':
        bc_start = evaluate_runtime(load_policy(ckpt, device='cpu', seed=0), 'panda_reach', 4, 4,
                                    seed=1_000_000)
        assert {k: rows[0][k] for k in bc_start} == bc_start


def test_a_stop_request_ends_a_peer_run_writing_nothing(bc, tmp_path):
    run = RunnerConfig(task='panda_reach', method='dsrl', env_steps=240, num_envs=4, eval_every=120, eval_episodes=4)
    with pytest.raises(KeyboardInterrupt):
        train_peer(str(bc / 'bc3.pt'), str(tmp_path), run, SMALL, log=lambda *_: None, should_stop=lambda: True)
    assert not (tmp_path / 'curve.csv').exists() and not (tmp_path / 'summary.json').exists()


def test_deployed_dsrl_samples_its_noise_policy(bc):
    """As deployed (and evaluated), DSRL draws its noise from its SAC policy: one observation twice in a batch gets two
    different noises, so two different actions."""
    runtime = load_policy(str(bc / 'bc1.pt'), device='cpu', seed=0)
    model, _ = make_peer('dsrl', 'panda_reach', runtime, SMALL, seed=0)
    obs, _ = make_env('panda_reach').reset(seed=0)
    actions = deployed_policy('dsrl', model, runtime, SMALL, seed=0)(np.stack([obs, obs]))
    assert actions.shape == (2, 7) and not np.allclose(actions[0], actions[1])


@pytest.mark.parametrize('method', ['dsrl', 'residual'])
def test_a_seed_repeats_a_peer_run_exactly(bc, tmp_path, method):
    """The run seed seeds the networks, the replay, the exploration and the envs: the same seed gives the same
    curve, another seed another one."""
    def curve(seed, name):
        run = RunnerConfig(task='panda_reach', method=method, env_steps=150, num_envs=2, eval_every=150,
                           eval_episodes=2, seed=seed)
        rows = train_peer(str(bc / 'bc1.pt'), str(tmp_path / name), run, SMALL, log=lambda *_: None)
        return [{k: v for k, v in r.items() if k != 'wall_s'} for r in rows]
    first = curve(3, 'a')
    assert curve(3, 'b') == first and curve(4, 'c')[-1] != first[-1]


def test_peer_settings_and_methods_are_checked(bc, tmp_path):
    assert PeerConfig.from_overrides(['residual_scale=0.2', 'utd=2']).residual_scale == 0.2
    with pytest.raises(ValueError, match='key=value'):
        PeerConfig.from_overrides(['block.delta=0.2'])
    with pytest.raises(ValueError, match='residual_scale'):
        PeerConfig(residual_scale=0.0)
    with pytest.raises(ValueError, match='unknown peer method'):
        make_peer('ppo', 'panda_reach', load_policy(str(bc / 'bc1.pt'), device='cpu'), SMALL)


def test_cli_finetune_runs_a_peer_on_the_ogbench_task(tmp_path, capsys):
    from swfp_ros.cli import main
    demos, _ = collect_demos('cube_single', episodes=3, noise_std=0.2, epsilon=0.0, seed=0, progress=False)
    pretrain(demos, tmp_path / 'bc.pt', FlowConfig(hidden=32, layers=2), steps=30, progress=False)
    assert main(['finetune', '--bc', str(tmp_path / 'bc.pt'), '--task', 'cube_single', '--method', 'dsrl',
                 '--out', str(tmp_path / 'run'), '--env-steps', '100', '--eval-every', '100', '--eval-episodes', '2',
                 '--num-envs', '2', '--set', 'learning_starts=50', '--set', 'hidden=32']) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result['env_steps'] == 100 and result['blocks'] == 0 and 0.0 <= result['success_rate'] <= 1.0
