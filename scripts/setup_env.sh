#!/usr/bin/env bash
# Creates or refreshes .venv with everything nvila_nav needs. Idempotent: a second run with
# unchanged requirements does nothing but check.
#
#   - a virtual environment in .venv, with one of two profiles of pinned packages:
#       full   requirements.txt, everything (simulator, training, kernels, plots); Python >= 3.11
#       robot  requirements-robot.txt, the robot side (navigator, engine, motion controller,
#              deployment, voice teleop, their tests) with numpy < 2 for ROS 2 Humble; Python 3.10
#              (Jetson with JetPack 6, Ubuntu 22.04)
#   - torch installed first and explicitly, from the index TORCH_INDEX names (default: PyTorch's CPU
#     index), unless one is already importable; every later install is constrained to that torch,
#     so pip never replaces it with a (multi-GB CUDA) build of its own choosing
#   - ROS 2: a sourced ROS install is used when its rclpy imports; otherwise the pinned PyPI wheels
#     of ROS_REQUIREMENTS
#   - Debian packages for headless rendering (EGL/Mesa), speech synthesis for tests (espeak-ng) and
#     the microphone (PortAudio), via apt when running as root
#
# Settings (environment variables; docs/installation.md shows them per machine):
#   NVILA_VENV        the virtual environment (default: .venv)
#   PYTHON            the interpreter that creates it (default: python3)
#   NVILA_PROFILE     full or robot (default: full on Python >= 3.11, robot on Python 3.10)
#   TORCH_SPEC        the torch requirement (default: torch==2.13.0)
#   TORCH_INDEX       the index torch comes from (default: https://download.pytorch.org/whl/cpu;
#                     a CUDA build: e.g. https://download.pytorch.org/whl/cu128; empty: pip's own
#                     configured index, e.g. a local mirror)
#   TORCH_CUDA        expect a CUDA build (1) or a CPU build (0); default: 1 when TORCH_INDEX
#                     names a CUDA index (/cu128, ...), else 0. A mismatch after installing is an error.
#   ROS_REQUIREMENTS  the ROS 2 wheels when no sourced ROS provides rclpy (default:
#                     requirements-ros.txt = Kilted; requirements-ros-jazzy.txt = Jazzy)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NVILA_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TORCH_INDEX="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
case "$TORCH_INDEX" in
  */cu[0-9]*) TORCH_CUDA="${TORCH_CUDA:-1}" ;;
  *) TORCH_CUDA="${TORCH_CUDA:-0}" ;;
