"""One definition of the reach task's vector and reward, shared by the simulated task and the task node: the task
monitor, fed only the simulated arm's joint positions and its goal, computes exactly what the environment does.

(MuJoCo's mj_step leaves the site positions of the last substep's start, 2 ms behind the joint positions; the test
refreshes the simulation's kinematics before comparing, so that both sides see the same arm state.)"""
import numpy as np
import pytest

from swfp_ros.sim import TASKS
from swfp_ros.sim.kinematics import ArmKinematics
from swfp_ros.sim.monitor import TaskMonitor
from swfp_ros.sim.tasks import HOME_Q, REACH


@pytest.fixture(scope='module')
def kin():
    return ArmKinematics()


def test_monitor_matches_the_simulated_reach_task(kin):
    import mujoco   # after swfp_ros.sim, which chooses MuJoCo's GL backend on import
    env = TASKS['panda_reach'][1]()
    rng = np.random.default_rng(0)
    for episode in range(3):
        env.reset(seed=episode)
        monitor = TaskMonitor(kin, monitor=True, episode_steps=50, goals=[env.goal])
        first = monitor.control_step(env.joint_positions)
        assert first.episode == 0 and first.reward is None
        assert np.allclose(first.task, env.task_vector(), atol=1e-9)
        for step in range(1, 20):
            env.step(rng.uniform(-1, 1, 7))
            mujoco.mj_kinematics(env.model, env.data)
            reward, terminated = env._reward_and_success()
            out = monitor.control_step(env.joint_positions)
            assert np.allclose(out.task, env.task_vector(), atol=1e-12), 'same task vector from joint states'
            assert out.reward[0] == pytest.approx(reward, abs=1e-12) and out.reward[1] == terminated
            assert out.reward[3] == step
            if terminated:
                break


def test_monitor_episodes_time_limit_home_and_goal_list(kin):
    goals = [np.array([0.5, 0.0, 0.3]), np.array([0.4, 0.2, 0.25])]
    monitor = TaskMonitor(kin, monitor=True, episode_steps=3, goals=goals, home_tolerance=0.05)
    away = HOME_Q + 0.3
    assert monitor.control_step(away).episode == 0          # the first episode starts wherever the arm is
    rewards = [monitor.control_step(away).reward for _ in range(3)]
    assert [r[2] for r in rewards] == [False, False, True] and monitor.state == 'homing'
    out = monitor.control_step(away)                         # not home yet: no new episode, no reward
    assert out.episode is None and out.reward is None and np.allclose(out.task[3:], goals[0])
    out = monitor.control_step(HOME_Q + 0.01)                # home: the next goal of the list
    assert out.episode == 1 and np.allclose(out.task[3:], goals[1])
    ee = kin.ee_position(HOME_Q)
    monitor.goals, monitor.state = [ee], 'homing'
    monitor.control_step(HOME_Q)
    r = monitor.control_step(HOME_Q).reward
    assert r[1] and r[0] == pytest.approx(-0.0)              # at the goal: success
    assert monitor.counters == {'episodes': 2, 'successes': 1, 'time_limits': 1}


def test_monitor_without_a_goal_list_runs_episodes_on_the_latest_goal_topic_goal(kin):
    monitor = TaskMonitor(kin, monitor=True, episode_steps=2)
    waiting = monitor.control_step(HOME_Q)
    assert waiting.task is None and waiting.episode is None and monitor.state == 'waiting'
    monitor.set_goal([0.5, 0.0, 0.3])
    assert monitor.control_step(HOME_Q).episode == 0
    monitor.set_goal([0.4, 0.2, 0.25])                       # mid-episode: kept for the next one
    assert np.allclose(monitor.control_step(HOME_Q).task[3:], [0.5, 0.0, 0.3])
    monitor.control_step(HOME_Q)                             # truncated at 2 steps, and the arm is home
    out = monitor.control_step(HOME_Q)
    assert out.episode == 1 and np.allclose(out.task[3:], [0.4, 0.2, 0.25])


