// f16 and bf16 CPU kernels beside f32 on 16M elements: add, mul, sum, softmax and layer_norm over
// rows of 1024, and the conversions f32 <-> 16-bit, each as bytes/s against a plain OpenMP loop
// that moves the same streams of the same element size (the bandwidth a simple loop gets). The
// summary prints each op's ratio to its plain loop (goal >= 0.8) and which conversion
// instructions Kiln's kernels run at this CPU level. Not a correctness test: tests/ops/ checks
// values (test_lowp_kernels).
#include <benchmark/benchmark.h>
#include <omp.h>

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

void set_bytes(benchmark::State& state, int64_t bytes_per_element) {
  state.SetBytesProcessed(state.iterations() * kN * bytes_per_element);
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
void plain_add(benchmark::State& state) {
  Raw<E>& r = raw<E>();
  const E* __restrict a = r.a.data();
  const E* __restrict b = r.b.data();
  E* __restrict c = r.c.data();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < kN; ++i) c[i] = static_cast<E>(a[i] + b[i]);
    benchmark::DoNotOptimize(c);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 3 * sizeof(E));
}

// sum(a): 1 read (reference of sum).
template <class E>
void plain_sum(benchmark::State& state) {
  const E* a = raw<E>().a.data();
  for (auto _ : state) {
    uint32_t s = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
    for (int64_t i = 0; i < kN; ++i) s += a[i];
    benchmark::DoNotOptimize(s);
  }
  set_bytes(state, sizeof(E));
}

// c = a: 1 read + 1 write, each thread memcpy-ing its chunk (reference of softmax and layer_norm).
template <class E>
void plain_copy(benchmark::State& state) {
  Raw<E>& r = raw<E>();
  for (auto _ : state) {
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t begin = kN * t / nt, end = kN * (t + 1) / nt;
      std::memcpy(r.c.data() + begin, r.a.data() + begin, static_cast<size_t>(end - begin) * sizeof(E));
    }
    benchmark::DoNotOptimize(r.c.data());
    benchmark::ClobberMemory();
  }
  set_bytes(state, 2 * sizeof(E));
}

// 4-byte reads, 2-byte writes and back (reference of the conversions): the high or low halves.
void plain_narrow(benchmark::State& state) {
  const uint32_t* __restrict a = raw<uint32_t>().a.data();
  uint16_t* __restrict c = raw<uint16_t>().c.data();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < kN; ++i) c[i] = static_cast<uint16_t>(a[i] >> 16);
    benchmark::DoNotOptimize(c);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 6);
}
void plain_widen(benchmark::State& state) {
  const uint16_t* __restrict a = raw<uint16_t>().a.data();
  uint32_t* __restrict c = raw<uint32_t>().c.data();
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < kN; ++i) c[i] = static_cast<uint32_t>(a[i]) << 16;
    benchmark::DoNotOptimize(c);
    benchmark::ClobberMemory();
  }
  set_bytes(state, 6);
}

// ---- Kiln ops, allocating their outputs as users call them. range(0) is the DType.

DType dtype_of(const benchmark::State& state) { return static_cast<DType>(state.range(0)); }
int64_t size_of(DType t) { return static_cast<int64_t>(kiln::dtype_size(t)); }

void kiln_add(benchmark::State& state) {
  const Inputs& in = inputs(dtype_of(state));
  for (auto _ : state) benchmark::DoNotOptimize((in.a + in.b).data_ptr());
  set_bytes(state, 3 * size_of(dtype_of(state)));
}
void kiln_mul(benchmark::State& state) {
  const Inputs& in = inputs(dtype_of(state));
  for (auto _ : state) benchmark::DoNotOptimize((in.a * in.b).data_ptr());
  set_bytes(state, 3 * size_of(dtype_of(state)));
}
void kiln_sum(benchmark::State& state) {
  const Inputs& in = inputs(dtype_of(state));
  for (auto _ : state) benchmark::DoNotOptimize(kiln::sum(in.a).data_ptr());
  set_bytes(state, size_of(dtype_of(state)));
}
void kiln_softmax(benchmark::State& state) {
  const Tensor x = inputs(dtype_of(state)).a.view({kN / kRow, kRow});
  for (auto _ : state) benchmark::DoNotOptimize(kiln::softmax(x, 1).data_ptr());
  set_bytes(state, 2 * size_of(dtype_of(state)));
}
void kiln_layer_norm(benchmark::State& state) {
  const Inputs& in = inputs(dtype_of(state));
  const Tensor x = in.a.view({kN / kRow, kRow});
  for (auto _ : state) benchmark::DoNotOptimize(kiln::layer_norm(x, {kRow}, in.w, in.bias).data_ptr());
  set_bytes(state, 2 * size_of(dtype_of(state)));
}
void kiln_from_f32(benchmark::State& state) {  // f32 -> dtype
  const Tensor& src = inputs(dtype_of(state)).f32_src;
  for (auto _ : state) benchmark::DoNotOptimize(src.to(dtype_of(state)).data_ptr());
  set_bytes(state, 6);
}
void kiln_to_f32(benchmark::State& state) {  // dtype -> f32
  const Tensor& src = inputs(dtype_of(state)).a;
  for (auto _ : state) benchmark::DoNotOptimize(src.to(DType::f32).data_ptr());
  set_bytes(state, 6);
}

