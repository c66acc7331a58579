"""Parity: SWFP fine-tuning through the ROS 2 node graph vs the in-process runner, same BC checkpoint, same settings,
same env-step budget, same number of actors (N namespaced actors in the graph vs num_envs=N in-process). Both final
policies are evaluated the same way (stochastic, as deployed; the same episode seeds). Training throughput of both in
the same run: env steps/s of the graph from its first env step to the budget spent (process start-up and the
learner's wind-down excluded), and of the in-process runner (collection and learner updates alternating in one
process) by its own clock. Prints a final JSON line.

Usage: python benchmarks/bench_ros_finetune.py [--bc outputs/demo/bc.pt] [--env-steps 2000] [--actors 2]
Without --bc, a BC checkpoint is trained first exactly as `swfp demo` does (its DemoConfig demos, noise, BC steps).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--bc', help='BC checkpoint (default: train one like swfp demo)')
    ap.add_argument('--task', default='panda_reach')
    ap.add_argument('--env-steps', type=int, default=2000)
    ap.add_argument('--actors', type=int, default=2)
    ap.add_argument('--warmup-steps', type=int, default=1000)
    ap.add_argument('--steps-per-block', type=int, default=500)
    ap.add_argument('--eval-episodes', type=int, default=100)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--out', default='outputs/bench_ros_finetune')
    ap.add_argument('--pacing', type=int, default=None, help='max_learner_backlog of the actors (default: the '
                    'demo\'s; 0 = actors run free)')
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from swfp_ros.train.finetune import RunnerConfig, finetune
    from swfp_ros.train.graph_demo import evaluate_checkpoint, run_graph_finetune
    from swfp_ros.train.settings import load_swfp_config

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    bc = args.bc
    if bc:
        shutil.copy(bc, out / 'bc.pt')              # a private copy: the source may be rewritten meanwhile
        bc = str(out / 'bc.pt')
    else:
        from swfp_ros.train.demos import collect_demos
        from swfp_ros.train.graph_demo import DemoConfig
        from swfp_ros.train.pretrain import pretrain
        demo = DemoConfig()
        dataset, _ = collect_demos(args.task, demo.demos, demo.noise, demo.epsilon, seed=args.seed, progress=False)
        bc = str(out / 'bc.pt')
        pretrain(dataset, bc, steps=demo.bc_steps, seed=args.seed, progress=False)
    swfp = {'warmup_steps': args.warmup_steps, 'steps_per_block': args.steps_per_block}
    result = {'task': args.task, 'env_steps_budget': args.env_steps, 'actors': args.actors, 'swfp': swfp,
              'eval_episodes': args.eval_episodes}
    result['bc_success'] = evaluate_checkpoint(bc, args.task, args.eval_episodes)
    print(f'BC success {result["bc_success"]:.2f}', flush=True)

    t0 = time.perf_counter()
    from swfp_ros.train.graph_demo import PACING
    pacing = PACING if args.pacing is None else args.pacing
    result['max_learner_backlog'] = pacing
    run = run_graph_finetune(bc, out / 'graph', args.env_steps, swfp, args.task, args.actors, args.seed,
                             max_learner_backlog=pacing)
    result.update(graph_s=round(time.perf_counter() - t0, 1), graph_acting_s=round(run.acting_s, 1),
                  graph_env_steps_per_s=round(run.acting_steps / run.acting_s, 1),
                  graph_actor_env_steps=run.actor_steps, graph_env_steps=run.env_steps,
                  graph_blocks=int(run.learner.get('blocks_accepted', 0)), graph_version=int(run.learner['version']))
    result['graph_success'] = evaluate_checkpoint(run.checkpoint, args.task, args.eval_episodes)
    print(f'graph: success {result["graph_success"]:.2f} after {run.env_steps} env steps ({result["graph_s"]} s)',
          flush=True)

    t0 = time.perf_counter()
    cfg = load_swfp_config(None, [f'{k}={v}' for k, v in swfp.items()])
    run_cfg = RunnerConfig(task=args.task, env_steps=args.env_steps, num_envs=args.actors, eval_every=args.env_steps,
                           eval_episodes=10, seed=args.seed, device='cpu')
    rows = finetune(bc, str(out / 'inprocess'), run_cfg, cfg, log=lambda *a: None)
    result['inprocess_s'] = round(time.perf_counter() - t0, 1)
    # the runner's clock at its final evaluation: training, and the step-0 evaluation (10 episodes) before it
    result['inprocess_env_steps_per_s'] = round(rows[-1]['env_steps'] / rows[-1]['wall_s'], 1)
    result['graph_to_inprocess_env_steps_per_s'] = round(result['graph_env_steps_per_s']
                                                         / result['inprocess_env_steps_per_s'], 2)
    from swfp_ros.algo.checkpoint import load_learner
    learner = load_learner(str(out / 'inprocess' / 'learner.pt'))
    result.update(inprocess_env_steps=learner.counters.env_steps, inprocess_blocks=learner.counters.blocks_accepted)
    result['inprocess_success'] = evaluate_checkpoint(str(out / 'inprocess' / 'learner.pt'), args.task,
                                                      args.eval_episodes)
    result['success_diff_graph_minus_inprocess'] = round(result['graph_success'] - result['inprocess_success'], 3)
    result['within_0.1'] = abs(result['success_diff_graph_minus_inprocess']) <= 0.1
    for k, v in result.items():
        print(f'{k:36s} {v}')
    print(json.dumps(result))


if __name__ == '__main__':
    main()
