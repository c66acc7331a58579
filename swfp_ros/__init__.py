"""swfp_ros: Stepwise Flow Policy fine-tuning of flow-matching robot policies, as a ROS 2 package.

Sub-packages, from the inside out (only ``ros`` imports rclpy):
    algo   -- the SWFP algorithm: flow policy, JKO refinement blocks, critic, replay, learner (torch + numpy)
    sim    -- MuJoCo Franka Panda tasks as gymnasium environments, scripted experts, offscreen rendering
    data   -- demonstration datasets and rosbag2 recording / ingestion (the `rosbags` library, no ROS runtime)
    train  -- training workspaces and runners: BC pre-training, in-process online fine-tuning, baselines, evaluation
    ros    -- the ROS 2 nodes (policy, learner, sim bridge, recorder), message conversion, graph bring-up

The public API (``swfp_ros.api``), imported on first use so that ``import swfp_ros`` loads neither torch nor MuJoCo:
    load_policy(path) -> Policy   a checkpoint's policy: act(obs), task, obs_labels, action_labels, chunk, version
    make_env(task)                a task as a gymnasium environment
    load_dataset(path, spec=None) demonstrations from a .npz, or from rosbags through an ingest spec
    evaluate(env, policy, ...)    success rate and return over seeded episodes
"""
__version__ = '0.1.0'

__all__ = ['Policy', 'evaluate', 'load_dataset', 'load_policy', 'make_env']


def __getattr__(name: str):
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted([*globals(), *__all__])
