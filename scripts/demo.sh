#!/usr/bin/env bash
# Set up, make the demo project (synthetic support tickets) and open the app on http://127.0.0.1:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/workbench demo --project "${WORKBENCH_PROJECT:-workbench-demo}" "$@"
