#!/usr/bin/env bash
# Runs every Kiln benchmark built in BUILD_DIR (bench/bench_*) with 2 threads and prints its table;
# then, only when a PyTorch is importable, the PyTorch reference (bench/torch_reference.py) and the
# LibTorch dispatch benchmark (bench/libtorch/, built here against that torch). Called by `make bench`.
# Knobs: KILN_BENCH_THREADS (2), KILN_BENCH_MIN_TIME (seconds per benchmark, 0.2),
# KILN_TORCH_PYTHON (the python whose torch is the reference; else build/torch-venv, made by
# scripts/make-torch-venv.sh, else python3).
set -euo pipefail

build=${1:?usage: bench/run.sh BUILD_DIR}
build=$(cd "$build" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
threads=${KILN_BENCH_THREADS:-2}
min_time=${KILN_BENCH_MIN_TIME:-0.2}
export OMP_NUM_THREADS=$threads

shopt -s nullglob
benches=("$build"/bench/bench_*)
if [ ${#benches[@]} -eq 0 ]; then
  echo "bench/run.sh: no bench_* executables in $build/bench (configure with -DKILN_BUILD_BENCH=ON)" >&2
  exit 1
fi
for exe in "${benches[@]}"; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  echo
  echo "######## $(basename "$exe") (OMP_NUM_THREADS=$threads)"
  "$exe" --benchmark_min_time="$min_time"
done

# The reference torch: the first python that imports one.
torch_python=""
for py in "${KILN_TORCH_PYTHON:-}" "$build/torch-venv/bin/python" python3; do
  [ -n "$py" ] || continue
  if "$py" -c 'import torch' >/dev/null 2>&1; then torch_python=$py; break; fi
done
if [ -z "$torch_python" ]; then
  echo
  echo "######## PyTorch reference: skipped (no importable torch; bench/README.md says how to install one)"
  exit 0
fi

# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE may be preset on this machine for old OpenBLAS builds; they
# would slow a reference that uses OpenBLAS, so the reference runs with both unset (only here).
reference_env=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS="$threads")

echo
echo "######## PyTorch reference ($torch_python; OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this run)"
"${reference_env[@]}" "$torch_python" "$here/torch_reference.py" --threads "$threads" --min-time "$min_time"

echo
echo "######## libtorch_dispatch (LibTorch from that torch wheel, OMP_NUM_THREADS=$threads)"
prefix=$("$torch_python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
libtorch_build=$build/bench/libtorch
log=$libtorch_build.log
if cmake -S "$here/libtorch" -B "$libtorch_build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >"$log" 2>&1 &&
   cmake --build "$libtorch_build" -j "$(nproc)" >>"$log" 2>&1; then
  "${reference_env[@]}" "$libtorch_build/libtorch_dispatch" --benchmark_min_time="$min_time"
else
  echo "skipped: building bench/libtorch against $prefix failed; see $log"
fi
