"""The algorithm settings of a run, read from the learner node's ROS parameter file so that the in-process runner
and the node graph train with the same values (`config/learner.yaml`, section `swfp:`)."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..algo.config import SwfpConfig
from ..paths import config_path


def _parameters(doc: dict, path: Path) -> dict:
    """The `ros__parameters` of the first node entry (`/**`, `learner_node`, ...) of a ROS parameter file."""
    for entry in doc.values():
        if isinstance(entry, dict) and 'ros__parameters' in entry:
            return entry['ros__parameters']
    raise ValueError(f'{path}: not a ROS parameter file (no <node>: ros__parameters: section)')


def _set(tree: dict, dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split('.')
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = yaml.safe_load(raw)


def load_swfp_config(path: str | Path | None = None, overrides: list[str] = ()) -> SwfpConfig:
    """SwfpConfig from the `swfp:` parameters of a learner parameter file (default: the package's learner.yaml),
    then ``overrides`` like ``block.delta=0.2`` or ``warmup_steps=2000``."""
    path = Path(path) if path else config_path('learner.yaml')
    with path.open() as f:
        values = dict(_parameters(yaml.safe_load(f) or {}, path).get('swfp') or {})
    for item in overrides:
        key, sep, raw = item.partition('=')
        if not sep:
            raise ValueError(f'override {item!r}: expected key=value, e.g. block.delta=0.2')
        _set(values, key.strip(), raw)
    try:
        return SwfpConfig.from_dict(values)
    except TypeError as e:   # unknown field in a sub-config
        raise ValueError(f'{path}: bad swfp settings: {e}') from None
