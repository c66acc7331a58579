"""`swfp`: the command line for the offline work (demos, rosbags, BC, fine-tuning, evaluation, bring-up).

Every subcommand prints a human summary; those that measure something end with one JSON line on stdout.
Heavy imports (torch, mujoco, rclpy) happen inside the subcommands so `swfp --help` stays instant.

Errors: anything a user can get wrong (an argument out of range, a missing, corrupt or foreign file, a checkpoint or
dataset of another task, an unwritable output) prints one line `swfp COMMAND: what is wrong; what to do` on stderr
and exits 2 (invalid arguments), 1 (anything else) or 130 (Ctrl-C); `--debug` shows the Python traceback instead.
Arguments and inputs are checked before any output is written, outputs are written atomically, and a failed command
leaves earlier outputs as they were and no empty folder behind.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile
import warnings
from pathlib import Path

TASK_CHOICES = ('panda_reach', 'panda_push', 'cube_single')
GRAPH_TASK_CHOICES = ('panda_reach', 'panda_push')   # sim_finetune's tasks (joint targets; swfp_ros.sim.BRIDGE_TASKS)
PEER_METHODS = ('dsrl', 'residual')   # swfp_ros.train.peers (imported lazily: SB3 is an extra)
DEFAULT_OUTPUT_DIR = Path('outputs')   # created when missing; any other missing output folder is an error


class CliError(Exception):
    """A one-line error for the user; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1, prog: str | None = None):
        super().__init__(message)
        self.message, self.code, self.prog = message, code, prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise CliError(f'{message} (see {self.prog} --help)', code=2, prog=self.prog)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (unset, a flag off)."""

    def _get_help_string(self, action):
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or default == [] or \
                '(default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


# --- argument types: ranges are checked while parsing --------------------------------------------------------------
def _integer(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f'must be >= {minimum}, got {value}')
        return value
    return parse


def _real(minimum: float | None = None, maximum: float | None = None, above: float | None = None):
    """A finite float within [minimum, maximum], or strictly above ``above``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
        if value != value or value in (float('inf'), float('-inf')):
            raise argparse.ArgumentTypeError(f'must be finite, got {text}')
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f'must be > {above:g}, got {value:g}')
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f'in [{minimum:g}, {maximum:g}]' if maximum is not None else f'>= {minimum:g}'
            raise argparse.ArgumentTypeError(f'must be {bounds}, got {value:g}')
        return value
    return parse


def _device(text: str) -> str:
    """cpu | auto | cuda | cuda:N, where a CUDA device must exist in this torch build."""
    if text in ('cpu', 'auto'):
        return text
    if not re.fullmatch(r'cuda(:\d+)?', text):
        raise argparse.ArgumentTypeError(f'expected cpu, cuda, cuda:N or auto, got {text!r}')
    import torch
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f'{text}: no CUDA device is usable with this torch build '
                                         f'({torch.__version__}); use --device cpu (or auto)')
    index = int(text.partition(':')[2] or 0)
    if index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f'{text}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return text


# --- outputs: checked before any work, cleaned up after a failure ------------------------------------------------
def _output_parent(args, parent: Path, option: str, path) -> None:
    """``parent`` can take a new file: it exists and is writable, or it is the default output folder (created)."""
    if not parent.exists():
        if parent.resolve() != DEFAULT_OUTPUT_DIR.resolve():
            raise CliError(f'{option} {path}: folder {parent} does not exist; create it first (mkdir -p {parent})')
        args.new_dirs.append(parent)
        return
    if not parent.is_dir():
        raise CliError(f'{option} {path}: {parent} is not a folder')
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise CliError(f'{option} {path}: cannot write in {parent} ({e.strerror})') from None


def _output_file(args, path: str, option: str = '--out', suffix: str | None = None) -> Path:
    """A file the command will (over)write, with ``suffix`` appended if missing."""
    p = Path(path)
    if suffix and p.suffix != suffix:
        p = p.with_name(p.name + suffix)
    if p.is_dir():
        raise CliError(f'{option} {path}: is a folder; give a file path')
    _output_parent(args, p.parent, option, path)
    return p


