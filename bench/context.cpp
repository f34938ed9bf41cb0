// Linked into every benchmark: Google Benchmark's header of each run names the CPU level Kiln's
// kernels run at (Note [CPU capability levels]), so every figure says what produced it.
#include <benchmark/benchmark.h>

#include <string>

#include "tensor/cpu_capability.h"

namespace {
const bool kContextAdded = [] {
  const std::string level(kiln::cpu_capability_name(kiln::cpu_capability()));
  const std::string supported(kiln::cpu_capability_name(kiln::cpu_capability_supported()));
  benchmark::AddCustomContext("kiln cpu level", level + " (this CPU supports " + supported + ")");
  return true;
}();
}  // namespace
