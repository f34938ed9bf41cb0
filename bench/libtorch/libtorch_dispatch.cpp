// LibTorch's per-call overhead on 1-element float32 CPU tensors: the C++ mirror of
// bench/bench_dispatch.cpp (same calls, same harness), without Python. The ops run with autograd
// recording off (c10::InferenceMode) and on (the default, as a plain C++ user calls them). The
// add_chain_* benchmarks mirror bench/bench_autograd.cpp: autograd's cost per recorded op.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <string>

namespace {

// c = a + b: a new 1-element output each call, freed at the end of the iteration.
void add_1elem(benchmark::State& state) {
  const torch::Tensor a = torch::ones({1}), b = torch::ones({1});
  for (auto _ : state) {
    torch::Tensor c = a + b;
    benchmark::DoNotOptimize(c.unsafeGetTensorImpl());
  }
}

void add_1elem_inference_mode(benchmark::State& state) {
  c10::InferenceMode guard;
  const torch::Tensor a = torch::ones({1}), b = torch::ones({1});
  for (auto _ : state) {
    torch::Tensor c = a + b;
    benchmark::DoNotOptimize(c.unsafeGetTensorImpl());
  }
}

// a.add_(b): no allocation.
void add_inplace_1elem(benchmark::State& state) {
  torch::Tensor a = torch::zeros({1});
  const torch::Tensor b = torch::ones({1});
  for (auto _ : state) {
    a.add_(b);
    benchmark::DoNotOptimize(a.unsafeGetTensorImpl());
  }
}

void empty_1elem(benchmark::State& state) {
  for (auto _ : state) {
    torch::Tensor t = torch::empty({1});
    benchmark::DoNotOptimize(t.unsafeGetTensorImpl());
  }
}

void ones_1elem(benchmark::State& state) {
  for (auto _ : state) {
    torch::Tensor t = torch::ones({1});
    benchmark::DoNotOptimize(t.unsafeGetTensorImpl());
  }
}

// A chain of 100 adds on 1-element tensors, y = y + w with w requiring grad, as in bench_autograd.
constexpr int kChain = 100;

torch::Tensor chain(const torch::Tensor& x, const torch::Tensor& w) {
  torch::Tensor y = x;
  for (int i = 0; i < kChain; ++i) y = y + w;
  return y;
}

void report_per_add(benchmark::State& state) {
  state.counters["time_per_add"] = benchmark::Counter(static_cast<double>(state.iterations()) * kChain,
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void add_chain_no_grad(benchmark::State& state) {
  const torch::Tensor x = torch::ones({1});
  const torch::Tensor w = torch::ones({1}).requires_grad_();
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    torch::Tensor y = chain(x, w);
    benchmark::DoNotOptimize(y.unsafeGetTensorImpl());
  }
  report_per_add(state);
}

void add_chain_forward(benchmark::State& state) {
  const torch::Tensor x = torch::ones({1});
  const torch::Tensor w = torch::ones({1}).requires_grad_();
  for (auto _ : state) {
    torch::Tensor y = chain(x, w);
    benchmark::DoNotOptimize(y.unsafeGetTensorImpl());
  }
  report_per_add(state);
}

void add_chain_forward_backward(benchmark::State& state) {
  const torch::Tensor x = torch::ones({1});
  const torch::Tensor w = torch::ones({1}).requires_grad_();
  for (auto _ : state) {
    torch::Tensor y = chain(x, w);
    y.backward();
    benchmark::DoNotOptimize(w.grad().unsafeGetTensorImpl());
  }
  report_per_add(state);
}

int threads_from_env() {
  const char* s = std::getenv("OMP_NUM_THREADS");
  const int n = s ? std::atoi(s) : 0;
  return n > 0 ? n : 2;
}

}  // namespace

BENCHMARK(add_1elem);
BENCHMARK(add_1elem_inference_mode);
BENCHMARK(add_inplace_1elem);
BENCHMARK(empty_1elem);
BENCHMARK(ones_1elem);
BENCHMARK(add_chain_no_grad);
BENCHMARK(add_chain_forward);
BENCHMARK(add_chain_forward_backward);

int main(int argc, char** argv) {
  torch::set_num_threads(threads_from_env());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("libtorch", TORCH_VERSION);
  benchmark::AddCustomContext("torch threads", std::to_string(torch::get_num_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
