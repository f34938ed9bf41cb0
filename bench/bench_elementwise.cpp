// Elementwise and reduction throughput at 1M and 16M float32 elements: Kiln ops as users call them,
// beside plain OpenMP loops over the same buffers that move the same bytes. Reports bytes/s (bytes
// read + written by the op), then a summary giving each Kiln op's GB/s as a ratio of its plain loop
// (goal >= 0.8). Not a correctness test: tests/ops/ checks the values.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "kiln/kiln.h"

namespace {

using kiln::Tensor;

constexpr int64_t kSizes[] = {int64_t{1} << 20, int64_t{1} << 24};
constexpr int64_t kF32 = sizeof(float);

// One set of buffers per size, made once: the plain loops and Kiln read the same memory.
struct Buffers {
  Tensor a, b;  // inputs, U[0, 1)
  Tensor acc;   // target of the in-place adds
  Tensor out;   // preallocated output of the plain loops
};

Buffers& buffers(int64_t n) {
  static std::map<int64_t, Buffers> cache;
  auto it = cache.find(n);
  if (it == cache.end()) {
    Buffers b{kiln::rand({n}), kiln::rand({n}), kiln::zeros({n}), kiln::zeros({n})};
    it = cache.emplace(n, std::move(b)).first;
  }
  return it->second;
}

float* f32(const Tensor& t) { return t.data_ptr<float>(); }

void set_bytes(benchmark::State& state, int64_t n, int64_t streams) {
  state.SetBytesProcessed(state.iterations() * n * kF32 * streams);
}

// ---- plain loops: what the memory system gives a simple vectorised loop on the same threads.

// y = x, each thread memcpy-ing one contiguous chunk. 1 read + 1 write stream (baseline of exp).
void plain_copy(benchmark::State& state) {
  const int64_t n = state.range(0);
  const float* x = f32(buffers(n).a);
  float* y = f32(buffers(n).out);
  for (auto _ : state) {
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
      std::memcpy(y + begin, x + begin, static_cast<size_t>(end - begin) * kF32);
    }
    benchmark::DoNotOptimize(y);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 2);
}

// c = a + b into a preallocated c. 2 reads + 1 write (baseline of a + b and a * b).
void plain_add(benchmark::State& state) {
  const int64_t n = state.range(0);
  const float* __restrict a = f32(buffers(n).a);
  const float* __restrict b = f32(buffers(n).b);
  float* __restrict c = f32(buffers(n).out);
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) c[i] = a[i] + b[i];
    benchmark::DoNotOptimize(c);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 3);
}

// acc += b. 2 reads + 1 write (baseline of add_).
void plain_add_inplace(benchmark::State& state) {
  const int64_t n = state.range(0);
  float* __restrict acc = f32(buffers(n).acc);
  const float* __restrict b = f32(buffers(n).b);
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) acc[i] += b[i];
    benchmark::DoNotOptimize(acc);
    benchmark::ClobberMemory();
  }
  set_bytes(state, n, 3);
}

// s = sum(a), one simd accumulator set per thread. 1 read (baseline of sum).
void plain_sum(benchmark::State& state) {
  const int64_t n = state.range(0);
  const float* a = f32(buffers(n).a);
  for (auto _ : state) {
    float s = 0.0f;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
    for (int64_t i = 0; i < n; ++i) s += a[i];
    benchmark::DoNotOptimize(s);
  }
  set_bytes(state, n, 1);
}

// ---- Kiln ops, as users call them: the allocating forms allocate (and free) their output each
// iteration, through Kiln's caching CPU allocator.

