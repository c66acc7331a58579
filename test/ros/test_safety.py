"""SafetyFilter: limits, delta clamp, holds and counters (pure numpy, no ROS)."""
from collections import Counter

import numpy as np
import pytest

from swfp_ros.ros.safety import SafetyFilter

LOWER = -np.ones(7)
UPPER = np.ones(7)


def make(**kw):
    return SafetyFilter(LOWER, UPPER, max_delta=kw.pop('max_delta', 0.1), stale_timeout_s=kw.pop('stale', 0.5))


def test_passes_small_moves_unchanged():
    f = make()
    q = np.zeros(7)
    r = f.filter(q + 0.05, q, obs_age_s=0.01)
    assert r.ok and not r.clamped and np.allclose(r.command, 0.05)
    assert f.counters['passed'] == 1 and f.holds == 0


def test_delta_clamp_relative_to_measured():
    f = make(max_delta=0.1)
    q = np.full(7, 0.2)
    r = f.filter(q + np.array([0.5, -0.5, 0.05, 0, 0, 0, 0]), q, 0.0)
    assert r.ok and r.clamped == ('clamp_delta',)
    assert np.allclose(r.command, q + np.array([0.1, -0.1, 0.05, 0, 0, 0, 0]))
    assert f.counters['clamp_delta'] == 1


def test_per_joint_max_delta():
    f = SafetyFilter(LOWER, UPPER, max_delta=np.linspace(0.01, 0.07, 7))
    r = f.filter(np.ones(7), np.zeros(7), 0.0)
    assert np.allclose(r.command, np.linspace(0.01, 0.07, 7))


def test_joint_limit_clamp_at_limit():
    f = make(max_delta=0.5)
    q = np.full(7, 0.95)
    r = f.filter(q + 0.3, q, 0.0)
    assert r.ok and 'clamp_limit' in r.clamped and 'clamp_delta' not in r.clamped
    assert np.all(r.command <= UPPER) and np.allclose(r.command, 1.0)
    r = f.filter(-q - 0.3, -q, 0.0)
    assert np.allclose(r.command, -1.0)
    assert f.counters['clamp_limit'] == 2


def test_commands_within_limits_and_max_delta_at_once_random():
    """The invariant, for measured positions inside, just beyond and far beyond the limits, and wild targets."""
    rng = np.random.default_rng(0)
    f = make(max_delta=0.2)
    seen = Counter()
    for _ in range(2000):
        q = rng.uniform(-1.6, 1.6, 7)
        r = f.filter(rng.normal(0, 3, 7), q, 0.0)
        far = np.any(np.maximum(LOWER - q, q - UPPER) > 0.2)
        if far:
            assert r.command is None and r.reason == 'measured_out_of_limits'
        else:
            assert r.ok and np.all(r.command >= LOWER) and np.all(r.command <= UPPER)
            assert np.all(np.abs(r.command - q) <= 0.2 + 1e-12)
        seen[far] += 1
    assert seen[True] > 100 and seen[False] > 100          # both branches exercised
    assert f.counters['measured_out_of_limits'] == seen[True]


def test_measured_beyond_limit_by_less_than_max_delta():
    f = make(max_delta=0.1)
    q = np.zeros(7)
    q[0] = 1.05                                               # 0.05 past the upper limit: still usable
    up = f.filter(q + 1.0, q, 0.0)
    assert up.ok and up.command[0] == 1.0 and 'clamp_limit' in up.clamped
    down = f.filter(q - 1.0, q, 0.0)
    assert down.ok and np.isclose(down.command[0], 0.95) and 'clamp_delta' in down.clamped
    f.set_estop(True)
    held = f.filter(q, q, 0.0)                                # the hold is brought inside, a 0.05 step
    assert held.held and held.command[0] == 1.0 and np.all(np.abs(held.command - q) <= 0.1)
    assert f.counters['measured_beyond_limit'] == 3 and f.counters['measured_out_of_limits'] == 0


@pytest.mark.parametrize('excess', [0.12, 0.6, 50.0])
def test_measured_far_outside_limits_is_invalid(excess):
    """A joint 0.12 rad past its limit (max_delta 0.1) or a glitch: no target is within both bounds -> no command,
    for every path (normal, e-stop hold, stale hold, the node's own holds)."""
    f = make(max_delta=0.1)
    q = np.full(7, 0.5)
    q[3] = -1.0 - excess
    r = f.filter(q, q, 0.0)
    assert r.command is None and r.held and r.reason == 'measured_out_of_limits'
    assert f.filter(np.zeros(7), q, obs_age_s=10.0).command is None
    assert f.hold(q, 'bad_observation').command is None
    f.set_estop(True)
    assert f.filter(np.zeros(7), q, 0.0).command is None
    assert f.counters['measured_out_of_limits'] == 4 and f.holds == 4
    assert f.counters['estop'] == 0 and f.counters['stale'] == 0


@pytest.mark.parametrize('target,reason', [
    (np.full(7, np.nan), 'nan_target'),
    (np.array([0.0] * 6 + [np.inf]), 'nan_target'),
    (np.zeros(6), 'bad_size_target'),
    (np.zeros(8), 'bad_size_target'),
    ('garbage', 'bad_size_target'),
    (None, 'bad_size_target'),
])
def test_bad_targets_hold_measured(target, reason):
    f = make()
    q = np.full(7, 0.3)
    r = f.filter(target, q, 0.0)
    assert r.held and not r.ok and r.reason == reason and np.array_equal(r.command, q)
    assert f.counters[reason] == 1 and f.holds == 1


