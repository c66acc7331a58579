"""benchmarks/bench_gpu.py runs only where a GPU is lent, for minutes: its learner and checkpoint parts run here on
the CPU, so that a change of the learner's API breaks this test, not the one short GPU run."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
import bench_gpu  # noqa: E402


def test_learner_figures_run_the_learners_own_calls():
    r = bench_gpu.learner_figures('cpu', critic_updates=3, blocks=1)
    assert r['critic_updates'] == 5 + 3 and len(r['block_s']) == 1 and r['critic_updates_per_s'] > 0


def test_checkpoint_round_trip_keeps_counters_and_policy(tmp_path):
    r = bench_gpu.checkpoint_round_trip(tmp_path, 'cpu')
    assert r['critic_updates'] == 20 and r['counters_equal'] and r['max_abs_action_diff'] == 0.0
