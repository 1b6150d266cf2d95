#!/usr/bin/env bash
# Install, then run the whole test suite (tiny in-process models; GLUE samples from ../shared if present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
PY=${PYTHON:-python3}
"$PY" -m pytest -q "$@"
