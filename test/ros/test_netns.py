"""The sim_finetune graph across Linux network namespaces: the learner in one namespace, an actor (sim bridge + policy
node, namespace actor0) in another, connected only through a bridge in a third ("the switch") by veth links, as
machines on a network are. Each namespace also has its own /dev/shm (a private bind mount in the processes' mount
namespace), as each machine has, so that no shared-memory transport can join the two sides (network namespaces share
the host's /dev/shm; measured: with this Fast DDS the data crossed the link without it too). Discovery is not
limited to localhost (ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET). Passes when transitions reached the learner and its block
reached the policy; the learner's link counted at least the bytes of those transitions.

Skips only when this machine cannot create network namespaces (needs root / CAP_NET_ADMIN and iproute2). The
namespaces and links are removed even when the test fails.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swfp_ros.sim import TASKS
from tiny_policy import SMALL_SWFP, write_bc_checkpoint

pytestmark = pytest.mark.timeout(300) if hasattr(pytest.mark, 'timeout') else []
OBS_DIM = 14 + len(TASKS['panda_reach'][1].task_labels)
HERE = Path(__file__).resolve().parent


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True)


class Network:
    """Namespaces ``<tag>l`` (learner) and ``<tag>a`` (actors) linked through a bridge in ``<tag>s``."""

    def __init__(self, tag: str):
        self.learner, self.actors, self.switch = f'{tag}l', f'{tag}a', f'{tag}s'
        self.created: list[str] = []

    def up(self) -> None:
        for ns in (self.switch, self.learner, self.actors):
            sh('ip', 'netns', 'add', ns)
            self.created.append(ns)
            sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
        sh('ip', '-n', self.switch, 'link', 'add', 'br0', 'type', 'bridge')
        sh('ip', '-n', self.switch, 'link', 'set', 'br0', 'up')
        for i, ns in enumerate((self.learner, self.actors), start=1):
            # one veth pair per machine: eth0 inside its namespace, port<i> on the switch's bridge
            sh('ip', '-n', self.switch, 'link', 'add', f'port{i}', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns)
            sh('ip', '-n', self.switch, 'link', 'set', f'port{i}', 'master', 'br0', 'up')
            sh('ip', '-n', ns, 'addr', 'add', f'10.77.0.{i}/24', 'dev', 'eth0')
            sh('ip', '-n', ns, 'link', 'set', 'eth0', 'up')
            sh('ip', '-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0')     # DDS discovery multicast

    def rx_bytes(self, ns: str) -> int:
        out = subprocess.run(['ip', 'netns', 'exec', ns, 'cat', '/sys/class/net/eth0/statistics/rx_bytes'],
                             check=True, capture_output=True, text=True).stdout
        return int(out)

    def down(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True)    # removes its links too
        self.created.clear()


@pytest.fixture
def network():
    net = Network(f'swfp{os.getpid() % 100000}')
    try:
        net.up()
    except (OSError, subprocess.CalledProcessError) as e:
        net.down()
        pytest.skip(f'cannot create network namespaces here: {getattr(e, "stderr", "") or e}')
    try:
        yield net
    finally:
        net.down()


def spawn(ns: str, shm: Path, cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """``cmd`` in network namespace ``ns``, with ``shm`` as its /dev/shm (a mount namespace of its own)."""
    shm.mkdir(exist_ok=True)
    inner = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
             'mount --bind "$0" /dev/shm && exec "$@"', str(shm), *cmd]
    return subprocess.Popen(['ip', 'netns', 'exec', ns, *inner], env=env, stdout=open(log, 'wb'),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def stop(procs: list[subprocess.Popen]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGINT)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(30))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            codes.append(None)
    return codes


def test_graph_across_network_namespaces(network, ros_env, tmp_path):
    from swfp_ros.ros.bringup import Bringup
    from swfp_ros.train.graph_demo import _config_dir, graph_nodes

    bc = write_bc_checkpoint(tmp_path / 'bc.pt', OBS_DIM, 7)
    cfg = _config_dir(tmp_path / 'config', SMALL_SWFP, {'status_period_s': 0.5})
    nodes = graph_nodes(str(bc), str(tmp_path / 'learner'), str(cfg), 'panda_reach', 1, 0)
    up = Bringup(nodes)                                  # its command lines (and parameter override files)
    cmds = {(n.label, n.namespace): cmd for n, cmd in zip(nodes, up.commands())}
    env = {**ros_env, 'ROS_AUTOMATIC_DISCOVERY_RANGE': 'SUBNET'}
    procs, logs = {}, {}
    monitor_log = tmp_path / 'monitor.log'
    try:
        for (label, namespace), cmd in cmds.items():
            ns = network.actors if namespace else network.learner      # the actor nodes are the namespaced ones
            logs[label] = tmp_path / f'{label.strip("/").replace("/", "_")}.log'
            procs[label] = spawn(ns, tmp_path / f'shm_{ns}', cmd, env, logs[label])
        procs['monitor'] = spawn(network.learner, tmp_path / f'shm_{network.learner}',
                                 [sys.executable, str(HERE / 'netns_monitor.py')], env, monitor_log)

        def latest() -> dict:
            out = {}
            for line in monitor_log.read_text().splitlines():
                try:
                    d = json.loads(line)
                except ValueError:
                    continue
                out[d['name']] = d
            return out

        deadline = time.monotonic() + 240
        while True:
            s = latest()
            policy_version = int(s.get('/actor0/policy_node', {}).get('policy_version', -1))
            learner = s.get('/learner_node', {})
            if policy_version >= 1 and int(learner.get('blocks_accepted', 0)) >= 1:
                break
            dead = [k for k, p in procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise AssertionError(f'{"exited: " + str(dead) if dead else "timed out"}: policy version '
                                     f'{policy_version}, learner {learner}; logs in {tmp_path}')
            time.sleep(0.5)
        transitions = int(learner['transitions'])
        rx = network.rx_bytes(network.learner)
    finally:
        codes = stop(list(procs.values()))
        for label, path in logs.items():
            print(label, path.read_bytes()[-1500:].decode('utf-8', 'replace'))
    assert transitions >= SMALL_SWFP['steps_per_block']
    # obs and next_obs alone are 2 * OBS_DIM doubles per transition: the data came over the link
    assert rx >= transitions * 2 * OBS_DIM * 8, (rx, transitions)
    assert codes == [0] * len(codes), codes
