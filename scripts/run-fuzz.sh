#!/usr/bin/env bash
# Builds the checkpoint readers' libFuzzer targets (fuzz/) with clang, ASan and UBSan, and runs
# each for SECONDS (default 60), seeded with tests/fixtures/ckpt/{valid,native,safetensors}.
# Exits non-zero on a crash, a sanitizer report or an input slower than the per-input limit.
# Knobs: KILN_FUZZ_BUILD (build-fuzz), KILN_FUZZ_TIMEOUT_MS (100), KILN_FUZZ_JOBS (1).
set -euo pipefail

seconds=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${KILN_FUZZ_BUILD:-$root/build-fuzz}
timeout_ms=${KILN_FUZZ_TIMEOUT_MS:-100}
bash "$root/scripts/install-deps.sh" --with-clang
command -v clang++ >/dev/null || { echo "run-fuzz: clang++ not found" >&2; exit 1; }
mkdir -p "$out/obj" "$out/artifacts"

# The checkpoint sources are compiled here with coverage and sanitizers; the tensor core they use
# comes from the regular shared library (KILN_FUZZ_LIB_BUILD, default build/, built if missing), whose
# copies of the io functions the instrumented ones interpose.
lib_build=${KILN_FUZZ_LIB_BUILD:-$root/build}
if [ ! -f "$lib_build/libkiln.so" ]; then
  cmake -S "$root" -B "$lib_build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$lib_build" -j "$(nproc)" --target kiln >/dev/null
fi
sources=("$root"/io/checkpoint/*.cpp "$root"/io/safetensors/*.cpp)
flags=(-std=c++20 -O1 -g -fno-omit-frame-pointer -I"$root" -I"$root/include"
       -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined)
objects=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(basename "$src" .cpp).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find "$root/io" "$root/tensor" -name '*.h' -newer "$obj" -print -quit)" ]; then
    clang++ "${flags[@]}" -c "$src" -o "$obj"
  fi
  objects+=("$obj")
done

status=0
for target in checkpoint safetensors; do
  exe="$out/fuzz_$target"
  clang++ "${flags[@]}" -fsanitize=fuzzer "$root/fuzz/fuzz_$target.cpp" "${objects[@]}" -L"$lib_build" -lkiln -Wl,-rpath,"$lib_build" -o "$exe"
  corpus="$out/corpus_$target"
  mkdir -p "$corpus"
  if [ "$target" = checkpoint ]; then seeds=("$root"/tests/fixtures/ckpt/valid/*.kiln "$root"/tests/fixtures/ckpt/native/*)
  else seeds=("$root"/tests/fixtures/ckpt/valid/*.safetensors "$root"/tests/fixtures/ckpt/safetensors/*); fi
  cp -n "${seeds[@]}" "$corpus/" 2>/dev/null || true
  echo "run-fuzz: fuzz_$target for ${seconds}s (per-input limit ${timeout_ms} ms)"
  log="$out/fuzz_$target.log"
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     "$exe" "$corpus" -max_total_time="$seconds" -timeout=1 \
       -rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=65536 -artifact_prefix="$out/artifacts/${target}-" \
       -print_final_stats=1 >"$log" 2>&1; then
    :
  else
    status=1
    echo "run-fuzz: fuzz_$target FAILED; see $log" >&2
    tail -30 "$log" >&2
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs" "$log" | sed "s/^/  /" || true
  # libFuzzer's -timeout counts whole seconds; the per-input limit is checked by replaying the
  # final corpus file by file ("Executed FILE in N ms").
  slowest=$(find "$corpus" -type f -print0 | xargs -0 -n 500 "$exe" 2>&1 | awk '/^Executed/ {print $(NF-1), "ms,", $2}' |
            sort -n | tail -1)
  echo "  slowest input: ${slowest:-none} ($(find "$corpus" -type f | wc -l) inputs in the corpus)"
  if [ -n "$slowest" ] && [ "${slowest%% *}" -gt "$timeout_ms" ]; then
    status=1
    echo "run-fuzz: fuzz_$target: an input took ${slowest%% *} ms (limit $timeout_ms)" >&2
  fi
done
exit $status
