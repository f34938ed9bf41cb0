#!/usr/bin/env bash
# Makes the Python venv whose CPU PyTorch (from PyPI) writes the reference fixtures of tests/fixtures/
# (make_*_fixtures.py): ${KILN_TORCH_VENV:-build/torch-venv} with torch and numpy. Only the fixture
# scripts need it; the tests read the committed fixtures and never run Python. Idempotent.
# Usage: scripts/make-torch-venv.sh && build/torch-venv/bin/python tests/fixtures/make_edge_fixtures.py
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
env_dir=${KILN_TORCH_VENV:-$root/build/torch-venv}

if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c 'import torch, numpy' 2>/dev/null; then
  exit 0
fi
python3 -m venv "$env_dir"
"$env_dir/bin/pip" install --quiet --disable-pip-version-check torch numpy
"$env_dir/bin/python" -c 'import torch; print("kiln: torch", torch.__version__, "in", "'"$env_dir"'")'