def test_plain_task_source_follows_the_latest_goal_and_rejects_bad_ones(kin):
    monitor = TaskMonitor(kin, monitor=False)
    assert monitor.control_step(HOME_Q).task is None         # no goal: nothing to publish, the policy holds
    monitor.set_goal([0.5, 0.1, 0.2])
    out = monitor.control_step(HOME_Q)
    assert np.allclose(out.task, REACH.vector(kin.ee_position(HOME_Q), [0.5, 0.1, 0.2]))
    assert out.reward is None and out.episode is None and monitor.state == 'waiting', 'no episodes without monitor'
    assert REACH.labels[:3] == ('ee_x', 'ee_y', 'ee_z')                     # the order the checkpoints expect
    assert np.allclose(out.task[:3], kin.ee_position(HOME_Q)) and np.allclose(out.task[3:], [0.5, 0.1, 0.2])
    with pytest.raises(ValueError):
        monitor.set_goal([0.5, np.nan, 0.2])
    with pytest.raises(ValueError):
        monitor.set_goal([0.5, 0.2])
    with pytest.raises(ValueError):
        TaskMonitor(kin, monitor=True, home=np.full(7, 9.0))  # outside the joint limits
    with pytest.raises(ValueError):
        kin.ee_position(np.full(6, 0.0))


def test_monitor_is_home_only_with_every_joint_within_the_tolerance(kin):
    home = np.array([0.0, -0.25, 0.0, -2.25, 0.0, 0.375, 0.75])      # eighths: home ± tolerance is exact
    monitor = TaskMonitor(kin, monitor=True, home=home, home_tolerance=0.125)
    assert monitor.at_home(home + 0.125) and monitor.at_home(home - 0.125)    # the tolerance itself counts as home
    for j in range(7):
        away = home.copy()
        away[j] += 0.25
        assert not monitor.at_home(away), f'joint {j + 1} away from home: not home'


def test_monitor_defaults_an_empty_home_and_a_home_at_the_joint_limits(kin):
    plain = TaskMonitor(kin, goals=[[0.5, 0.0, 0.3]])
    assert not plain.monitor and plain.control_step(HOME_Q).episode is None, 'by default a plain task source'
    assert plain.episode_steps == TASKS['panda_reach'][2], 'the default time limit is the simulated reach task\'s'
    for empty in ((), []):                       # a ROS list parameter left empty: the default home posture
        assert np.array_equal(TaskMonitor(kin, monitor=True, home=empty).home, HOME_Q)
    for limit in (kin.lower, kin.upper):         # the joint limits themselves are inside them
        assert np.array_equal(TaskMonitor(kin, monitor=True, home=limit).home, limit)


def test_monitor_refuses_settings_it_cannot_run_with(kin):
    lower, upper = kin.lower, kin.upper
    one_step = TaskMonitor(kin, monitor=True, episode_steps=1, goals=[[0.5, 0.0, 0.3]])
    one_step.control_step(HOME_Q + 0.3)
    assert one_step.control_step(HOME_Q + 0.3).reward[2], 'a 1-step episode is truncated after its step'
    for bad, reason in (({'episode_steps': 0}, 'episode_steps'), ({'home_tolerance': 0.0}, 'home_tolerance'),
                        ({'home': HOME_Q[:6]}, 'finite joint positions'),
                        ({'home': np.where(np.arange(7) == 3, np.nan, HOME_Q)}, 'finite joint positions'),
                        ({'home': np.where(np.arange(7) == 0, lower - 0.01, HOME_Q)}, 'outside the joint limits'),
                        ({'home': np.where(np.arange(7) == 0, upper + 0.01, HOME_Q)}, 'outside the joint limits')):
        with pytest.raises(ValueError, match=reason):
            TaskMonitor(kin, monitor=True, **bad)


def test_kinematics_takes_seven_finite_joint_positions_in_any_sequence(kin):
    """The task node hands it a driver's joint positions: a list is fine; a wrong count or a NaN / inf (a driver's
    glitch) is refused, never turned into an end-effector position."""
    home = kin.ee_position(HOME_Q)
    np.testing.assert_array_equal(kin.ee_position(list(HOME_Q)), home)
    np.testing.assert_array_equal(kin.ee_position(HOME_Q.reshape(1, 7)), home)
    for bad in (HOME_Q[:6], np.append(HOME_Q, 0.0), np.where(np.arange(7) == 3, np.nan, HOME_Q),
                np.where(np.arange(7) == 0, np.inf, HOME_Q)):
        with pytest.raises(ValueError, match='need 7 finite joint positions'):
            kin.ee_position(bad)
    np.testing.assert_array_equal(kin.ee_position(HOME_Q), home)     # a refusal leaves no trace
