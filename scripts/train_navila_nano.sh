#!/usr/bin/env bash
# navila-nano from nothing, on a CPU: data, the three-stage navigation recipe, optional DAgger,
# then the stages that teach it to state what is close ahead before it acts and to stop within
# 0.8 m of the goal, the turn-side, route-ahead, stop-reach and landmark-side heads on its visual
# tokens, then models/navila-nano (the shipped weights come from exactly this, with no DAgger
# iteration).
#
#   make train-nano                      # or: bash scripts/train_navila_nano.sh
#
# Every step is resumable: finished datasets are not written again, training resumes from its
# newest checkpoint, finished stages, heads and DAgger iterations are skipped. Run it again
# after an interruption. On a 2-core machine: data 15-25 min, captions ~8 min, navigation
# ~55 min, navigation with merged action runs ~45 min, one DAgger iteration ~25 min, readout
# and contrast data ~10 min, readout ~8 min, navigation with statements ~30 min, the stop band
# and its contrast episodes ~3 min, navigation at the stop band ~20 min, the turn-side,
# route-ahead and stop-reach heads ~2-5 min each, the landmark-side head ~15 min. The model
# before the statement stages stays at $NANO_OUT/navila-nano/03-navigation-runs/final.
# Variables:
# NANO_DATA (data/nano), NANO_OUT (outputs/train), NANO_DAGGER_ITERATIONS (default 0),
# NANO_INSTALL (models/navila-nano; empty: do not install), NANO_THREADS (2).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV_BIN="${VENV_BIN:-.venv/bin}"
DATA="${NANO_DATA:-data/nano}"
OUT="${NANO_OUT:-outputs/train}"
ITERATIONS="${NANO_DAGGER_ITERATIONS:-0}"
INSTALL="${NANO_INSTALL-models/navila-nano}"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
# Torch threads of the training (NANO_THREADS, default 2: on a quiet 2-core machine a step of the
# navigation stage took 2.2-2.5 s with two threads and 3.8 s with one). With another CPU job
# alongside, use 1: a 2-thread run that shares a core waits on its preempted thread.
export OMP_NUM_THREADS="${NANO_THREADS:-2}"

if [ "$DATA" != "data/nano" ]; then
  echo "NANO_DATA must be data/nano: config/train/navila-nano.yaml reads its datasets there" >&2
  exit 2
fi

say() { printf '\n[train-nano] %s\n' "$*"; }
sim() { "$VENV_BIN/nvila-sim" "$@"; }

written() { # dataset folder: true (and says so) where a finished dataset is already there
  if [ -f "$1/index.json" ]; then
    say "$1: done"
    return 0
  fi
  rm -rf "$1"
  return 1
}

rollouts() { # split tier n seed out perturb
  local split=$1 tier=$2 n=$3 seed=$4 out=$5 perturb=$6
  written "$out" && return
  sim episodes --split "$split" --tier "$tier" --n "$n" --seed "$seed" --out "$out.json.gz"
  sim rollout --episodes "$out.json.gz" --out "$out" --perturb "$perturb" --decision-frames \
    --workers 2 --width 128 --height 96
}

captions() { # split n out [--readout]
  local split=$1 n=$2 out=$3; shift 3
  if [ -f "$out/captions.json" ] || [ -f "$out/readout.json" ]; then
    say "$out: done"
    return
  fi
  sim captions --split "$split" --n "$n" --seed 0 --out "$out" --width 128 --height 96 "$@"
}

contrast() { # rollouts out radius: the rollouts with another landmark named
  written "$2" && return
  sim contrast --data "$1" --out "$2" --radius "$3"
}

stop_band() { # rollouts out: the rollouts ended where an expert with a 0.8 m stop band stops
  written "$2" && return
  sim stop-band --data "$1" --out "$2" --band 0.8
}

say "data: perturbed expert rollouts on 1000 train scenes, tiers A/B/C; captions"
mkdir -p "$DATA"
rollouts train A 1500 0 "$DATA/train_A" 0.2
rollouts train B 1200 0 "$DATA/train_B" 0.2
rollouts train C 1300 0 "$DATA/train_C" 0.2
rollouts val_unseen C 40 7 "$DATA/val_C" 0.2
captions train 16000 "$DATA/captions"
captions val_unseen 256 "$DATA/val_captions"

say "training: captions, then navigation (config/train/navila-nano.yaml)"
"$VENV_BIN/nvila-core" train --recipe config/train/navila-nano.yaml --out "$OUT/navila-nano"
final="$OUT/navila-nano/03-navigation-runs/final"

