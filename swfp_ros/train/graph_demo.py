"""The main job (``swfp demo``): noisy expert demos -> rosbag -> BC -> SWFP fine-tuning THROUGH the ROS 2 node graph ->
in-process evaluation of the BC and the fine-tuned policy -> a learning-curve PNG.

Fine-tuning runs the ``sim_finetune`` graph of :mod:`swfp_ros.ros.graph` — the description ``swfp up`` and
``ros2 launch`` use — as separate processes (:class:`swfp_ros.ros.bringup.Bringup`): per actor a sim bridge in
lockstep and a policy node in their own namespace (``actor0``, ``actor1``, ...), and one learner node fed by all of
them. The learner's settings come from a copy of the package's config/ with the ``swfp:`` section of learner.yaml
replaced (the graph's ``config:=DIR`` argument). The budget is counted in env steps on the actors' ``swfp/reward``
topics; when it is spent the actors are stopped (SIGINT), the learner finishes what it received (the block due at
the budget included) and is stopped; its final checkpoint (``learner.pt``, which ``load_policy`` reads) is evaluated.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

# The demo's learner settings: critic warm-up on the first 1000 env steps, then a block every 500 env steps, inside the
# default trust region (delta 0.1).
DEMO_SWFP = {'warmup_steps': 1000, 'steps_per_block': 500, 'block': {'delta': 0.1}}
# Lockstep actors wait while the learner has more than this many transitions not yet trained on: like the in-process
# runner (one update per batch of num_envs transitions), the data stays close to on-policy and blocks arrive in time.
PACING = 8


@dataclass
class GraphRun:
    """What a fine-tuning run through the graph produced."""
    checkpoint: str                       # the learner's final checkpoint
    env_steps: int                        # env steps stored by the learner
    actor_steps: int                      # env steps counted on the actors' reward topics
    episodes: list = field(default_factory=list)   # (env steps so far, success) per finished training episode
    versions: list = field(default_factory=list)   # (env steps so far, policy version) per update on the topic
    learner: dict = field(default_factory=dict)    # the learner's last status
    wall_s: float = 0.0
    acting_s: float = 0.0                 # from the first env step to the budget spent (no start-up, no wind-down)
    acting_steps: int = 0                 # env steps counted by then


def _config_dir(dest: Path, swfp: dict, policy: dict | None = None) -> Path:
    """The package's parameter files, with learner.yaml's ``swfp:`` section replaced by ``swfp`` and ``policy``
    set in policy.yaml."""
    from ..paths import config_path
    dest.mkdir(parents=True, exist_ok=True)
    for path in config_path('policy.yaml').parent.glob('*.yaml'):   # every node's file (config:= needs them all)
        shutil.copy(path, dest / path.name)
    doc = yaml.safe_load((dest / 'learner.yaml').read_text())
    for entry in doc.values():
        entry['ros__parameters']['swfp'] = swfp
    (dest / 'learner.yaml').write_text(yaml.safe_dump(doc, sort_keys=False))
    doc = yaml.safe_load((dest / 'policy.yaml').read_text())
    for entry in doc.values():
        entry['ros__parameters'].update(policy or {})
    (dest / 'policy.yaml').write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


_domain_lease = None


def _ensure_domain() -> None:
    """An isolated DDS domain on this host unless the caller chose one: a domain leased for the rest of this process
    (a random pick collided with another graph on a shared machine: the demo then read a foreign learner's status and
    its learner received foreign transitions)."""
    global _domain_lease
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.pop('ROS_LOCALHOST_ONLY', None)
    if not os.environ.get('ROS_DOMAIN_ID'):
        from ..ros.domains import DomainLease
        _domain_lease = DomainLease()
        os.environ['ROS_DOMAIN_ID'] = str(_domain_lease.domain_id)


def graph_nodes(bc_checkpoint: str, checkpoint_dir: str, config_dir: str, task: str, actors: int, seed: int):
    """The resolved sim_finetune graph for ``actors`` namespaced actors (actor0..; actor ids and bridge seeds counted
    up by the graph) and one shared learner."""
    from ..ros.graph import SIM_FINETUNE, resolve
    return resolve(SIM_FINETUNE, {
        'task': task, 'mode': 'lockstep', 'seed': str(seed), 'namespace': ','.join(f'actor{i}' for i in range(actors)),
        'actor_id': '0', 'checkpoint': bc_checkpoint, 'checkpoint_dir': checkpoint_dir, 'config': config_dir,
        'device': 'cpu'})


def run_graph_finetune(bc_checkpoint: str, out_dir: str | Path, env_steps: int, swfp: dict, task: str = 'panda_reach',
                       actors: int = 2, seed: int = 0, log=print, timeout_s: float = 900.0,
                       max_learner_backlog: int = PACING) -> GraphRun:
    """Fine-tune ``bc_checkpoint`` through the sim_finetune graph for ``env_steps`` env steps (all actors together).
    ``max_learner_backlog`` > 0 paces the lockstep actors on the learner (policy.yaml's max_learner_backlog)."""
    _ensure_domain()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Float64MultiArray, UInt8MultiArray

    from ..ros import messages as M
    from ..ros.bringup import Bringup, _killpg
    from ..ros.qos import UPDATE_QOS
    from ..ros.qos import REWARD_QOS

    out = Path(out_dir)
    ckpt_dir = out / 'learner'
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)            # a fresh run (the learner would resume from an old checkpoint)
    cfg_dir = _config_dir(out / 'config', swfp, {'max_learner_backlog': int(max_learner_backlog)})
    nodes = graph_nodes(str(bc_checkpoint), str(ckpt_dir), str(cfg_dir), task, actors, seed)
    logf = open(out / 'graph.log', 'w')
    # the learner first: actors that act before it subscribes would spend budget on transitions it never gets
    up_learner = Bringup([n for n in nodes if not n.namespace], grace=60.0, out=logf)
    up_actors = Bringup([n for n in nodes if n.namespace], grace=60.0, out=logf)

    lock = threading.Lock()
    state = {'steps': 0, 'episodes': [], 'versions': [], 'learner': {}, 'first_step_t': None}

    def on_reward(msg):
        r = M.reward_from_msg(msg)
        with lock:
            state['steps'] += 1
            if state['first_step_t'] is None:
                state['first_step_t'] = time.monotonic()
            if r.done:
                state['episodes'].append((state['steps'], bool(r.terminated)))

    def on_status(msg):
        for st in msg.status:
            if st.name.endswith('learner_node'):
                with lock:
                    state['learner'] = {kv.key: kv.value for kv in st.values}

    def on_update(msg):
        try:
            from ..algo.serialize import BlockUpdate
            u = BlockUpdate.from_bytes(M.update_from_msg(msg))
        except Exception:  # noqa: BLE001 - only for the curve's markers
            return
        with lock:
            state['versions'].append((state['steps'], u.version))

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('swfp_demo_monitor', context=context)
    for i in range(actors):
        node.create_subscription(Float64MultiArray, f'/actor{i}/swfp/reward', on_reward, REWARD_QOS)
    node.create_subscription(DiagnosticArray, '/swfp/status', on_status, 50)
    node.create_subscription(UInt8MultiArray, '/swfp/policy_update', on_update, UPDATE_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def interrupt(*_):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)   # SIGTERM too: stop the graph's processes on the way out
    t0 = time.monotonic()
    actor_procs = []
    stopped: list = []

    def check_alive():
        for p in up_learner.procs + up_actors.procs:
            if p.popen.poll() is not None and p not in stopped:
                raise RuntimeError(f'{p.label} exited with status {p.popen.returncode} (see {out / "graph.log"})')
    try:
        up_learner.start()
        learner = up_learner.procs[0]
        while not state['learner']:                    # the learner is up (its status: subscription made)
            check_alive()
            if time.monotonic() - t0 > 120:
                raise TimeoutError('the learner node did not come up within 120 s')
            time.sleep(0.1)
        up_actors.start()
        actor_procs = list(up_actors.procs)
        last_log = 0.0
        while True:                                    # 1. act until the budget is spent
            check_alive()
            with lock:
                steps, lstat = state['steps'], dict(state['learner'])
            if steps >= env_steps:
                acting_s, acting_steps = time.monotonic() - state['first_step_t'], steps
                break
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f'graph fine-tuning: {steps}/{env_steps} env steps after {timeout_s:.0f} s')
            if time.monotonic() - last_log > 10.0:
                last_log = time.monotonic()
                elapsed = time.monotonic() - t0
                eta = f', ETA {elapsed * (env_steps - steps) / steps:.0f} s' if steps else ''
                log(f'  graph: {steps:5d}/{env_steps} env steps, learner stored {lstat.get("env_steps", "-")}, '
                    f'version {lstat.get("version", "-")}, blocks {lstat.get("blocks_accepted", "-")}/'
                    f'{lstat.get("blocks_trained", "-")}, {elapsed:.0f} s{eta}')
            time.sleep(0.05)
        for p in actor_procs:                          # 2. stop the actors
            _killpg(p.popen.pid, signal.SIGINT)
        for p in actor_procs:
            p.popen.wait(timeout=30)
            stopped.append(p)
        log(f'  graph: budget spent ({state["steps"]} env steps, {time.monotonic() - t0:.0f} s); actors stopped, '
            f'learner finishing')
        stable_since, last = time.monotonic(), None   # 3. the learner trains on everything it received
        while True:
            check_alive()
            with lock:
                lstat = dict(state['learner'])
            key = (lstat.get('received'), lstat.get('env_steps'), lstat.get('updates'))
            if key != last:
                last, stable_since = key, time.monotonic()
            if lstat.get('idle') == 'true' and time.monotonic() - stable_since > 2.0:
                break
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError('graph fine-tuning: the learner did not finish in time')
            time.sleep(0.1)
        _killpg(learner.popen.pid, signal.SIGINT)       # 4. final checkpoint
        learner.popen.wait(timeout=120)
        stopped.append(learner)
    finally:
        signal.signal(signal.SIGTERM, previous)
        rc = up_actors.shutdown()                      # whatever still runs: SIGINT, grace, SIGKILL
        rc = up_learner.shutdown() or rc
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        logf.close()
    if rc != 0:
        raise RuntimeError(f'the graph did not shut down cleanly (status {rc}); see {out / "graph.log"}')
    with lock:
        return GraphRun(checkpoint=str(ckpt_dir / 'learner.pt'), env_steps=int(state['learner'].get('env_steps', 0)),
                        actor_steps=state['steps'], episodes=list(state['episodes']),
                        versions=list(state['versions']), learner=dict(state['learner']),
                        wall_s=time.monotonic() - t0, acting_s=acting_s,
                        acting_steps=acting_steps)


