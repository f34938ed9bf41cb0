// f16 and bf16 CPU kernels beside f32 on 16M elements: add, mul, sum, softmax and layer_norm over
// rows of 1024, and the conversions f32 <-> 16-bit, each in bytes/s against a plain OpenMP loop
// that moves the same streams of the same element size. Each iteration times the plain loop and
// then Kiln's op, so both see the same machine: on this shared VM the bandwidth a loop gets moved
// 2-8x between cases run seconds apart. Prints each op's ratio to its plain loop (goal >= 0.8) and
// which conversion instructions Kiln's kernels run at this CPU level. Not a correctness test:
// tests/ops/test_lowp_kernels.cpp checks values.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "autograd/ops/nn_ops.h"
#include "kiln/kiln.h"

namespace {

using kiln::DType;
using kiln::Tensor;

constexpr int64_t kN = int64_t{1} << 24;
constexpr int64_t kRow = 1024;  // softmax and layer_norm rows

// Inputs per dtype, made once: U[0, 1) converted to the dtype, so every kernel reads the same values.
struct Inputs {
  Tensor a, b, w, bias, f32_src;
};

Inputs& inputs(DType t) {
  static std::map<DType, Inputs> cache;
  auto it = cache.find(t);
  if (it == cache.end()) {
    const Tensor a = kiln::rand({kN}), b = kiln::rand({kN});
    Inputs in{a.to(t), b.to(t), kiln::rand({kRow}).to(t), kiln::rand({kRow}).to(t), a};
    it = cache.emplace(t, std::move(in)).first;
  }
  return it->second;
}

// ---- plain loops over raw buffers of 4- and 2-byte elements: integer arithmetic, so they are
// bound by memory, never by a conversion.

template <class E>
struct Raw {
  std::vector<E> a, b, c;
  Raw() : a(static_cast<size_t>(kN), E(1)), b(static_cast<size_t>(kN), E(2)), c(static_cast<size_t>(kN)) {}
};
template <class E>
Raw<E>& raw() {
  static Raw<E> r;
  return r;
}

// c = a + b: 2 reads + 1 write (reference of add and mul).
template <class E>
void plain_add() {
  Raw<E>& r = raw<E>();
  const E* __restrict a = r.a.data();
  const E* __restrict b = r.b.data();
  E* __restrict c = r.c.data();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < kN; ++i) c[i] = static_cast<E>(a[i] + b[i]);
  benchmark::DoNotOptimize(c);
  benchmark::ClobberMemory();
}

// sum(a): 1 read (reference of sum).
template <class E>
void plain_sum() {
  const E* a = raw<E>().a.data();
  uint32_t s = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
  for (int64_t i = 0; i < kN; ++i) s += a[i];
  benchmark::DoNotOptimize(s);
}

// c = a: 1 read + 1 write, each thread memcpy-ing its chunk (reference of softmax and layer_norm).
template <class E>
void plain_copy() {
  Raw<E>& r = raw<E>();
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t begin = kN * t / nt, end = kN * (t + 1) / nt;
    std::memcpy(r.c.data() + begin, r.a.data() + begin, static_cast<size_t>(end - begin) * sizeof(E));
  }
  benchmark::DoNotOptimize(r.c.data());
  benchmark::ClobberMemory();
}

// 4-byte reads and 2-byte writes, and back (reference of the conversions): an f32's upper half.
void plain_narrow() {
  const uint32_t* __restrict a = raw<uint32_t>().a.data();
  uint16_t* __restrict c = raw<uint16_t>().c.data();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < kN; ++i) c[i] = static_cast<uint16_t>(a[i] >> 16);
  benchmark::DoNotOptimize(c);
  benchmark::ClobberMemory();
}
void plain_widen() {
  const uint16_t* __restrict a = raw<uint16_t>().a.data();
  uint32_t* __restrict c = raw<uint32_t>().c.data();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < kN; ++i) c[i] = static_cast<uint32_t>(a[i]) << 16;
  benchmark::DoNotOptimize(c);
  benchmark::ClobberMemory();
}

// ---- Kiln ops, allocating their outputs as users call them.

Tensor kiln_add(DType t) { return inputs(t).a + inputs(t).b; }
Tensor kiln_mul(DType t) { return inputs(t).a * inputs(t).b; }
Tensor kiln_sum(DType t) { return kiln::sum(inputs(t).a); }
Tensor kiln_softmax(DType t) { return kiln::softmax(inputs(t).a.view({kN / kRow, kRow}), 1); }
Tensor kiln_layer_norm(DType t) {
  const Inputs& in = inputs(t);
  return kiln::layer_norm(in.a.view({kN / kRow, kRow}), {kRow}, in.w, in.bias);
}
Tensor kiln_from_f32(DType t) { return inputs(t).f32_src.to(t); }
Tensor kiln_to_f32(DType t) { return inputs(t).a.to(DType::f32); }

