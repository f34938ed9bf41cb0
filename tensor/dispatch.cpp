// The kernel table, its registration, the missing-kernel error and KILN_DEBUG logging.
#include "tensor/dispatch.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "tensor/cpu_capability.h"

namespace kiln {
namespace detail {

AnyKernel g_kernels[kNumOps][kNumDeviceTypes] = {};
// The CpuCapability each registered CPU kernel was compiled for.
static int g_cpu_kernel_level[kNumOps];

static int read_debug_level() {
  const char* v = std::getenv("KILN_DEBUG");
  const int level = v ? std::atoi(v) : 0;
  if (level > 0)
    std::cerr << "kiln: CPU kernels at level " << cpu_capability() << " (this CPU supports "
              << cpu_capability_supported() << ")\n";
  return level;
}
int g_debug_level = read_debug_level();

bool register_kernel_any(Op op, DeviceType d, AnyKernel fn, int cpu_level) {
  auto& slot = g_kernels[static_cast<int>(op)][static_cast<int>(d)];
  if (d == DeviceType::cpu) {
    // Levels register in any order (static initialisation order); the highest usable one wins.
    if (cpu_level > static_cast<int>(cpu_capability())) return false;
    int& level = g_cpu_kernel_level[static_cast<int>(op)];
    KILN_ASSERT(slot == nullptr || level != cpu_level, "two kernels registered for ", op_name(op), " on cpu at level ",
                cpu_capability_name(static_cast<CpuCapability>(cpu_level)));
    if (slot != nullptr && level > cpu_level) return false;
    level = cpu_level;
  } else {
    KILN_ASSERT(slot == nullptr, "two kernels registered for ", op_name(op), " on ", device_type_name(d));
  }
  slot = fn;
  return true;
}

int cpu_kernel_level(Op op) { return g_cpu_kernel_level[static_cast<int>(op)]; }

void throw_no_kernel(Op op, Device d) {
  std::ostringstream available;
  int n = 0;
  for (int t = 0; t < kNumDeviceTypes; ++t)
    if (g_kernels[static_cast<int>(op)][t]) available << (n++ ? ", " : "") << device_type_name(static_cast<DeviceType>(t));
  throw_error(op_name(op), ": no kernel for ", device_type_name(d.type), " (available: ",
              n ? available.str() : std::string("none"), ")");
}

// One line per dispatch on stderr: "kiln: add cpu [64, 784]:float32 [784]:float32 (3.1 us)".
static thread_local std::ostringstream t_line;

void log_dispatch_begin(Op op, Device d) {
  t_line.str("");
  t_line << "kiln: " << op_name(op) << ' ' << d;
}
void log_dispatch_arg(const Tensor& t) {
  if (t.defined()) t_line << ' ' << t.shape() << ':' << t.dtype();
}
void log_dispatch_arg(const std::span<const Tensor>& ts) {
  for (const Tensor& t : ts) log_dispatch_arg(t);
}
void log_dispatch_end(double micros) {
  if (g_debug_level >= 2) t_line << " (" << micros << " us)";
  t_line << '\n';
  std::cerr << t_line.str();
}
double now_micros() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace detail

std::string_view op_name(Op op) {
  static constexpr std::string_view names[] = {
#define KILN_OP_NAME(name, family) #name,
      KILN_FOR_EACH_OP(KILN_OP_NAME)
#undef KILN_OP_NAME
  };
  static_assert(sizeof(names) / sizeof(names[0]) == kNumOps, "op name table out of step with the op list");
  return names[static_cast<int>(op)];
}

int debug_level() { return detail::g_debug_level; }

}  // namespace kiln