def test_stale_observation_holds():
    f = make(stale=0.2)
    q = np.zeros(7)
    r = f.filter(q + 0.05, q, obs_age_s=0.25)
    assert r.held and r.reason == 'stale' and np.array_equal(r.command, q)
    assert f.filter(q + 0.05, q, obs_age_s=float('nan')).reason == 'stale'
    assert f.filter(q + 0.05, q, obs_age_s=0.1).ok
    assert f.counters['stale'] == 2


def test_estop_latches_until_released():
    f = make()
    q = np.zeros(7)
    f.set_estop(True)
    assert f.counters['estop_engaged'] == 1
    for _ in range(3):
        r = f.filter(q + 0.05, q, 0.0)
        assert r.held and r.reason == 'estop' and np.array_equal(r.command, q)
    f.set_estop(True)                   # re-asserting does not count a new engagement
    assert f.counters['estop'] == 3 and f.counters['estop_engaged'] == 1
    f.set_estop(False)
    assert f.filter(q + 0.05, q, 0.0).ok


def test_estop_wins_over_bad_target():
    f = make()
    f.set_estop(True)
    assert f.filter(np.full(7, np.nan), np.zeros(7), 0.0).reason == 'estop'


def test_bad_measured_gives_no_command():
    f = make()
    for q in (np.full(7, np.nan), np.array([0.0] * 6 + [np.nan]), np.zeros(5), None):
        r = f.filter(np.zeros(7), q, 0.0)
        assert r.command is None and r.held and not r.ok and r.reason == 'bad_measured'
    assert f.counters['bad_measured'] == 4


def test_hold_for_a_reason_found_outside_the_filter():
    """hold(): the measured position brought into the limits, counted under the caller's reason; a measurement
    with nothing safe to hold to still gives no command."""
    f = make()
    q = np.array([1.05] + [0.2] * 6)
    r = f.hold(q, 'bad_observation')
    assert r.held and not r.ok and r.reason == 'bad_observation'
    assert np.array_equal(r.command, np.array([1.0] + [0.2] * 6))
    r = f.hold(np.full(7, np.nan), 'bad_observation')
    assert r.command is None and r.reason == 'bad_measured'
    assert f.counters['bad_observation'] == 1 and f.counters['bad_measured'] == 1 and f.holds == 2


def test_a_joint_locked_by_equal_limits():
    """lower == upper is a valid limit (a joint fixed in place): every command keeps it there."""
    lower, upper = LOWER.copy(), UPPER.copy()
    lower[6] = upper[6] = 0.5
    f = SafetyFilter(lower, upper, max_delta=0.1)
    q = np.array([0.0] * 6 + [0.5])
    r = f.filter(q + 0.05, q, 0.0)
    assert r.ok and r.clamped == ('clamp_limit',) and r.command[6] == 0.5 and np.allclose(r.command[:6], 0.05)


def test_hold_is_clipped_into_limits():
    f = make()
    q = np.full(7, 1.01)
    f.set_estop(True)
    assert np.allclose(f.filter(q, q, 0.0).command, 1.0)


def test_the_boundaries_belong_to_the_permissive_side():
    """Exactly max_delta past a limit is still usable, exactly at a limit is not beyond it, and an observation
    exactly stale_timeout_s old is not stale (binary fractions, so the comparisons are exact)."""
    f = make(max_delta=0.125, stale=0.25)
    at_limit = np.array([-1.0] + [0.0] * 6)
    r = f.filter(at_limit, at_limit, obs_age_s=0.25)
    assert r.ok and f.counters['measured_beyond_limit'] == 0
    q = np.array([-1.125] + [0.0] * 6)
    r = f.filter(q, q, 0.0)
    assert r.ok and r.command[0] == -1.0 and f.counters['measured_beyond_limit'] == 1


LIMITS, DELTA, STALE = 'joint limits must have equal sizes', 'max_delta must be', 'stale_timeout_s must be'


@pytest.mark.parametrize('lower,upper,max_delta,stale,message', [
    (np.zeros(7), -np.ones(7), 0.1, 0.5, LIMITS),                        # every joint inverted
    (LOWER, np.array([1.0] * 6 + [-2.0]), 0.1, 0.5, LIMITS),              # one joint inverted
    (LOWER, np.ones(6), 0.1, 0.5, LIMITS),                               # sizes differ
    (LOWER, UPPER, 0.0, 0.5, DELTA),
    (LOWER, UPPER, np.array([0.1] * 6 + [0.0]), 0.5, DELTA),             # one joint's bound not positive
    (LOWER, UPPER, np.array([0.1] * 6 + [np.inf]), 0.5, DELTA),          # one joint unbounded
    (LOWER, UPPER, np.full(6, 0.1), 0.5, DELTA),                         # a bound per joint, one missing
    (LOWER, UPPER, 0.1, 0.0, STALE),
])
def test_constructor_validation(lower, upper, max_delta, stale, message):
    with pytest.raises(ValueError, match=message):
        SafetyFilter(lower, upper, max_delta, stale_timeout_s=stale)
