"""ObsNormalizer: what every policy, critic and block sees of an observation, fitted once on the BC data."""
import numpy as np
import pytest
import torch

from swfp_ros.algo.normalize import ObsNormalizer


def test_fit_gives_per_feature_mean_and_population_std():
    rng = np.random.default_rng(0)
    obs = rng.normal([1.0, -2.0, 5.0], [0.5, 3.0, 0.01], size=(400, 3)).astype(np.float32)
    norm = ObsNormalizer(3).fit(obs)
    np.testing.assert_allclose(norm.mean.numpy(), obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.std.numpy(), obs.std(0), rtol=1e-4)     # ddof 0, as numpy's default
    out = norm(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-3)


def test_constant_feature_and_single_observation_do_not_divide_by_zero():
    obs = np.array([[1.0, 7.0], [3.0, 7.0]], np.float32)     # the second feature never varies (a fixed goal)
    norm = ObsNormalizer(2).fit(obs)
    assert norm.std.tolist() == [1.0, pytest.approx(1e-6)]
    out = norm(torch.tensor([[2.0, 7.0], [2.0, 7.5]]))
    assert out[0].tolist() == [0.0, 0.0]
    assert out[1, 1].item() == 10.0                           # a change it never saw: clipped, not 5e5
    one = ObsNormalizer(2).fit(np.array([[4.0, -1.0]]))
    assert one.mean.tolist() == [4.0, -1.0] and one.std.tolist() == [1.0, 1.0]


def test_outputs_are_clipped_both_ways():
    norm = ObsNormalizer(1, clip=3.0).fit(np.array([[-1.0], [1.0]]))
    assert norm(torch.tensor([[-100.0], [0.5], [100.0]])).flatten().tolist() == [-3.0, 0.5, 3.0]


def test_bad_input_refused():
    norm = ObsNormalizer(3)
    for bad in (np.array([[0.0, np.nan, 1.0]]), np.array([[np.inf, 0.0, 1.0]])):
        with pytest.raises(ValueError, match='contain NaN/inf'):
            norm.fit(bad)
    assert norm.mean.tolist() == [0.0] * 3 and norm.std.tolist() == [1.0] * 3   # a refused fit changes nothing
    with pytest.raises(ValueError, match='expected obs of size 3, got shape \\(2, 4\\)'):
        norm(torch.zeros(2, 4))


def test_state_dict_round_trip():
    norm = ObsNormalizer(2).fit(np.array([[0.0, 1.0], [2.0, 5.0]]))
    other = ObsNormalizer(2)
    other.load_state_dict(norm.state_dict())
    x = torch.tensor([[1.0, 2.0]])
    assert torch.equal(other(x), norm(x))
