// Kiln's vectorised float math (exp, sin, cos, erf, gelu and its backward, pow) and randn, timed
// per call on f32 tensors. Two modes: as a Google Benchmark (bench/run.sh), and `--serve`, where it
// reads "OP N THREADS" lines from stdin and answers each with one RESULT line; bench/unary_vs_torch.py
// drives it beside bench/unary_torch.py, which serves the same lines for PyTorch. The cases (names,
// input ranges and timing rule) are defined here and in unary_torch.py alike.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>

#include "kiln/kiln.h"
#include "tensor/cpu_capability.h"
#include "tensor/dispatch.h"

namespace {

using kiln::Tensor;

// One case: the input range and the call. Inputs are lo + (hi - lo) frac(i * 0.618...), the same
// sequence unary_torch.py builds, so both sides see the same values.
struct Case {
  double lo, hi;
  std::function<Tensor(const Tensor& x, const Tensor& g)> call;
};

Tensor backward(kiln::Op op, const Tensor& g, const Tensor& x) {
  Tensor out = kiln::empty_like(x);
  if (op == kiln::Op::gelu_erf_backward) kiln::dispatch<kiln::Op::gelu_erf_backward>(kiln::Device::cpu(), g, x, out);
  else kiln::dispatch<kiln::Op::gelu_tanh_backward>(kiln::Device::cpu(), g, x, out);
  return out;
}

const std::map<std::string, Case>& cases() {
  using T = const Tensor&;
  static const std::map<std::string, Case> table = {
      {"exp", {-10, 10, [](T x, T) { return x.exp(); }}},
      {"sin", {-10, 10, [](T x, T) { return x.sin(); }}},
      {"cos", {-10, 10, [](T x, T) { return x.cos(); }}},
      {"erf", {-3, 3, [](T x, T) { return x.erf(); }}},
      {"gelu", {-5, 5, [](T x, T) { return kiln::gelu(x); }}},
      {"gelu_tanh", {-5, 5, [](T x, T) { return kiln::gelu(x, "tanh"); }}},
      {"gelu_backward", {-5, 5, [](T x, T g) { return backward(kiln::Op::gelu_erf_backward, g, x); }}},
      {"gelu_tanh_backward", {-5, 5, [](T x, T g) { return backward(kiln::Op::gelu_tanh_backward, g, x); }}},
      {"pow_2", {-4, 4, [](T x, T) { return x.pow(2); }}},
      {"pow_0.5", {0, 4, [](T x, T) { return x.pow(0.5); }}},
      {"pow_-1", {-4, 4, [](T x, T) { return x.pow(-1); }}},
      {"pow_2.5", {0, 4, [](T x, T) { return x.pow(2.5); }}},
      {"pow_-1.3", {0, 4, [](T x, T) { return x.pow(-1.3); }}},
      {"randn", {0, 1, [](T x, T) { return kiln::randn(x.shape()); }}},
  };
  return table;
}

Tensor input(int64_t n, double lo, double hi) {
  Tensor x = kiln::empty({n});
  float* p = x.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const double f = static_cast<double>(i) * 0.6180339887498949;
    p[i] = static_cast<float>(lo + (hi - lo) * (f - std::floor(f)));
  }
  return x;
}

// The timing rule both sides follow: one warm-up call, then calls timed one by one for at least
// 0.2 s and 10 calls; the result is the fastest call. On a shared 2-core host a call of 2 threads is
// slowed whenever either thread is descheduled, so the fastest call is the one figure that does not
// measure the neighbours.
double ns_per_call(const std::function<void()>& call) {
  using Clock = std::chrono::steady_clock;
  call();
  double best = 1e300, total = 0;
  for (int calls = 0; calls < 10 || total < 0.2; ++calls) {
    const auto t0 = Clock::now();
    call();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::min(best, s);
    total += s;
  }
  return best * 1e9;
}

int serve() {
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string op;
    int64_t n = 0;
    int threads = 0;
    if (!(in >> op >> n >> threads) || !cases().count(op) || n < 1 || threads < 1) {
      std::printf("ERROR bad request '%s'\n", line.c_str());
      std::fflush(stdout);
      continue;
    }
    const Case& c = cases().at(op);
    kiln::set_num_threads(threads);
    const Tensor x = input(n, c.lo, c.hi), g = input(n, -1, 1);
    const double ns = ns_per_call([&] { benchmark::DoNotOptimize(c.call(x, g)); });
    std::printf("RESULT op=%s n=%lld threads=%d ns=%.1f\n", op.c_str(), static_cast<long long>(n), threads, ns);
    std::fflush(stdout);
  }
  return 0;
}

void register_benchmarks() {
  for (const auto& [name, c] : cases())
    for (int64_t n : {int64_t{1} << 16, int64_t{1} << 20}) {
      const Case* pc = &c;
      benchmark::RegisterBenchmark(("unary/" + name).c_str(), [pc, n](benchmark::State& state) {
        const Tensor x = input(n, pc->lo, pc->hi), g = input(n, -1, 1);
        for (auto _ : state) benchmark::DoNotOptimize(pc->call(x, g));
        state.SetItemsProcessed(state.iterations() * n);
      })->Arg(n)->UseRealTime();
    }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--serve") {
    std::printf("READY kiln cpu_level=%s\n", std::string(kiln::cpu_capability_name(kiln::cpu_capability())).c_str());
    std::fflush(stdout);
    return serve();
  }
  register_benchmarks();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
