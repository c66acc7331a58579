"""The TensorBoard scalars of an online run (swfp_ros.train.monitor), read back from the event file."""
import math
from types import SimpleNamespace

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from swfp_ros.train.monitor import ScalarLog


def read(log_dir) -> dict:
    acc = EventAccumulator(str(log_dir), size_guidance={'scalars': 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()['scalars']}


def test_scalars_land_under_their_group_at_the_env_step_and_non_numbers_are_left_out(tmp_path):
    log = ScalarLog(tmp_path)
    log.scalars('eval', {'success_rate': 0.5, 'mean_return': -3, 'q_bias': None, 'q_mc_corr': math.nan}, 1000)
    log.flush()
    assert read(tmp_path) == {'eval/success_rate': [(1000, 0.5)], 'eval/mean_return': [(1000, -3.0)]}
    log.scalars('eval', {'success_rate': 0.75, 'mean_return': math.inf}, 2000)
    log.critic({'td_loss': 0.25, 'q_mean': -1.5, 'grad_norm': 9.0}, 1500)
    log.critic({}, 1600)
    report = SimpleNamespace(w2_bound=0.0078125, delta_sq=0.015625, accepted=True, log_lambda=math.log(2.0),
                             delta_q=0.0625)   # values a float32 event holds exactly
    log.block(report, 2000)
    log.block(SimpleNamespace(**{**vars(report), 'accepted': False}), 3000)
    log.close()
    log.close()                                                  # closing twice is harmless
    assert read(tmp_path) == {
        'eval/success_rate': [(1000, 0.5), (2000, 0.75)], 'eval/mean_return': [(1000, -3.0)],
        'critic/td_loss': [(1500, 0.25)], 'critic/q_mean': [(1500, -1.5)],
        'block/w2_bound': [(2000, 0.0078125), (3000, 0.0078125)],
        'block/delta_sq': [(2000, 0.015625), (3000, 0.015625)],
        'block/accepted': [(2000, 1.0), (3000, 0.0)], 'block/lambda': [(2000, 2.0), (3000, 2.0)],
        'block/delta_q': [(2000, 0.0625), (3000, 0.0625)]}


def test_without_a_log_dir_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = ScalarLog(None)
    log.scalars('eval', {'success_rate': 0.5}, 1)
    log.critic({'td_loss': 1.0, 'q_mean': 0.0}, 1)
    log.flush()
    log.close()
    assert list(tmp_path.iterdir()) == []
