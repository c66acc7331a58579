"""`swfp`: the command line for the offline work (demos, rosbags, BC, fine-tuning, evaluation, bring-up).

Every subcommand prints a human summary; those that measure something end with one JSON line on stdout.
Heavy imports (torch, mujoco, rclpy) happen inside the subcommands so `swfp --help` stays instant.
"""
from __future__ import annotations

import argparse
import sys

TASK_CHOICES = ('panda_reach', 'panda_push', 'cube_single')
GRAPH_TASK_CHOICES = ('panda_reach', 'panda_push')   # sim_finetune's tasks (joint targets; swfp_ros.sim.BRIDGE_TASKS)
PEER_METHODS = ('dsrl', 'residual')   # swfp_ros.train.peers (imported lazily: SB3 is an extra)


def _set_torch_threads(n: int) -> None:
    """Intra-op threads for torch. Default 1: these MLPs are too small to gain from more, and with other work on
    the cores OpenMP spin-waiting made a critic update 7x slower with 2 threads than with 1 (measured, 2-core CPU)."""
    import torch
    torch.set_num_threads(n)


def _make_policy(env, spec: str, noise: float, epsilon: float, seed: int, device: str = 'cpu'):
    """``expert`` -> the scripted expert (with noise); anything else is a checkpoint path."""
    if spec == 'expert':
        from .sim.experts import make_expert
        return make_expert(env, noise_std=noise, epsilon=epsilon, seed=seed)
    from .algo.checkpoint import load_policy
    runtime = load_policy(spec, device=device)
    return lambda obs: runtime.act(obs, deterministic=False)


def cmd_eval(args) -> int:
    from .sim import make_env
    from .train.evaluate import evaluate

    _set_torch_threads(args.threads)
    env = make_env(args.task)
    policy = _make_policy(env, args.policy, args.noise, args.epsilon, args.seed, args.device)
    result = evaluate(env, policy, episodes=args.episodes, seed=args.seed)
    print(f'{args.task} / {args.policy}: success {result.success_rate:.2f} over {result.episodes} episodes, '
          f'mean return {result.mean_return:.2f}, mean length {result.mean_length:.1f} steps')
    print(result.to_json())
    return 0


def cmd_render(args) -> int:
    from .sim import make_env
    from .sim.render import record_rollouts, save_gif, save_png

    _set_torch_threads(args.threads)
    env = make_env(args.task, render_mode='rgb_array', width=args.width, height=args.height)
    policy = _make_policy(env, args.policy, args.noise, args.epsilon, args.seed, args.device)
    frames, successes = record_rollouts(env, policy, episodes=args.episodes, seed=args.seed, every=args.every)
    gif = save_gif(frames, args.out)
    png = save_png(frames[-1], gif.with_suffix('.png'))
    print(f'wrote {gif} ({len(frames)} frames) and {png}; successes: {successes}')
    return 0


def cmd_demos(args) -> int:
    import json

    from .data import write_demo_bag
    from .sim import make_env
    from .train.demos import collect_demos

    if args.bag and args.task not in GRAPH_TASK_CHOICES:
        raise SystemExit(f'swfp demos: --bag records joint-target commands; {args.task} commands end-effector deltas '
                         '(write the dataset only)')
    dataset, records = collect_demos(args.task, args.episodes, args.noise, args.epsilon, seed=args.seed)
    path = dataset.save(args.out)
    print(f'wrote {path}: {dataset}')
    summary = {'dataset': str(path), 'episodes': len(dataset), 'steps': dataset.num_steps,
               'success_rate': dataset.success_rate}
    if args.bag:
        base = make_env(args.task).unwrapped
        bag = write_demo_bag(args.bag, records, joint_names=base.joint_names, task_labels=base.task_labels,
                             control_rate_hz=base.control_rate_hz, storage=args.storage)
        print(f'wrote rosbag2 {args.bag} ({args.storage})')
        summary['bag'] = str(args.bag)
        summary['bag_messages'] = bag.get('messages')
    print(json.dumps(summary))
    return 0


