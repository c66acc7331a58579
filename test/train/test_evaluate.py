"""The success rate's 95 % interval, which `swfp eval` prints beside the rate."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from swfp_ros.train.evaluate import success_interval


@pytest.mark.parametrize('successes, episodes, low, high', [
    (59, 100, 0.4920, 0.6813),    # Wilson score interval, z = 1.96, worked by hand
    (0, 30, 0.0, 0.1135),         # not empty at 0 successes, as p ± z·se would be
    (30, 30, 0.8865, 1.0),
    (1, 2, 0.0945, 0.9055),
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
