"""The CLI as a user meets it: every option of every subcommand explained with its default in --help, `swfp eval`
taking the task from the checkpoint and acting deterministically on request."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from swfp_ros import cli

_script = Path(sys.executable).with_name('swfp')
SWFP = [str(_script)] if _script.exists() else [sys.executable, '-m', 'swfp_ros.cli']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in action.choices.items() if name != 'up'}   # up: swfp_ros.ros.bringup's parser


def test_help_explains_every_option_with_its_default():
    for name, parser in subcommands().items():
        text = ' '.join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or action.dest == 'help':
                continue
            assert action.help, f'swfp {name} {action.option_strings[0]} has no help'
            default = action.default
            if default is None or default is False or default == [] or default is argparse.SUPPRESS:
                continue
            assert f'{" ".join(action.help.split())} (default: {default})' in text, \
                f'swfp {name} --help does not show the default of {action.option_strings[0]} ({default})'
    out = subprocess.run(SWFP + ['finetune', '--help'], capture_output=True, text=True, env=ENV, timeout=60).stdout
    assert '(default: 20000)' in out and '(default: 40)' in out
    out = subprocess.run(SWFP + ['demos', '--help'], capture_output=True, text=True, env=ENV, timeout=60).stdout
    assert 'noise sigma of the expert (default: 0.5)' in ' '.join(out.split())


@pytest.fixture(scope='module')
def push_bc(tmp_path_factory):
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.train.demos import collect_demos
    from swfp_ros.train.pretrain import pretrain
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp('cli_surface')
    dataset, _ = collect_demos('panda_push', 2, 0.3, 0.05, seed=3, progress=False)
    pretrain(dataset, root / 'push_bc.pt', FlowConfig(hidden=16, layers=1), steps=2, progress=False)
    return root / 'push_bc.pt'


def test_eval_takes_the_task_from_the_checkpoint_and_acts_deterministically(push_bc):
    # no --task: the checkpoint's own (panda_push), where the old default (panda_reach) would refuse it
    r = subprocess.run(SWFP + ['eval', '--policy', str(push_bc), '--episodes', '1', '--deterministic'],
                       capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f'panda_push / {push_bc} (deterministic): success')
    assert json.loads(r.stdout.splitlines()[-1])['episodes'] == 1
    # the flag reaches the policy: the same observation, the same action only when deterministic
    from swfp_ros.sim import make_env
    env = make_env('panda_push')
    obs, _ = env.reset(seed=0)
    for flag, same in ((['--deterministic'], True), ([], False)):
        args = cli.build_parser().parse_args(['eval', '--policy', str(push_bc), *flag])
        args.task = cli._policy_task(args)
        policy = cli._make_policy(env, args)
        assert np.array_equal(policy(obs), policy(obs)) == same
    r = subprocess.run(SWFP + ['eval', '--deterministic'], capture_output=True, text=True, env=ENV, timeout=60)
    assert r.returncode == 2 and '--deterministic applies to checkpoint policies' in r.stderr


def write_paused_bag(path: Path, start_ns: int) -> Path:
    """/x at 20 Hz: 20 messages, a 10 s pause, 20 more (count / span would read 3.6 Hz)."""
    from rosbags.typesys.stores.ros2_kilted import std_msgs__msg__Float64MultiArray as F64, \
        std_msgs__msg__MultiArrayLayout as Layout
    from swfp_ros.data.bag_writer import BagRecorder
    msg = F64(layout=Layout(dim=[], data_offset=0), data=np.zeros(2))
    with BagRecorder(path) as rec:
        for i in range(40):
            t = start_ns + int(i * 0.05e9) + (10 * 10**9 if i >= 20 else 0)
            rec.write('/x', 'std_msgs/msg/Float64MultiArray', msg, t)
    return path


def _cuda_devices(monkeypatch, count: int) -> None:
    """A CUDA torch with ``count`` devices stood in (this machine has none)."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: count)


@pytest.mark.parametrize('device,devices', [('cuda', 1), ('cuda:1', 2)])
def test_device_takes_a_cuda_device_this_machine_has(monkeypatch, device, devices):
    _cuda_devices(monkeypatch, devices)
    assert cli.build_parser().parse_args(['eval', '--device', device]).device == device


@pytest.mark.parametrize('device,devices', [('cuda:1', 1), ('cuda:0', 0)])
def test_device_refuses_a_cuda_device_this_machine_lacks(monkeypatch, device, devices):
    _cuda_devices(monkeypatch, devices)
    with pytest.raises(cli.CliError, match=re.escape(f'argument --device: {device}: this machine has {devices} CUDA '
                                                     'device(s)')):
        cli.build_parser().parse_args(['eval', '--device', device])


def test_a_dataset_path_without_npz_gets_it_before_any_check(tmp_path, capsys):
    """numpy appends .npz when it saves: the path checked and reported is the one written."""
    (tmp_path / 'taken.npz').mkdir()
    assert cli.main(['demos', '--episodes', '1', '--out', str(tmp_path / 'taken')]) == 1
    assert f"--out {tmp_path / 'taken'}: is a folder; give a file path" in capsys.readouterr().err
    assert cli.main(['demos', '--episodes', '1', '--out', str(tmp_path / 'demos')]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary['dataset'] == str(tmp_path / 'demos.npz') and (tmp_path / 'demos.npz').is_file()


def test_inspect_rate_ignores_pauses_and_sim_time_is_not_a_date(tmp_path):
    sim = write_paused_bag(tmp_path / 'sim_bag', start_ns=2 * 10**9)
    wall = write_paused_bag(tmp_path / 'wall_bag', start_ns=1_790_000_000 * 10**9)
    r = subprocess.run(SWFP + ['inspect', str(sim), str(wall)], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    sim_text, wall_text = r.stdout.split('Bag:')[1:]
    for text in (sim_text, wall_text):
        assert 'rate = 1 / median interval between messages' in text
        assert re.search(r'/x\s+std_msgs/msg/Float64MultiArray\s+40 msgs\s+20\.00 Hz', text), text
    for text in (sim_text, wall_text):
        assert 'Duration:       11.950 s' in text     # the first message to the last, pauses included
    assert 'Clock:          simulation time (use_sim_time)' in sim_text
    assert 'Start:          2.000 s of simulation time' in sim_text and '1970' not in sim_text
    assert 'End:            13.950 s of simulation time' in sim_text
    assert 'Clock:          wall clock' in wall_text
    assert 'Start:          2026-09-21 14:13:20.000 UTC (1790000000.000)' in wall_text
    assert 'End:            2026-09-21 14:13:31.950 UTC (1790000011.950)' in wall_text
    r = subprocess.run(SWFP + ['inspect', '--json', str(sim)], capture_output=True, text=True, env=ENV, timeout=120)
    summary = json.loads(r.stdout)
    assert summary['clock'] == 'sim' and summary['topics'][0]['rate_hz'] == pytest.approx(20.0)


def test_finetune_refuses_run_folder_options_a_baseline_ignores(push_bc, tmp_path, capsys):
    out = tmp_path / 'run'
    assert cli.main(['finetune', '--bc', str(push_bc), '--task', 'panda_push', '--method', 'dsrl', '--gif-every', '1',
                     '--out', str(out)]) == 2
    assert '--keep-every and --gif-every apply to --method swfp or naive, not dsrl' in capsys.readouterr().err
    assert not out.exists()
