"""`pip install .` into a prefix lays the package out as a ROS 2 install: ament marker, share/, lib/swfp_ros/."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODES = ('policy_node', 'learner_node', 'sim_bridge', 'recorder_node', 'task_node', 'sim_actor')


@pytest.fixture(scope='module')
def prefix(tmp_path_factory):
    prefix = tmp_path_factory.mktemp('prefix')
    build = tmp_path_factory.mktemp('build')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--ignore-installed',
                    '--prefix', str(prefix), str(ROOT)],
                   check=True, cwd=build, env={**os.environ, 'PIP_NO_INPUT': '1'})
    return prefix


def test_ament_index_marker_and_share(prefix):
    assert (prefix / 'share/ament_index/resource_index/packages/swfp_ros').is_file()
    share = prefix / 'share/swfp_ros'
    assert (share / 'package.xml').is_file()
    assert sorted(p.name for p in (share / 'launch').glob('*.launch.py')) == \
        sorted(p.name for p in (ROOT / 'launch').glob('*.launch.py'))
    assert sorted(p.name for p in (share / 'config').glob('*.yaml')) == \
        sorted(p.name for p in (ROOT / 'config').glob('*.yaml'))
    assert (share / 'config/sros2/swfp_policy.xml').is_file()


@pytest.mark.parametrize('name', NODES)
def test_node_executables_where_launch_ros_looks_and_on_path(prefix, name):
    in_lib = prefix / 'lib/swfp_ros' / name
    on_path = prefix / 'bin' / name
    assert in_lib.is_file() and os.access(in_lib, os.X_OK)
    assert on_path.is_file() and os.access(on_path, os.X_OK)


def test_lib_wrapper_execs_the_console_script(prefix, tmp_path):
    # Replace the real console script by a probe: the lib/ wrapper must exec exactly <prefix>/bin/<name>.
    probe = prefix / 'bin' / 'sim_bridge'
    original = probe.read_text()
    probe.write_text('#!/bin/sh\necho "probe $@"\n')
    try:
        out = subprocess.run([str(prefix / 'lib/swfp_ros/sim_bridge'), '--ros-args', '-p', 'x:=1'],
                             capture_output=True, text=True, check=True).stdout
    finally:
        probe.write_text(original)
    assert out.strip() == 'probe --ros-args -p x:=1'


@pytest.fixture(scope='module')
def colcon_prefix(tmp_path_factory):
    """What `colcon build` runs for an ament_python package: `setup.py install` (setup.cfg's lib/swfp_ros script
    dir) into the package's install prefix."""
    build, prefix = tmp_path_factory.mktemp('colcon_build'), tmp_path_factory.mktemp('colcon') / 'install'
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(build), 'build', '--build-base',
                    str(build / 'build'), 'install', '--prefix', str(prefix), '--record', str(build / 'install.log'),
                    '--single-version-externally-managed'], check=True, cwd=ROOT, capture_output=True)
    return prefix


def test_colcon_install_puts_swfp_on_path(colcon_prefix):
    """The node executables land where launch_ros looks, and `swfp` also in <prefix>/bin, the folder that
    `source install/setup.bash` puts on PATH (colcon adds it when it holds files)."""
    prefix = colcon_prefix
    for name in (*NODES, 'swfp'):
        assert (prefix / 'lib/swfp_ros' / name).is_file(), name
    assert sorted(p.name for p in (prefix / 'bin').iterdir()) == ['swfp']
    site = next((prefix / 'lib').glob('python3*/site-packages'))
    out = subprocess.run([str(prefix / 'bin' / 'swfp'), 'up', '--help'], capture_output=True, text=True, check=True,
                         env={**os.environ, 'PYTHONPATH': str(site)}).stdout
    assert 'real_arm' in out and 'sim_finetune' in out


def test_swfp_up_runs_the_executables_of_the_sourced_workspace(colcon_prefix, monkeypatch):
    """With the workspace sourced (its prefix in AMENT_PREFIX_PATH), `swfp up` starts the node executables that
    `ros2 launch` would: <prefix>/lib/swfp_ros/<node>, not this interpreter's console scripts."""
    from swfp_ros.ros.bringup import find_executable
    monkeypatch.setenv('AMENT_PREFIX_PATH', f'{colcon_prefix}{os.pathsep}{os.environ.get("AMENT_PREFIX_PATH", "")}')
    for name in NODES:
        assert find_executable(name) == [str(colcon_prefix / 'lib/swfp_ros' / name)]
    monkeypatch.delenv('AMENT_PREFIX_PATH')
    assert find_executable('policy_node') != [str(colcon_prefix / 'lib/swfp_ros/policy_node')]


def test_requirements_script_prints_what_setuptools_installs(tmp_path):
    """scripts/requirements.py (what a ROS user pip-installs before colcon build) lists exactly setup.py's
    install_requires, plus an extra's requirements when asked, as setuptools itself reads them."""
    subprocess.run([sys.executable, 'setup.py', '-q', 'egg_info', '--egg-base', str(tmp_path)], check=True, cwd=ROOT,
                   capture_output=True)
    sections, name, marker = {}, '', ''
    for line in (tmp_path / 'swfp_ros.egg-info' / 'requires.txt').read_text().splitlines():
        if line.startswith('['):                       # [extra], or [extra:marker] for requirements under a marker
            name, _, marker = line.strip('[]').partition(':')
        elif line.strip():
            sections.setdefault(name, []).append(line.strip() + (f'; {marker}' if marker else ''))
    from packaging.requirements import Requirement     # setuptools reorders a specifier set: compare parsed
    script = [sys.executable, str(ROOT / 'scripts' / 'requirements.py')]
    printed = lambda *a: sorted(str(Requirement(r)) for r in subprocess.run(  # noqa: E731
        [*script, *a], capture_output=True, text=True, check=True).stdout.splitlines())
    parsed = lambda lines: sorted(str(Requirement(r)) for r in lines)  # noqa: E731 - markers go last in requires.txt
    assert printed() == parsed(sections[''])
    assert printed('--extra', 'ros') == parsed(sections[''] + sections['ros'])
