"""Checkpoints: identical actions after a round trip, clear errors on damage, learner resume continues counters."""
import numpy as np
import pytest
import torch
import yaml

from helpers import identity_normalizer, small_flow
from swfp_ros.algo.blocks import Cascade
from swfp_ros.algo.checkpoint import CheckpointError, load_learner, load_policy, save_learner, save_policy
from swfp_ros.algo.config import BlockConfig, CriticConfig, FlowConfig, SwfpConfig
from swfp_ros.algo.learner import Learner
from swfp_ros.algo.normalize import ObsNormalizer
from swfp_ros.algo.runtime import PolicyRuntime


def test_policy_round_trip_identical_actions(tmp_path):
    norm = ObsNormalizer(3).fit(np.random.default_rng(0).normal(2.0, 3.0, size=(100, 3)))
    casc = Cascade(small_flow())
    path = str(tmp_path / 'bc.pt')
    save_policy(path, casc, norm)
    rt = load_policy(path, device='cpu')
    obs = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(rt.act(obs, deterministic=True),
                                  PolicyRuntime(casc, norm, device='cpu').act(obs, deterministic=True))
    x0 = torch.randn(16, 2)
    with torch.no_grad():
        torch.testing.assert_close(rt.cascade.sample(norm(torch.as_tensor(obs)), x0),
                                   casc.sample(norm(torch.as_tensor(obs)), x0), rtol=0, atol=0)


@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'missing'])
def test_damaged_checkpoint_names_the_file(tmp_path, damage):
    path = tmp_path / 'policy.pt'
    save_policy(str(path), Cascade(small_flow()), identity_normalizer(3))
    if damage == 'truncate':
        path.write_bytes(path.read_bytes()[:200])
    elif damage == 'garbage':
        path.write_bytes(b'not a checkpoint at all')
    else:
        path.unlink()
    with pytest.raises(CheckpointError, match='policy.pt'):
        load_policy(str(path), device='cpu')


def test_wrong_kind_rejected(tmp_path):
    path = str(tmp_path / 'policy.pt')
    save_policy(path, Cascade(small_flow()), identity_normalizer(3))
    with pytest.raises(CheckpointError, match='not a learner'):
        load_learner(path)


def learner():
    cfg = SwfpConfig(flow=FlowConfig(hidden=32, layers=2), critic=CriticConfig(hidden=32, layers=2, batch_size=32),
                     block=BlockConfig(hidden=16, train_steps=20, pool_size=256), warmup_steps=64,
                     steps_per_block=64, utd=0.5, replay_capacity=1000)
    return Learner(small_flow(), identity_normalizer(3), cfg, device='cpu')


def feed(lr, rng, n=32):
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    lr.add_transitions(obs, act, -np.abs(act).sum(1), obs, np.ones(n, bool))
    return lr.update()


def test_learner_resume_continues(tmp_path):
    a, rng = learner(), np.random.default_rng(0)
    for _ in range(6):
        feed(a, rng)
    assert a.counters.blocks_trained >= 1 and a.counters.critic_updates > 0  # there is state to resume
    path = str(tmp_path / 'learner.pt')
    save_learner(path, a)
    saved_version = a.counters.version
    b = load_learner(path)
    assert b.counters == a.counters and len(b.replay) == len(a.replay) and b.log_lambda == a.log_lambda
    assert len(b.policy.blocks) == len(a.policy.blocks)
    s, x0 = torch.randn(8, 3), torch.randn(8, 2)
    with torch.no_grad():
        torch.testing.assert_close(b.policy.sample(s, x0), a.policy.sample(s, x0), rtol=0, atol=0)
        torch.testing.assert_close(b.critic.q_min(s, x0.clamp(-1, 1)), a.critic.q_min(s, x0.clamp(-1, 1)))
    # same RNG streams: the next update is the same on both
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    feed(a, rng_a), feed(b, rng_b)
    assert b.counters == a.counters and b.counters.env_steps == 7 * 32
    torch.testing.assert_close(b.critic.q_min(s, x0.clamp(-1, 1)), a.critic.q_min(s, x0.clamp(-1, 1)))
    rt = load_policy(path, device='cpu')  # a learner checkpoint also serves actors
    assert rt.version == saved_version


def test_learner_state_resumes_on_the_other_device_type():
    """A generator's state is device-specific (CPU 5,056 bytes, CUDA 16): a state written on a GPU machine must resume
    on a CPU one (and the reverse: the same mapping) instead of failing in Generator.set_state."""
    import struct
    a, rng = learner(), np.random.default_rng(0)
    for _ in range(3):
        feed(a, rng)
    d = a.state_dict()
    assert d['rng']['torch']['device'] == 'cpu'
    # exactly what a CUDA generator's get_state() holds: its seed and its offset
    cuda_state = torch.tensor(list(struct.pack('<QQ', 1234, 96)), dtype=torch.uint8)
    written_on_gpu = {**d, 'rng': {**d['rng'], 'torch': {'device': 'cuda', 'state': cuda_state}}}
    b, c = Learner.from_state_dict(written_on_gpu), Learner.from_state_dict(written_on_gpu)
    assert b.counters == a.counters and len(b.replay) == len(a.replay)
    draws = [torch.randn(4, generator=x.gen) for x in (a, b, c)]
    torch.testing.assert_close(draws[1], draws[2])             # re-seeded deterministically from the saved state
    assert not torch.equal(draws[0], draws[1])
    same_device = Learner.from_state_dict(d)                   # same device type: the exact stream continues
    torch.testing.assert_close(torch.randn(4, generator=same_device.gen), draws[0])
    feed(b, np.random.default_rng(1))                          # and it trains on
    assert b.counters.critic_updates > a.counters.critic_updates


def test_config_round_trip_through_yaml():
    cfg = SwfpConfig(block=BlockConfig(delta=0.2, alpha=0.01), warmup_steps=123)
    back = SwfpConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert back == cfg
    with pytest.raises(ValueError, match='unknown'):
        SwfpConfig.from_dict({**cfg.to_dict(), 'typo_key': 1})
    with pytest.raises(ValueError, match='q_scale'):
        BlockConfig(q_scale='mean_abs')
