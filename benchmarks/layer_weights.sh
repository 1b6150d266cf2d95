#!/usr/bin/env bash
# Issue 11.7: does pricing computation in the training loss pay? For each --layer-weights scheme, train
# MiniLM on the first 8,000 SST-2 train rows (one epoch), export, certify an exit policy at <= 1%
# disagreement on the last 2,000 train rows and report it on the full dev set (docs/training.md).
#   bash benchmarks/layer_weights.sh [GLUE_DIR] [SCHEMES]     (about 10 minutes per scheme on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
G=${1:-${TRTBERT_GLUE_DIR:-../shared/data/glue}}
for W in ${2:-pabee cost uniform}; do
  trtbert train --model minilm --task sst2 --data-dir "$G" --limit 8000 --epochs 1 --batch-size 32 --max-seq-len 64 \
      --layer-weights "$W" --out "runs/models/minilm-sst2-$W" --overwrite
  trtbert export --model "runs/models/minilm-sst2-$W" --out "runs/bundles/minilm-sst2-$W" --overwrite
  trtbert eval "runs/bundles/minilm-sst2-$W" --task sst2 --data-dir "$G" --calibrate --max-disagreement 0.01 \
      --calibration-limit 2000 --quiet --json "runs/sst2-cal-$W.json"
done
