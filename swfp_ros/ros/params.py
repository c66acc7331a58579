"""Node parameters declared from one table per node: description, range, read-only flag, live changes.

Each node lists its parameters as :class:`ParamSpec` rows and calls :func:`declare_params` once. Every parameter then
shows its description, range and constraints under ``ros2 param describe``, and ``ros2 param set`` either applies or
is refused with the reason -- never accepted and then ignored:

- ``applies='start'`` (the default): read once when the node starts; declared ``read_only`` (rclpy refuses a set),
  and the constraints say "restart the node to change it".
- ``applies='live'``: the node's ``on_live(changes)`` applies the new values inside the on-set callback; it returns
  '' to accept or the reason to refuse (nothing is stored then).
- ``applies='configure'`` (lifecycle nodes): read at the ``configure`` transition; a set is accepted while the node is
  unconfigured and refused with ``configure_refusal()``'s reason otherwise.

Units are in the names: a duration in seconds ends in ``_s`` (``status_period_s``). A renamed parameter keeps its
former name (``ParamSpec.former``) as a read-only alias: a value given under it is used, with a deprecation warning,
unless the new name is given too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from .executors import StartRefused

START_NOTE = 'read at start: restart the node to change it'
LIVE_NOTE = 'applies live'
CONFIGURE_NOTE = 'read at configure: set it while unconfigured (deactivate, cleanup, set, configure)'
INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    applies: str = 'start'            # start | live | configure
    low: float | None = None          # inclusive range (ints and doubles); None = unbounded on that side
    high: float | None = None
    choices: tuple[str, ...] = ()     # the allowed strings
    former: str = ''                  # the previous name, still read with a deprecation warning
    dynamic_typing: bool = False      # YAML may give an int for a double (swfp.* of the learner)

    def __post_init__(self):
        if self.applies not in ('start', 'live', 'configure'):
            raise ValueError(f'{self.name}: applies must be start, live or configure, got {self.applies!r}')

    def descriptor(self) -> ParameterDescriptor:
        notes = [f'one of: {" | ".join(self.choices)}'] if self.choices else []
        notes.append({'start': START_NOTE, 'live': LIVE_NOTE, 'configure': CONFIGURE_NOTE}[self.applies])
        d = ParameterDescriptor(description=self.description, additional_constraints='; '.join(notes),
                                read_only=self.applies == 'start', dynamic_typing=self.dynamic_typing)
        if (self.low is not None or self.high is not None) and not self.dynamic_typing:
            if isinstance(self.default, bool):
                raise ValueError(f'{self.name}: a range on a boolean')
            if isinstance(self.default, int):
                d.integer_range = [IntegerRange(from_value=int(self.low if self.low is not None else -INT_MAX),
                                                to_value=int(self.high if self.high is not None else INT_MAX))]
            elif isinstance(self.default, float):
                d.floating_point_range = [FloatingPointRange(
                    from_value=float(self.low if self.low is not None else -float('inf')),
                    to_value=float(self.high if self.high is not None else float('inf')))]
        return d

    def problem(self, value: Any) -> str:
        """Why ``value`` is not allowed ('' when it is): the checks rclpy's descriptor cannot express."""
        if self.choices and value not in self.choices:
            return f'{self.name} must be one of {", ".join(self.choices)}, got {value!r}'
        if self.dynamic_typing and (self.low is not None or self.high is not None):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f'{self.name} must be a number, got {value!r}'
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                allowed = (f'in [{self.low}, {self.high}]' if self.low is not None and self.high is not None
                           else f'>= {self.low}' if self.low is not None else f'<= {self.high}')
                return f'{self.name} must be {allowed}, got {value!r}'
        return ''


def declare_params(node, specs: list[ParamSpec], on_live: Callable[[dict[str, Any]], str] | None = None,
                   configure_refusal: Callable[[], str] | None = None) -> dict[str, Any]:
    """Declare ``specs`` on ``node`` (descriptors, former names), install the on-set callback and return the values.

    Raises StartRefused naming the parameter when a given value is not allowed (out of range, not one of the choices).
    """
    table = {s.name: s for s in specs}
    values = {}
    for spec in specs:
        default = spec.default
        if spec.former:
            old = node.declare_parameter(spec.former, None, ParameterDescriptor(
                description=f'deprecated: the former name of {spec.name}', read_only=True, dynamic_typing=True))
            if old.value is not None:
                node.get_logger().warning(f'parameter {spec.former} is deprecated: use {spec.name}')
                default = old.value
        try:
            value = node.declare_parameter(spec.name, default, spec.descriptor()).value
        except Exception as e:  # noqa: BLE001 - rclpy's range/type exceptions, reported with the parameter's name
            raise StartRefused(f'parameter {spec.name}: {e}') from None
        why = spec.problem(value)
        if why:
            raise StartRefused(why)
        values[spec.name] = value

    def on_set(params) -> SetParametersResult:
        live = {}
        for p in params:
            spec = table.get(p.name)
            if spec is None:
                continue                            # rclpy's own (use_sim_time) and aliases (read-only)
            # (a start parameter never gets here: rclpy refuses it as read-only before calling back)
            why = spec.problem(p.value)
            if not why and spec.applies == 'configure' and configure_refusal is not None:
                why = configure_refusal()
                why = f'{p.name} is {CONFIGURE_NOTE}: {why}' if why else ''
            if why:
                return SetParametersResult(successful=False, reason=why)
            if spec.applies == 'live':
                live[p.name] = p.value
        why = on_live(live) if live and on_live is not None else ''
        return SetParametersResult(successful=not why, reason=why or '')

    node.add_on_set_parameters_callback(on_set)
    return values


def set_period(timer, seconds: float) -> None:
    """A live period change: rcl keeps the next call at the old period's time unless the timer is reset."""
    timer.timer_period_ns = int(seconds * 1e9)
    timer.reset()
