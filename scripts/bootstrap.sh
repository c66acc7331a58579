#!/usr/bin/env bash
# Idempotent set-up of a fresh x86_64 Debian/Ubuntu machine: system libraries for offscreen MuJoCo rendering,
# then a local .venv with this package (editable) and its pinned dependencies, ROS 2 Kilted wheels included.
# Re-runs are cheap: the install is skipped while setup.py and package.xml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
GL_PACKAGES="libegl1 libgl1 libgl1-mesa-dri libgles2"

missing_gl=""
for pkg in $GL_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing_gl="$missing_gl $pkg"
done
if [ -n "$missing_gl" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[bootstrap] installing system packages for offscreen rendering:$missing_gl"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing_gl python3-venv >/dev/null
  else
    echo "[bootstrap] warning: rendering needs:$missing_gl (run: sudo apt-get install$missing_gl)" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.swfp_installed
want=$(cat setup.py package.xml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import swfp_ros" 2>/dev/null; then
  echo "[bootstrap] installing swfp_ros and its pinned dependencies into .venv (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[ros,baselines,ogbench,test]'
  echo "$want" > "$stamp"
fi