def evaluate_checkpoint(path: str, task: str, episodes: int, seed: int = 1_000_000) -> float:
    """Success rate of the stochastic policy (as deployed) in-process, episodes seeded ``seed + i``."""
    from ..algo.checkpoint import load_policy
    from .finetune import evaluate_runtime
    runtime = load_policy(str(path), device='cpu', seed=0)
    return evaluate_runtime(runtime, task, episodes, num_envs=8, seed=seed)['success_rate']


def plot_curve(path: Path, run: GraphRun, bc_success: float, ft_success: float, title: str, window: int = 20) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    if run.episodes:
        steps = np.array([s for s, _ in run.episodes])
        succ = np.array([float(x) for _, x in run.episodes])
        avg = np.convolve(succ, np.ones(window), 'valid') / window if len(succ) >= window else np.cumsum(succ) / \
            np.arange(1, len(succ) + 1)
        ax.plot(steps[len(steps) - len(avg):], avg, label=f'training episodes (moving mean of {window})')
    ax.axhline(bc_success, color='gray', ls='--', label=f'BC evaluation ({bc_success:.2f})')
    ax.axhline(ft_success, color='green', ls='--', label=f'fine-tuned evaluation ({ft_success:.2f})')
    for i, (s, v) in enumerate(run.versions):
        if v > 0:
            ax.axvline(s, color='orange', alpha=0.4, lw=1, label='policy update received' if i == 1 else None)
    ax.set_xlabel('env steps (all actors)')
    ax.set_ylabel('success rate')
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class DemoConfig:
    task: str = 'panda_reach'
    demos: int = 50
    noise: float = 1.0
    epsilon: float = 0.4      # with noise 1.0: BC starts around 0.4-0.6 on reach
    bc_steps: int = 3000
    env_steps: int = 4000
    actors: int = 2
    eval_episodes: int = 100
    seed: int = 0
    out: str = 'outputs/demo'
    swfp: dict = field(default_factory=lambda: dict(DEMO_SWFP))