def cmd_inspect(args) -> int:
    from .data import main_inspect
    return main_inspect(args.bags, as_json=args.json)


def cmd_ingest(args) -> int:
    from .data import main_ingest
    return main_ingest(args.bags, args.spec, args.out)


def _load_dataset(args):
    """The dataset of --data, or of --bag/--spec ingested on the fly."""
    from .data import DemoDataset, IngestError, ingest
    if args.data and args.bag:
        raise SystemExit('swfp: give --data or --bag, not both')
    if args.data:
        return DemoDataset.load(args.data)
    if args.bag:
        if not args.spec:
            raise SystemExit('swfp: --bag needs --spec (an ingest spec YAML, e.g. config/ingest_panda_reach.yaml)')
        try:
            return ingest(args.bag, args.spec)
        except IngestError as err:
            raise SystemExit(f'swfp pretrain: {err}') from None
    raise SystemExit('swfp: give --data DATASET or --bag BAG --spec SPEC')


def cmd_pretrain(args) -> int:
    import json

    from .algo.config import FlowConfig
    from .train.pretrain import pretrain

    _set_torch_threads(args.threads)
    dataset = _load_dataset(args)
    print(f'BC on {dataset}')
    cfg = FlowConfig(hidden=args.hidden, layers=args.layers, euler_steps=args.euler_steps, chunk=args.chunk)
    metrics = pretrain(dataset, args.out, cfg, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                       device=args.device, log_dir=args.logdir)
    print(f'wrote {args.out} (final flow-matching loss {metrics["final_loss"]:.4f})')
    print(json.dumps({'checkpoint': args.out, **metrics}))
    return 0


def cmd_finetune(args) -> int:
    import json

    from .data import DemoDataset
    from .train.finetune import RunnerConfig, finetune
    from .train.settings import load_swfp_config

    _set_torch_threads(args.threads)
    run = RunnerConfig(task=args.task, method=args.method, env_steps=args.env_steps, num_envs=args.num_envs,
                       eval_every=args.eval_every, eval_episodes=args.eval_episodes, seed=args.seed,
                       device=args.device)
    if args.method in PEER_METHODS:   # --set applies to PeerConfig; --demos and --config do not apply
        from .train.peers import PeerConfig, train_peer
        rows = train_peer(args.bc, args.out, run, PeerConfig.from_overrides(args.set))
    else:
        demos = DemoDataset.load(args.demos) if args.demos else None
        rows = finetune(args.bc, args.out, run, load_swfp_config(args.config, args.set), demos)
    first, last = rows[0], rows[-1]
    blocks = last.get('blocks', 0)
    print(f'{args.method} on {args.task}: success {first["success_rate"]:.2f} (start) -> {last["success_rate"]:.2f} '
          f'after {last["env_steps"]} env steps, {blocks} blocks, {last["wall_s"]:.0f} s; curve in '
          f'{args.out}/curve.csv')
    print(json.dumps({'success_rate': last['success_rate'], 'mean_return': last['mean_return'],
                      'episodes': args.eval_episodes, 'start_success_rate': first['success_rate'],
                      'env_steps': last['env_steps'], 'blocks': blocks, 'wall_s': last['wall_s']}))
    return 0


