"""`swfp`: the command line for the offline work (demos, rosbags, BC, fine-tuning, evaluation, bring-up).

Every subcommand prints a human summary; those that measure something end with one JSON line on stdout.
Heavy imports (torch, mujoco, rclpy) happen inside the subcommands so `swfp --help` stays instant.
"""
from __future__ import annotations

import argparse
import sys

TASK_CHOICES = ('panda_reach', 'panda_push')


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


def _add_policy_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--task', choices=TASK_CHOICES, default='panda_reach', help='simulated task')
    parser.add_argument('--policy', default='expert',
                        help='"expert" (scripted DLS-IK expert) or a policy checkpoint file')
    parser.add_argument('--noise', type=float, default=0.0, help='expert: Gaussian action noise sigma')
    parser.add_argument('--epsilon', type=float, default=0.0, help='expert: probability of a random action')
    parser.add_argument('--episodes', type=int, default=20, help='number of episodes')
    parser.add_argument('--seed', type=int, default=0, help='seed of the first episode (then +1 per episode)')
    parser.add_argument('--device', default='cpu', help='checkpoint policies: cpu | cuda | auto')


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
