// Detects the CPU's capability level and applies KILN_CPU_CAPABILITY (Note [CPU capability levels]).
#include "tensor/cpu_capability.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ostream>

namespace kiln {
namespace {

constexpr std::string_view kNames[] = {"baseline", "avx2", "avx512", "native"};

CpuCapability detect_supported() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();  // may run before libgcc's own constructor: we are called from static init
  if (__builtin_cpu_supports("x86-64-v4")) return CpuCapability::avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return CpuCapability::avx2;
#endif
  return CpuCapability::baseline;
}

// The level in force: the CPU's, capped by KILN_CPU_CAPABILITY. Called first during static
// initialisation (kernel registration), so a bad value can only be reported, not thrown.
CpuCapability resolve() {
#ifdef KILN_CPU_NATIVE
  if (std::getenv("KILN_CPU_CAPABILITY"))
    std::fprintf(stderr, "kiln: KILN_CPU_CAPABILITY is ignored: this build's kernels are compiled for its build "
                         "machine only (KILN_NATIVE=ON)\n");
  return CpuCapability::native;
#else
  const CpuCapability supported = cpu_capability_supported();
  const char* cap = std::getenv("KILN_CPU_CAPABILITY");
  if (!cap || !*cap) return supported;
  const std::optional<CpuCapability> level = parse_cpu_capability(cap);
  if (!level) {
    std::fprintf(stderr, "kiln: KILN_CPU_CAPABILITY='%s' is not a level (baseline, avx2, avx512); running at %s\n",
                 cap, kNames[static_cast<int>(supported)].data());
    return supported;
  }
  return std::min(*level, supported);
#endif
}

}  // namespace

CpuCapability cpu_capability_supported() {
  static const CpuCapability supported = detect_supported();
  return supported;
}

CpuCapability cpu_capability() {
  static const CpuCapability level = resolve();
  return level;
}

std::string_view cpu_capability_name(CpuCapability level) { return kNames[static_cast<int>(level)]; }

std::ostream& operator<<(std::ostream& os, CpuCapability level) { return os << cpu_capability_name(level); }

std::optional<CpuCapability> parse_cpu_capability(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(CpuCapability::avx512); ++i)
    if (name == kNames[i]) return static_cast<CpuCapability>(i);
  return std::nullopt;
}

}  // namespace kiln
