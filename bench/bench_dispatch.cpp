// Per-call overhead of Kiln's op path on 1-element float32 tensors, where the arithmetic is free and
// all that is timed is checks, promotion, output allocation, dispatch and the handle's ref-counting.
// bench/libtorch/ measures the same calls through LibTorch (goal: Kiln >= 5x lower).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "kiln/kiln.h"

namespace {

using kiln::Tensor;

// c = a + b: a new 1-element output each call, freed at the end of the iteration.
void add_1elem(benchmark::State& state) {
  const Tensor a = kiln::ones({1}), b = kiln::ones({1});
  for (auto _ : state) {
    Tensor c = a + b;
    benchmark::DoNotOptimize(c.impl());
  }
}

// a.add_(b): no allocation, only checks, dispatch and the version bump.
void add_inplace_1elem(benchmark::State& state) {
  Tensor a = kiln::zeros({1});
  const Tensor b = kiln::ones({1});
  for (auto _ : state) {
    a.add_(b);
    benchmark::DoNotOptimize(a.impl());
  }
}

// A 1-element tensor with uninitialised contents: TensorImpl + Storage + allocator round trip.
void empty_1elem(benchmark::State& state) {
  for (auto _ : state) {
    Tensor t = kiln::empty({1});
    benchmark::DoNotOptimize(t.impl());
  }
}

// The same plus a fill dispatch, as kiln::ones / torch.ones do.
void ones_1elem(benchmark::State& state) {
  for (auto _ : state) {
    Tensor t = kiln::ones({1});
    benchmark::DoNotOptimize(t.impl());
  }
}

// Ops that open with an autocast hook (Note [Autocast hooks]): with autocast off, the hook must
// cost no more than its one thread-local load.
void mm_1elem(benchmark::State& state) {
  const Tensor a = kiln::ones({1, 1}), b = kiln::ones({1, 1});
  for (auto _ : state) {
    Tensor c = kiln::mm(a, b);
    benchmark::DoNotOptimize(c.impl());
  }
}

void mse_loss_1elem(benchmark::State& state) {
  const Tensor a = kiln::ones({1}), b = kiln::zeros({1});
  for (auto _ : state) {
    Tensor c = kiln::nn::functional::mse_loss(a, b);
    benchmark::DoNotOptimize(c.impl());
  }
}

int threads_from_env() {
  const char* s = std::getenv("OMP_NUM_THREADS");
  const int n = s ? std::atoi(s) : 0;
  return n > 0 ? n : 2;
}

}  // namespace

BENCHMARK(add_1elem);
BENCHMARK(add_inplace_1elem);
BENCHMARK(empty_1elem);
BENCHMARK(ones_1elem);
BENCHMARK(mm_1elem);
BENCHMARK(mse_loss_1elem);

int main(int argc, char** argv) {
  kiln::set_num_threads(threads_from_env());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kiln threads", std::to_string(kiln::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
