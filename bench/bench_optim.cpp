// Optimizer step throughput on the parameters of the MLP 784-512-512-10 (669,706 f32 values in 6
// tensors): kiln::optim's fused one-pass updates beside the same math written as a sequence of
// Kiln tensor ops (torch's foreach=False structure: one pass per op). Reports parameter values per
// second; and Adam on one 2^20-element parameter in f32, bf16 and f16. Not a correctness test:
// tests/optim/ checks the values against PyTorch.
#include <benchmark/benchmark.h>

#include <vector>

#include "autograd/grad_mode.h"
#include "kiln/kiln.h"
#include "nn/optim/adam.h"
#include "nn/optim/sgd.h"

namespace {

using kiln::Tensor;

struct Mlp {
  std::vector<Tensor> params;
  int64_t numel = 0;
  Mlp() {
    const std::vector<kiln::Dims> shapes = {{512, 784}, {512}, {512, 512}, {512}, {10, 512}, {10}};
    for (const kiln::Dims& s : shapes) {
      Tensor p = kiln::randn(s).requires_grad_();
      p.mutable_grad() = kiln::randn(s);
      numel += p.numel();
      params.push_back(p);
    }
  }
};

void report(benchmark::State& state, int64_t numel) { state.SetItemsProcessed(state.iterations() * numel); }

void fused_sgd_momentum(benchmark::State& state) {
  Mlp mlp;
  kiln::optim::SGD opt(mlp.params, {.lr = 1e-3, .momentum = 0.9, .weight_decay = 1e-4});
  for (auto _ : state) opt.step();
  report(state, mlp.numel);
}

// buf = buf * momentum + (g + wd * p); p -= lr * buf, as separate ops.
void composite_sgd_momentum(benchmark::State& state) {
  Mlp mlp;
  std::vector<Tensor> bufs;
  for (const Tensor& p : mlp.params) bufs.push_back(kiln::zeros(p.shape()));
  kiln::NoGradGuard no_grad;
  for (auto _ : state) {
    for (size_t i = 0; i < mlp.params.size(); ++i) {
      Tensor& p = mlp.params[i];
      Tensor d = kiln::add(p.grad(), p, 1e-4);
      bufs[i].mul_(0.9).add_(d);
      p.add_(bufs[i], -1e-3);
    }
  }
  report(state, mlp.numel);
}

void fused_adam(benchmark::State& state) {
  Mlp mlp;
  kiln::optim::AdamW opt(mlp.params, {.lr = 1e-3});
  for (auto _ : state) opt.step();
  report(state, mlp.numel);
}

// torch's single-tensor AdamW as separate Kiln ops (bias corrections folded into two scalars).
void composite_adam(benchmark::State& state) {
  Mlp mlp;
  std::vector<Tensor> m, v;
  for (const Tensor& p : mlp.params) m.push_back(kiln::zeros(p.shape())), v.push_back(kiln::zeros(p.shape()));
  kiln::NoGradGuard no_grad;
  for (auto _ : state) {
    for (size_t i = 0; i < mlp.params.size(); ++i) {
      Tensor& p = mlp.params[i];
      const Tensor& g = p.grad();
      p.mul_(1 - 1e-3 * 1e-2);
      m[i].mul_(0.9).add_(g, 0.1);
      v[i].mul_(0.999).add_(g * g, 0.001);
      Tensor denom = (v[i].sqrt() / 0.5).add_(1e-8);
      p.add_(m[i] / denom, -1e-2);
    }
  }
  report(state, mlp.numel);
}

// Adam on one 2^20-element parameter in each dtype: the 16-bit loops (Note [16-bit updates] in
// kernels/cpu/optimizer_update.cpp) beside the f32 one.
void adam_1m(benchmark::State& state, kiln::DType dtype) {
  Tensor p = kiln::randn({1 << 20}).to(dtype).requires_grad_();
  p.mutable_grad() = kiln::randn({1 << 20}).to(dtype);
  kiln::optim::Adam opt({p}, {.lr = 1e-3});
  for (auto _ : state) opt.step();
  report(state, p.numel());
}

BENCHMARK(fused_sgd_momentum)->Name("optim/sgd_momentum/fused")->Unit(benchmark::kMicrosecond);
BENCHMARK(composite_sgd_momentum)->Name("optim/sgd_momentum/composite_ops")->Unit(benchmark::kMicrosecond);
BENCHMARK(fused_adam)->Name("optim/adamw/fused")->Unit(benchmark::kMicrosecond);
BENCHMARK(composite_adam)->Name("optim/adamw/composite_ops")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(adam_1m, f32, kiln::DType::f32)->Name("optim/adam_1m/f32")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(adam_1m, bf16, kiln::DType::bf16)->Name("optim/adam_1m/bf16")->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(adam_1m, f16, kiln::DType::f16)->Name("optim/adam_1m/f16")->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