void kiln_add(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Buffers& in = buffers(n);
  for (auto _ : state) {
    Tensor c = in.a + in.b;
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_bytes(state, n, 3);
}

void kiln_add_inplace(benchmark::State& state) {
  const int64_t n = state.range(0);
  Buffers& in = buffers(n);
  for (auto _ : state) {
    in.acc.add_(in.b);
    benchmark::DoNotOptimize(in.acc.data_ptr());
  }
  set_bytes(state, n, 3);
}

void kiln_mul(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Buffers& in = buffers(n);
  for (auto _ : state) {
    Tensor c = in.a * in.b;
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_bytes(state, n, 3);
}

void kiln_exp(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Buffers& in = buffers(n);
  for (auto _ : state) {
    Tensor y = kiln::exp(in.a);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  set_bytes(state, n, 2);
}

void kiln_sum(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Buffers& in = buffers(n);
  for (auto _ : state) {
    Tensor s = kiln::sum(in.a);
    benchmark::DoNotOptimize(s.data_ptr());
  }
  set_bytes(state, n, 1);
}

struct Case {
  const char* name;
  void (*fn)(benchmark::State&);
  const char* baseline;  // the plain loop moving the same bytes; null for the plain loops
};

const Case kCases[] = {
    {"plain/copy", plain_copy, nullptr},
    {"plain/add", plain_add, nullptr},
    {"plain/add_inplace", plain_add_inplace, nullptr},
    {"plain/sum", plain_sum, nullptr},
    {"kiln/add", kiln_add, "plain/add"},
    {"kiln/add_", kiln_add_inplace, "plain/add_inplace"},
    {"kiln/mul", kiln_mul, "plain/add"},
    {"kiln/exp", kiln_exp, "plain/copy"},
    {"kiln/sum", kiln_sum, "plain/sum"},
};

// The console table as usual, plus each run's bytes/s kept for the summary: the run's own figure,
// or with --benchmark_repetitions the median of the repetitions.
class RecordingReporter : public benchmark::ConsoleReporter {
 public:
  std::map<std::string, double> bytes_per_second;  // "kiln/add/1048576" -> B/s

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.error_occurred || (r.run_type != Run::RT_Iteration && !median)) continue;
      auto it = r.counters.find("bytes_per_second");
      if (it != r.counters.end()) bytes_per_second[r.run_name.function_name + '/' + r.run_name.args] = it->second.value;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// "kiln/add", 1048576 -> "kiln/add/1048576", the name Google Benchmark gives the run.
std::string run_key(const std::string& name, int64_t n) {
  std::string key = name;
  key += '/';
  key += std::to_string(n);
  return key;
}

const char* size_label(int64_t n) { return n == (int64_t{1} << 20) ? "1M" : n == (int64_t{1} << 24) ? "16M" : "?"; }

void print_summary(const RecordingReporter& rep) {
  std::printf("\nelementwise summary (f32, %d threads; ratio = Kiln GB/s / plain loop GB/s, goal >= 0.8)\n",
              kiln::get_num_threads());
  std::printf("%-10s %-5s %10s %-18s %10s %7s\n", "op", "size", "Kiln GB/s", "plain loop", "GB/s", "ratio");
  for (const Case& c : kCases) {
    if (!c.baseline) continue;
    for (int64_t n : kSizes) {
      auto k = rep.bytes_per_second.find(run_key(c.name, n));
      auto p = rep.bytes_per_second.find(run_key(c.baseline, n));
      if (k == rep.bytes_per_second.end() || p == rep.bytes_per_second.end()) continue;  // filtered out
      const double ratio = k->second / p->second;
      std::printf("%-10s %-5s %10.2f %-18s %10.2f %7.2f%s\n", c.name + 5, size_label(n), k->second / 1e9, c.baseline,
                  p->second / 1e9, ratio, ratio >= 0.8 ? "" : "  (below goal)");
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
  for (const Case& c : kCases) {
    auto* b = benchmark::RegisterBenchmark(c.name, c.fn)->UseRealTime()->Unit(benchmark::kMicrosecond);
    for (int64_t n : kSizes) b->Arg(n);
  }
  RecordingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  print_summary(reporter);
  benchmark::Shutdown();
  return 0;
}
