"""Exclusive ROS_DOMAIN_IDs on one machine (no rclpy needed): graphs started by `swfp demo` and by the ROS tests hold
an flock'd file per domain, so two of them running at the same time never discover each other's nodes."""
from __future__ import annotations

import fcntl
import os
import random
import tempfile
import time
from pathlib import Path

DOMAIN_IDS = list(range(1, 102))          # Fast DDS port arithmetic allows 0-101 (and 215-232) on Linux


class DomainLease:
    """An exclusive ROS_DOMAIN_ID for this machine, held by an flock until released (or the process exits)."""

    def __init__(self):
        lock_dir = Path(tempfile.gettempdir()) / 'swfp_ros_domains'
        lock_dir.mkdir(exist_ok=True)
        ids = DOMAIN_IDS[:]
        random.Random(os.getpid() ^ time.monotonic_ns()).shuffle(ids)
        for did in ids:
            f = open(lock_dir / f'{did}.lock', 'w')
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.domain_id, self._file = did, f
            return
        raise RuntimeError('no free ROS_DOMAIN_ID')

    def release(self):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
