"""The tasks: gymnasium API, determinism and experts for all; action handling at the joint limits and rendering for
the Panda tasks (the OGBench task's own checks: test_ogbench_task.py)."""
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from swfp_ros.sim import TASKS, PandaTaskEnv, make_env
from swfp_ros.sim.experts import make_expert
from swfp_ros.sim.panda_model import ARM_JOINTS, default_panda_xml
from swfp_ros.sim.tasks import HOME_Q, LIMIT_MARGIN, push_frame
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
    frame_labels = ('push_dir_x', 'push_dir_y', 'ee_along_push', 'ee_across_push', 'push_dist')
    assert base.task_labels[-5:] == frame_labels
    np.testing.assert_allclose([task[k] for k in frame_labels], push_frame(ee, puck, goal), atol=1e-6)


@pytest.mark.parametrize('ee, puck, goal, frame', [
    # goal along +x: a hand 5 cm behind the puck and 2 cm to the left of the push (+y)
    ((0.45, 0.02, 0.1), (0.5, 0.0, 0.02), (0.6, 0.0, 0.02), (1.0, 0.0, -0.05, 0.02, 0.1)),
    # goal along +y: a hand 4 cm behind and 1 cm to the right (+x); heights play no part
    ((0.51, -0.04, 0.3), (0.5, 0.0, 0.02), (0.5, 0.2, 0.02), (0.0, 1.0, -0.04, -0.01, 0.2)),
    # goal along -x-y: a hand past the puck, on the push's line
    ((0.4, -0.1, 0.06), (0.5, 0.0, 0.02), (0.2, -0.3, 0.02), (-0.5**0.5, -0.5**0.5, 0.02**0.5, 0.0, 0.18**0.5)),
    # the puck on its goal: no direction, so nothing along or across
    ((0.45, 0.02, 0.1), (0.5, 0.0, 0.02), (0.5, 0.0, 0.02), (0.0, 0.0, 0.0, 0.0, 0.0)),
])
def test_push_frame_places_the_hand_along_and_across_the_push(ee, puck, goal, frame):
    np.testing.assert_allclose(push_frame(np.array(ee), np.array(puck), np.array(goal)), frame, atol=1e-12)


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
    for sign in (-1.0, 1.0):   # drive every joint towards its lower, then its upper limit for 3 s
        for _ in range(60):
            base.step(np.full(7, sign, dtype=np.float32))
            ctrl = base.data.ctrl[base.arm.actuator]
            assert np.all(ctrl <= base.arm.upper - LIMIT_MARGIN + 1e-12)    # the model's limits, less the margin
            assert np.all(ctrl >= base.arm.lower + LIMIT_MARGIN - 1e-12)
        limit = base.arm.lower + LIMIT_MARGIN if sign < 0 else base.arm.upper - LIMIT_MARGIN
        assert np.isclose(ctrl, limit).any(), ctrl - limit     # some joints got there: the bound was tested
        q = base.joint_positions
        assert np.all(q <= base.arm.upper + 0.01) and np.all(q >= base.arm.lower - 0.01)
    with pytest.raises(ValueError, match=r'action must have shape \(7,\)'):
        base.step(np.zeros(6))
    with pytest.raises(ValueError, match='NaN'):
        base.step(np.array([np.nan] + [0.0] * 6))
    for bad in (np.zeros(6), np.array([np.inf] + [0.0] * 6)):
        with pytest.raises(ValueError, match='joint targets must be 7 finite values'):
            base.step_joint_targets(bad)


@pytest.mark.parametrize('task', PANDA_TASKS)
def test_reward_and_success_are_the_tasks_distances(task):
    """Reach: -|ee - goal|; push: -|puck - goal| (on the floor) - 0.5 |ee - puck|; success within 5 cm, which ends the
    episode — checked after random steps, then with the goal reached by moving the goal (reach) or the puck (push)."""
    env = make_env(task)
    env.reset(seed=7)
    base = env.unwrapped
    rng = np.random.default_rng(7)

    def expected():
        if task == 'panda_reach':
            to_goal = np.linalg.norm(base.ee_position - base.goal)
            return -to_goal, to_goal < 0.05
        puck = base.object_position
        to_goal = np.linalg.norm(puck[:2] - base.goal[:2])
        return -to_goal - 0.5 * np.linalg.norm(base.ee_position - puck), to_goal < 0.05
    for _ in range(10):
        _, reward, terminated, _, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        assert (reward, terminated) == (pytest.approx(expected()[0], abs=1e-9), expected()[1])
        assert info['is_success'] == terminated
    if task == 'panda_reach':
        base._set_goal(base.ee_position + np.array([0.0, 0.0, 0.03]))
    else:   # the puck set down 3 cm from the goal
        qpos = base.model.joint('puck_free').qposadr[0]
        base.data.qpos[qpos:qpos + 3] = base.goal + np.array([0.03, 0.0, 0.0])
    _, reward, terminated, _, info = env.step(np.zeros(7, dtype=np.float32))
    assert terminated and info['is_success'] and reward == pytest.approx(expected()[0], abs=1e-9)


