#!/usr/bin/env bash
# Creates or refreshes .venv with everything nvila_nav needs. Idempotent: a second run with
# unchanged requirements does nothing but check.
#
#   - Python >= 3.10 virtual environment in .venv
#   - torch installed first and explicitly (CPU build, torch==2.13.0) unless one is already importable
#   - ROS 2: a sourced ROS install is used when its rclpy imports; otherwise the pinned PyPI wheels
#   - Debian packages for headless rendering (EGL/Mesa), speech synthesis for tests (espeak-ng) and
#     the microphone (PortAudio), via apt when running as root
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NVILA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0"
DEBIAN_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 espeak-ng libportaudio2)

log() { printf '[setup_env] %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------------------
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "WARNING: missing Debian packages: ${missing[*]}"
    log "         install them with: sudo apt-get install ${missing[*]}"
    log "         (EGL/Mesa: headless MuJoCo rendering; espeak-ng: speech tests; libportaudio2: microphone)"
  fi
fi

# --- Python and the virtual environment ---------------------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  log "ERROR: Python >= 3.10 is required (found $("$PYTHON" --version 2>&1))"; exit 1; }

ros_sourced=0
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c 'import rclpy' >/dev/null 2>&1; then
  ros_sourced=1
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$ros_sourced" = "1" ]; then
    log "creating $VENV on top of the sourced ROS 2 $ROS_DISTRO install"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"

stamp="$VENV/.nvila_nav_stamp"
want="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-ros.txt" "$ROOT/setup.py" "$0" | sha256sum | cut -d' ' -f1)-ros$ros_sourced"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c 'import torch, rclpy, nvila_core, nvila_nav' >/dev/null 2>&1; then
  log "$VENV is up to date"
  exit 0
fi

"$VPY" -m pip install -q --upgrade "pip>=24" "setuptools>=70" wheel

# torch first and explicitly: letting pip resolve torch on its own pulls a multi-GB CUDA build.
if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  log "installing $TORCH_SPEC (CPU build)"
  "$VPY" -m pip install -q "$TORCH_SPEC"
fi

log "installing pinned requirements"
"$VPY" -m pip install -q -r "$ROOT/requirements.txt"

if "$VPY" -c 'import rclpy' >/dev/null 2>&1; then
  log "rclpy found (ROS 2 ${ROS_DISTRO:-from wheels})"
else
  log "installing ROS 2 Kilted rclpy + message wheels from PyPI"
  "$VPY" -m pip install -q -r "$ROOT/requirements-ros.txt"
fi

log "installing nvila_nav (editable)"
"$VPY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"

"$VPY" -c 'import torch, rclpy, nvila_core, nvila_nav' || { log "ERROR: import check failed"; exit 1; }
echo "$want" > "$stamp"
log "ready: $VENV (torch $("$VPY" -c 'import torch; print(torch.__version__)'))"