def cmd_demo(args) -> int:
    import json

    from .train.graph_demo import DemoConfig, run_demo

    _set_torch_threads(1)
    cfg = DemoConfig(task=args.task, demos=args.demos, noise=args.noise, epsilon=args.epsilon, bc_steps=args.bc_steps,
                     env_steps=args.env_steps, actors=args.actors, eval_episodes=args.eval_episodes, seed=args.seed,
                     out=args.out, swfp={'warmup_steps': args.warmup_steps, 'steps_per_block': args.steps_per_block,
                                         'block': {'delta': args.delta}})
    result = run_demo(cfg)
    print(json.dumps(result))
    return 0


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--task', choices=TASK_CHOICES, default='panda_reach', help='simulated task')
    parser.add_argument('--policy', default='expert',
                        help='"expert" (scripted DLS-IK expert) or a policy checkpoint file')
    parser.add_argument('--noise', type=float, default=0.0, help='expert: Gaussian action noise sigma')
    parser.add_argument('--epsilon', type=float, default=0.0, help='expert: probability of a random action')
    parser.add_argument('--episodes', type=int, default=20, help='number of episodes')
    parser.add_argument('--seed', type=int, default=0, help='seed of the first episode (then +1 per episode)')
    parser.add_argument('--device', default='cpu', help='checkpoint policies: cpu | cuda | auto')
    parser.add_argument('--threads', type=int, default=1, help='torch intra-op threads')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='swfp', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

    p = sub.add_parser('eval', help='evaluate a policy (expert or checkpoint) on a task; last line is JSON')
    _add_policy_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('render', help='render rollouts offscreen to a GIF (and the last frame to PNG)')
    _add_policy_args(p)
    p.set_defaults(episodes=2)
    p.add_argument('--out', default='outputs/rollout.gif', help='GIF path (the PNG goes beside it)')
    p.add_argument('--width', type=int, default=480)
    p.add_argument('--height', type=int, default=360)
    p.add_argument('--every', type=int, default=1, help='keep every N-th control step')
    p.set_defaults(func=cmd_render)

    p = sub.add_parser('demos', help='record scripted-expert demonstrations (with noise) to a dataset, optionally a bag')
    p.add_argument('--task', choices=TASK_CHOICES, default='panda_reach', help='simulated task')
    p.add_argument('--episodes', type=int, default=100, help='number of demonstration episodes')
    p.add_argument('--noise', type=float, default=0.5, help='Gaussian action noise sigma of the expert')
    p.add_argument('--epsilon', type=float, default=0.1, help='probability of a random action')
    p.add_argument('--seed', type=int, default=0, help='env seed of the first episode, and the noise seed')
    p.add_argument('--out', default='outputs/demos.npz', help='dataset file (.npz)')
    p.add_argument('--bag', help='also write the demonstrations as a rosbag2 directory here')
    p.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap', help='rosbag2 storage of --bag')
    p.set_defaults(func=cmd_demos)

    p = sub.add_parser('inspect', help='summarise rosbag2 files: topics, types, counts, rates, duration')
    p.add_argument('bags', nargs='+', metavar='BAG', help='bag directory or single .mcap/.db3 file')
    p.add_argument('--json', action='store_true', help='one JSON object per bag instead of a table')
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser('ingest', help='turn rosbag2 files into a dataset with a YAML mapping spec')
    p.add_argument('bags', nargs='+', metavar='BAG', help='bag directories or single .mcap/.db3 files')
    p.add_argument('--spec', required=True, help='ingest spec YAML (see config/ingest_panda_reach.yaml)')
    p.add_argument('--out', required=True, help='dataset file to write (.npz)')
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser('pretrain', help='behaviour cloning of the base flow policy from a dataset or rosbags')
    p.add_argument('--data', help='dataset (.npz) from `swfp demos` or `swfp ingest`')
    p.add_argument('--bag', nargs='+', help='rosbag2 directories / .mcap / .db3 files to ingest on the fly')
    p.add_argument('--spec', help='ingest spec YAML for --bag')
    p.add_argument('--out', default='outputs/bc.pt', help='policy checkpoint to write')
    p.add_argument('--steps', type=int, default=5000, help='gradient steps')
    p.add_argument('--batch', type=int, default=256)
    p.add_argument('--lr', type=float, default=3e-4)
    p.add_argument('--hidden', type=int, default=256, help='velocity MLP width')
    p.add_argument('--layers', type=int, default=3, help='velocity MLP hidden layers')
    p.add_argument('--euler-steps', type=int, default=4, help='K, Euler steps of the sampler')
    p.add_argument('--chunk', type=int, default=1, help='H, actions per decision (executed open loop)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto')
    p.add_argument('--logdir', help='TensorBoard log directory')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads')
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser('finetune', help='online SWFP fine-tuning in-process (no ROS) from a BC checkpoint; resumable')
    p.add_argument('--bc', required=True, help='BC policy checkpoint (from `swfp pretrain`)')
    p.add_argument('--task', choices=TASK_CHOICES, default='panda_reach')
    p.add_argument('--out', default='outputs/finetune', help='run directory (curve.csv, blocks.jsonl, learner.pt); '
                   'an existing learner.pt there is resumed')
    p.add_argument('--method', choices=('swfp', 'naive', *PEER_METHODS), default='swfp',
                   help='swfp (JKO blocks with trust region), naive (-Q through the whole flow), dsrl (SAC steering '
                   "the frozen flow's noise) or residual (SAC adding a bounded residual); the last three are baselines")
    p.add_argument('--env-steps', type=int, default=20_000, help='online env-step budget')
    p.add_argument('--num-envs', type=int, default=8)
    p.add_argument('--eval-every', type=int, default=2500)
    p.add_argument('--eval-episodes', type=int, default=40)
    p.add_argument('--demos', help='dataset seeding the replay buffer (at the configured demo_ratio)')
    p.add_argument('--config', help='learner parameter YAML whose swfp: section sets the algorithm '
                   '(default: the package config/learner.yaml, the same file the learner node reads)')
    p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                   help='override an algorithm setting, e.g. --set block.delta=0.2 --set warmup_steps=2000 '
                   '(dsrl/residual: a PeerConfig field, e.g. --set residual_scale=0.2)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads')
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser('demo', help='the main job: noisy expert demos -> rosbag -> BC -> SWFP fine-tuning through '
                       'the ROS 2 node graph -> BC vs fine-tuned success + learning-curve PNG; last line is JSON')
    from .train.graph_demo import DemoConfig   # numpy + yaml only: --help stays fast
    demo = DemoConfig()
    p.add_argument('--task', choices=GRAPH_TASK_CHOICES, default=demo.task)
    p.add_argument('--demos', type=int, default=demo.demos, help='expert demonstration episodes')
    p.add_argument('--noise', type=float, default=demo.noise, help='expert Gaussian action noise (makes BC imperfect)')
    p.add_argument('--epsilon', type=float, default=demo.epsilon, help='probability of a random expert action')
    p.add_argument('--bc-steps', type=int, default=demo.bc_steps)
    p.add_argument('--env-steps', type=int, default=demo.env_steps, help='fine-tuning budget: env steps of all actors')
    p.add_argument('--actors', type=int, default=demo.actors, help='namespaced actors (sim bridge + policy node each)')
    p.add_argument('--warmup-steps', type=int, default=demo.swfp['warmup_steps'],
                   help='critic-only env steps before the first block')
    p.add_argument('--steps-per-block', type=int, default=demo.swfp['steps_per_block'])
    p.add_argument('--delta', type=float, default=demo.swfp['block']['delta'], help='trust-region radius of a block')
    p.add_argument('--eval-episodes', type=int, default=demo.eval_episodes)
    p.add_argument('--seed', type=int, default=demo.seed)
    p.add_argument('--out', default=demo.out)
    p.set_defaults(func=cmd_demo)

    # Listed for --help only: main() hands `swfp up ...` to the bring-up's own parser untouched.
    sub.add_parser('up', add_help=False,
                   help='start a node graph (sim_finetune | real_arm) without ros2 launch; see swfp up --help')
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['up']:
        from .ros.bringup import main as up_main
        return up_main(argv[1:], prog='swfp up')
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
