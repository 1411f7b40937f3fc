#!/usr/bin/env bash
# Create .venv and install Workbench with its test extras. CPU-only torch: it is installed first,
# pinned, so nothing later pulls the multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m pip install -q --upgrade pip >/dev/null
if ! python -c "import torch" 2>/dev/null; then
  # The CPU build; on machines without a local CPU wheel, install a CPU torch first yourself.
  pip install -q "torch==2.13.0" || echo "note: torch 2.13.0 (CPU) not found; training will be unavailable" >&2
fi
pip install -q -e ".[test]"
