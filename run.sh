#!/usr/bin/env bash
# One entry point for a fresh machine: sets everything up (scripts/bootstrap.sh), then
#   ./run.sh demo            the main job on the embedded default configuration
#   ./run.sh test [ARGS]     the test suite (what CI runs)
#   ./run.sh swfp ARGS       any `swfp` subcommand inside the project's venv
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# Offscreen rendering without a display; DDS discovery kept on this host.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"

cmd=${1:-demo}
shift || true
case "$cmd" in
  demo) exec swfp demo "$@" ;;
  test) exec python -m pytest -q test "$@" ;;
  swfp) exec swfp "$@" ;;
  *) echo "usage: ./run.sh demo | test [pytest args] | swfp ARGS" >&2; exit 2 ;;
esac
