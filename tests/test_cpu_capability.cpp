// CPU capability levels (Note [CPU capability levels]): the level detected agrees with what
// /proc/cpuinfo says, KILN_CPU_CAPABILITY caps it, and every CPU kernel in use is the running
// level's. The suite itself runs at each level (Note [Tests at every CPU level]).
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "testing.h"
#include "tensor/cpu_capability.h"
#include "tensor/dispatch.h"

using namespace kiln;

namespace {

// The flags line of /proc/cpuinfo, as a set.
std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::set<std::string> flags;
      for (std::string w; words >> w;) flags.insert(w);
      return flags;
    }
  return {};
}

bool has_all(const std::set<std::string>& flags, std::initializer_list<const char*> wanted) {
  for (const char* f : wanted)
    if (!flags.count(f)) return false;
  return true;
}

}  // namespace

TEST(CpuCapability, NamesRoundTrip) {
  for (CpuCapability c : {CpuCapability::baseline, CpuCapability::avx2, CpuCapability::avx512})
    EXPECT_EQ(parse_cpu_capability(cpu_capability_name(c)), c);
  EXPECT_EQ(cpu_capability_name(CpuCapability::native), "native");
  for (const char* bad : {"", "AVX2", "avx", "native", "avx512_bf16"}) EXPECT_FALSE(parse_cpu_capability(bad)) << bad;
}

// x86-64-v3 and v4 as the psABI defines them, read from the kernel's view of the CPU.
TEST(CpuCapability, SupportedLevelMatchesProcCpuinfo) {
  const std::set<std::string> flags = cpu_flags();
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags line";
  const bool v3 = has_all(flags, {"avx2", "fma", "bmi1", "bmi2", "abm", "movbe", "f16c"});
  const bool v4 = v3 && has_all(flags, {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"});
  const CpuCapability want = v4 ? CpuCapability::avx512 : v3 ? CpuCapability::avx2 : CpuCapability::baseline;
  EXPECT_EQ(cpu_capability_supported(), want);
}

TEST(CpuCapability, EnvironmentCapsTheLevel) {
  if (cpu_capability() == CpuCapability::native) GTEST_SKIP() << "a KILN_NATIVE build has one level";
  const char* cap = std::getenv("KILN_CPU_CAPABILITY");
  CpuCapability want = cpu_capability_supported();
  if (cap && parse_cpu_capability(cap)) want = std::min(want, *parse_cpu_capability(cap));
  EXPECT_EQ(cpu_capability(), want) << "KILN_CPU_CAPABILITY=" << (cap ? cap : "(unset)");
}

// Every level compiles every kernel file, so each op runs the running level's kernel, none older.
TEST(CpuCapability, EveryCpuKernelIsTheRunningLevels) {
  const int want = cpu_capability() == CpuCapability::native ? 0 : static_cast<int>(cpu_capability());
  for (int i = 0; i < kNumOps; ++i)
    EXPECT_EQ(detail::cpu_kernel_level(static_cast<Op>(i)), want) << op_name(static_cast<Op>(i));
}

// A bad value is reported and ignored; the process runs at the CPU's level.
TEST(CpuCapability, BadEnvironmentValueIsReportedAndIgnored) {
  if (cpu_capability() == CpuCapability::native) GTEST_SKIP() << "a KILN_NATIVE build has one level";
  const std::string self = ::testing::internal::GetArgvs()[0];
  const std::string cmd = "KILN_CPU_CAPABILITY=avx3 " + self +
                          " --gtest_filter=CpuCapability.EnvironmentCapsTheLevel 2>&1 >/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string err;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) err += buf;
  EXPECT_EQ(pclose(p), 0) << err;
  EXPECT_NE(err.find("KILN_CPU_CAPABILITY='avx3' is not a level (baseline, avx2, avx512)"), std::string::npos) << err;
}
