"""The QoS profiles of the topic contract, one definition each: publisher and subscriber of a topic import the same
profile, so the two sides cannot drift apart (nodes, tests and benchmarks all take them from here; the learner's
transition and update depths are its parameters, hence the two functions)."""
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

# swfp/task: state, not a stream: a late subscriber needs the latest value -> transient local, depth 1.
TASK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                      history=HistoryPolicy.KEEP_LAST)
# The home posture is state, like the task: latched, the latest value only.
HOME_QOS = TASK_QOS
# swfp/reward: every step's reward matters to the learner -> reliable with room for bursts.
REWARD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# swfp/episode, as published (sim bridge, task monitor): the index of the running episode, sent once at its start.
# Latched as well, so that a recorder joining mid-episode still gets its marker: without it, ingestion drops the
# episode's steps as recorded before the first marker, and a bag shorter than one episode has none at all. Depth 100:
# a slow reader loses no marker (a late joiner gets the recent ones at once, which mark episodes of no steps). The
# policy node subscribes with REWARD_QOS (volatile, no replay), which matches it.
EPISODE_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)
# swfp/action: commands must not be dropped in lockstep (a lost action would stall the loop) -> reliable.
ACTION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# joint_states, as the policy node takes them: best effort, as drivers publish, but deep (the sensor-data profile keeps
# 5): when that process stalls (a busy machine) and the joint states turn invalid meanwhile, the last valid one must
# still be in the queue -- the node holds there, and holding at the one it saw before the stall can command a jump back
# from where the arm now is. 100 covers a 1 s stall of a 100 Hz driver (0.1 s at 1 kHz); the backlog is cheap to drain.
JOINT_STATE_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.VOLATILE, history=HistoryPolicy.KEEP_LAST)


def transition_qos(depth: int) -> QoSProfile:
    """/swfp/transition: deep and reliable: a learner that is slow to take data must not lose transitions (the
    learner's side takes its depth from its ``queue_depth`` parameter)."""
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                      history=HistoryPolicy.KEEP_LAST)


def update_qos(depth: int) -> QoSProfile:
    """/swfp/policy_update: latched: a policy node that (re)starts after the learner published receives the latest
    base and the blocks after it (the learner's side keeps as many as its update depth)."""
    return QoSProfile(depth=int(depth), reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)


TRANSITION_QOS = transition_qos(1000)
UPDATE_QOS = update_qos(64)
# /swfp/estop: latched: a policy that (re)starts after it was engaged gets it.
ESTOP_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                       history=HistoryPolicy.KEEP_LAST)
# /swfp/learner_backlog: the latest count only, latched.
BACKLOG_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                         history=HistoryPolicy.KEEP_LAST)
