"""The public API at the package top: the README's example runs verbatim, `import swfp_ros` stays cheap, and the
loaded policy carries its checkpoint's task and labels."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import swfp_ros
from swfp_ros.algo.checkpoint import CheckpointError
from swfp_ros.sim import make_env

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'MUJOCO_GL': os.environ.get('MUJOCO_GL', 'egl'), 'PYTHONPATH': str(REPO)}
_script = Path(sys.executable).with_name('swfp')
SWFP = [str(_script)] if _script.exists() else [sys.executable, '-m', 'swfp_ros.cli']


def readme_python_api_example() -> str:
    """The python block of the README's "Python API" section, as printed there."""
    text = (REPO / 'README.md').read_text()
    section = text.split('\n## Python API\n', 1)[1].split('\n## ', 1)[0]
    blocks = re.findall(r'```python\n(.*?)```', section, re.S)
    assert len(blocks) == 1, 'the Python API section holds exactly one python example'
    return blocks[0]


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    """outputs/demos.npz and outputs/bc.pt as the README's shell lines make them, smaller (a few demos, a short BC of
    2-action chunks, so the example's chunk handling is exercised)."""
    work = tmp_path_factory.mktemp('api')
    (work / 'outputs').mkdir()
    for args in (['demos', '--task', 'panda_reach', '--episodes', '3', '--out', 'outputs/demos.npz'],
                 ['pretrain', '--data', 'outputs/demos.npz', '--out', 'outputs/bc.pt', '--steps', '30',
                  '--hidden', '32', '--chunk', '2']):
        r = subprocess.run([*SWFP, *args], cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    return work


def test_readme_example_runs_verbatim(workdir):
    r = subprocess.run([sys.executable, '-c', readme_python_api_example()], cwd=workdir, env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # What the example prints: the checkpoint's task, labels and chunk; an evaluation; the dataset's shapes.
    assert lines[0].startswith("panda_reach ['panda_joint1.position'") and lines[0].endswith(' 2'), lines[0]
    assert 'success_rate=' in lines[1] and 'episodes=5' in lines[1], lines[1]
    steps = swfp_ros.load_dataset(workdir / 'outputs/demos.npz').num_steps
    assert lines[2].endswith(f'({steps}, 20) ({steps}, 7)'), lines[2]


def test_import_is_cheap():
    code = ('import sys, swfp_ros; heavy = [m for m in ("torch", "mujoco", "gymnasium", "rclpy") if m in sys.modules];'
            'print(heavy)')
    r = subprocess.run([sys.executable, '-c', code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == '[]', r.stdout + r.stderr


def test_policy_carries_checkpoint_task_and_labels_and_acts_in_chunks(workdir):
    policy = swfp_ros.load_policy(workdir / 'outputs/bc.pt')
    env = make_env('panda_reach')
    base = env.unwrapped
    assert policy.task == 'panda_reach'
    assert policy.obs_labels == base.obs_labels and policy.action_labels == base.action_labels
    assert (policy.chunk, policy.action_size, policy.obs_dim, policy.version) == (2, 7, 20, 0)
    obs, _ = env.reset(seed=0)
    assert policy.act(obs).shape == (2, 7)
    assert policy.act(np.stack([obs, obs, obs])).shape == (3, 2, 7)
    np.testing.assert_array_equal(policy.act(obs, deterministic=True), policy.act(obs, deterministic=True))
    # The chunk is the runtime's flattened decision in step order: step k is entries k*7 .. k*7+6.
    np.testing.assert_array_equal(policy.act(obs, deterministic=True).ravel(),
                                  policy.runtime.act(obs, deterministic=True))
    assert policy.control_rate_hz == base.control_rate_hz == 20.0
    assert repr(policy).startswith("Policy(task='panda_reach', obs_dim=20, chunk=2, action_size=7, version=0")
    # As a callable it samples like act(): two loads with one seed draw the same noise.
    called, acted = (swfp_ros.load_policy(workdir / 'outputs/bc.pt', seed=5) for _ in range(2))
    np.testing.assert_array_equal(called(obs), acted.act(obs))
    assert not np.array_equal(acted.act(obs), acted.act(obs))     # fresh noise per decision by default

    def steady(o):
        return policy.act(o, deterministic=True)[0]

    # evaluate() scores 10 episodes seeded 0, 1, … unless told otherwise
    default = swfp_ros.evaluate(env, steady)
    assert default == swfp_ros.evaluate(env, steady, episodes=10, seed=0) and default.episodes == 10
    assert default.mean_return != swfp_ros.evaluate(env, steady, seed=1).mean_return
    with pytest.raises(ValueError, match='expected obs'):
        policy.act(obs[:5])
    with pytest.raises(ValueError, match='NaN'):
        policy.act(np.full_like(obs, np.nan))


def test_load_dataset_and_bad_inputs(workdir, tmp_path):
    demos = swfp_ros.load_dataset(workdir / 'outputs/demos.npz')
    assert (demos.task, len(demos), demos.obs_dim, demos.act_dim) == ('panda_reach', 3, 20, 7)
    with pytest.raises(ValueError, match='need an ingest spec'):
        swfp_ros.load_dataset(tmp_path / 'some_bag')
    with pytest.raises(ValueError, match='only for rosbags'):
        swfp_ros.load_dataset(workdir / 'outputs/demos.npz', spec='config/ingest_panda_reach.yaml')
    with pytest.raises(CheckpointError):
        swfp_ros.load_policy(workdir / 'outputs/demos.npz')
    with pytest.raises(AttributeError):
        swfp_ros.no_such_function  # noqa: B018


def test_load_dataset_reads_rosbags_through_an_ingest_spec(tmp_path):
    from swfp_ros.data import write_demo_bag
    from swfp_ros.train.demos import collect_demos
    dataset, records = collect_demos('panda_reach', episodes=2, noise_std=0.3, epsilon=0.0, seed=3, progress=False)
    base = make_env('panda_reach').unwrapped
    write_demo_bag(tmp_path / 'bag', records, joint_names=base.joint_names, task_labels=base.task_labels,
                   control_rate_hz=base.control_rate_hz)
    spec = REPO / 'config' / 'ingest_panda_reach.yaml'
    for bags in (tmp_path / 'bag', [tmp_path / 'bag']):
        loaded = swfp_ros.load_dataset(bags, spec=spec)
        assert len(loaded) == len(dataset) == 2
        for got, want in zip(loaded, dataset):
            np.testing.assert_allclose(got.obs, want.obs, atol=1e-5)
            np.testing.assert_allclose(got.actions, want.actions, atol=1e-5)