def _output_dir(args, path: str, option: str = '--out', new: bool = False) -> Path:
    """A folder the command writes into (``new``: one it creates, so it must not exist yet)."""
    p = Path(path)
    if p.exists():
        if new:
            raise CliError(f'{option} {path}: already exists; give a new path (or remove it)')
        if not p.is_dir():
            raise CliError(f'{option} {path}: is a file, not a folder')
        _output_parent(args, p, option, path)
        return p
    _output_parent(args, p.parent, option, path)
    args.new_dirs.append(p)
    return p


def _remove_new_empty_dirs(args) -> None:
    """After a failure: the folders this command would have created and that are still empty go away again."""
    for d in reversed(getattr(args, 'new_dirs', [])):
        try:
            d.rmdir()     # only ever removes an empty folder
        except OSError:
            pass


# --- task checks ------------------------------------------------------------------------------------------------
def _check_fits_task(what: str, task: str, task_labels, their_task, their_labels, their_obs_dim: int,
                     hint: str) -> None:
    from .train.task_check import observation_mismatch
    problem = observation_mismatch(what, task, task_labels, their_task, their_labels, their_obs_dim, hint)
    if problem:
        raise CliError(problem)


def _checked_policy_info(path: str, task: str, task_labels, act_dim: int):
    """The checkpoint's recorded info after checking it fits ``task`` (observations, and actions or chunks)."""
    from .algo.checkpoint import checkpoint_info
    info = checkpoint_info(path)
    _check_fits_task(f'checkpoint {path}', task, task_labels, info.task, info.obs_labels, info.obs_dim,
                     f'use --task {info.task}, or a checkpoint trained on {task}' if info.task in TASK_CHOICES
                     else f'use a checkpoint trained on {task}')
    if info.act_dim % act_dim:
        raise CliError(f'checkpoint {path} outputs {info.act_dim} action values, task {task} takes chunks of '
                       f'{act_dim}')
    return info


def _check_dataset_task(ds, what: str) -> None:
    """A dataset for one of the simulated tasks observes exactly what that task observes."""
    if ds.task in TASK_CHOICES:
        from .train.task_check import task_spaces
        _check_fits_task(what, ds.task, task_spaces(ds.task)[0], None, ds.obs_labels, ds.obs_dim,
                         f'use a spec that matches what the bags record (config/ingest_{ds.task}.yaml reads '
                         f'{ds.task} bags), or give the spec a task name of your own')


