"""Where the package's data files (config/, launch/) live, whichever way it was installed."""
import sys
from pathlib import Path

PACKAGE = 'swfp_ros'
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def share_dir() -> Path:
    """The package's share directory.

    Order: the ament index (colcon / ROS install), then ``<sys.prefix>/share/swfp_ros`` (``pip install .``),
    then the source checkout (``pip install -e .`` installs no data files).
    """
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory(PACKAGE))
        except (PackageNotFoundError, OSError):   # OSError: AMENT_PREFIX_PATH unset (pip-only machine)
            pass
    except ImportError:
        pass
    prefix_share = Path(sys.prefix) / 'share' / PACKAGE
    if (prefix_share / 'package.xml').is_file():
        return prefix_share
    if (_SOURCE_ROOT / 'package.xml').is_file():
        return _SOURCE_ROOT
    raise FileNotFoundError(f'cannot find the {PACKAGE} share directory (no ament index entry, '
                            f'no {prefix_share}, no source checkout)')


def config_path(name: str) -> Path:
    """A file in the package's config/ directory, e.g. ``config_path('sim_finetune.yaml')``."""
    path = share_dir() / 'config' / name
    if not path.is_file():
        raise FileNotFoundError(f'no config file {name!r} in {path.parent}')
    return path
