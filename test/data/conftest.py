"""Fixtures for the data tests."""
import numpy as np
import pytest
from data_synth import synth_episode

from swfp_ros.data.spec import PANDA_JOINTS, REACH_TASK_LABELS


@pytest.fixture
def episodes():
    rng = np.random.default_rng(1234)
    return [synth_episode(rng, T=int(rng.integers(20, 40)), success=bool(i % 2 == 0)) for i in range(3)]


@pytest.fixture
def joints():
    return list(PANDA_JOINTS)


@pytest.fixture
def task_labels():
    return list(REACH_TASK_LABELS)
