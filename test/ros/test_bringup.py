"""`swfp up` (swfp_ros.ros.bringup) with real processes: the graph comes up from the one description, SIGINT stops
every node cleanly (no orphans), and a node that dies takes the graph down with a non-zero exit.

The graph used is ``sim_finetune`` from graph.py restricted to its learner and recorder nodes (same executables,
package parameter files and argument overrides), with the real learner on a tiny untrained BC checkpoint.
The whole sim_finetune graph (sim bridge + policy + learner, blocks applied) is test_graph_e2e.py. The exit rule
(respawn, optional and required nodes) and the SIGINT -> SIGKILL shutdown are also driven with stub processes in
place of nodes, which can be told to exit or to ignore SIGINT.
"""
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray

from swfp_ros.ros import bringup, graph

from tiny_policy import write_bc_checkpoint
from up_process import finish, process_gone, started_pids

DRIVER = '''
import dataclasses, sys
from swfp_ros.ros import bringup, graph
g = graph.SIM_FINETUNE
graph.GRAPHS['mini'] = dataclasses.replace(
    g, name='mini', nodes=tuple(n for n in g.nodes if n.executable in ('learner_node', 'recorder_node')))
sys.exit(bringup.main(sys.argv[1:]))
'''


def _up(tmp_path, env, *assignments):
    log = open(tmp_path / 'up.log', 'w+')
    proc = subprocess.Popen([sys.executable, '-c', DRIVER, 'mini', '--grace', '10', *assignments], env=env,
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), start_new_session=True)
    return proc, log


def test_up_runs_graph_and_stops_cleanly_on_sigint(tmp_path, ros_env, ros_node):
    write_bc_checkpoint(tmp_path / 'bc.pt', 3, 2)
    env = dict(ros_env)
    status = ros_node.collect('/swfp/status', DiagnosticArray)
    proc, log = _up(tmp_path, env, f'checkpoint:={tmp_path / "bc.pt"}', f'checkpoint_dir:={tmp_path / "ckpt"}',
                    'record_bag:=true', f'bag_path:={tmp_path / "bag"}', 'use_sim_time:=false')
    try:
        names = lambda: {st.name for _, m in list(status) for st in m.status}  # noqa: E731
        ros_node.wait_for(lambda: {'/learner_node', '/recorder_node'} <= names(), 40.0, what='both nodes up')
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        out = finish(proc, log)
    assert rc == 0, out
    pids = started_pids(out)
    assert set(pids) == {'learner_node', 'recorder_node'}, out
    assert all(process_gone(p) for p in pids.values()), out
    assert re.search(r'^\[learner_node\] .*final checkpoint', out, re.M), out   # prefixed node output
    assert (tmp_path / 'ckpt' / 'learner.pt').is_file()
    assert (tmp_path / 'bag' / 'metadata.yaml').is_file()                       # recorder closed its bag
    assert 'SIGKILL' not in out


def test_up_exits_nonzero_when_a_node_dies(tmp_path, ros_env):
    env = dict(ros_env)
    # no base checkpoint and an empty checkpoint_dir: the learner cannot start (status 3), which ends the graph even
    # though a learner that dies later would not
    proc, log = _up(tmp_path, env, f'checkpoint_dir:={tmp_path / "ckpt"}', 'record_bag:=true',
                    f'bag_path:={tmp_path / "bag"}', 'use_sim_time:=false')
    try:
        rc = proc.wait(timeout=40)
    finally:
        out = finish(proc, log)
    assert rc != 0, out
    assert 'learner_node failed to start (status 3); shutting the graph down' in out, out
    pids = started_pids(out)
    assert all(process_gone(p) for p in pids.values()), out


def test_enclave_root_reaches_rcl(tmp_path, ros_env):
    """enclave_root:=/swfp with DDS security enforced and no keystore: rcl looks for each node's own enclave
    (<keystore>/enclaves/swfp/<node>) and refuses; the node says so in one line (no traceback) and the graph ends."""
    env = {**ros_env, 'ROS_SECURITY_ENABLE': 'true', 'ROS_SECURITY_STRATEGY': 'Enforce',
           'ROS_SECURITY_KEYSTORE': str(tmp_path / 'keystore')}
    proc, log = _up(tmp_path, env, f'checkpoint_dir:={tmp_path / "ckpt"}', 'enclave_root:=/swfp')
    try:
        rc = proc.wait(timeout=40)
    finally:
        out = finish(proc, log)
    assert rc != 0 and 'learner_node failed to start (status 3)' in out, out
    assert f"directory '{tmp_path / 'keystore'}/enclaves/swfp/learner_node' does not exist" in out, out
    assert 'Traceback' not in out, out


