"""Node-level guards of the policy node as pure logic (no rclpy): who else publishes on the command topic, and who may
release the e-stop. The policy node feeds them what the ROS graph API reports (publisher endpoints: node name and
namespace, endpoint gid) and acts on their answers; tests drive them directly.

Node names are not credentials: any participant can create a node with any name. These checks catch a stray tool,
a second driver or a mistaken operator; against a deliberate attacker only DDS security (SROS2: authentication and
per-topic access control) stops a participant from publishing at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

# What rmw reports for an endpoint whose node it does not know (yet): a participant that is not a ROS node, or one
# whose node list has not arrived (ros_discovery_info comes after the endpoint's own discovery).
UNKNOWN_NODE = '_NODE_NAME_UNKNOWN_'
UNKNOWN_NAMESPACE = '_NODE_NAMESPACE_UNKNOWN_'
# A release whose sender the graph still cannot name after this long is refused as coming from an unknown node.
RELEASE_SOURCE_TIMEOUT_S = 2.0


def fully_qualified(namespace: str, name: str) -> str:
    """'/ns' + 'name' -> '/ns/name'; '/' + 'name' -> '/name'; unknown parts stay as rmw reports them."""
    if name == UNKNOWN_NODE or namespace == UNKNOWN_NAMESPACE:
        return UNKNOWN_NODE
    return namespace.rstrip('/') + '/' + name


@dataclass(frozen=True)
class Endpoint:
    """One publisher on a topic, as the graph API reports it."""
    node: str                      # fully qualified node name, or UNKNOWN_NODE
    gid: bytes


def node_names(values: Iterable[str] | None) -> tuple[str, ...]:
    """Parameter values -> fully qualified node names ('operator' and '/operator' both mean '/operator')."""
    names = []
    for v in values or ():
        v = str(v).strip()
        if not v:
            continue
        if any(c.isspace() for c in v) or v.endswith('/'):
            raise ValueError(f'not a node name: {v!r} (expected e.g. /operator_panel or /arm1/operator_panel)')
        names.append(v if v.startswith('/') else '/' + v)
    return tuple(names)


@dataclass
class CommandPublisherWatch:
    """Other publishers on the topic this node commands the arm on. This node owns exactly one publisher there; any
    other endpoint -- another node's, or a second one under this node's own name (a duplicate node) -- is foreign."""
    own: str                                       # this node's fully qualified name
    current: tuple[str, ...] = ()                  # node names of the foreign publishers at the last update
    seen: set[bytes] = field(default_factory=set)  # gids of every foreign publisher seen so far

    def update(self, endpoints: Sequence[Endpoint]) -> list[str]:
        """Record the topic's publishers now; returns the names of foreign publishers not seen before."""
        own = [e for e in endpoints if e.node == self.own]
        foreign = [e for e in endpoints if e.node != self.own]
        if len(own) > 1:                       # which one is ours is unknown: report the extra ones by name
            foreign += own[1:]
        self.current = tuple(sorted(e.node for e in foreign))
        new = [e.node for e in foreign if e.gid not in self.seen]
        self.seen.update(e.gid for e in foreign)
        return new


@dataclass(frozen=True)
class ReleaseDecision:
    source: str                     # the sender's fully qualified node name, or UNKNOWN_NODE
    allowed: bool


class EstopReleaseGuard:
    """Engaging the e-stop is open to every node; releasing it only to the configured ``sources``. A release whose
    sender the graph cannot name yet waits (at most RELEASE_SOURCE_TIMEOUT_S) in arrival order; an engage drops the
    releases waiting before it, since the latest message is the one that counts."""

    def __init__(self, sources: Sequence[str]):
        self.sources = tuple(sources)
        self._pending: list[tuple[bytes, float]] = []

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def engaged(self) -> None:
        self._pending.clear()

    def release(self, gid: bytes, t: float) -> None:
        self._pending.append((gid, t))

    def decide(self, names: Mapping[bytes, str], now: float) -> list[ReleaseDecision]:
        """Decisions for the waiting releases whose sender is known now (``names``: publisher gid -> node name), or
        that waited too long; the rest keep waiting behind the first undecided one (order is kept)."""
        out = []
        while self._pending:
            gid, t = self._pending[0]
            name = names.get(gid, UNKNOWN_NODE)
            if name == UNKNOWN_NODE and now - t < RELEASE_SOURCE_TIMEOUT_S:
                break
            self._pending.pop(0)
            out.append(ReleaseDecision(name, name != UNKNOWN_NODE and name in self.sources))
        return out
