#!/usr/bin/env bash
# Makes the Python venv of the references: ${KILN_TORCH_VENV:-build/torch-venv} with PyTorch, numpy
# and Lightning from PyPI. The fixture scripts (tests/fixtures/make_*_fixtures.py) and the benchmarks'
# reference runs (bench/*.py, `make bench`) use it; the tests read the committed fixtures and never
# run Python. Idempotent.
# Usage: scripts/make-torch-venv.sh && build/torch-venv/bin/python tests/fixtures/make_edge_fixtures.py
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
env_dir=${KILN_TORCH_VENV:-$root/build/torch-venv}

if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c 'import torch, numpy, lightning' 2>/dev/null; then
  exit 0
fi
python3 -m venv "$env_dir"
"$env_dir/bin/pip" install --quiet --disable-pip-version-check torch numpy lightning
"$env_dir/bin/python" -c 'import torch; print("kiln: torch", torch.__version__, "in", "'"$env_dir"'")'