def test_print_and_help_resolve_the_real_graphs(tmp_path, capsys):
    assert bringup.main(['sim_finetune', 'task:=panda_push', 'record_bag:=true', 'namespace:=actor1', '--print']) == 0
    out = capsys.readouterr().out
    for exe in ('sim_bridge', 'policy_node', 'learner_node', 'recorder_node'):
        assert re.search(rf'{exe} --ros-args -r __node:={exe}', out), out
    assert '-r __ns:=/actor1' in out and '-p task:=panda_push' in out
    assert 'config/sim_bridge.yaml' in out and 'config/learner.yaml' in out
    assert bringup.main(['real_arm', 'command_topic:=/arm/cmd', '--print']) == 0
    out = capsys.readouterr().out
    assert '-r swfp/action:=/arm/cmd' in out and '-p dry_run:=true' in out and 'recorder_node' not in out
    assert 'task_node --ros-args' in out and '-p mode:=realtime' in out and 'learner_node' not in out
    # several arms: the actor nodes once per namespace, actor ids counting up, relative controller topics per arm
    assert bringup.main(['real_arm', 'namespace:=arm1,arm2', 'learn:=true', 'actor_id:=4', '--print']) == 0
    out = capsys.readouterr().out
    for ns in ('arm1', 'arm2'):
        for exe in ('task_node', 'policy_node'):
            assert re.search(rf'{exe} --ros-args -r __node:={exe} -r __ns:=/{ns} ', out), out
    assert out.count('learner_node --ros-args') == 1 and '-p actor_id:=4' in out and '-p actor_id:=5' in out
    assert '-r swfp/action:=forward_position_controller/commands' in out
    # an argument left empty leaves the parameter files' value; given, it overrides it
    for given in ({}, {'checkpoint': 'bc.pt', 'log_dir': 'tb', 'transition_bag': 'old_bag'}):
        params = {n.name: n.parameters for n in graph.resolve(graph.SIM_FINETUNE, given)}
        assert params['policy_node'].get('checkpoint') == given.get('checkpoint')
        assert {k: params['learner_node'].get(k) for k in ('base_checkpoint', 'log_dir', 'transition_bag')} == {
            'base_checkpoint': given.get('checkpoint'), 'log_dir': given.get('log_dir'),
            'transition_bag': given.get('transition_bag')}
    # several simulated actors: each bridge its own episodes (seed + 1000·i, as one bridge seeds its robots)
    seeds = {n.namespace: n.parameters['seed'] for n in graph.resolve(
        graph.SIM_FINETUNE, {'checkpoint': 'bc.pt', 'namespace': 'a,b,c', 'seed': 7}) if n.name == 'sim_bridge'}
    assert seeds == {'/a': 7, '/b': 7 + graph.ROBOT_SEED_STRIDE, '/c': 7 + 2 * graph.ROBOT_SEED_STRIDE}
    assert bringup.main(['sim_finetune', 'nosuch:=1']) == 2
    assert 'no argument(s) nosuch' in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bringup.main(['--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for g in graph.GRAPHS.values():
        assert g.name in out
        for a in g.arguments:
            assert f'{a.name}:=' in out and a.description[:30] in out


def test_each_node_gets_its_stop_timeout_as_under_ros2_launch():
    """SIGINT -> SIGKILL: the graph's per-node timeout (the learner's final checkpoint may wait for a block in
    training), unless --grace sets one for all."""
    nodes = graph.resolve(graph.SIM_FINETUNE, {'checkpoint': 'bc.pt'})
    for grace, expected in ((None, {'sim_bridge': 10.0, 'policy_node': 10.0, 'learner_node': 30.0}),
                            (60.0, {'sim_bridge': 60.0, 'policy_node': 60.0, 'learner_node': 60.0})):
        up = bringup.Bringup(nodes, grace=grace)
        assert {n.executable: up.stop_timeout(n) for n in nodes} == expected


def test_print_output_runs_as_printed_with_learner_settings(tmp_path, ros_env, ros_node, capsys):
    """--print: every override is on the command line (no file that vanishes when swfp up exits); a printed learner
    command, pasted as is, starts a learner holding the swfp.* settings given to swfp up; a bad setting stops swfp up
    before anything starts, naming it."""
    from rclpy.parameter_client import AsyncParameterClient
    bc = write_bc_checkpoint(tmp_path / 'bc.pt', 3, 2)
    assert bringup.main(['sim_finetune', f'checkpoint:={bc}', f'checkpoint_dir:={tmp_path / "ckpt"}',
                         'use_sim_time:=false', 'swfp.block.delta:=0.2', 'swfp.warmup_steps:=3000', '--print']) == 0
    lines = capsys.readouterr().out.splitlines()
    learner = [shlex.split(line) for line in lines if 'learner_node --ros-args' in line]
    assert len(learner) == 1
    cmd = learner[0]
    assert '-p' in cmd and 'swfp.block.delta:=0.2' in cmd and 'swfp.warmup_steps:=3000' in cmd
    files = [cmd[i + 1] for i, a in enumerate(cmd) if a == '--params-file']
    assert files and all(f.endswith('config/learner.yaml') for f in files)
    log = open(tmp_path / 'learner.log', 'w')
    proc = subprocess.Popen(cmd, env=ros_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
                            start_new_session=True)
    try:
        client = AsyncParameterClient(ros_node.node, '/learner_node')
        ros_node.wait_for(lambda: '/learner_node' in [
            f'{ns.rstrip("/")}/{n}' for n, ns in ros_node.node.get_node_names_and_namespaces()], 40.0,
            what='the pasted learner command')
        ros_node.wait_for(client.services_are_ready, 30.0, what='its parameter services')
        values = {}

        def got():   # re-asked until answered: a request sent before discovery matched its reply is lost
            fut = client.get_parameters(['swfp.block.delta', 'swfp.warmup_steps', 'checkpoint_dir'])
            deadline = time.monotonic() + 5.0
            while not fut.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            values['v'] = fut.result().values if fut.done() else None
            return values['v'] is not None
        ros_node.wait_for(got, 30.0, what='the parameters')
        delta, warmup, ckpt = values['v']
        assert (delta.double_value, warmup.integer_value, ckpt.string_value) == (0.2, 3000, str(tmp_path / 'ckpt'))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        log.close()
    assert bringup.main(['sim_finetune', 'swfp.block.delat:=0.2', '--print']) == 2
    assert 'swfp.block.delat:=0.2: unknown setting (did you mean block.delta?' in capsys.readouterr().err
    assert bringup.main(['real_arm', 'swfp.block.delta:=0.2', '--print']) == 2
    assert 'this graph runs no learner' in capsys.readouterr().err


def _stub(name: str, code: str, arg, **flags) -> tuple:
    """A node of the graph whose process is ``python -c code arg`` instead of a ROS node. SIGINT raises
    KeyboardInterrupt in it even when the tests were started in the background by a shell (which ignores SIGINT in
    what it starts there, and so in everything those start)."""
    node = graph.ResolvedNode(executable='stub', name=name, namespace='', param_files=[], parameters={},
                              remappings=[], log_level='info', **{'stop_timeout_s': 5.0, **flags})
    prelude = ('import pathlib, signal, subprocess, sys, time\n'
               'signal.signal(signal.SIGINT, signal.default_int_handler)\n')
    return node, [sys.executable, '-c', prelude + code, str(arg)]


def _run_stubs(stubs) -> tuple[bringup.Bringup, io.StringIO]:
    out = io.StringIO()
    up = bringup.Bringup([node for node, _ in stubs], out=out)
    up.procs.extend(up._spawn(bringup._Proc(node, cmd, None)) for node, cmd in stubs)
    return up, out


# A node process that starts a child in its own process group (which is the node's); the child ignores SIGINT. The
# node ignores it too ('ignore'), or ends on it with status 0 ('exit') or 2 ('fail'). The child says when it ignores
# SIGINT (a SIGINT before that would kill it).
NODE_WITH_CHILD = '''
if sys.argv[1] == 'ignore':
    signal.signal(signal.SIGINT, signal.SIG_IGN)
subprocess.Popen([sys.executable, '-c', 'import os, signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); '
                                        'print("child ignoring SIGINT", os.getpid(), flush=True); time.sleep(600)'])
try:
    time.sleep(600)
except KeyboardInterrupt:
    sys.exit(2 if sys.argv[1] == 'fail' else 0)
'''


@pytest.mark.parametrize('on_sigint,status,rc', [('ignore', -signal.SIGKILL, 1), ('exit', 0, 0), ('fail', 2, 1)])
def test_shutdown_kills_what_sigint_left_and_reports_how_the_node_ended(on_sigint, status, rc):
    """SIGINT, then SIGKILL after the node's stop timeout for a node still running; a child the node left in its
    process group is killed too whatever the node did (no orphan keeps running); shutdown reports each node's status and
    returns 1 unless every node stopped cleanly on the SIGINT."""
    # short for the node that will need the SIGKILL; long for the others, so that load cannot make them late
    stop_timeout_s = 1.0 if on_sigint == 'ignore' else 60.0
    up, out = _run_stubs([_stub(f'node_{on_sigint}', NODE_WITH_CHILD, on_sigint, stop_timeout_s=stop_timeout_s)])
    try:
        deadline = time.monotonic() + 60
        while not re.search(r'child ignoring SIGINT (\d+)', out.getvalue()):
            assert up.procs[0].popen.poll() is None and time.monotonic() < deadline, out.getvalue()
            time.sleep(0.05)
        child = int(re.search(r'child ignoring SIGINT (\d+)', out.getvalue()).group(1))
        assert up.shutdown() == rc, out.getvalue()
        deadline = time.monotonic() + 30
        while not process_gone(child) and time.monotonic() < deadline:   # SIGKILL is sent; the kernel ends it
            time.sleep(0.05)
        assert process_gone(child)
    finally:
        try:
            os.killpg(up.procs[0].popen.pid, signal.SIGKILL)   # what a failed check left: the node, the child
        except ProcessLookupError:
            pass
    assert up.procs[0].popen.returncode == status
    assert f'node_{on_sigint} exited with status {status}' in out.getvalue()
    assert ('did not stop within 1 s: SIGKILL' in out.getvalue()) == (on_sigint == 'ignore')


def test_wait_applies_the_exit_rule_to_each_node(tmp_path):
    """The exit rule as `swfp up` applies it (graph.exit_verdict): a node with respawn is started again after an exit,
    an optional one without respawn stays down while the graph goes on, and a required node's exit ends the graph
    with its status."""
    flaky = _stub('flaky', 'sys.exit(7)', tmp_path, required=False, respawn=True)
    optional = _stub('optional', 'sys.exit(4)', tmp_path, required=False)
    # the required node ends once the flaky one has been started a third time (the test writes the file)
    main = _stub('main', 'while not (pathlib.Path(sys.argv[1]) / "end").exists(): time.sleep(0.05)\nsys.exit(5)',
                 tmp_path)
    up, out = _run_stubs([flaky, optional, main])
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault('rc', up.wait(poll=0.02)), daemon=True)
    waiter.start()
    try:
        deadline = time.monotonic() + 60
        while out.getvalue().count('started flaky') < 3:
            assert waiter.is_alive() and time.monotonic() < deadline, out.getvalue()
            time.sleep(0.05)
        (tmp_path / 'end').touch()
        waiter.join(60)
    finally:
        up.shutdown()
    text = out.getvalue()
    assert result == {'rc': 5}, text
    assert len(set(re.findall(r'started flaky \(pid (\d+)\)', text))) >= 3      # a new process each time
    assert 'flaky exited with status 7; the actors keep acting with their last accepted policy; restarting it' in text
    assert text.count('started optional') == 1 and text.count('optional exited with status 4') == 1   # seen once
    assert 'optional exited with status 4; the actors keep acting with their last accepted policy; not restarting it' \
        in text
    assert 'main exited with status 5; shutting the graph down' in text


def test_an_optional_node_that_fails_to_start_ends_the_graph(tmp_path):
    """Exit status 3 (the node refused its parameters): no restart would help, so even an optional node ends it."""
    broken = _stub('broken', 'sys.exit(3)', tmp_path, required=False, respawn=True)
    main = _stub('main', 'time.sleep(600)', tmp_path)
    up, out = _run_stubs([broken, main])
    try:
        assert up.wait(poll=0.02) == 3
        assert up.procs[1].popen.poll() is not None          # wait shut the graph down before returning
    finally:
        up.shutdown()
    assert 'broken failed to start (status 3); shutting the graph down' in out.getvalue()
    assert out.getvalue().count('started broken') == 1
