"""The tasks: gymnasium API, determinism and experts for all; action handling at the joint limits and rendering for
the Panda tasks (the OGBench task's own checks: test_ogbench_task.py)."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from swfp_ros.sim import TASKS, PandaTaskEnv, make_env
from swfp_ros.sim.experts import make_expert
from swfp_ros.sim.panda_model import ARM_JOINTS, default_panda_xml
from swfp_ros.train.evaluate import evaluate

PANDA_TASKS = sorted(t for t, (_, cls, _) in TASKS.items() if issubclass(cls, PandaTaskEnv))


@pytest.mark.parametrize('task', sorted(TASKS))
def test_check_env_passes(task):
    env = make_env(task)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.spec.max_episode_steps == TASKS[task][2]


@pytest.mark.parametrize('task', PANDA_TASKS)
def test_observation_layout(task):
    env = make_env(task)
    obs, _ = env.reset(seed=3)
    base = env.unwrapped
    assert obs.shape == (14 + len(base.task_labels),) and obs.dtype == np.float32
    assert len(base.obs_labels) == obs.shape[0]
    np.testing.assert_allclose(obs[:7], base.joint_positions, atol=1e-6)
    np.testing.assert_allclose(obs[14:17], base.ee_position, atol=1e-6)
    names, positions, velocities, efforts = base.joint_state()
    assert names[:7] == list(ARM_JOINTS)
    assert len(names) == len(positions) == len(velocities) == len(efforts)


def test_push_observation_carries_puck_from_hand_and_goal_from_puck():
    env = make_env('panda_push')
    env.reset(seed=4)
    env.action_space.seed(4)
    for _ in range(5):   # off the reset pose, so the hand and the puck are where the arm put them
        obs, *_ = env.step(env.action_space.sample())
    base = env.unwrapped
    task = dict(zip(base.obs_labels, obs))
    ee, goal, puck = base.ee_position, base.goal, base.object_position
    for i, axis in enumerate('xyz'):
        assert task[f'obj_{axis}'] == pytest.approx(puck[i], abs=1e-6)
        assert task[f'obj_from_ee_{axis}'] == pytest.approx(puck[i] - ee[i], abs=1e-6)
        assert task[f'goal_from_obj_{axis}'] == pytest.approx(goal[i] - puck[i], abs=1e-6)


@pytest.mark.parametrize('task', sorted(TASKS))
def test_same_seed_same_rollout(task):
    def rollout(seed):
        env = make_env(task)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        trace = [obs]
        for _ in range(15):
            obs, reward, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
            trace.append(obs)
        return np.stack(trace)

    np.testing.assert_array_equal(rollout(5), rollout(5))
    assert not np.allclose(rollout(5)[0], rollout(6)[0])


def test_actions_are_clipped_and_targets_respect_joint_limits():
    env = make_env('panda_reach')
    env.reset(seed=0)
    base = env.unwrapped
    np.testing.assert_allclose(base.joint_targets_for(np.full(7, 5.0)),
                               base.joint_targets_for(np.ones(7)))
    for _ in range(60):  # drive every joint towards its upper limit for 3 s
        base.step(np.ones(7, dtype=np.float32))
        assert np.all(base.data.ctrl[base.arm.actuator] <= base.joint_upper + 1e-12)
    assert np.all(base.joint_positions <= base.arm.upper + 0.01)
    with pytest.raises(ValueError, match='shape'):
        base.step(np.zeros(6))
    with pytest.raises(ValueError, match='NaN'):
        base.step(np.array([np.nan] + [0.0] * 6))


def test_zero_action_holds_the_arm_still():
    env = make_env('panda_reach')
    env.reset(seed=1)
    q0 = env.unwrapped.joint_positions
    for _ in range(40):
        env.step(np.zeros(7, dtype=np.float32))
    assert np.abs(env.unwrapped.joint_positions - q0).max() < 0.01   # gravity compensated: no droop


@pytest.mark.parametrize('task', sorted(TASKS))
def test_expert_succeeds_without_noise(task):
    env = make_env(task)
    result = evaluate(env, make_expert(env, seed=0), episodes=20, seed=1000)
    assert result.success_rate >= 0.95


def test_expert_noise_knob_degrades_success():
    env = make_env('panda_push')
    noisy = evaluate(env, make_expert(env, noise_std=1.0, epsilon=0.3, seed=0), episodes=10, seed=1000)
    assert noisy.success_rate <= 0.5


def test_user_supplied_model_path(tmp_path):
    model = tmp_path / 'my_panda.xml'
    model.write_text(default_panda_xml())
    env = make_env('panda_reach', model_path=str(model))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (20,)
    with pytest.raises(FileNotFoundError):
        make_env('panda_reach', model_path=str(tmp_path / 'missing.xml'))


def test_offscreen_render_draws_the_scene():
    env = make_env('panda_reach', render_mode='rgb_array', width=96, height=72)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (72, 96, 3)
    assert frame.std() > 5   # not a blank image
