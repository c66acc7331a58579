"""The sim bridge serves the joint-target tasks only: asked for the OGBench task it exits with the reason."""


def test_sim_bridge_refuses_an_end_effector_task_with_the_reason(launch_node):
    bridge = launch_node('sim_bridge', params={'task': 'cube_single'})
    rc = bridge.proc.wait(timeout=60)
    out = bridge.output()
    assert rc != 0 and 'Traceback' not in out, out
    assert "task 'cube_single' is not served by the sim bridge (end-effector actions" in out, out
    assert "['panda_push', 'panda_reach']" in out, out
