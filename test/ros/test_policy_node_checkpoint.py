"""The policy node given a hostile checkpoint (a pickle whose unpickling runs a shell command): the node refuses it,
exits with the failed-start status, and the command never runs."""
import os
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip('rclpy')
from swfp_ros.ros.executors import EXIT_START_FAILED  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / 'config'


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_policy_node_refuses_a_pickle_checkpoint(launch_node, tmp_path):
    marker = tmp_path / 'PWNED'
    evil = tmp_path / 'evil.pt'
    torch.save({'format': 'swfp-checkpoint', 'x': _Evil(marker)}, evil)     # what torch.load would run
    node = launch_node('policy_node', params_file=CONFIG / 'policy.yaml', params={'checkpoint': str(evil)})
    deadline = time.monotonic() + 60
    while node.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not marker.exists()
    assert not node.alive() and node.proc.returncode == EXIT_START_FAILED, node.output()[-2000:]
    assert 'refused unread' in node.output()
