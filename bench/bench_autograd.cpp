// Autograd overhead per op: a chain of 100 adds on 1-element float32 tensors (y = y + w, w requiring
// grad), where the arithmetic is free and what is timed is recording (node, edges, metadata) and
// the engine's walk. Reported per add: forward alone, forward + backward, and forward with grad
// mode off (the op path without autograd) as the floor. LibTorch takes about 2.2 us per add
// (forward + backward) on this machine; the goal is <= 0.5 us.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "kiln/kiln.h"

namespace {

using kiln::Tensor;

constexpr int kChain = 100;

Tensor chain(const Tensor& x, const Tensor& w) {
  Tensor y = x;
  for (int i = 0; i < kChain; ++i) y = y + w;
  return y;
}

// Seconds per add, printed with an SI prefix ("450n" = 0.45 us).
void report_per_add(benchmark::State& state) {
  state.counters["time_per_add"] = benchmark::Counter(static_cast<double>(state.iterations()) * kChain,
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Forward only: the graph is built, then freed when y dies at the end of the iteration.
void add_chain_forward(benchmark::State& state) {
  const Tensor x = kiln::ones({1});
  const Tensor w = kiln::ones({1}).requires_grad_();
  for (auto _ : state) {
    Tensor y = chain(x, w);
    benchmark::DoNotOptimize(y.impl());
  }
  report_per_add(state);
}

// Forward + backward into w.grad (accumulated across iterations, as a training loop without
// zero_grad would).
void add_chain_forward_backward(benchmark::State& state) {
  const Tensor x = kiln::ones({1});
  const Tensor w = kiln::ones({1}).requires_grad_();
  for (auto _ : state) {
    Tensor y = chain(x, w);
    y.backward();
    benchmark::DoNotOptimize(w.grad().impl());
  }
  report_per_add(state);
}

// The same chain with grad mode off: the cost of the op itself, without autograd.
void add_chain_no_grad(benchmark::State& state) {
  const Tensor x = kiln::ones({1});
  const Tensor w = kiln::ones({1}).requires_grad_();
  kiln::NoGradGuard no_grad;
  for (auto _ : state) {
    Tensor y = chain(x, w);
    benchmark::DoNotOptimize(y.impl());
  }
  report_per_add(state);
}

int threads_from_env() {
  const char* s = std::getenv("OMP_NUM_THREADS");
  const int n = s ? std::atoi(s) : 0;
  return n > 0 ? n : 2;
}

}  // namespace

BENCHMARK(add_chain_no_grad);
BENCHMARK(add_chain_forward);
BENCHMARK(add_chain_forward_backward);

int main(int argc, char** argv) {
  kiln::set_num_threads(threads_from_env());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("kiln threads", std::to_string(kiln::get_num_threads()));
  benchmark::AddCustomContext("chain length", std::to_string(kChain));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
