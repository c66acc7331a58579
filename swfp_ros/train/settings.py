"""The algorithm settings of a run, read from the learner node's ROS parameter file so that the in-process runner
and the node graph train with the same values (`config/learner.yaml`, section `swfp:`)."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..algo.config import ConfigError, SwfpConfig
from ..paths import config_path


class SettingsError(ValueError):
    """Settings that cannot be used; the message says where they came from (the file, or the ``--set`` item)."""


def _parameters(doc, path: Path) -> dict:
    """The `ros__parameters` of the first node entry (`/**`, `learner_node`, ...) of a ROS parameter file."""
    for entry in (doc.values() if isinstance(doc, dict) else ()):
        if isinstance(entry, dict) and isinstance(entry.get('ros__parameters'), dict):
            return entry['ros__parameters']
    raise SettingsError(f'{path}: not a ROS parameter file (no <node>: ros__parameters: section)')


def _set(tree: dict, dotted: str, raw: str, item: str) -> None:
    *parents, leaf = dotted.split('.')
    for depth, key in enumerate(parents):
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise SettingsError(f"--set {item}: {'.'.join(parents[:depth + 1])} is a single setting, not a group")
    tree[leaf] = yaml.safe_load(raw) if raw.strip() else None


def load_swfp_config(path: str | Path | None = None, overrides: list[str] = ()) -> SwfpConfig:
    """SwfpConfig from the `swfp:` parameters of a learner parameter file (default: the package's learner.yaml),
    then ``overrides`` like ``block.delta=0.2`` or ``warmup_steps=2000``. ``SettingsError`` blames the file or the
    override, naming the setting and what it must be."""
    path = Path(path) if path else config_path('learner.yaml')
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SettingsError(f'{path}: no such file') from None
    except OSError as e:
        raise SettingsError(f'{path}: cannot read it ({e.strerror})') from None
    except yaml.YAMLError as e:
        raise SettingsError(f'{path}: invalid YAML ({" ".join(str(e).split())})') from None
    values = _parameters(doc, path).get('swfp')
    if not isinstance(values, dict):
        raise SettingsError(f'{path}: no swfp: section under ros__parameters; the algorithm settings live in a '
                            f'learner parameter file such as {config_path("learner.yaml")}')
    values = dict(values)
    given = {}   # dotted key -> the override that set it
    for item in overrides:
        key, sep, raw = item.partition('=')
        key = key.strip()
        if not sep or not key:
            raise SettingsError(f'--set {item}: expected KEY=VALUE, e.g. block.delta=0.2')
        _set(values, key, raw, item)
        given[key] = item
    try:
        return SwfpConfig.from_dict(values)
    except ConfigError as e:
        blamed = [k for k in given if k == e.key or k.startswith(f'{e.key}.') or e.key.startswith(f'{k}.')]
        if not blamed:
            raise SettingsError(f'{path}: swfp.{e}') from None
        key = blamed[-1]
        raise SettingsError(f'--set {given[key]}: {e.problem if key == e.key else e}') from None