esac
ROS_REQUIREMENTS="${ROS_REQUIREMENTS:-requirements-ros.txt}"
case "$ROS_REQUIREMENTS" in /*) ;; *) ROS_REQUIREMENTS="$ROOT/$ROS_REQUIREMENTS" ;; esac
[ -f "$ROS_REQUIREMENTS" ] || { echo "[setup_env] ERROR: $ROS_REQUIREMENTS not found" >&2; exit 1; }

log() { printf '[setup_env] %s\n' "$*"; }

# --- Python and the profile ---------------------------------------------------------------------
# The code is Python 3.10 syntax, but several pins of requirements.txt (numpy 2.4, mujoco 4.0,
# onnxruntime 1.31, matplotlib 3.11, pillow 13, triton 3.9, transformers 5.24) exist only for
# Python >= 3.11. requirements-robot.txt pins the robot side for Python 3.10.
py_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" || {
  log "ERROR: cannot run the interpreter PYTHON=$PYTHON"; exit 1; }
py_minor="${py_version#3.}"
if [ "${py_version%%.*}" != "3" ] || [ "$py_minor" -lt 10 ]; then
  log "ERROR: nvila_nav needs Python >= 3.10 (found $py_version from $PYTHON)"
  exit 1
fi
if [ -z "${NVILA_PROFILE:-}" ]; then
  if [ "$py_minor" -ge 11 ]; then NVILA_PROFILE=full; else NVILA_PROFILE=robot; fi
fi
case "$NVILA_PROFILE" in
  full)
    REQUIREMENTS="$ROOT/requirements.txt"
    DEBIAN_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libopengl0 espeak-ng libportaudio2)
    if [ "$py_minor" -lt 11 ]; then
      log "ERROR: the full profile (requirements.txt) needs Python >= 3.11 (found $py_version from $PYTHON)"
      log "       set PYTHON=python3.11 (or newer), or NVILA_PROFILE=robot for the robot side on"
      log "       Python $py_version (docs/installation.md, Jetson Orin)"
      exit 1
    fi ;;
  robot)
    REQUIREMENTS="$ROOT/requirements-robot.txt"
    DEBIAN_PACKAGES=(espeak-ng libportaudio2)
    log "profile robot (Python $py_version): requirements-robot.txt, the robot side with numpy < 2"
    log "  installs: the navigator and its engine (torch, onnxruntime; TensorRT from the system),"
    log "            the motion controller, ONNX export, voice teleop, pytest"
    log "  leaves out: the MuJoCo simulator, plots and reports, Triton kernels, training and"
    log "            fine-tuning (NVILA_PROFILE=full on Python >= 3.11 has them)" ;;
  *)
    log "ERROR: NVILA_PROFILE must be full or robot (got '$NVILA_PROFILE')"; exit 1 ;;
esac

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

# --- the virtual environment --------------------------------------------------------------------
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
want="$( (cat "$REQUIREMENTS" "$ROS_REQUIREMENTS" "$ROOT/setup.py" "$0";
          echo "$NVILA_PROFILE $TORCH_SPEC $TORCH_INDEX $TORCH_CUDA") | sha256sum | cut -d' ' -f1)-ros$ros_sourced"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VPY" -c 'import torch, rclpy, nvila_core, nvila_nav' >/dev/null 2>&1; then
  log "$VENV is up to date"
  exit 0
fi

"$VPY" -m pip install -q --upgrade "pip>=24" "setuptools>=70" wheel

# torch first and explicitly: letting pip resolve torch on its own pulls a multi-GB CUDA build
# on x86 Linux, and the wrong one (or none) on Jetson.
if ! "$VPY" -c 'import torch' >/dev/null 2>&1; then
  if [ -n "$TORCH_INDEX" ]; then
    log "installing $TORCH_SPEC from $TORCH_INDEX"
    "$VPY" -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX"
  else
    log "installing $TORCH_SPEC from pip's configured index"
    "$VPY" -m pip install -q "$TORCH_SPEC"
  fi
fi
torch_build="$("$VPY" -c 'import torch; print(torch.__version__, torch.version.cuda or "cpu")' 2>/dev/null)"
torch_cuda="$(echo "$torch_build" | cut -d' ' -f2)"
if [ "$TORCH_CUDA" = "1" ] && [ "$torch_cuda" = "cpu" ]; then
  log "ERROR: a CUDA build of torch was asked for (TORCH_CUDA=1), $VENV has torch $torch_build"
  log "       remove $VENV and run again with TORCH_INDEX set to a CUDA index (docs/installation.md)"
  exit 1
fi
if [ "$TORCH_CUDA" = "0" ] && [ "$torch_cuda" != "cpu" ]; then
  log "ERROR: a CPU build of torch was asked for (TORCH_CUDA=0), $VENV has torch $torch_build"
  log "       remove $VENV and run again, or set TORCH_CUDA=1 to keep it (docs/installation.md)"
  exit 1
fi
# Every later install keeps exactly this torch. The distribution's own version, not
# torch.__version__: PyPI's CUDA wheels say 2.8.0+cu128 there but 2.8.0 in their metadata, and
# a constraint on the former matches nothing pip can see.
constraints="$VENV/torch-constraint.txt"
"$VPY" -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > "$constraints"

log "installing pinned requirements ($(basename "$REQUIREMENTS"))"
"$VPY" -m pip install -q -r "$REQUIREMENTS" -c "$constraints"

if "$VPY" -c 'import rclpy' >/dev/null 2>&1; then
  log "rclpy found (ROS 2 ${ROS_DISTRO:-from wheels})"
else
  log "installing ROS 2 rclpy + message wheels from PyPI ($(basename "$ROS_REQUIREMENTS"))"
  "$VPY" -m pip install -q -r "$ROS_REQUIREMENTS" -c "$constraints"
fi

log "installing nvila_nav (editable)"
"$VPY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"

"$VPY" -c 'import torch, rclpy, nvila_core, nvila_nav' || { log "ERROR: import check failed"; exit 1; }
echo "$want" > "$stamp"
log "ready: $VENV (profile $NVILA_PROFILE, torch $torch_build, rclpy $("$VPY" -c 'import importlib.metadata as m
for d in ("ros-rclpy", "rclpy"):
    try:
        print(m.version(d)); break
    except m.PackageNotFoundError:
        pass
else:
    print("from ROS")'))"