if [ "$ITERATIONS" -gt 0 ]; then
  say "DAgger: $ITERATIONS iteration(s) on fresh training episodes"
  final=$("$VENV_BIN/nvila-nav-dagger" --recipe config/train/navila-nano.yaml --from "$final" \
    --out "$OUT/navila-nano-dagger" --iterations "$ITERATIONS" | tail -n 1 | sed 's/^final model: //')
fi

say "data: readout questions and contrast episodes"
captions train 10000 "$DATA/readout" --readout
captions val_unseen 300 "$DATA/val_readout" --readout
for tier in A B C; do
  contrast "$DATA/train_$tier" "$DATA/contrast_$tier" 1.0
done
say "data: the rollouts ended at a 0.8 m stop band, and their contrast episodes"
for tier in A B C; do
  stop_band "$DATA/train_$tier" "$DATA/band08_$tier"
  contrast "$DATA/band08_$tier" "$DATA/contrast08_$tier" 1.5
done
stop_band "$DATA/val_C" "$DATA/band08_val_C"

say "training: the statement before the action (config/train/navila-nano-statement.yaml)"
"$VENV_BIN/nvila-core" train --recipe config/train/navila-nano-statement.yaml --from "$final" \
  --out "$OUT/navila-nano-statement"
final="$OUT/navila-nano-statement/03-navigation-band/final"

HEADS=() # the frame heads this recipe fits (an older run's other heads are not installed)
frame_head() { # command name folder file [train-head options]: the question on the rollouts'
                # frames (nvila-sim COMMAND writes FILE into $DATA/FOLDER and $DATA/val_FOLDER),
                # then the frame head NAME on the model's visual tokens
  local command=$1 name=$2 folder=$3 file=$4; shift 4
  HEADS+=("$name")
  say "data: $name questions on the rollouts' frames (nvila-sim $command)"
  if [ ! -f "$DATA/$folder/$file" ]; then
    sim "$command" --data "$DATA/train_A" "$DATA/train_B" "$DATA/train_C" --out "$DATA/$folder"
  fi
  if [ ! -f "$DATA/val_$folder/$file" ]; then
    sim "$command" --data "$DATA/val_C" --out "$DATA/val_$folder"
  fi
  say "training: the $name head (nvila-core train-head)"
  # done where the head was fitted on this dataset, in the layout asked for (a head of an
  # older recipe is fitted again)
  local head="$final/heads/$name.json" layout="" vision=""
  [[ " $* " == *" --layout tokens "* ]] && layout='"layout": "tokens"'
  [[ " $* " =~ " --tune-vision "([0-9]+)" " ]] && vision="\"vision_rank\": ${BASH_REMATCH[1]}"
  if grep -qF "\"data\": \"$DATA/$folder/$file\"" "$head" 2>/dev/null &&
    { [[ -z $layout ]] || grep -qF "$layout" "$head"; } &&
    { [[ -z $vision ]] || grep -qF "$vision" "$head"; }; then
    say "$final/heads/$name: done"
  else
    "$VENV_BIN/nvila-core" train-head --model "$final" --name "$name" \
      --data "$DATA/$folder/$file" --val "$DATA/val_$folder/$file" "$@"
  fi
}
# the turn-side questions show two frames (the decision before, then the state's)
frame_head turn-sides turn_side turn_side_pairs turn_sides.json # "Which way does the route turn?"
frame_head route-ahead route_ahead route_ahead route_ahead.json # "Is the route straight ahead?"
frame_head stop-reach stop_reach stop_reach stop_reach.json     # "Is the goal within reach?"
# "Where is the blue door?": each landmark name looked for at every token of the frame, through
# the head's own copy of the vision tower's last block and the projector, tuned with it (rank-12
# updates kept with the head; the model's own tokens stay as they are)
frame_head landmark-side landmark_side landmark_side landmark_side.json --hidden 256 --epochs 3 \
  --layout tokens --absent "Not in view." --tune-vision 12

if [ -n "$INSTALL" ]; then
  say "installing $final as $INSTALL"
  rm -rf "$INSTALL.tmp"
  mkdir -p "$(dirname "$INSTALL")"
  cp -r "$final" "$INSTALL.tmp"
  rm -f "$INSTALL.tmp/trainer_state.json"
  for head in "$INSTALL.tmp"/heads/*.json; do
    name=$(basename "$head" .json)
    if [[ ! " ${HEADS[*]} " == *" $name "* ]]; then rm -f "$INSTALL.tmp/heads/$name".*; fi
  done
  # the model card is the repository's, not the run's
  if [ -f "$INSTALL/README.md" ]; then cp "$INSTALL/README.md" "$INSTALL.tmp/"; fi
  rm -rf "$INSTALL" && mv "$INSTALL.tmp" "$INSTALL"
fi
say "done: $final"