struct Case {
  const char* name;
  Tensor (*kiln)(DType);
  std::vector<DType> dtypes;
  int64_t streams;         // arrays of the op's dtype read or written; 0: a conversion (4 + 2 bytes)
  void (*plain32)();       // the plain loop moving the same bytes for f32, and for 16-bit dtypes
  void (*plain16)();
  const char* plain_name;  // for the summary, without the element size
};

const std::vector<DType> kAll = {DType::f32, DType::bf16, DType::f16}, k16 = {DType::bf16, DType::f16};
const Case kCases[] = {
    {"add", kiln_add, kAll, 3, plain_add<uint32_t>, plain_add<uint16_t>, "add"},
    {"mul", kiln_mul, kAll, 3, plain_add<uint32_t>, plain_add<uint16_t>, "add"},
    {"sum", kiln_sum, kAll, 1, plain_sum<uint32_t>, plain_sum<uint16_t>, "sum"},
    {"softmax", kiln_softmax, kAll, 2, plain_copy<uint32_t>, plain_copy<uint16_t>, "copy"},
    {"layer_norm", kiln_layer_norm, kAll, 2, plain_copy<uint32_t>, plain_copy<uint16_t>, "copy"},
    {"from_f32", kiln_from_f32, k16, 0, plain_narrow, plain_narrow, "narrow"},
    {"to_f32", kiln_to_f32, k16, 0, plain_widen, plain_widen, "widen"},
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The plain loop, then Kiln's op, every iteration; the iteration time is Kiln's.
void run_case(benchmark::State& state, const Case& c, DType t) {
  const double bytes = static_cast<double>(kN) * (c.streams ? c.streams * static_cast<double>(kiln::dtype_size(t)) : 6.0);
  void (*plain)() = t == DType::f32 ? c.plain32 : c.plain16;
  inputs(t);  // made before timing
  double kiln_s = 0, plain_s = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    plain();
    plain_s += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    Tensor y = c.kiln(t);
    benchmark::DoNotOptimize(y.data_ptr());
    const double s = seconds_since(t0);
    kiln_s += s;
    state.SetIterationTime(s);
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["kiln_GBps"] = bytes * n / kiln_s / 1e9;
  state.counters["plain_GBps"] = bytes * n / plain_s / 1e9;
  state.counters["ratio"] = plain_s / kiln_s;
}

// The console table, plus each run's counters (the median with --benchmark_repetitions).
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, std::map<std::string, double>> counters;  // "add/bfloat16" -> counters

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.error_occurred || (r.run_type != Run::RT_Iteration && !median)) continue;
      for (const auto& [name, counter] : r.counters) counters[r.run_name.function_name][name] = counter.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// What converts 16-bit lanes at the level the kernels run (Note [16-bit lane conversions] in
// kernels/cpu/lanes16.h).
std::string conversion_instructions() {
  std::string s = "bf16: integer lanes (shift; add-and-shift RNE)";
  if (__builtin_cpu_supports("avx512bf16")) s += " [this CPU has vcvtneps2bf16; unused: it flushes f32 denormals]";
  s += kiln::cpu_capability() >= kiln::CpuCapability::avx2 ? "; f16: F16C vcvtph2ps/vcvtps2ph" : "; f16: integer lanes";
  return s;
}

void print_summary(const RecordingReporter& rep) {
  std::printf("\nlow-precision summary (%d threads, level %s; %s)\n", kiln::get_num_threads(),
              std::string(kiln::cpu_capability_name(kiln::cpu_capability())).c_str(), conversion_instructions().c_str());
  std::printf("ratio = Kiln GB/s / plain-loop GB/s, timed alternately; goal >= 0.8\n");
  std::printf("%-11s %-9s %10s %-11s %10s %7s\n", "op", "dtype", "Kiln GB/s", "plain loop", "GB/s", "ratio");
  for (const Case& c : kCases) {
    for (DType t : c.dtypes) {
      auto it = rep.counters.find(std::string(c.name) + '/' + std::string(kiln::dtype_name(t)));
      if (it == rep.counters.end()) continue;  // filtered out
      const std::map<std::string, double>& k = it->second;
      const double ratio = k.at("ratio");
      std::printf("%-11s %-9s %10.2f %-11s %10.2f %7.2f%s\n", c.name, kiln::dtype_name(t).data(), k.at("kiln_GBps"),
                  c.plain_name, k.at("plain_GBps"), ratio, ratio >= 0.8 ? "" : "  (below goal)");
    }
  }
}

int threads_from_env() {
  const char* s = std::getenv("OMP_NUM_THREADS");
  const int n = s ? std::atoi(s) : 0;
  return n > 0 ? n : 2;
}

}  // namespace

int main(int argc, char** argv) {
  kiln::set_num_threads(threads_from_env());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kiln threads", std::to_string(kiln::get_num_threads()));
  benchmark::AddCustomContext("16-bit conversions", conversion_instructions());
  for (const Case& c : kCases)
    for (DType t : c.dtypes)
      benchmark::RegisterBenchmark((std::string(c.name) + '/' + std::string(kiln::dtype_name(t))).c_str(),
                                   [&c, t](benchmark::State& state) { run_case(state, c, t); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  print_summary(reporter);
  benchmark::Shutdown();
  return 0;
}
