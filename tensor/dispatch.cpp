// The kernel table, its registration, the missing-kernel error, KILN_DEBUG logging and op tracing
// (tensor/op_trace.h), which share dispatch's one instrumented branch.
#include "tensor/dispatch.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>

#include "tensor/cpu_capability.h"
#include "tensor/op_trace.h"

namespace kiln {
namespace detail {

AnyKernel g_kernels[kNumOps][kNumDeviceTypes] = {};
thread_local bool t_grad_enabled = true;
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
std::atomic<int> g_debug_level{read_debug_level()};
// While an op trace runs, g_debug_level is at least 1 and this holds the logging level it replaced.
static std::atomic<int> g_level_before_trace{0};

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
// An op trace records the same line's op and arguments as an event.
static thread_local std::ostringstream t_line;
static thread_local Op t_op;

namespace {
struct TraceState {
  std::mutex mutex;
  std::atomic<bool> on{false};
  std::vector<op_trace::Event> events;
  std::atomic<uint64_t> threads{0};
};
TraceState& trace_state() {
  static TraceState state;
  return state;
}
uint64_t trace_thread_id() {
  thread_local const uint64_t id = ++trace_state().threads;
  return id;
}
constexpr std::string_view kLinePrefix = "kiln: ";
}  // namespace

void log_dispatch_begin(Op op, Device d) {
  t_op = op;
  t_line.str("");
  t_line << kLinePrefix << op_name(op) << ' ' << d;
}
void log_dispatch_arg(const Tensor& t) {
  if (t.defined()) t_line << ' ' << t.shape() << ':' << t.dtype();
}
void log_dispatch_arg(const std::span<const Tensor>& ts) {
  for (const Tensor& t : ts) log_dispatch_arg(t);
}
void log_dispatch_end(double micros) {
  TraceState& trace = trace_state();
  const bool tracing = trace.on.load(std::memory_order_acquire);
  if (tracing) {
    const double end = now_micros();
    std::string line = t_line.str();
    op_trace::Event event{op_name(t_op), line.substr(kLinePrefix.size() + op_name(t_op).size() + 1), end - micros,
                          micros, trace_thread_id()};
    const std::lock_guard<std::mutex> lock(trace.mutex);
    trace.events.push_back(std::move(event));
  }
  const int log_level = (tracing ? g_level_before_trace : g_debug_level).load(std::memory_order_relaxed);
  if (log_level <= 0) return;
  if (log_level >= 2) t_line << " (" << micros << " us)";
  t_line << '\n';
  std::cerr << t_line.str();
}
double now_micros() {
  using namespace std::chrono;
  return duration<double, std::micro>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace detail

// Note [Op trace switch]: turning the trace on raises g_debug_level, which every dispatch() reads,
// from the loop's thread while other threads (loader workers) may dispatch. Both are atomics read
// relaxed on the hot path (a plain load on x86): a worker may miss or catch one op at the edges of
// the trace, which is harmless, and the events themselves are guarded by the mutex.
namespace op_trace {
void start() {
  detail::TraceState& trace = detail::trace_state();
  const std::lock_guard<std::mutex> lock(trace.mutex);
  KILN_CHECK(!trace.on.load(), "op_trace::start: a trace is already running");
  trace.events.clear();
  detail::g_level_before_trace.store(detail::g_debug_level.load());
  trace.on.store(true);
  detail::g_debug_level.store(std::max(detail::g_debug_level.load(), 1));
}
std::vector<Event> stop() {
  detail::TraceState& trace = detail::trace_state();
  const std::lock_guard<std::mutex> lock(trace.mutex);
  if (!trace.on.load()) return {};
  trace.on.store(false);
  detail::g_debug_level.store(detail::g_level_before_trace.load());
  return std::move(trace.events);
}
bool active() { return detail::trace_state().on.load(); }
uint64_t this_thread_id() { return detail::trace_thread_id(); }
}  // namespace op_trace

std::string_view op_name(Op op) {
  static constexpr std::string_view names[] = {
#define KILN_OP_NAME(name, family) #name,
      KILN_FOR_EACH_OP(KILN_OP_NAME)
#undef KILN_OP_NAME
  };
  static_assert(sizeof(names) / sizeof(names[0]) == kNumOps, "op name table out of step with the op list");
  return names[static_cast<int>(op)];
}

int debug_level() { return detail::g_debug_level.load(std::memory_order_relaxed); }

}  // namespace kiln
