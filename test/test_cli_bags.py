"""The rosbag CLI path end to end, each command a real subprocess of the venv's ``swfp``:

    swfp demos --bag (mcap, sqlite3) -> swfp inspect [--json] -> swfp ingest --spec -> swfp pretrain --bag --spec
    -> a checkpoint that load_policy loads;

and the failures a user meets first (a missing bag path, a corrupt bag, a spec naming a topic the bag lacks) exit
non-zero with a message naming the bag. Tiny episode and step counts, one torch thread: the file runs in well under a
minute on a 2-core machine (each ``swfp pretrain`` pays the torch import, ~4 s there).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from swfp_ros.data import DemoDataset

REPO = Path(__file__).resolve().parents[1]
SPEC = 'config/ingest_panda_reach.yaml'          # relative to REPO, as the README writes it
TOPICS = ('/clock', '/joint_states', '/swfp/action', '/swfp/episode', '/swfp/reward', '/swfp/task')
EPISODES = 3
_script = Path(sys.executable).with_name('swfp')
SWFP = [str(_script)] if _script.exists() else [sys.executable, '-m', 'swfp_ros.cli']
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


def swfp(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*SWFP, *map(str, args)], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f'{r.args} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}'
    return r


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """``swfp demos --bag`` once per storage: {storage: (bag dir, dataset .npz, the demos' JSON summary)}."""
    root = tmp_path_factory.mktemp('cli_bags')
    out = {}
    for storage in ('mcap', 'sqlite3'):
        bag, data = root / f'demo_{storage}', root / f'demo_{storage}.npz'
        r = ok(swfp('demos', '--task', 'panda_reach', '--episodes', EPISODES, '--noise', 0.3, '--epsilon', 0.05,
                    '--seed', 11, '--out', data, '--bag', bag, '--storage', storage))
        out[storage] = (bag, data, last_json(r.stdout))
    return out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_demos_write_a_real_bag(recorded, storage):
    bag, data, summary = recorded[storage]
    ext = {'mcap': '.mcap', 'sqlite3': '.db3'}[storage]
    assert (bag / 'metadata.yaml').is_file()
    assert [p.suffix for p in bag.iterdir() if p.name != 'metadata.yaml'] == [ext]
    ds = DemoDataset.load(data)
    assert summary['episodes'] == len(ds) == EPISODES and summary['steps'] == ds.num_steps
    # 5 messages per step (clock, joint_states, task, action, reward) and one /swfp/episode per episode
    assert summary['bag_messages'] == 5 * ds.num_steps + EPISODES


def _counts(recorded, storage) -> dict:
    steps = DemoDataset.load(recorded[storage][1]).num_steps
    return {t: EPISODES if t == '/swfp/episode' else steps for t in TOPICS}


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_inspect_table(recorded, storage):
    counts = _counts(recorded, storage)
    text = ok(swfp('inspect', recorded[storage][0])).stdout
    assert f'Storage:        {storage}' in text
    assert f'Messages:       {sum(counts.values())}' in text
    lines = [line for line in text.splitlines() if line.startswith('  /')]
    rows = {line.split()[0]: line.split() for line in lines}
    assert set(rows) == set(TOPICS)
    # a table: every row's type starts in one column, and its count ends in one
    assert len({line.index(' ' + rows[line.split()[0]][1]) for line in lines}) == 1
    assert len({line.index(' msgs') for line in lines}) == 1
    for topic, n in counts.items():
        assert rows[topic][2:4] == [str(n), 'msgs'], rows[topic]
    assert rows['/joint_states'][1] == 'sensor_msgs/msg/JointState'


def test_inspect_json_one_object_per_bag(recorded):
    lines = ok(swfp('inspect', '--json', recorded['mcap'][0], recorded['sqlite3'][0])).stdout.strip().splitlines()
    assert len(lines) == 2
    for storage, line in zip(('mcap', 'sqlite3'), lines):
        info, counts = json.loads(line), _counts(recorded, storage)
        assert info['storage_id'] == storage and info['format_version'] == 9
        assert info['message_count'] == sum(counts.values()) and info['duration_s'] > 0
        assert {t['topic']: t['count'] for t in info['topics']} == counts
        assert all(t['has_definition'] for t in info['topics'])


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_ingest_gives_back_the_demo_arrays(recorded, storage, tmp_path):
    bag, data, _ = recorded[storage]
    out = tmp_path / 'ingested.npz'
    r = ok(swfp('ingest', bag, '--spec', SPEC, '--out', out))
    assert 'OK' in r.stdout and str(out) in r.stdout
    got, want = DemoDataset.load(out), DemoDataset.load(data)
    assert len(got) == len(want) and got.num_steps == want.num_steps
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.obs, b.obs, atol=1e-5)
        np.testing.assert_allclose(a.actions, b.actions, atol=1e-5)
        np.testing.assert_allclose(a.rewards, b.rewards, atol=1e-5)
        assert a.success == b.success
    assert got.obs_labels[:1] == ['panda_joint1.position'] and got.obs_labels[-1] == 'goal_z'
    assert len(got.provenance) == 1 and got.provenance[0]['storage'] == storage
    assert got.provenance[0]['bag'] == str(bag.resolve())
    assert got.schema and got.schema['task'] == 'panda_reach'


def test_pretrain_from_bags_writes_a_loadable_checkpoint(recorded, tmp_path):
    from swfp_ros.algo.checkpoint import checkpoint_info, load_policy

    mcap_dir = recorded['mcap'][0]
    db3_file = recorded['sqlite3'][0] / 'demo_sqlite3.db3'   # a single storage file works as well as a directory
    ckpt = tmp_path / 'bc.pt'
    r = ok(swfp('pretrain', '--bag', mcap_dir, db3_file, '--spec', SPEC, '--steps', 20, '--batch', 32,
                '--hidden', 32, '--layers', 2, '--threads', 1, '--out', ckpt))
    metrics = last_json(r.stdout)
    steps = sum(DemoDataset.load(d).num_steps for _, d, _ in recorded.values())
    assert metrics['checkpoint'] == str(ckpt) and metrics['steps'] == 20 and metrics['samples'] == steps
    assert np.isfinite(metrics['final_loss'])

    runtime = load_policy(str(ckpt), device='cpu', seed=0)
    assert (runtime.obs_dim, runtime.act_dim) == (20, 7)
    obs = DemoDataset.load(recorded['mcap'][1]).stack()[0][:5]
    action = runtime.act(obs)
    assert action.shape == (5, 7) and np.all(np.abs(action) <= 1.0 + 1e-6)

    info = checkpoint_info(str(ckpt))
    assert info.task == 'panda_reach' and len(info.obs_labels) == 20
    assert sorted(p['storage'] for p in info.provenance) == ['mcap', 'sqlite3']

    text = ok(swfp('inspect', ckpt)).stdout               # what a user reads of a checkpoint, table and JSON
    assert 'Kind:           policy' in text and 'Task:           panda_reach' in text
    assert 'version 0, 0 refinement block(s)' in text and str(mcap_dir.resolve()) in text
    shown = json.loads(ok(swfp('inspect', '--json', ckpt)).stdout)
    assert (shown['kind'], shown['obs_dim'], shown['act_dim'], shown['policy_version']) == ('policy', 20, 7, 0)
    assert shown['obs_labels'] == info.obs_labels and shown['bc']['steps'] == 20


# ---------------------------------------------------------------------------------------------- failures

@pytest.fixture(scope='module')
def broken(recorded, tmp_path_factory):
    """A missing path, an MCAP bag cut inside its first chunk (nothing whole to read), a truncated sqlite3 bag, and
    a spec whose task topic is not recorded."""
    root = tmp_path_factory.mktemp('cli_broken')
    cases = {'missing': root / 'no_such_bag'}
    for storage in ('mcap', 'sqlite3'):
        src = recorded[storage][0]
        dst = shutil.copytree(src, root / f'corrupt_{storage}')
        f = next(p for p in dst.iterdir() if p.name != 'metadata.yaml')
        f.write_bytes(f.read_bytes()[:60 if storage == 'mcap' else f.stat().st_size // 2])
        cases[f'corrupt_{storage}'] = dst
    spec = root / 'spec_missing_topic.yaml'
    spec.write_text((REPO / SPEC).read_text().replace('topic: /swfp/task', 'topic: /camera/ee_state'))
    return cases, spec


def _assert_clear_failure(r: subprocess.CompletedProcess, *needles) -> None:
    assert r.returncode != 0, f'{r.args} succeeded:\n{r.stdout}\n{r.stderr}'
    err = r.stderr
    for n in needles:
        assert str(n) in err, f'{n!r} not in the error output of {r.args}:\n{err}'


WHY = {'missing': 'no such rosbag2 bag', 'corrupt_mcap': 'truncated or corrupt', 'corrupt_sqlite3': 'truncated or corrupt'}


@pytest.mark.parametrize('command', ['inspect', 'ingest'])
def test_missing_and_corrupt_bags_fail_naming_each_bag(broken, command, tmp_path):
    """One call with the three bad bags: each is reported by name with its reason, no traceback, exit 1."""
    bags = broken[0]
    extra = ('--spec', SPEC, '--out', tmp_path / 'x.npz') if command == 'ingest' else ()
    r = swfp(command, *bags.values(), *extra)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    for case, bag in bags.items():
        assert any(str(bag) in line and WHY[case] in line for line in lines), f'{case}: {bag} not reported:\n{r.stderr}'
    assert not (tmp_path / 'x.npz').exists()


def test_ingest_spec_with_a_missing_topic_names_bag_topic_and_spec_key(recorded, broken, tmp_path):
    bag = recorded['mcap'][0]
    r = swfp('ingest', bag, '--spec', broken[1], '--out', tmp_path / 'x.npz')
    _assert_clear_failure(r, bag, "'/camera/ee_state'", 'observation[2]', 'is not in the bag')
    assert 'Traceback' not in r.stderr


def test_ingest_of_several_bags_keeps_the_good_ones(recorded, broken, tmp_path):
    good, bad = recorded['mcap'][0], broken[0]['corrupt_sqlite3']
    out = tmp_path / 'partial.npz'
    r = swfp('ingest', good, bad, '--spec', SPEC, '--out', out)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)     # 2: some bags failed, the rest was written
    assert 'ingested 1/2 bag(s)' in r.stdout and 'FAIL' in r.stdout and str(bad) in r.stdout
    assert len(DemoDataset.load(out)) == EPISODES


@pytest.fixture(scope='module')
def pretrain_failures(recorded, broken, tmp_path_factory):
    """``swfp pretrain --bag`` on (a) a missing path and a corrupt bag together, (b) a spec naming a topic the bag
    lacks; each run pays the torch import, so they run concurrently. {case: (process, checkpoint, expected texts)}."""
    bags, bad_spec = broken
    root = tmp_path_factory.mktemp('cli_pretrain_fail')
    cases = {'missing_and_corrupt': ([bags['missing'], bags['corrupt_mcap']], SPEC,
                                     [bags['missing'], WHY['missing'], bags['corrupt_mcap'], WHY['corrupt_mcap']]),
             'missing_topic': ([recorded['mcap'][0]], bad_spec,
                               [recorded['mcap'][0], "'/camera/ee_state'", 'is not in the bag'])}
    procs = {}
    for case, (bag_list, spec, _) in cases.items():
        ckpt = root / f'{case}.pt'
        args = [*SWFP, 'pretrain', '--bag', *map(str, bag_list), '--spec', str(spec), '--steps', '2',
                '--threads', '1', '--out', str(ckpt)]
        procs[case] = (ckpt, subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
    out = {}
    for case, (ckpt, p) in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[case] = (subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr), ckpt, cases[case][2])
    return out


@pytest.mark.parametrize('case', ['missing_and_corrupt', 'missing_topic'])
def test_pretrain_from_bad_bags_fails_naming_the_bag(pretrain_failures, case):
    r, ckpt, needles = pretrain_failures[case]
    _assert_clear_failure(r, *needles)
    assert not ckpt.exists()


def test_pretrain_bag_errors_are_messages_not_tracebacks(pretrain_failures):
    for r, _ckpt, _ in pretrain_failures.values():
        assert 'Traceback' not in r.stderr, r.stderr


def test_a_bag_warning_is_printed_once_as_a_report_line(recorded, tmp_path):
    """metadata.yaml off by 5 messages: ingest falls back to the storage files and says so once, in its report (no
    raw Python warning line); pretrain --bag says it once on stderr."""
    import yaml

    bag = Path(shutil.copytree(recorded['mcap'][0], tmp_path / 'miscounted'))
    meta = yaml.safe_load((bag / 'metadata.yaml').read_text())
    meta['rosbag2_bagfile_information']['message_count'] += 5
    (bag / 'metadata.yaml').write_text(yaml.safe_dump(meta))
    r = ok(swfp('ingest', bag, '--spec', SPEC, '--out', tmp_path / 'x.npz'))
    assert (r.stdout + r.stderr).count('metadata.yaml says') == 1 and 'BagWarning' not in r.stdout + r.stderr
    assert 'warning:' in r.stdout
    r = ok(swfp('pretrain', '--bag', bag, '--spec', SPEC, '--steps', 1, '--hidden', 16, '--layers', 1,
                '--out', tmp_path / 'bc.pt'))
    lines = [line for line in r.stderr.splitlines() if 'metadata.yaml says' in line]
    assert len(lines) == 1 and lines[0].startswith('swfp pretrain: warning:') and 'BagWarning' not in r.stderr


def test_demos_into_the_default_folder_of_a_fresh_checkout(tmp_path):
    """outputs/ is the one folder swfp creates; the bag is staged beside its place and moved in whole."""
    r = subprocess.run([*SWFP, 'demos', '--episodes', '1', '--out', 'outputs/d.npz', '--bag', 'outputs/b'],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / 'outputs')) == ['b', 'd.npz'] and (tmp_path / 'outputs/b/metadata.yaml').is_file()
