import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # for helpers.py


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tests use small nets; on a shared 2-core machine intra-op threads make them ~20x slower (measured:
    200 critic updates 34.6 s with 2 threads under load vs 1.8 s with 1). Restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
