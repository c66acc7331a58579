"""The SWFP algorithm: pure torch + numpy, no ROS, no simulator (docs/algorithm.md describes it).

    flow.FlowPolicy          base policy: flow matching, K Euler steps, exact log-density
    blocks.Cascade           base + frozen JKO refinement blocks, clipped once at the end
    jko.train_block          one JKO step under a hard W2 trust region -> (block | None, BlockReport)
    critic.Critic            twin LayerNorm Q, Polyak targets, chunk-aware n-step TD
    learner.Learner          online loop: transitions -> critic -> blocks -> BlockUpdates (naive.NaiveLearner: baseline)
    serialize.BlockUpdate    checksummed wire format of an update (UpdateRejected on anything wrong)
    auth                     HMAC-SHA256 signatures of updates with a shared key
    runtime.PolicyRuntime    actor side: act() + checked (UpdateChecks), atomic updates (prepare + commit)
    checkpoint               save/load_policy, save/load_learner (CheckpointError)
    bc.train_bc              behaviour cloning of the base flow
"""
from .blocks import Cascade, RefinementBlock
from .config import BlockConfig, CriticConfig, FlowConfig, SwfpConfig, resolve_device
from .flow import FlowPolicy
from .learner import Learner
from .normalize import ObsNormalizer
from .runtime import PolicyRuntime
from .serialize import BlockUpdate, UpdateRejected

__all__ = ['BlockConfig', 'BlockUpdate', 'Cascade', 'CriticConfig', 'FlowConfig', 'FlowPolicy', 'Learner',
           'ObsNormalizer', 'PolicyRuntime', 'RefinementBlock', 'SwfpConfig', 'UpdateRejected', 'resolve_device']
