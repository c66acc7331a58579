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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(main())
