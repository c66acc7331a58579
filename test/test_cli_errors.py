"""Every mistake a user can make on the command line ends in ONE line naming what is wrong and what to do, a non-zero
exit and no traceback, and destroys nothing: each case below is a real `swfp` subprocess.

The README's error table shows each case's whole message, checked here row by row; with SWFP_CLI_ERROR_TABLE=FILE
the cases append their rows to FILE instead, to regenerate the table after a message changes.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_script = Path(sys.executable).with_name('swfp')
SWFP = [str(_script)] if _script.exists() else [sys.executable, '-m', 'swfp_ros.cli']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
REACH_SPEC = REPO / 'config' / 'ingest_panda_reach.yaml'
PUSH_SPEC = REPO / 'config' / 'ingest_panda_push.yaml'
README_ROWS = set((REPO / 'README.md').read_text().splitlines())


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    """A folder with what the cases need: a reach BC checkpoint, a dataset, a bag, and broken or hostile files."""
    from swfp_ros.algo.config import FlowConfig
    from swfp_ros.data import write_demo_bag
    from swfp_ros.sim import make_env
    from swfp_ros.train.demos import collect_demos
    from swfp_ros.train.pretrain import pretrain

    root = tmp_path_factory.mktemp('cli_errors')
    dataset, records = collect_demos('panda_reach', 2, 0.3, 0.05, seed=3)
    dataset.save(root / 'reach.npz')
    base = make_env('panda_reach').unwrapped
    write_demo_bag(root / 'reach_bag', records, joint_names=base.joint_names, task_labels=base.task_labels,
                   control_rate_hz=base.control_rate_hz)
    pretrain(dataset, root / 'reach_bc.pt', FlowConfig(hidden=16, layers=1), steps=2, progress=False)
    data = (root / 'reach_bc.pt').read_bytes()
    (root / 'truncated.pt').write_bytes(data[:len(data) // 2])
    (root / 'garbage.pt').write_bytes(b'\x00' * 64)
    torch.save({'format': 'swfp-checkpoint', 'x': _Evil(root / 'PWNED')}, root / 'evil.pt')   # torch.load runs it
    np.savez(root / 'foreign.npz', x=np.zeros(3))
    (root / 'existing.npz').write_bytes(b'an earlier output')
    (root / 'existing_bag').mkdir()
    (root / 'a_folder.npz').mkdir()
    (root / 'spec_invalid.yaml').write_text('task: [unclosed\n')
    (root / 'spec_unknown_key.yaml').write_text(REACH_SPEC.read_text() + 'colour: blue\n')
    (root / 'spec_missing_key.yaml').write_text(REACH_SPEC.read_text().replace('control_rate_hz: 20.0\n', ''))
    return root


# (id, arguments, exit status, a piece of the message); {root} is the fixture folder, {repo} the checkout
CASES = [
    ('no command', [], 2, 'the following arguments are required: COMMAND'),
    ('unknown command', ['train'], 2, "invalid choice: 'train'"),
    ('unknown task', ['eval', '--task', 'panda_fly'], 2, "argument --task: invalid choice: 'panda_fly'"),
    ('missing checkpoint', ['eval', '--policy', 'missing.pt'], 1, 'checkpoint missing.pt: no such file'),
    ('corrupt checkpoint', ['eval', '--policy', 'garbage.pt'], 1, 'not an SWFP checkpoint'),
    ('truncated checkpoint', ['eval', '--policy', 'truncated.pt'], 1, 'unreadable (truncated or corrupt?)'),
    ('pickle checkpoint (runs code)', ['eval', '--policy', 'evil.pt'], 1, 'a pickle (torch.save) file, refused unread'),
    ('a dataset given as checkpoint', ['eval', '--policy', 'reach.npz'], 1, 'a zip archive (a .npz dataset?)'),
    ('checkpoint of another task', ['eval', '--task', 'panda_push', '--policy', 'reach_bc.pt'], 1,
     'is for task panda_reach, not panda_push'),
    ('inspect a pickle', ['inspect', 'evil.pt'], 1, 'refused unread'),
    ('--episodes 0', ['eval', '--episodes', '0'], 2, 'argument --episodes: must be >= 1, got 0'),
    ('--threads 0', ['eval', '--threads', '0'], 2, 'argument --threads: must be >= 1, got 0'),
    ('--seed -1', ['eval', '--seed', '-1'], 2, 'argument --seed: must be >= 0'),
    ('--epsilon 1.5', ['eval', '--epsilon', '1.5'], 2, 'argument --epsilon: must be in [0, 1]'),
    ('--noise nan', ['eval', '--noise', 'nan'], 2, 'argument --noise: must be finite'),
    ('--device cuda on a CPU build', ['eval', '--device', 'cuda'], 2, 'no CUDA device is usable'),
    ('--device tpu', ['eval', '--device', 'tpu'], 2, 'expected cpu, cuda, cuda:N or auto'),
    ('--env-steps 0', ['finetune', '--bc', 'reach_bc.pt', '--env-steps', '0'], 2, '--env-steps: must be >= 1'),
    ('--env-steps -5', ['finetune', '--bc', 'reach_bc.pt', '--env-steps', '-5'], 2, '--env-steps: must be >= 1'),
    ('--eval-every 0', ['finetune', '--bc', 'reach_bc.pt', '--eval-every', '0'], 2, '--eval-every: must be >= 1'),
    ('--eval-episodes 0', ['finetune', '--bc', 'reach_bc.pt', '--eval-episodes', '0'], 2,
     '--eval-episodes: must be >= 1'),
    ('--num-envs 0', ['finetune', '--bc', 'reach_bc.pt', '--num-envs', '0'], 2, '--num-envs: must be >= 1'),
    ('--set unknown key', ['finetune', '--bc', 'reach_bc.pt', '--set', 'block.deltaa=0.2'], 1,
     '--set block.deltaa=0.2: unknown setting (did you mean block.delta?'),
    ('--set not a number', ['finetune', '--bc', 'reach_bc.pt', '--set', 'block.delta=abc'], 1,
     "--set block.delta=abc: expected a number, got 'abc'"),
    ('--set float for an int', ['finetune', '--bc', 'reach_bc.pt', '--set', 'warmup_steps=1.5'], 1,
     '--set warmup_steps=1.5: expected an integer, got 1.5'),
    ('--set out of range', ['finetune', '--bc', 'reach_bc.pt', '--set', 'critic.gamma=1.5'], 1,
     '--set critic.gamma=1.5: must be in (0, 1), got 1.5'),
    ('--set without =', ['finetune', '--bc', 'reach_bc.pt', '--set', 'utd'], 1, '--set utd: expected KEY=VALUE'),
    ('--config without swfp:', ['finetune', '--bc', 'reach_bc.pt', '--config', '{repo}/config/policy.yaml'], 1,
     'no swfp: section under ros__parameters'),
    ('--config missing', ['finetune', '--bc', 'reach_bc.pt', '--config', 'nope.yaml'], 1, 'nope.yaml: no such file'),
    ('finetune: checkpoint of another task', ['finetune', '--bc', 'reach_bc.pt', '--task', 'panda_push',
                                              '--out', 'new_run'], 1, 'is for task panda_reach, not panda_push'),
    ('finetune: foreign --demos', ['finetune', '--bc', 'reach_bc.pt', '--demos', 'foreign.npz', '--out', 'new_run'],
     1, 'not a valid swfp_demo_dataset file'),
    ('pretrain --steps 0', ['pretrain', '--data', 'reach.npz', '--steps', '0'], 2, '--steps: must be >= 1'),
    ('pretrain --lr 0', ['pretrain', '--data', 'reach.npz', '--lr', '0'], 2, '--lr: must be > 0'),
    ('pretrain: foreign dataset', ['pretrain', '--data', 'foreign.npz', '--out', 'bc.pt'], 1,
     'not a valid swfp_demo_dataset file'),
    ('pretrain: missing dataset', ['pretrain', '--data', 'nope.npz', '--out', 'bc.pt'], 1,
     'nope.npz: no such dataset file'),
    ('pretrain: --data and --bag', ['pretrain', '--data', 'reach.npz', '--bag', 'reach_bag', '--out', 'bc.pt'], 2,
     'give --data or --bag, not both'),
    ('output folder missing', ['pretrain', '--data', 'reach.npz', '--out', 'no_such_dir/bc.pt'], 1,
     'folder no_such_dir does not exist; create it first'),
    ('output under a file', ['pretrain', '--data', 'reach.npz', '--out', 'reach.npz/bc.pt'], 1,
     'reach.npz is not a folder'),
    ('output is a folder', ['ingest', 'reach_bag', '--spec', str(REACH_SPEC), '--out', 'a_folder.npz'], 1,
     'is a folder; give a file path'),
    ('output not writable', ['pretrain', '--data', 'reach.npz', '--out', '/proc/bc.pt'], 1,
     'cannot write in /proc'),
    ('demos onto an existing bag', ['demos', '--episodes', '1', '--out', 'existing.npz', '--bag', 'existing_bag'], 1,
     '--bag existing_bag: already exists'),
    ('ingest: spec missing', ['ingest', 'reach_bag', '--spec', 'nope.yaml', '--out', 'x.npz'], 1,
     'ingest spec nope.yaml: no such file'),
    ('ingest: spec invalid YAML', ['ingest', 'reach_bag', '--spec', 'spec_invalid.yaml', '--out', 'x.npz'], 1,
     'invalid YAML'),
    ('ingest: spec unknown key', ['ingest', 'reach_bag', '--spec', 'spec_unknown_key.yaml', '--out', 'x.npz'], 1,
     "unknown top-level key(s) ['colour']"),
    ('ingest: spec missing key', ['ingest', 'reach_bag', '--spec', 'spec_missing_key.yaml', '--out', 'x.npz'], 1,
     'control_rate_hz is required'),
    ('ingest: spec of another task', ['ingest', 'reach_bag', '--spec', str(PUSH_SPEC), '--out', 'x.npz'], 1,
     "differ from task panda_push's 34 (lacks ['obj_x', 'obj_y', 'obj_z'] and 11 more)"),
    ('ingest: missing bag', ['ingest', 'no_bag', '--spec', str(REACH_SPEC), '--out', 'x.npz'], 1,
     'no_bag: no such rosbag2 bag'),
    ('ingest: --out in a missing folder', ['ingest', 'reach_bag', '--spec', str(REACH_SPEC), '--out',
                                           '/nonexistent_dir/x.npz'], 1, 'folder /nonexistent_dir does not exist'),
    ('up: not name:=value', ['up', 'sim_finetune', 'bogus', '--print'], 2, "expected name:=value, got 'bogus'"),
    ('up: misspelt argument', ['up', 'sim_finetune', 'chekpoint:=bc.pt', '--print'], 2,
     'has no argument(s) chekpoint (did you mean checkpoint:=?)'),
    ('up: bool argument', ['up', 'sim_finetune', 'record_bag:=maybe', '--print'], 2,
     "argument record_bag:='maybe': expected true or false"),
    ('up: int argument', ['up', 'sim_finetune', 'seed:=one', '--print'], 2, "argument seed:='one': expected int"),
    ('up: argument of a choice', ['up', 'sim_finetune', 'task:=panda_fly', '--print'], 2,
     "argument task:='panda_fly': expected one of panda_reach, panda_push"),
    ('up: config folder without the files', ['up', 'sim_finetune', 'config:=.', '--print'], 2,
     'config:=.: no parameter file sim_bridge.yaml there'),
    ('up: goal not in triples', ['up', 'real_arm', 'goal:=0.5,0.1', '--print'], 2,
     "goal list '0.5,0.1': expected x,y,z triples separated by ; (metres)"),
]


def _snapshot(root: Path) -> dict:
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in root.iterdir()}


@pytest.fixture(scope='module')
def results(work):
    """Every case run once, four at a time (most pay the torch import); {case name: (completed process, args)}."""
    from concurrent.futures import ThreadPoolExecutor

    before = _snapshot(work)

    def run(case):
        args = [a.format(root=work, repo=REPO) for a in case[1]]
        return case[0], (subprocess.run([*SWFP, *args], cwd=work, env=ENV, capture_output=True, text=True,
                                        timeout=300), args)
    with ThreadPoolExecutor(4) as pool:
        done = dict(pool.map(run, CASES))
    return done, before, _snapshot(work)


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_one_line_error(results, work, case):
    name, _, code, needle = case
    r, args = results[0][name]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1, f'expected one line, got:\n{r.stderr}'
    assert lines[0].startswith('swfp') and 'Traceback' not in r.stderr and 'internal error' not in r.stderr
    assert needle in lines[0], lines[0]
    shown = ' '.join(a if a and ' ' not in a else repr(a) for a in args).replace(str(REPO) + '/', '')
    cell = lines[0].replace('|', '\\|').replace(str(work) + '/', '').replace(str(REPO) + '/', '')
    row = f'| {name} | `swfp {shown}` | {r.returncode} | {cell} |'
    if os.environ.get('SWFP_CLI_ERROR_TABLE'):
        with open(os.environ['SWFP_CLI_ERROR_TABLE'], 'a') as f:
            f.write(row + '\n')
    else:
        assert row in README_ROWS, f'the README\'s error table lacks this row (regenerate it, see the docstring):\n{row}'


def test_failed_commands_destroyed_nothing(results):
    """After all the failures: every earlier file byte for byte as it was, no new file or folder (no output, no
    temporary file, no empty run folder), and no code from the pickle ran."""
    _, before, after = results
    assert after == before, sorted(k for k in set(after) | set(before) if after.get(k, 0) != before.get(k, 0))
    assert not Path('/nonexistent_dir').exists()


def test_debug_shows_the_traceback(work):
    r = subprocess.run([*SWFP, 'eval', '--policy', 'garbage.pt', '--debug'], cwd=work, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and 'Traceback' in r.stderr and 'CheckpointError' in r.stderr


def test_ctrl_c_during_finetune_exits_130_and_keeps_a_whole_checkpoint(work, tmp_path):
    """SIGINT once the run has written its first checkpoint and curve row: one line, exit 130, learner.pt loads,
    curve.csv holds only whole rows, no temporary file is left; the same command then resumes."""
    from swfp_ros.algo.checkpoint import load_learner

    out = tmp_path / 'run'
    args = [*SWFP, 'finetune', '--bc', str(work / 'reach_bc.pt'), '--out', str(out), '--env-steps', '100000',
            '--num-envs', '2', '--eval-every', '200', '--eval-episodes', '2', '--set', 'warmup_steps=100',
            '--set', 'critic.batch_size=32', '--set', 'block.train_steps=5', '--set', 'steps_per_block=100']
    # SIGINT at its default in the child whatever this test runner inherited (a shell without job control starts
    # background jobs with SIGINT ignored, and Python then installs no KeyboardInterrupt handler).
    p = subprocess.Popen(args, cwd=work, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # the first checkpoint can be written before the first evaluation row: wait for both, the things checked below
    written = lambda: (out / 'learner.pt').is_file() and (out / 'curve.csv').is_file()  # noqa: E731
    deadline = time.monotonic() + 120
    while not written() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert written(), p.communicate(timeout=5)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    lines = stderr.strip().splitlines()
    assert p.returncode == 130, (stdout, stderr)
    assert lines[0] == 'swfp finetune: stopping after the current step (interrupt again to stop at once)', stderr
    assert len(lines) == 2 and lines[1].startswith('swfp finetune: interrupted;') and 'Traceback' not in stderr
    assert 'rerun the same command to resume' in lines[1]
    learner = load_learner(str(out / 'learner.pt'))
    assert f'holds the run at {learner.counters.env_steps} env steps' in lines[1]
    rows = (out / 'curve.csv').read_text().splitlines()
    assert all(len(row.split(',')) == len(rows[0].split(',')) for row in rows)
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]
    shutil.rmtree(out)


STOP_BETWEEN_STEPS = """
import sys, time
from swfp_ros.cli import _stop_between_steps
try:
    with _stop_between_steps('swfp finetune') as should_stop:
        print('ready', flush=True)
        while not (should_stop() and sys.argv[1] == 'polls'):
            time.sleep(0.01)          # a step that a KeyboardInterrupt would cut short
    print('stopped between steps', flush=True)
