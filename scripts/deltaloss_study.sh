#!/usr/bin/env bash
# What DeltaLoss 50 % pruning does to navila-nano (docs/training.md, "DeltaLoss on our data"):
# score every navigation training sample with a stronger and a weaker model, keep the top half
# of the dataset, and train navila-nano's navigation stage on the kept half for the same number
# of epochs (half the optimizer steps, so half the time), from the same caption-stage checkpoint,
# with the same schedule shape. Compare with navila-nano itself (the full-data run).
#   OMP_NUM_THREADS=1 scripts/deltaloss_study.sh
# No smaller navila-nano exists, so the weaker model is the instruction-only one (same size, black
# frames; run with blank_frames by the scorer's mixture): a sample scores high when seeing the
# camera makes its answer more likely. Each step is skipped when its output exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/deltaloss}
LARGE=${LARGE:-models/navila-nano}
SMALL=${SMALL:-outputs/train/navila-nano-blind/02-navigation/final}
CAPTIONS=${CAPTIONS:-outputs/train/navila-nano-captions/01-captions/final}
KEEP=${KEEP:-0.5}
FULL_STEPS=900  # navila-nano's navigation stage (config/train/navila-nano.yaml)
mkdir -p "$OUT"

cat > "$OUT/mixture.yaml" <<YAML
seed: 0
num_frames: 8
max_val_samples: 256
datasets:
  - {name: sim-train, path: data/sim/train_rollouts, weight: 1.0, split: train}
  - {name: sim-val-unseen, path: data/sim/val_unseen_rollouts, split: val}
YAML
[[ -f $OUT/kept.yaml ]] || "$PY" -m nvila_core prune --large "$LARGE" --small "$SMALL" \
  --mixture "$OUT/mixture.yaml" --small-blank-frames --keep "$KEEP" --batch-size 16 \
  --out "$OUT/kept.yaml"

steps=$("$PY" -c "print(round($FULL_STEPS * $KEEP))")
cat > "$OUT/recipe.yaml" <<YAML
name: navila-nano-deltaloss
seed: 0
model: {checkpoint: $CAPTIONS}
data:
  seed: 0
  num_frames: 8
  max_val_samples: 256
  pruned: $OUT/kept.yaml
  datasets:
    - {name: sim-train, path: data/sim/train_rollouts, weight: 1.0, split: train}
    - {name: sim-val-unseen, path: data/sim/val_unseen_rollouts, split: val}
defaults:
  batch_size: 16
  global_batch_size: 32
  weight_decay: 0.01
  warmup_ratio: 0.03
  schedule: cosine
  grad_clip: 1.0
  log_every: 10
  save_every: 100
  save_total_limit: 2
  eval_generate_samples: 64
  device: auto
  num_workers: 2
stages:
  - name: navigation
    trainable: [vision_tower, mm_projector, llm]
    lr: 5.0e-4
    vision_lr_ratio: 1.0
    max_steps: $steps
YAML
"$PY" -m nvila_core train --recipe "$OUT/recipe.yaml" --out "$OUT/train"