struct Case {
  const char* name;
  void (*fn)(benchmark::State&);
  std::vector<DType> dtypes;  // empty for a plain loop
  const char* ref32;          // the plain loop for f32, and for 16-bit dtypes
  const char* ref16;
};

const std::vector<DType> kAll = {DType::f32, DType::bf16, DType::f16}, k16 = {DType::bf16, DType::f16};
const Case kCases[] = {
    {"plain/add32", plain_add<uint32_t>, {}, nullptr, nullptr},
    {"plain/add16", plain_add<uint16_t>, {}, nullptr, nullptr},
    {"plain/sum32", plain_sum<uint32_t>, {}, nullptr, nullptr},
    {"plain/sum16", plain_sum<uint16_t>, {}, nullptr, nullptr},
    {"plain/copy32", plain_copy<uint32_t>, {}, nullptr, nullptr},
    {"plain/copy16", plain_copy<uint16_t>, {}, nullptr, nullptr},
    {"plain/narrow", plain_narrow, {}, nullptr, nullptr},
    {"plain/widen", plain_widen, {}, nullptr, nullptr},
    {"kiln/add", kiln_add, kAll, "plain/add32", "plain/add16"},
    {"kiln/mul", kiln_mul, kAll, "plain/add32", "plain/add16"},
    {"kiln/sum", kiln_sum, kAll, "plain/sum32", "plain/sum16"},
    {"kiln/softmax", kiln_softmax, kAll, "plain/copy32", "plain/copy16"},
    {"kiln/layer_norm", kiln_layer_norm, kAll, "plain/copy32", "plain/copy16"},
    {"kiln/from_f32", kiln_from_f32, k16, "plain/narrow", "plain/narrow"},
    {"kiln/to_f32", kiln_to_f32, k16, "plain/widen", "plain/widen"},
};

// The console table, plus each run's bytes/s (the median with --benchmark_repetitions).
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> bytes_per_second;  // "kiln/add/3" -> B/s

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.error_occurred || (r.run_type != Run::RT_Iteration && !median)) continue;
      auto it = r.counters.find("bytes_per_second");
      if (it == r.counters.end()) continue;
      std::string key = r.run_name.function_name;
      if (!r.run_name.args.empty()) key += '/' + r.run_name.args;
      bytes_per_second[key] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// What converts 16-bit lanes at the level the kernels run (kernels/cpu/lanes16.h).
std::string conversion_instructions() {
  const bool f16c = kiln::cpu_capability() >= kiln::CpuCapability::avx2;
  std::string s = "bf16: integer lanes (shift; RNE add)";
  s += __builtin_cpu_supports("avx512bf16") ? " [vcvtneps2bf16 present, unused: it flushes denormals]" : "";
  s += f16c ? "; f16: F16C vcvtph2ps/vcvtps2ph" : "; f16: integer lanes";
  return s;
}

void print_summary(const RecordingReporter& rep) {
  std::printf("\nlow-precision summary (%d threads, level %s; %s)\n", kiln::get_num_threads(),
              std::string(kiln::cpu_capability_name(kiln::cpu_capability())).c_str(), conversion_instructions().c_str());
  std::printf("ratio = Kiln GB/s / plain-loop GB/s over the same streams, goal >= 0.8\n");
  std::printf("%-12s %-9s %10s %-13s %10s %7s\n", "op", "dtype", "Kiln GB/s", "plain loop", "GB/s", "ratio");
  for (const Case& c : kCases) {
    for (DType t : c.dtypes) {
      const char* ref = t == DType::f32 ? c.ref32 : c.ref16;
      auto k = rep.bytes_per_second.find(std::string(c.name) + '/' + std::to_string(static_cast<int>(t)));
      auto p = rep.bytes_per_second.find(ref);
      if (k == rep.bytes_per_second.end() || p == rep.bytes_per_second.end()) continue;  // filtered out
      const double ratio = k->second / p->second;
      std::printf("%-12s %-9s %10.2f %-13s %10.2f %7.2f%s\n", c.name + 5, kiln::dtype_name(t).data(), k->second / 1e9,
                  ref, p->second / 1e9, ratio, ratio >= 0.8 ? "" : "  (below goal)");
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
  for (const Case& c : kCases) {
    auto* b = benchmark::RegisterBenchmark(c.name, c.fn)->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (DType t : c.dtypes) b->Arg(static_cast<int>(t));
  }
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  print_summary(reporter);
  benchmark::Shutdown();
  return 0;
}
