"""OGBench's cube-single behind the task surface: layout, seeding, action checks, the oracle expert, demos."""
import sys

import numpy as np
import pytest

from swfp_ros.sim import BRIDGE_TASKS, CubeSingleEnv, make_env
from swfp_ros.sim.experts import make_expert
from swfp_ros.sim.ogbench_tasks import UR5E_JOINTS, CubeOracleExpert
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
    with pytest.raises(ValueError, match=r'action must have shape \(5,\), got \(7,\)'):
        env.step(np.zeros(7))
    with pytest.raises(ValueError, match='NaN'):
        env.step(np.array([0.0, np.nan, 0.0, 0.0, 0.0]))
    assert env.action_space.low.tolist() == [-1.0] * 5 and env.action_space.high.tolist() == [1.0] * 5
    for side in (1.0, -1.0):
        env.reset(seed=1)
        big = env.step(np.full(5, 5.0 * side))[0]
        env.reset(seed=1)
        np.testing.assert_array_equal(big, env.step([side] * 5)[0])     # a plain list is an action too


@pytest.mark.parametrize('task_id', [1, 3, 5])
def test_task_id_picks_the_ogbench_singletask_task(task_id):
    """The goal marker stands where OGBench's task list puts that task's goal."""
    _assert_goal_of_task(make_env('cube_single', task_id=task_id), task_id)


def test_the_default_task_is_ogbench_task2():
    env = make_env('cube_single')
    _assert_goal_of_task(env, 2)
    assert env.unwrapped.ogbench_env.task_infos[1]['task_name'] == 'task2_vertical1'


def _assert_goal_of_task(env, task_id: int) -> None:
    env.reset(seed=0)
    inner = env.unwrapped.ogbench_env
    assert env.unwrapped.task_id == task_id
    goal = inner.data.mocap_pos[inner.model.body('object_target_0').mocapid[0]]
    np.testing.assert_allclose(goal, inner.task_infos[task_id - 1]['goal_xyzs'][0])


@pytest.mark.parametrize('kwargs,why', [({'task_id': 0}, 'task_id must be 1-5'), ({'task_id': 6}, 'task_id must be 1-5'),
                                        ({'render_mode': 'ansi'}, "unsupported render_mode 'ansi'")])
def test_a_task_id_or_render_mode_ogbench_lacks_is_refused(kwargs, why):
    """Built directly: through gym.make, render_mode 'human' becomes gymnasium's window over 'rgb_array'."""
    with pytest.raises(ValueError, match=why):
        CubeSingleEnv(**kwargs)


def test_a_step_is_one_control_period():
    env = make_env('cube_single')
    env.reset(seed=0)
    start = env.unwrapped.sim_time
    env.step(np.zeros(5))
    assert env.unwrapped.sim_time - start == pytest.approx(1.0 / env.unwrapped.control_rate_hz)


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
    assert env.unwrapped.ogbench_env._renderer is None                 # close() released OGBench's renderer
    default = make_env('cube_single', render_mode='rgb_array')
    default.reset(seed=0)
    assert default.render().shape == (360, 480, 3)
    assert default.metadata['render_fps'] == default.unwrapped.control_rate_hz
    default.close()
    headless = make_env('cube_single')
    headless.reset(seed=0)
    assert headless.render() is None                     # no render mode: no frame (and no renderer made)


def test_without_ogbench_the_task_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, 'ogbench.manipspace.envs.cube_env', None)     # as if it were not installed
    with pytest.raises(ImportError, match=r"the cube_single task needs OGBench: pip install 'swfp_ros\[ogbench\]'"):
        CubeSingleEnv()


def test_the_oracle_expert_is_noise_free_by_default_and_leaves_numpy_global_generator_alone():
    env = make_env('cube_single')
    obs, _ = env.reset(seed=0)
    np.random.seed(123)
    before = np.random.get_state()
    expert = CubeOracleExpert(env, seed=0)
    after = np.random.get_state()
    assert after[0] == before[0] and np.array_equal(after[1], before[1]) and after[2:] == before[2:]
    np.testing.assert_array_equal(expert(obs), np.clip(expert.clean_action(obs), -1, 1).astype(np.float32))


def test_cli_demos_refuses_a_bag_for_the_ogbench_task(tmp_path, capsys):
    from swfp_ros.cli import main
    assert main(['demos', '--task', 'cube_single', '--episodes', '1', '--out', str(tmp_path / 'd.npz'),
                 '--bag', str(tmp_path / 'bag')]) == 2
    assert 'joint-target commands; cube_single commands end-effector deltas' in capsys.readouterr().err
    assert not (tmp_path / 'd.npz').exists() and not (tmp_path / 'bag').exists()
