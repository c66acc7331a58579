"""The actor side as a library (numpy only, no rclpy): the control loop that turns observations into safe commands
and transitions. The ROS policy node is a thin shell around it; tests and in-process runners drive it directly."""
from .loop import ActorConfig, ActorLoop, ActorWorker, Observation, Pending
from .types import RewardInfo, Transition

__all__ = ['ActorConfig', 'ActorLoop', 'ActorWorker', 'Observation', 'Pending', 'RewardInfo', 'Transition']
