#!/usr/bin/env bash
# Makes the Python venv that interop tests use (tests/io/test_safetensors.cpp round-trips with PyPI's
# `safetensors`): ${KILN_PYENV:-build/pyenv} with safetensors, numpy and tensorboard
# (tests/train/test_loggers.cpp reads event files back with tensorboard's reader). Idempotent and quiet.
# Without network access (or python3-venv) it prints a warning and exits 0: the test then skips.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
env_dir=${KILN_PYENV:-$root/build/pyenv}
warn() { echo "kiln: warning: $1; the safetensors and tensorboard interop tests will be skipped" >&2; exit 0; }

if [ -x "$env_dir/bin/python" ] && "$env_dir/bin/python" -c 'import safetensors, numpy, tensorboard' 2>/dev/null; then
  exit 0
fi
python3 -m venv "$env_dir" >/dev/null 2>&1 || warn "cannot create a venv at $env_dir (is python3-venv installed?)"
"$env_dir/bin/pip" install --quiet --disable-pip-version-check --timeout 30 safetensors numpy tensorboard >/dev/null 2>&1 ||
  warn "pip could not install safetensors, numpy and tensorboard into $env_dir (no access to PyPI?)"
"$env_dir/bin/python" -c 'import safetensors, numpy, tensorboard' 2>/dev/null || warn "safetensors does not import in $env_dir"
exit 0
