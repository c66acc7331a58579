"""Rolling out and scoring a policy: one episode (chunks executed open loop, cut at the episode's end), the scores
over seeded episodes, and the success rate's 95 % interval, which `swfp eval` prints beside the rate."""
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from swfp_ros.train.evaluate import EvalResult, evaluate, run_episode, success_interval


class ScriptedEnv:
    """Rewards the first action coordinate; an action of 1 there ends the episode as a success, otherwise the time
    limit does after ``limit`` steps. Observes its step count (the seed after a reset) and records what it was given.
    The rollout logic is what is tested here; the simulated tasks run it in test/sim/test_tasks.py."""
    action_space = types.SimpleNamespace(shape=(2,))

    def __init__(self, limit=5):
        self.limit, self.seeds, self.actions = limit, [], []

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t = 0
        return np.array([float(seed)]), {}

    def step(self, action):
        self.t += 1
        self.actions.append(np.array(action))
        success = bool(action[0] == 1.0)
        return np.array([float(self.t)]), float(action[0]), success, self.t >= self.limit, {'is_success': success}


def chunk_policy(values_per_call):
    """Returns a chunk of 3 actions (first coordinate from ``values_per_call``) per call; records what it saw."""
    seen = []

    def policy(obs):
        seen.append(float(obs[0]))
        return np.array([[values_per_call[len(seen) - 1], 0.0]] * 3)
    policy.seen = seen
    return policy


def test_an_episode_runs_chunks_open_loop_and_cuts_the_last_at_the_time_limit():
    env, policy, calls = ScriptedEnv(limit=5), chunk_policy([0.5, 0.25]), []
    assert run_episode(env, policy, seed=7, on_step=lambda e: calls.append(e.t)) == (2.0, 5, False)
    assert policy.seen == [7.0, 3.0]                  # the reset's observation, then the one after the first chunk
    assert len(env.actions) == 5 and env.seeds == [7]
    assert calls == [0, 1, 2, 3, 4, 5]                # after the reset and after each step


def test_an_episode_ends_inside_a_chunk_when_it_terminates():
    env = ScriptedEnv(limit=50)
    policy = lambda obs: np.array([[0.5, 0.0], [1.0, 0.0], [0.5, 0.0]])   # noqa: E731
    assert run_episode(env, policy, seed=0) == (1.5, 2, True)
    assert len(env.actions) == 2


def test_evaluate_scores_episodes_seeded_from_its_seed():
    env = ScriptedEnv(limit=4)
    values = iter([1.0] + [0.5] * 4 + [1.0])         # episode 1 succeeds at once, 2 runs to the limit, 3 succeeds
    result = evaluate(env, lambda obs: np.array([next(values), 0.0]), episodes=3, seed=10)
    assert env.seeds == [10, 11, 12]
    assert result == EvalResult(success_rate=2 / 3, success_interval=success_interval(2, 3),
                                mean_return=pytest.approx(4 / 3), mean_length=2.0, episodes=3,
                                env_steps=6)
    assert json.loads(result.to_json())['env_steps'] == 6
    assert evaluate(ScriptedEnv(), lambda obs: np.array([1.0, 0.0]), episodes=1).success_rate == 1.0
    with pytest.raises(ValueError, match='episodes must be >= 1'):
        evaluate(env, lambda obs: np.zeros(2), episodes=0)


@pytest.mark.parametrize('successes, episodes, low, high', [
    (59, 100, 0.4920, 0.6813),    # Wilson score interval, z = 1.96, worked by hand
    (0, 30, 0.0, 0.1135),         # not empty at 0 successes, as p ± z·se would be
    (30, 30, 0.8865, 1.0),
    (1, 2, 0.0945, 0.9055),
    (1, 1, 0.2065, 1.0),          # a single episode is a (wide) interval too
])
def test_success_interval_is_the_wilson_score_interval(successes, episodes, low, high):
    assert success_interval(successes, episodes) == pytest.approx((low, high), abs=5e-4)


def test_success_interval_narrows_with_episodes_around_the_same_rate():
    widths = [high - low for low, high in (success_interval(n // 2, n) for n in (30, 100, 500))]
    assert widths[0] > widths[1] > widths[2] and widths[1] == pytest.approx(0.19, abs=0.01)


@pytest.mark.parametrize('successes, episodes', [(3, 2), (-1, 5), (0, 0)])
def test_success_interval_refuses_impossible_counts(successes, episodes):
    with pytest.raises(ValueError, match='successes <= episodes'):
        success_interval(successes, episodes)


def test_eval_prints_and_records_the_interval_of_its_episodes():
    swfp = Path(sys.executable).with_name('swfp')
    r = subprocess.run([str(swfp), 'eval', '--policy', 'expert', '--task', 'panda_reach', '--episodes', '3'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.splitlines()[-1])
    successes = round(result['success_rate'] * 3)
    assert result['success_interval'] == pytest.approx(success_interval(successes, 3))
    low, high = result['success_interval']
    assert f'(95 % interval {low:.2f}–{high:.2f}) over 3 episodes' in r.stdout.splitlines()[-2]