def test_resets_sample_the_home_posture_and_the_task_in_their_ranges():
    """The arm starts within 0.05 rad of HOME_Q; push's puck starts in [0.45, 0.55] x [-0.1, 0.1] on the floor with
    its goal 10-20 cm away in every direction; reach's goal in its box — each varying from one seed to the next."""
    push, reach = make_env('panda_push').unwrapped, make_env('panda_reach').unwrapped
    homes, starts, offsets, goals = [], [], [], []
    for seed in range(200):
        push.reset(seed=seed)
        reach.reset(seed=seed)
        homes.append(push.joint_positions)
        starts.append(push.object_position)
        offsets.append(push.goal - push.object_position)
        goals.append(reach.goal)
    homes, starts, offsets, goals = map(np.array, (homes, starts, offsets, goals))
    assert np.all(np.abs(homes - HOME_Q) <= 0.05 + 1e-9) and homes.std(0).min() > 0.01
    assert np.all((starts[:, :2] >= [0.45, -0.1]) & (starts[:, :2] <= [0.55, 0.1]))
    assert starts[:, :2].std(0).min() > 0.02
    np.testing.assert_allclose(starts[:, 2], push.puck_half_height, atol=1e-3)
    radius = np.linalg.norm(offsets[:, :2], axis=1)
    assert np.all((radius >= 0.10 - 1e-9) & (radius <= 0.20 + 1e-9)) and radius.std() > 0.02
    np.testing.assert_allclose(offsets[:, 2], 0.0, atol=1e-3)
    quadrants = {(bool(x > 0), bool(y > 0)) for x, y in offsets[:, :2]}
    assert len(quadrants) == 4
    assert np.all((goals >= reach.goal_low) & (goals <= reach.goal_high)) and goals.std(0).min() > 0.05


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


def test_expert_noise_and_epsilon_do_what_they_say():
    """noise_std adds N(0, σ²) to the clean action (clipped); epsilon replaces the action by a uniform one in [-1, 1]
    with that probability; with neither the action is the clean one."""
    env = make_env('panda_reach')
    obs, _ = env.reset(seed=2)
    clean = make_expert(env).clean_action(obs)
    np.testing.assert_allclose(make_expert(env, seed=0)(obs), np.clip(clean, -1, 1), atol=1e-6)
    noisy = np.array([make_expert(env, noise_std=0.1, seed=k)(obs) for k in range(400)])
    inside = np.abs(clean) < 0.7                          # coordinates where the clip leaves the noise alone
    assert inside.sum() >= 3
    assert np.all(np.abs(noisy.mean(0) - clean)[inside] < 0.03) and np.all(np.abs(noisy.std(0) - 0.1)[inside] < 0.02)
    expert = make_expert(env, epsilon=0.2, seed=0)
    actions = np.array([expert(obs) for _ in range(400)])
    random = ~np.all(np.isclose(actions, np.clip(clean, -1, 1), atol=1e-6), axis=1)
    assert 0.12 < random.mean() < 0.28 and np.all(np.abs(actions) <= 1)
    assert actions[random].std(0).min() > 0.45                        # uniform on [-1, 1]: std 0.58


def test_user_supplied_model_path(tmp_path):
    model = tmp_path / 'my_panda.xml'
    model.write_text(default_panda_xml())
    env = make_env('panda_reach', model_path=str(model))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (20,)
    with pytest.raises(FileNotFoundError):
        make_env('panda_reach', model_path=str(tmp_path / 'missing.xml'))


@pytest.mark.parametrize('kept', [(), ('panda_finger_joint2',)])
def test_a_user_model_without_fingers(tmp_path, kept):
    """Finger joints are optional in a user's MJCF: an arm without them, or with one of the two, publishes its joints
    under their own names and steps."""
    import mujoco

    from swfp_ros.sim.panda_model import FINGER_JOINTS
    spec = mujoco.MjSpec.from_string(default_panda_xml())
    doomed = [n for n in FINGER_JOINTS if n not in kept]
    for element in [a for a in spec.actuators if a.target in doomed] + [j for j in spec.joints if j.name in doomed]:
        spec.delete(element)
    model = tmp_path / 'arm.xml'
    model.write_text(spec.to_xml())
    env = make_env('panda_reach', model_path=str(model))
    obs, _ = env.reset(seed=0)
    names, q, qd, effort = env.unwrapped.joint_state()
    assert names == [*ARM_JOINTS, *kept] and q.shape == qd.shape == effort.shape == (7 + len(kept),)
    obs, *_ = env.step(np.ones(7))
    assert np.all(obs[:7] > q[:7])                   # every arm joint moved towards its target


@pytest.mark.parametrize('missing, message', [
    ('site end_effector', "model has no site 'end_effector'"),
    ('joint panda_joint3', "model has no joint 'panda_joint3'"),
    ('actuator of panda_joint5', "no actuator drives joint 'panda_joint5'"),
])
def test_a_user_model_without_what_the_task_needs_is_refused_naming_it(tmp_path, missing, message):
    import mujoco
    spec = mujoco.MjSpec.from_string(default_panda_xml())
    kind, name = missing.split(' ', 1)
    if kind == 'site':
        doomed = [x for x in spec.sites if x.name == name]
    elif kind == 'joint':
        doomed = [x for x in spec.actuators if x.target == name] + [x for x in spec.joints if x.name == name]
    else:
        doomed = [x for x in spec.actuators if x.target == name.split()[-1]]
    assert doomed
    for element in doomed:
        spec.delete(element)
    model = tmp_path / 'broken.xml'
    model.write_text(spec.to_xml())
    with pytest.raises(ValueError, match=message):
        make_env('panda_reach', model_path=str(model))


def test_offscreen_render_draws_the_scene():
    env = make_env('panda_reach', render_mode='rgb_array', width=96, height=72)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (72, 96, 3)
    assert frame.std() > 5   # not a blank image
