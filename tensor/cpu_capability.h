// CPU capability levels: which build of Kiln's CPU kernels this process runs. Read by the kernel
// registry (dispatch.cpp) and oneDNN's set-up (kernels/cpu/onednn_common.h); users read it to know
// what their figures came from. Not here: the kernels themselves (kernels/cpu, built once per level).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string_view>

namespace kiln {

// Note [CPU capability levels]
// libkiln.so must run, and run fast, on any x86-64 CPU, not only the one it was built on. So the
// library itself is built for plain x86-64, and kernels/cpu is compiled once per level below, each
// copy in its own namespace (kiln::cpu::baseline, kiln::cpu::avx2, kiln::cpu::avx512) so that no
// function of one level is ever linked into another. Every copy registers its kernels tagged with
// its level; the registry keeps, per op, the kernel of the highest level that is at most
// cpu_capability(): the best level the CPU supports (x86-64-v3 for avx2, x86-64-v4 for avx512, as
// GCC's __builtin_cpu_supports reads them, OS support included), capped by the environment
// variable KILN_CPU_CAPABILITY=baseline|avx2|avx512, read once at start. oneDNN's own ISA is capped
// to match, so a capped run executes what a CPU of that level would (tests run the suite at each
// level the machine has). A build with KILN_NATIVE=ON instead compiles one copy for the build
// machine (-march=native): its level is `native` and the cap does not apply.
enum class CpuCapability : uint8_t { baseline = 0, avx2 = 1, avx512 = 2, native = 3 };

// The level whose kernels this process runs; fixed for the life of the process.
CpuCapability cpu_capability();
// The best level this CPU supports, whatever the cap.
CpuCapability cpu_capability_supported();

std::string_view cpu_capability_name(CpuCapability level);
std::ostream& operator<<(std::ostream& os, CpuCapability level);

// "baseline", "avx2" or "avx512" (as KILN_CPU_CAPABILITY takes them); nullopt for anything else.
std::optional<CpuCapability> parse_cpu_capability(std::string_view name);

}  // namespace kiln