def run_demo(cfg: DemoConfig, log=print) -> dict:
    import torch

    from ..data import ingest, write_demo_bag
    from ..paths import config_path
    from ..sim import make_env
    from .demos import collect_demos
    from .pretrain import pretrain

    torch.set_num_threads(1)
    _ensure_domain()
    t0 = time.monotonic()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # 1. noisy expert demonstrations, recorded as a rosbag2 and ingested back (the path real demos take)
    log(f'[1/5] {cfg.demos} noisy expert demos on {cfg.task} (noise {cfg.noise}, epsilon {cfg.epsilon}) -> rosbag')
    dataset, records = collect_demos(cfg.task, cfg.demos, cfg.noise, cfg.epsilon, seed=cfg.seed, progress=None)
    bag = out / 'demos_bag'
    if bag.exists():
        shutil.rmtree(bag)
    base = make_env(cfg.task).unwrapped
    write_demo_bag(bag, records, joint_names=base.joint_names, task_labels=base.task_labels,
                   control_rate_hz=base.control_rate_hz)
    ingested = ingest(bag, config_path(f'ingest_{cfg.task}.yaml'), progress=False)
    log(f'      demo success {dataset.success_rate:.2f}; bag {bag} -> {ingested}')
    # 2. BC
    log(f'[2/5] BC, {cfg.bc_steps} steps')
    bc_path = out / 'bc.pt'
    pretrain(ingested, bc_path, steps=cfg.bc_steps, seed=cfg.seed, progress=None)   # bars on a terminal only
    # 3. BC evaluation
    bc_success = evaluate_checkpoint(str(bc_path), cfg.task, cfg.eval_episodes)
    log(f'[3/5] BC success {bc_success:.2f} ({cfg.eval_episodes} episodes, {time.monotonic() - t0:.0f} s so far)')
    # 4. fine-tuning through the node graph
    log(f'[4/5] SWFP fine-tuning through the sim_finetune graph: {cfg.actors} actor(s) + 1 learner, '
        f'{cfg.env_steps} env steps, swfp {cfg.swfp} (ROS_DOMAIN_ID {os.environ.get("ROS_DOMAIN_ID", "?")})')
    run = run_graph_finetune(str(bc_path), out, cfg.env_steps, cfg.swfp, cfg.task, cfg.actors, cfg.seed, log=log)
    log(f'      learner: {run.learner.get("env_steps")} env steps, version {run.learner.get("version")}, blocks '
        f'accepted {run.learner.get("blocks_accepted")}/{run.learner.get("blocks_trained")}, '
        f'{len(run.episodes)} training episodes, {run.wall_s:.0f} s')
    # 5. evaluation of the learner's final policy, curve
    ft_success = evaluate_checkpoint(run.checkpoint, cfg.task, cfg.eval_episodes)
    log(f'[5/5] fine-tuned success {ft_success:.2f}')
    png = out / 'learning_curve.png'
    plot_curve(png, run, bc_success, ft_success, f'SWFP through the ROS 2 graph, {cfg.task}')
    result = {'task': cfg.task, 'bc_success': bc_success, 'finetuned_success': ft_success,
              'env_steps': run.env_steps, 'actor_env_steps': run.actor_steps, 'actors': cfg.actors,
              'policy_version': int(run.learner.get('version', 0)),
              'blocks_accepted': int(run.learner.get('blocks_accepted', 0)),
              'eval_episodes': cfg.eval_episodes, 'graph_s': round(run.wall_s, 1),
              'wall_s': round(time.monotonic() - t0, 1), 'curve': str(png)}
    (out / 'result.json').write_text(json.dumps({**result, 'config': asdict(cfg),
                                                 'episodes': run.episodes, 'versions': run.versions}, indent=1))
    log(f'BC {bc_success:.2f} -> fine-tuned {ft_success:.2f} after {run.env_steps} env steps through the ROS graph; '
        f'curve {png}; {result["wall_s"]:.0f} s')
    return result


