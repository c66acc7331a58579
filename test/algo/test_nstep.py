"""n-step windows: per-stream chaining, early close on a break or termination, chunk-aware discounting, resume."""
import numpy as np
import pytest

from helpers import identity_normalizer, small_flow
from swfp_ros.algo.config import CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.algo.learner import Learner
from swfp_ros.algo.replay import FIELDS, NStepAssembler

GAMMA = 0.5


def chain(start: int, rewards, terminated_last=False, n_steps=1, obs_dim=2):
    """Consecutive transitions of one episode: obs k -> k+1 (obs value = step index), reward r_k."""
    out = {k: [] for k in FIELDS}
    for i, r in enumerate(rewards):
        out['obs'].append(np.full(obs_dim, start + i, np.float32))
        out['action'].append(np.full(1, start + i, np.float32))
        out['reward'].append(r)
        out['next_obs'].append(np.full(obs_dim, start + i + 1, np.float32))
        out['terminated'].append(terminated_last and i == len(rewards) - 1)
        out['n_steps'].append(n_steps)
    return {k: np.asarray(v) for k, v in out.items()}


def add_one_by_one(assembler, batch, stream=0):
    got = [assembler.add({k: v[i:i + 1] for k, v in batch.items()}, np.array([stream])) for i in range(len(batch['obs']))]
    return {k: np.concatenate([g[k] for g in got]) for k in FIELDS}


def test_full_windows_then_termination_closes_the_rest():
    out = add_one_by_one(NStepAssembler(3, GAMMA), chain(0, [1.0, 2.0, 3.0, 4.0, 5.0], terminated_last=True))
    assert out['action'][:, 0].tolist() == [0, 1, 2, 3, 4]         # one window per decision, in order
    np.testing.assert_allclose(out['reward'], [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3 + 0.25 * 4,
                                               3 + 0.5 * 4 + 0.25 * 5, 4 + 0.5 * 5, 5])
    assert out['n_steps'].tolist() == [3, 3, 3, 2, 1]
    assert out['next_obs'][:, 0].tolist() == [3, 4, 5, 5, 5]
    assert out['terminated'].tolist() == [False, False, True, True, True]


def test_a_break_in_the_chain_closes_open_windows_bootstrapped_from_their_last_observation():
    nstep = NStepAssembler(3, GAMMA)
    first = add_one_by_one(nstep, chain(0, [1.0, 1.0, 1.0, 1.0]))    # truncated here: no terminal flag
    assert first['n_steps'].tolist() == [3, 3]                         # windows starting at 0 and 1
    reset = add_one_by_one(nstep, chain(100, [7.0]))                   # obs 100 != previous next_obs 4
    assert reset['action'][:, 0].tolist() == [2, 3]                    # the truncated episode's open windows
    assert reset['n_steps'].tolist() == [2, 1] and reset['next_obs'][:, 0].tolist() == [4, 4]
    assert not reset['terminated'].any()
    np.testing.assert_allclose(reset['reward'], [1.5, 1.0])


def test_streams_do_not_mix():
    nstep = NStepAssembler(2, GAMMA)
    a, b = chain(0, [1.0, 1.0, 1.0]), chain(50, [2.0, 2.0, 2.0])
    interleaved = {k: np.stack([x for pair in zip(a[k], b[k]) for x in pair]) for k in FIELDS}
    out = nstep.add(interleaved, np.array([0, 1] * 3))
    assert out['n_steps'].tolist() == [2, 2, 2, 2]
    for obs, next_obs in zip(out['obs'][:, 0], out['next_obs'][:, 0]):
        assert next_obs == obs + 2                                      # each window stays inside its stream
    np.testing.assert_allclose(sorted(out['reward']), [1.5, 1.5, 3.0, 3.0])


def test_chunk_transitions_discount_by_env_steps():
    out = add_one_by_one(NStepAssembler(2, GAMMA), chain(0, [1.0, 2.0, 3.0], n_steps=4))
    np.testing.assert_allclose(out['reward'], [1 + 0.5 ** 4 * 2, 2 + 0.5 ** 4 * 3])
    assert out['n_steps'].tolist() == [8, 8]


def test_n_one_passes_transitions_through():
    batch = chain(0, [1.0, 2.0, 3.0], terminated_last=True)
    out = NStepAssembler(1, GAMMA).add(batch, np.zeros(3))
    for k in FIELDS:
        np.testing.assert_array_equal(out[k], batch[k])


def test_open_windows_survive_a_state_dict_round_trip():
    nstep = NStepAssembler(3, GAMMA)
    nstep.add(chain(0, [1.0, 1.0]), np.zeros(2))                        # two decisions open, nothing emitted yet
    resumed = NStepAssembler(3, GAMMA)
    resumed.load_state_dict(nstep.state_dict())
    out = resumed.add(chain(2, [1.0]), np.zeros(1))
    assert out['n_steps'].tolist() == [3] and out['action'][0, 0] == 0


def test_open_windows_keep_copies_of_the_rows_they_were_given():
    nstep = NStepAssembler(3, GAMMA)
    batch = chain(0, [1.0, 1.0])
    nstep.add(batch, np.zeros(2))                                       # two windows open, nothing emitted yet
    for key in ('obs', 'action', 'reward', 'next_obs'):
        batch[key][...] = 77                                            # the caller reuses its arrays
    out = nstep.add(chain(2, [1.0]), np.zeros(1))
    assert out['obs'][:, 0].tolist() == [0] and out['action'][:, 0].tolist() == [0] and out['n_steps'][0] == 3
    np.testing.assert_allclose(out['reward'], [1.75])


def test_rejects_non_positive_n():
    with pytest.raises(ValueError, match='n-step'):
        NStepAssembler(0, GAMMA)


def test_learner_counts_decisions_stores_windows_and_resumes_open_ones():
    cfg = SwfpConfig(flow=FlowConfig(hidden=32, layers=2), critic=CriticConfig(n_step=3, gamma=GAMMA, hidden=32))
    learner = Learner(small_flow(2, 1), identity_normalizer(2), cfg)
    steps = {**chain(0, [1.0, 1.0, 1.0, 1.0]), 'action': np.zeros((4, 1))}   # executed actions are in [-1, 1]
    learner.add_transitions(**steps, stream=np.zeros(4, int))
    assert learner.counters.env_steps == 4 and len(learner.replay) == 2   # windows from decisions 0 and 1
    assert learner.replay.data['n_steps'][:2].tolist() == [3, 3]
    np.testing.assert_allclose(learner.replay.data['reward'][:2], 1.75)

    resumed = Learner.from_state_dict(learner.state_dict())
    resumed.add_transitions(**{**chain(4, [1.0], terminated_last=True), 'action': np.zeros((1, 1))})  # stream 0
    assert len(resumed.replay) == 5 and resumed.replay.data['n_steps'][2:5].tolist() == [3, 2, 1]
