"""OGBench's cube-single behind the task surface: layout, seeding, action checks, the oracle expert, demos."""
import numpy as np
import pytest

from swfp_ros.sim import BRIDGE_TASKS, make_env
from swfp_ros.sim.experts import make_expert
from swfp_ros.sim.ogbench_tasks import UR5E_JOINTS
from swfp_ros.train.demos import collect_demos
from swfp_ros.train.evaluate import evaluate


def test_observation_is_ogbench_state_with_labels():
    env = make_env('cube_single')
    obs, info = env.reset(seed=3)
    base = env.unwrapped
    inner = base.ogbench_env
    assert obs.shape == (28,) and obs.dtype == np.float32 and len(base.obs_labels) == 28
    assert info == {'is_success': False} and env.spec.max_episode_steps == 200
    labelled = dict(zip(base.obs_labels, obs))
    for joint in UR5E_JOINTS:   # by name in the compiled model, not by OGBench's index order
        qpos = inner.data.joint(f'ur5e/{joint}').qpos[0]
        assert labelled[f'{joint}.position'] == pytest.approx(qpos, abs=1e-6)
    cube = inner.data.joint('object_joint_0').qpos[:3]
    np.testing.assert_allclose([labelled['cube_x'], labelled['cube_y'], labelled['cube_z']],
                               (cube - [0.425, 0.0, 0.0]) * 10.0, atol=1e-5)
    assert base.action_labels[-1] == 'gripper_delta' and env.action_space.shape == (5,)


def test_reset_seed_fixes_the_episode_and_reset_continues_the_sequence():
    env = make_env('cube_single')
    first, _ = env.reset(seed=7)
    second, _ = env.reset()
    again, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[:6], second[:6])   # a new arm pose, drawn from the continued sequence


def test_actions_are_checked_and_clipped():
    env = make_env('cube_single')
    env.reset(seed=0)
    with pytest.raises(ValueError, match='shape'):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match='NaN'):
        env.step(np.array([0.0, np.nan, 0.0, 0.0, 0.0]))
    env.reset(seed=1)
    big = env.step(np.full(5, 5.0))[0]
    env.reset(seed=1)
    np.testing.assert_array_equal(big, env.step(np.ones(5))[0])


def test_reward_and_success_are_ogbench_singletask():
    """-1 per step until the cube is at the goal, then the episode terminates with is_success and reward 0."""
    env = make_env('cube_single')
    expert = make_expert(env, seed=0)
    obs, _ = env.reset(seed=1000)
    rewards, terminated = [], False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        rewards.append(reward)
        assert not truncated
    assert info['is_success'] and rewards[-1] == 0.0 and set(rewards[:-1]) == {-1.0}


def test_noise_free_oracle_succeeds_and_noise_degrades_it():
    env = make_env('cube_single')
    clean = evaluate(env, make_expert(env, seed=0), episodes=20, seed=2000)
    assert clean.success_rate >= 0.9   # 20 seeded episodes (measured: 20 of 20)
    noisy = evaluate(env, make_expert(env, noise_std=1.0, epsilon=0.3, seed=0), episodes=10, seed=2000)
    assert noisy.success_rate <= 0.5


def test_oracle_demos_are_a_dataset_but_not_a_bag():
    dataset, records = collect_demos('cube_single', episodes=2, noise_std=0.2, epsilon=0.0, seed=0, progress=False)
    assert len(dataset) == 2 and records == []
    assert dataset.obs_labels[-1] == 'cube_yaw_sin' and len(dataset.action_labels) == 5
    ep = dataset.episodes[0]
    assert ep.obs.shape[1] == 28 and np.abs(ep.actions).max() <= 1.0 and np.all(np.diff(ep.timestamps) > 0)
    assert 'cube_single' not in BRIDGE_TASKS


def test_offscreen_render_draws_the_scene():
    env = make_env('cube_single', render_mode='rgb_array', width=96, height=72)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (72, 96, 3) and frame.std() > 5


def test_cli_demos_refuses_a_bag_for_the_ogbench_task(tmp_path, capsys):
    from swfp_ros.cli import main
    assert main(['demos', '--task', 'cube_single', '--episodes', '1', '--out', str(tmp_path / 'd.npz'),
                 '--bag', str(tmp_path / 'bag')]) == 2
    assert 'joint-target commands; cube_single commands end-effector deltas' in capsys.readouterr().err
    assert not (tmp_path / 'd.npz').exists() and not (tmp_path / 'bag').exists()