# --- commands -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _stop_between_steps(prog: str):
    """SIGINT / SIGTERM while a training command runs: the first only requests a stop, which its loop honours between
    steps (``should_stop``, yielded here) by raising KeyboardInterrupt; a further one raises KeyboardInterrupt at once,
    as Ctrl-C always did (a checkpoint being written is then abandoned and its temporary file removed).

    Why not Python's KeyboardInterrupt wherever the main thread is: raised inside ``Queue.put`` (one notifying
    TensorBoard's writer thread), it left that thread asleep with data queued, and closing the writer then waited
    for it until its next flush, up to 120 s (`swfp finetune` hung after a Ctrl-C in 2 of 54 tries)."""
    from .ros.process import STOP_SIGNALS, StopRequest   # a flag set without a lock; imports nothing heavy

    requested = StopRequest()

    def on_signal(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        os.write(2, f'{prog}: stopping after the current step (interrupt again to stop at once)\n'.encode())

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield requested.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _set_torch_threads(n: int) -> None:
    """Intra-op threads for torch. Default 1: these MLPs are too small to gain from more, and with other work on
    the cores OpenMP spin-waiting made a critic update 7x slower with 2 threads than with 1 (measured, 2-core CPU)."""
    import torch
    torch.set_num_threads(n)


def _policy_task(args) -> str:
    """--task, else the checkpoint's own task (the expert's default: panda_reach); checked before any work."""
    if args.policy == 'expert':
        if args.deterministic:
            raise CliError('--deterministic applies to checkpoint policies; the expert acts as --noise and '
                           '--epsilon say', code=2)
        return args.task or 'panda_reach'
    if args.task:
        return args.task
    from .algo.checkpoint import checkpoint_info
    task = checkpoint_info(args.policy).task
    if task not in TASK_CHOICES:
        raise CliError(f'checkpoint {args.policy} records task {task!r}, not one of the simulated tasks; give --task '
                       f'({" | ".join(TASK_CHOICES)})', code=2)
    return task


def _make_policy(env, args):
    """``expert`` -> the scripted expert (with noise); anything else is a checkpoint path, checked against the task."""
    if args.policy == 'expert':
        from .sim.experts import make_expert
        return make_expert(env, noise_std=args.noise, epsilon=args.epsilon, seed=args.seed)
    from .algo.checkpoint import load_policy
    base = env.unwrapped
    _checked_policy_info(args.policy, args.task, base.obs_labels, env.action_space.shape[0])
    runtime = load_policy(args.policy, device=args.device, seed=args.seed)   # its noise too: a --seed repeats exactly
    return lambda obs: runtime.act(obs, deterministic=args.deterministic)


def cmd_eval(args) -> int:
    from .sim import make_env
    from .train.evaluate import evaluate

    args.task = _policy_task(args)
    _set_torch_threads(args.threads)
    env = make_env(args.task)
    policy = _make_policy(env, args)
    result = evaluate(env, policy, episodes=args.episodes, seed=args.seed, progress=None)
    mode = ' (deterministic)' if args.deterministic else ''
    low, high = result.success_interval
    print(f'{args.task} / {args.policy}{mode}: success {result.success_rate:.2f} (95 % interval {low:.2f}–{high:.2f}) '
          f'over {result.episodes} episodes, mean return {result.mean_return:.2f}, '
          f'mean length {result.mean_length:.1f} steps')
    print(result.to_json())
    return 0


def cmd_render(args) -> int:
    from .sim import make_env
    from .sim.render import record_rollouts, save_gif, save_png

    args.task = _policy_task(args)
    out = _output_file(args, args.out)
    _set_torch_threads(args.threads)
    env = make_env(args.task, render_mode='rgb_array', width=args.width, height=args.height)
    policy = _make_policy(env, args)
    frames, successes = record_rollouts(env, policy, episodes=args.episodes, seed=args.seed, every=args.every)
    gif = save_gif(frames, out)
    png = save_png(frames[-1], gif.with_suffix('.png'))
    print(f'wrote {gif} ({len(frames)} frames) and {png}; successes: {successes}')
    return 0


def cmd_demos(args) -> int:
    import json
    import shutil

    from .data import write_demo_bag
    from .sim import make_env
    from .train.demos import collect_demos

    if args.bag and args.task not in GRAPH_TASK_CHOICES:
        raise CliError(f'--bag records joint-target commands; {args.task} commands end-effector deltas (write the '
                       'dataset only)', code=2)
    out = _output_file(args, args.out, suffix='.npz')
    bag = _output_dir(args, args.bag, '--bag', new=True) if args.bag else None
    dataset, records = collect_demos(args.task, args.episodes, args.noise, args.epsilon, seed=args.seed)
    summary = {'dataset': str(out), 'episodes': len(dataset), 'steps': dataset.num_steps,
               'success_rate': dataset.success_rate}
    staging = None
    try:
        if bag is not None:   # written beside its final place, moved there once the dataset is saved too
            bag.parent.mkdir(parents=True, exist_ok=True)    # checked above: exists, or is the default folder
            staging = Path(tempfile.mkdtemp(prefix=f'.{bag.name}.', dir=bag.parent))
            base = make_env(args.task).unwrapped
            written = write_demo_bag(staging / bag.name, records, joint_names=base.joint_names,
                                     task_labels=base.task_labels, control_rate_hz=base.control_rate_hz,
                                     storage=args.storage)
            summary['bag'], summary['bag_messages'] = str(bag), written.get('messages')
        path = dataset.save(out)
        print(f'wrote {path}: {dataset}')
        if staging is not None:
            os.rename(staging / bag.name, bag)
            print(f'wrote rosbag2 {bag} ({args.storage})')
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    print(json.dumps(summary))
    return 0


def _is_checkpoint_path(path: str) -> bool:
    """Bags are folders or .mcap / .db3 files; any other file is read as a checkpoint."""
    p = Path(path)
    return p.suffix not in ('.mcap', '.db3') and (p.is_file() or (not p.exists() and p.suffix in ('.pt', '.ckpt')))


def cmd_inspect(args) -> int:
    """Each path summarised in turn (a table, or one JSON object per line); a bad path is reported and skipped."""
    import json

    rc = 0
    for path in args.paths:
        try:
            if _is_checkpoint_path(path):
                from .algo.checkpoint import checkpoint_info, format_checkpoint_info
                info = checkpoint_info(path)
                print(json.dumps(info.to_dict()) if args.json else format_checkpoint_info(info))
            else:
                from .data import BagWarning, format_summary, inspect_bag
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore', BagWarning)   # the summary lists them
                    summary = inspect_bag(path)
                print(json.dumps(summary.to_dict()) if args.json else format_summary(summary))
        except Exception as e:  # noqa: BLE001 - reported like the top-level handler does, then the next path
            if not _is_user_error(e) or args.debug:
                raise
            print(f'swfp inspect: {_describe(e)}', file=sys.stderr)
            rc = 1
    return rc


def _ingest(bags, spec):
    """(dataset, report) of ``bags``; their warnings are in the report (printed by the caller), not repeated."""
    from .data import BagWarning, IngestError, ingest
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', BagWarning)    # the report carries them
        try:
            dataset, report = ingest(bags, spec, return_report=True)
        except IngestError as err:
            failed = err.report.failed
            if len(failed) == 1:
                raise CliError(failed[0].error) from None
            raise CliError(f'nothing could be ingested from {len(failed)} bags:\n' +
                           '\n'.join(f'  {b.error}' for b in failed)) from None
    _check_dataset_task(dataset, f'the ingested dataset (spec task {dataset.task})')
    return dataset, report


def cmd_ingest(args) -> int:
    from .data import load_spec

    spec = load_spec(args.spec)
    out = _output_file(args, args.out, suffix='.npz')
    dataset, report = _ingest(args.bags, spec)
    path = dataset.save(out)
    print(report)
    print(f'wrote {path}: {dataset}')
    return 2 if report.failed else 0


def _load_dataset(args):
    """The dataset of --data, or of --bag/--spec ingested on the fly."""
    from .data import DemoDataset, load_spec
    if args.data and args.bag:
        raise CliError('give --data or --bag, not both', code=2)
    if args.data:
        dataset = DemoDataset.load(args.data)
        _check_dataset_task(dataset, f'dataset {args.data} (task {dataset.task})')
        return dataset
    if args.bag:
        if not args.spec:
            raise CliError('--bag needs --spec (an ingest spec YAML, e.g. config/ingest_panda_reach.yaml)', code=2)
        dataset, report = _ingest(args.bag, load_spec(args.spec))
        for b in report.bags:
            for line in ([b.error] if b.error else []) + [f'warning: {w}' for w in b.warnings]:
                print(f'swfp pretrain: {line}', file=sys.stderr)
        return dataset
    raise CliError('give --data DATASET or --bag BAG --spec SPEC', code=2)


def cmd_pretrain(args) -> int:
    import json

    from .algo.config import FlowConfig
    from .train.pretrain import pretrain

    out = _output_file(args, args.out)
    cfg = FlowConfig(hidden=args.hidden, layers=args.layers, euler_steps=args.euler_steps, chunk=args.chunk)
    dataset = _load_dataset(args)
    _set_torch_threads(args.threads)
    print(f'BC on {dataset}')
    with _stop_between_steps('swfp pretrain') as should_stop:
        metrics = pretrain(dataset, out, cfg, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                           device=args.device, log_dir=args.logdir, should_stop=should_stop)
    print(f'wrote {args.out} (final flow-matching loss {metrics["final_loss"]:.4f})')
    print(json.dumps({'checkpoint': args.out, **metrics}))
    return 0


def cmd_finetune(args) -> int:
    import json

    from .algo.checkpoint import checkpoint_info
    from .data import DemoDataset
    from .train.finetune import CHECKPOINT, RunnerConfig, finetune
    from .train.settings import load_swfp_config
    from .train.task_check import task_spaces

    labels, act_dim = task_spaces(args.task)
    _checked_policy_info(args.bc, args.task, labels, act_dim)
    peer = args.method in PEER_METHODS   # --set applies to their PeerConfig; --demos and --config do not apply
    if peer:
        if args.keep_every or args.gif_every:
            raise CliError(f'--keep-every and --gif-every apply to --method swfp or naive, not {args.method}', code=2)
        from .train.peers import PeerConfig, train_peer
        try:
            peer_cfg = PeerConfig.from_overrides(args.set)
        except (TypeError, ValueError) as e:
            raise CliError(f'--set: {e}', code=2) from None
        demos = None
    else:
        swfp = load_swfp_config(args.config, args.set)
        demos = DemoDataset.load(args.demos) if args.demos else None
        if demos is not None:
            _check_fits_task(f'dataset {args.demos}', args.task, labels, demos.task, demos.obs_labels,
                             demos.obs_dim, f'give --demos of task {args.task}')
    out = _output_dir(args, args.out)
    resume = out / CHECKPOINT
    if resume.is_file():
        info = checkpoint_info(str(resume))
        if info.kind != 'learner':
            raise CliError(f'{resume} holds a {info.kind}, not a learner to resume; use another --out')
        _check_fits_task(f'the run in {out}', args.task, labels, info.task, info.obs_labels, info.obs_dim,
                         f'resume it with --task {info.task}, or start this run in another --out')
    _set_torch_threads(args.threads)
    run = RunnerConfig(task=args.task, method=args.method, env_steps=args.env_steps, num_envs=args.num_envs,
                       eval_every=args.eval_every, eval_episodes=args.eval_episodes, seed=args.seed,
                       device=args.device, keep_every=args.keep_every,
                       gif_every=args.gif_every)
    try:
        with _stop_between_steps('swfp finetune') as should_stop:
            if peer:
                rows = train_peer(args.bc, args.out, run, peer_cfg, should_stop=should_stop)
            else:
                rows = finetune(args.bc, args.out, run, swfp, demos, should_stop=should_stop)
    except KeyboardInterrupt:
        kept = (f'{resume} holds the run at {checkpoint_info(str(resume)).counters["env_steps"]} env steps; rerun '
                f'the same command to resume' if resume.is_file() else 'no checkpoint was written yet')
        raise CliError(f'interrupted; {kept}', code=130) from None
    first, last = rows[0], rows[-1]
    blocks = last.get('blocks', 0)
    print(f'{args.method} on {args.task}: success {first["success_rate"]:.2f} (start) -> {last["success_rate"]:.2f} '
          f'after {last["env_steps"]} env steps, {blocks} blocks, {last["wall_s"]:.0f} s; curve in '
          f'{args.out}/curve.csv' + ('' if peer else f' and curve.png; tensorboard --logdir {args.out}/tensorboard'))
    print(json.dumps({'success_rate': last['success_rate'], 'mean_return': last['mean_return'],
                      'episodes': args.eval_episodes, 'start_success_rate': first['success_rate'],
                      'env_steps': last['env_steps'], 'blocks': blocks, 'wall_s': last['wall_s']}))
    return 0


def cmd_demo(args) -> int:
    import json

    from .train.graph_demo import DemoConfig, run_demo

    _output_dir(args, args.out)
    _set_torch_threads(1)
    cfg = DemoConfig(task=args.task, demos=args.demos, noise=args.noise, epsilon=args.epsilon, bc_steps=args.bc_steps,
                     env_steps=args.env_steps, actors=args.actors, eval_episodes=args.eval_episodes, seed=args.seed,
                     out=args.out, swfp={'warmup_steps': args.warmup_steps, 'steps_per_block': args.steps_per_block,
                                         'block': {'delta': args.delta}})
    result = run_demo(cfg)
    print(json.dumps(result))
    return 0


# --- parser -------------------------------------------------------------------------------------------------------
POSITIVE_INT, COUNT, SEED = _integer(1), _integer(0), _integer(0)
PROBABILITY, NON_NEGATIVE, POSITIVE = _real(0.0, 1.0), _real(0.0), _real(above=0.0)


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--task', choices=TASK_CHOICES,
                        help="simulated task (default: the checkpoint's task; panda_reach for the expert)")
    parser.add_argument('--policy', default='expert',
                        help='"expert" (scripted DLS-IK expert) or a policy checkpoint file')
    parser.add_argument('--deterministic', action='store_true',
                        help='checkpoint policies: act with zero noise (the flow from the noise mean) instead of '
                        'sampling, as deployed while fine-tuning')
    parser.add_argument('--noise', type=NON_NEGATIVE, default=0.0, help='expert: Gaussian action noise sigma')
    parser.add_argument('--epsilon', type=PROBABILITY, default=0.0, help='expert: probability of a random action')
    parser.add_argument('--episodes', type=POSITIVE_INT, default=20, help='number of episodes')
    parser.add_argument('--seed', type=SEED, default=0,
                        help='seed of the first episode (then +1 per episode) and of the policy noise')
    parser.add_argument('--device', type=_device, default='cpu', help='checkpoint policies: cpu | cuda | auto')
    parser.add_argument('--threads', type=POSITIVE_INT, default=1, help='torch intra-op threads')


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog='swfp', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--debug', action='store_true', help='on an error, show the Python traceback')
    common = _Parser(add_help=False)
    common.add_argument('--debug', action='store_true', default=argparse.SUPPRESS,
                        help='on an error, show the Python traceback')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], formatter_class=_HelpFormatter, **kwargs)

    p = command('eval', help='evaluate a policy (expert or checkpoint) on a task; '
                       'last line is JSON')
    _add_policy_args(p)
    p.set_defaults(func=cmd_eval)

    p = command('render', help='render rollouts offscreen to a GIF (and the last frame to PNG)')
    _add_policy_args(p)
    p.set_defaults(episodes=2)
    p.add_argument('--out', default='outputs/rollout.gif', help='GIF path (the PNG goes beside it)')
    p.add_argument('--width', type=_integer(16), default=480, help='frame width (pixels)')
    p.add_argument('--height', type=_integer(16), default=360, help='frame height (pixels)')
    p.add_argument('--every', type=POSITIVE_INT, default=1, help='keep every N-th control step')
    p.set_defaults(func=cmd_render)

    p = command('demos', help='record scripted-expert demonstrations (with noise) to a '
                       'dataset, optionally a bag')
    p.add_argument('--task', choices=TASK_CHOICES, default='panda_reach', help='simulated task')
    p.add_argument('--episodes', type=POSITIVE_INT, default=100, help='number of demonstration episodes')
    p.add_argument('--noise', type=NON_NEGATIVE, default=0.5, help='Gaussian action noise sigma of the expert')
    p.add_argument('--epsilon', type=PROBABILITY, default=0.1, help='probability of a random action')
    p.add_argument('--seed', type=SEED, default=0, help='env seed of the first episode, and the noise seed')
    p.add_argument('--out', default='outputs/demos.npz', help='dataset file (.npz)')
    p.add_argument('--bag', help='also write the demonstrations as a rosbag2 directory here (a new path)')
    p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='rosbag2 storage of --bag')
    p.set_defaults(func=cmd_demos)

    p = command('inspect', help='summarise rosbag2 files (topics, types, counts, rates, '
                       'duration) or checkpoints (task, labels, config, provenance, format version)')
    p.add_argument('paths', nargs='+', metavar='PATH',
                   help='bag directory, single .mcap/.db3 file, or checkpoint file (bc.pt, learner.pt)')
    p.add_argument('--json', action='store_true', help='one JSON object per path instead of a table')
    p.set_defaults(func=cmd_inspect)

    p = command('ingest', help='turn rosbag2 files into a dataset with a YAML mapping spec')
    p.add_argument('bags', nargs='+', metavar='BAG', help='bag directories or single .mcap/.db3 files')
    p.add_argument('--spec', required=True, help='ingest spec YAML (see config/ingest_panda_reach.yaml)')
    p.add_argument('--out', required=True, help='dataset file to write (.npz)')
    p.set_defaults(func=cmd_ingest)

    p = command('pretrain', help='behaviour cloning of the base flow policy from a dataset '
                       'or rosbags')
    p.add_argument('--data', help='dataset (.npz) from `swfp demos` or `swfp ingest`')
    p.add_argument('--bag', nargs='+', help='rosbag2 directories / .mcap / .db3 files to ingest on the fly')
    p.add_argument('--spec', help='ingest spec YAML for --bag')
    p.add_argument('--out', default='outputs/bc.pt', help='policy checkpoint to write')
    p.add_argument('--steps', type=POSITIVE_INT, default=5000, help='gradient steps')
    p.add_argument('--batch', type=POSITIVE_INT, default=256, help='samples per gradient step')
    p.add_argument('--lr', type=POSITIVE, default=3e-4, help='Adam learning rate')
    p.add_argument('--hidden', type=POSITIVE_INT, default=256, help='velocity MLP width')
    p.add_argument('--layers', type=POSITIVE_INT, default=3, help='velocity MLP hidden layers')
    p.add_argument('--euler-steps', type=POSITIVE_INT, default=4, help='K, Euler steps of the sampler')
    p.add_argument('--chunk', type=POSITIVE_INT, default=1, help='H, actions per decision (executed open loop)')
    p.add_argument('--seed', type=SEED, default=0, help='network initialisation and batch sampling seed')
    p.add_argument('--device', type=_device, default='cpu', help='cpu | cuda | auto')
    p.add_argument('--logdir', help='TensorBoard log directory')
    p.add_argument('--threads', type=POSITIVE_INT, default=1, help='torch intra-op threads')
    p.set_defaults(func=cmd_pretrain)

    p = command('finetune', help='online SWFP fine-tuning in-process (no ROS) from a BC or fine-tuned '
                       'checkpoint; resumable')
    p.add_argument('--bc', required=True, help='policy to fine-tune: a BC checkpoint (from `swfp pretrain`) or a '
                   'fine-tuned one, whose blocks and version it continues')
    p.add_argument('--task', choices=TASK_CHOICES, default='panda_reach', help='simulated task')
    p.add_argument('--out', default='outputs/finetune', help='run directory (curve.csv, blocks.jsonl, learner.pt); '
                   'an existing learner.pt there is resumed')
    p.add_argument('--method', choices=('swfp', 'naive', *PEER_METHODS), default='swfp',
                   help='swfp (JKO blocks with trust region), naive (-Q through the whole flow), dsrl (SAC steering '
                   "the frozen flow's noise) or residual (SAC adding a bounded residual); the last three are baselines")
    p.add_argument('--env-steps', type=POSITIVE_INT, default=20_000, help='online env-step budget')
    p.add_argument('--num-envs', type=POSITIVE_INT, default=8, help='envs stepped together (one batched inference)')
    p.add_argument('--eval-every', type=POSITIVE_INT, default=2500,
                   help='env steps between evaluations (the first is at the start)')
    p.add_argument('--eval-episodes', type=POSITIVE_INT, default=40, help='episodes per evaluation')
    p.add_argument('--keep-every', type=COUNT, default=0,
                   help='keep learner_<env steps>.pt every N evaluations (0: only learner.pt and best.pt)')
    p.add_argument('--gif-every', type=COUNT, default=0,
                   help='render one evaluation rollout to eval_<env steps>.gif every N evaluations (0: never)')
    p.add_argument('--demos', help='dataset seeding the replay buffer (at the configured demo_ratio)')
    p.add_argument('--config', help='learner parameter YAML whose swfp: section sets the algorithm '
                   '(default: the package config/learner.yaml, the same file the learner node reads)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override an algorithm setting, e.g. --set block.delta=0.2 --set warmup_steps=2000 '
                   '(dsrl/residual: a PeerConfig field, e.g. --set residual_scale=0.2)')
    p.add_argument('--seed', type=SEED, default=0, help='env, exploration and evaluation seed')
    p.add_argument('--device', type=_device, default='cpu', help='cpu | cuda | auto')
    p.add_argument('--threads', type=POSITIVE_INT, default=1, help='torch intra-op threads')
    p.set_defaults(func=cmd_finetune)

    p = command('demo', help='the main job: noisy expert demos -> rosbag -> BC -> SWFP '
                       'fine-tuning through the ROS 2 node graph -> BC vs fine-tuned success + learning-curve PNG; '
                       'last line is JSON')
    from .train.graph_demo import DemoConfig   # numpy + yaml only: --help stays fast
    demo = DemoConfig()
    p.add_argument('--task', choices=GRAPH_TASK_CHOICES, default=demo.task, help='simulated task')
    p.add_argument('--demos', type=POSITIVE_INT, default=demo.demos, help='expert demonstration episodes')
    p.add_argument('--noise', type=NON_NEGATIVE, default=demo.noise,
                   help='expert Gaussian action noise (makes BC imperfect)')
    p.add_argument('--epsilon', type=PROBABILITY, default=demo.epsilon, help='probability of a random expert action')
    p.add_argument('--bc-steps', type=POSITIVE_INT, default=demo.bc_steps, help='BC gradient steps')
    p.add_argument('--env-steps', type=POSITIVE_INT, default=demo.env_steps,
                   help='fine-tuning budget: env steps of all actors')
    p.add_argument('--actors', type=POSITIVE_INT, default=demo.actors,
                   help='namespaced actors (sim bridge + policy node each)')
    p.add_argument('--warmup-steps', type=COUNT, default=demo.swfp['warmup_steps'],
                   help='critic-only env steps before the first block')
    p.add_argument('--steps-per-block', type=POSITIVE_INT, default=demo.swfp['steps_per_block'],
                   help='env steps between JKO blocks')
    p.add_argument('--delta', type=POSITIVE, default=demo.swfp['block']['delta'],
                   help='trust-region radius of a block')
    p.add_argument('--eval-episodes', type=POSITIVE_INT, default=demo.eval_episodes,
                   help='episodes per evaluation (BC and fine-tuned)')
    p.add_argument('--seed', type=SEED, default=demo.seed, help='seed of demos, BC, fine-tuning and evaluation')
    p.add_argument('--out', default=demo.out, help='run folder (bag, checkpoints, curve PNG, logs)')
    p.set_defaults(func=cmd_demo)

    # Listed for --help only: main() hands `swfp up ...` to the bring-up's own parser untouched.
    sub.add_parser('up', add_help=False,
                   help='start a node graph (sim_finetune | real_arm) without ros2 launch; see swfp up --help')
    return parser


