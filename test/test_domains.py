"""ROS domain leases: concurrent graphs on one machine (the demo, the ROS tests) never share a ROS_DOMAIN_ID."""
import fcntl
import subprocess
import sys
import tempfile
from pathlib import Path

from swfp_ros.ros.domains import DomainLease
from swfp_ros.train import graph_demo


def held_by_someone(domain_id: int) -> bool:
    with open(Path(tempfile.gettempdir()) / 'swfp_ros_domains' / f'{domain_id}.lock', 'w') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_a_leased_domain_is_refused_to_other_processes_until_released():
    lease = DomainLease()
    try:
        code = 'from swfp_ros.ros.domains import DomainLease; print(DomainLease().domain_id)'
        others = {int(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                                     timeout=60).stdout) for _ in range(3)}
        assert lease.domain_id not in others
        assert held_by_someone(lease.domain_id)
    finally:
        lease.release()
    assert not held_by_someone(lease.domain_id)


def test_demo_holds_a_lease_on_the_domain_it_picks(monkeypatch):
    monkeypatch.delenv('ROS_DOMAIN_ID', raising=False)
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')   # restored after the test, as ROS_DOMAIN_ID
    monkeypatch.setattr(graph_demo, '_domain_lease', None)
    graph_demo._ensure_domain()
    try:
        domain_id = int(graph_demo.os.environ['ROS_DOMAIN_ID'])
        assert held_by_someone(domain_id), f'the demo took domain {domain_id} without holding its lease'
    finally:
        if graph_demo._domain_lease is not None:
            graph_demo._domain_lease.release()


def test_a_chosen_domain_is_kept(monkeypatch):
    monkeypatch.setenv('ROS_DOMAIN_ID', '42')
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    graph_demo._ensure_domain()
    assert graph_demo.os.environ['ROS_DOMAIN_ID'] == '42'
