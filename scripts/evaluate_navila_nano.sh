#!/usr/bin/env bash
# The README's navila-nano table: every policy through the sim_eval ROS 2 graph (simulator,
# navigator, motion controller, evaluator over Fast DDS) on the same 100 val_unseen episodes,
# then `nvila-nav-report` (table, episode-length plot, failure GIFs).
#   scripts/evaluate_navila_nano.sh [POLICY ...]   default: all of them; a finished run is kept
# Policies: navila-nano, random, forward, navila-nano-blind (needs models/navila-nano-blind).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/eval}
RTF=${RTF:-4}
EPISODES=data/sim/eval_val_unseen.json.gz
export MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$OUT"
[[ -f $EPISODES ]] || "$PY" -m nvila_nav.sim episodes --split val_unseen --n 100 --seed 0 --out "$EPISODES"

run() {  # run NAME BRINGUP-ARGS...
  local name=$1; shift
  if [[ -f $OUT/$name/summary.json ]]; then echo "$name: done ($OUT/$name)"; return; fi
  echo "$name: $OUT/$name"
  "$PY" -m nvila_nav.nodes.bringup sim_eval --episodes "$EPISODES" --output-dir "$OUT/$name" \
    --label "$name" --real-time-factor "$RTF" --params-file config/eval/val_unseen_100.yaml \
    "$@" --ros-args --log-level warn
}

blind_params() {
  printf 'navigator:\n  ros__parameters:\n    blank_frames: true\n' > "$OUT/blind.navigator.yaml"
  echo "$OUT/blind.navigator.yaml"
}

POLICIES=("$@")
[[ ${#POLICIES[@]} -gt 0 ]] || POLICIES=(navila-nano random forward navila-nano-blind)
RUNS=()
for p in "${POLICIES[@]}"; do
  case $p in
    navila-nano) run "$p" --policy nvila --model models/navila-nano ;;
    random) run "$p" --policy random ;;
    forward) run "$p" --policy forward ;;
    navila-nano-blind) run "$p" --policy nvila --model models/navila-nano-blind --params-file "$(blind_params)" ;;
    *) echo "unknown policy $p" >&2; exit 2 ;;
  esac
  RUNS+=(--run "$p=$OUT/$p")
done
"$PY" -m nvila_nav.report "${RUNS[@]}" --episodes "$EPISODES" --out "$OUT/report" --gifs 3