# --- the one error path -------------------------------------------------------------------------------------------
_USER_ERRORS = {   # module -> its exception types that describe a user's mistake (checked only once imported)
    'swfp_ros.algo.checkpoint': ('CheckpointError',), 'swfp_ros.algo.config': ('ConfigError',),
    'swfp_ros.train.settings': ('SettingsError',), 'swfp_ros.data.dataset': ('DatasetError',),
    'swfp_ros.data.spec': ('SpecError',), 'swfp_ros.data.reader': ('BagError',),
}


def _is_user_error(e: BaseException) -> bool:
    types = [CliError, OSError] + [getattr(sys.modules[m], name) for m, names in _USER_ERRORS.items()
                                   if m in sys.modules for name in names]
    return isinstance(e, tuple(types))


def _describe(e: BaseException) -> str:
    if isinstance(e, CliError):
        return e.message
    if isinstance(e, OSError) and e.filename is not None:
        return f'{e.filename}: {e.strerror or e}'
    text = str(e)
    if _is_user_error(e):
        return text
    return (f'internal error ({type(e).__name__}: {" ".join(text.split())}); rerun with --debug for the traceback '
            f'and please report it')


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['up']:
        from .ros.bringup import main as up_main
        return up_main(argv[1:], prog='swfp up')
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.new_dirs = []
        return args.func(args)
    except (Exception, KeyboardInterrupt) as e:
        if args is not None:
            _remove_new_empty_dirs(args)
            if args.debug:
                raise
        prog = getattr(e, 'prog', None) or (f'swfp {args.command}' if args is not None else 'swfp')
        message = 'interrupted' if isinstance(e, KeyboardInterrupt) else _describe(e)
        print(f'{prog}: {message}', file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else getattr(e, 'code', 1) if isinstance(e, CliError) else 1


if __name__ == '__main__':
    sys.exit(main())
