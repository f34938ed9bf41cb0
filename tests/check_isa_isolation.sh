#!/usr/bin/env bash
# Note [CPU capability levels]: only kernels/cpu's avx2 and avx512 copies may use ymm or zmm
# registers. A function elsewhere in libkiln.so that does is a copy of an inline function compiled
# for a higher level that the linker kept for everyone (it keeps the first copy it sees, which is
# why cmake/KilnCpuLevels.cmake links lower levels first): on an older CPU it would crash.
set -euo pipefail
lib=$1
offenders=$(objdump -d --no-show-raw-insn "$lib" |
  awk '/^[0-9a-f]+ <.*>:$/ { fn = $2; next } /%[yz]mm/ { print fn }' | sort -u |
  grep -v -e '3cpu4avx2' -e '3cpu6avx512' || true)
if [ -n "$offenders" ]; then
  echo "functions outside kiln::cpu::avx2/avx512 that use AVX registers:"
  echo "$offenders" | head -20
  exit 1
fi
echo "ok: only the avx2 and avx512 kernel copies use AVX registers ($lib)"