except KeyboardInterrupt:
    print('stopped at once', flush=True)
    sys.exit(130)
"""


def _stop_between_steps_child(polls: str) -> subprocess.Popen:
    """STOP_BETWEEN_STEPS in a child, killed after 60 s so that a read of its output cannot wait forever."""
    p = subprocess.Popen([sys.executable, '-c', STOP_BETWEEN_STEPS, polls], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, p.kill)
    watchdog.daemon = True
    watchdog.start()
    return p


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_is_honoured_between_steps(sig):
    """The training commands' signal handling: the first SIGINT or SIGTERM only requests the stop (no
    KeyboardInterrupt inside whatever the main thread is doing), which the loop takes at its next poll."""
    p = _stop_between_steps_child('polls')
    assert p.stdout.readline() == 'ready\n'
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0 and stdout == 'stopped between steps\n', (stdout, stderr)
    assert stderr == 'swfp finetune: stopping after the current step (interrupt again to stop at once)\n'


def test_a_second_stop_signal_ends_the_process_at_once():
    p = _stop_between_steps_child('never polls')
    assert p.stdout.readline() == 'ready\n'
    p.send_signal(signal.SIGINT)
    assert p.stderr.readline() == 'swfp finetune: stopping after the current step (interrupt again to stop at once)\n'
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130 and stdout == 'stopped at once\n' and stderr == '', (stdout, stderr)
