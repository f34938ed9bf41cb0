// The CNN benchmark's layers, one op at a time, forward and backward, at batch 128 on 28x28:
// conv(1->32, 3x3, pad 1) -> maxpool 2 -> conv(32->64, 3x3, pad 1) -> maxpool 2 (ReLU is an
// elementwise op, timed in bench_elementwise). Each figure is what a caller pays per call: output
// allocation, checks, primitive-cache lookup and layout reorders included. Reports ms per call on
// 2 threads (KILN_BENCH_THREADS overrides).
//   ./bench_conv --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>

#include <kiln/kiln.h>

#include "autograd/ops/nn_ops.h"

namespace {

using kiln::Tensor;

int bench_threads() {
  const char* env = std::getenv("KILN_BENCH_THREADS");
  return env ? std::max(1, std::atoi(env)) : 2;
}

constexpr int64_t kBatch = 128;

struct ConvLayer {
  int64_t in, out, size;  // channels in and out, input height = width
};
constexpr ConvLayer kConv1{1, 32, 28}, kConv2{32, 64, 14};

void report_ms(benchmark::State& state) { state.SetLabel("ms per call in real_time"); }

void conv_forward(benchmark::State& state, ConvLayer l) {
  kiln::set_num_threads(bench_threads());
  const Tensor x = kiln::randn({kBatch, l.in, l.size, l.size}), w = kiln::randn({l.out, l.in, 3, 3}) * 0.1;
  const Tensor b = kiln::randn({l.out});
  for (auto _ : state) benchmark::DoNotOptimize(kiln::conv2d(x, w, b, {1}, {1}).data_ptr());
  report_ms(state);
}

// The first layer needs no input gradient (its input is the data), as in training.
void conv_backward(benchmark::State& state, ConvLayer l, bool input_grad) {
  kiln::set_num_threads(bench_threads());
  const Tensor x = kiln::randn({kBatch, l.in, l.size, l.size}), w = kiln::randn({l.out, l.in, 3, 3}) * 0.1;
  const Tensor gy = kiln::randn({kBatch, l.out, l.size, l.size});
  for (auto _ : state) {
    const kiln::LayerGrads g = kiln::conv2d_backward(gy, x, w, {1}, {1}, {1}, 1, {.input = input_grad});
    benchmark::DoNotOptimize(g.weight.data_ptr());
  }
  report_ms(state);
}

void maxpool_forward(benchmark::State& state, int64_t channels, int64_t size) {
  kiln::set_num_threads(bench_threads());
  const Tensor x = kiln::randn({kBatch, channels, size, size});
  for (auto _ : state) benchmark::DoNotOptimize(kiln::max_pool2d_with_indices(x, {2}).values.data_ptr());
  report_ms(state);
}

void maxpool_backward(benchmark::State& state, int64_t channels, int64_t size) {
  kiln::set_num_threads(bench_threads());
  const Tensor x = kiln::randn({kBatch, channels, size, size});
  const kiln::TensorPair p = kiln::max_pool2d_with_indices(x, {2});
  const Tensor gy = kiln::randn(p.values.shape());
  for (auto _ : state) benchmark::DoNotOptimize(kiln::max_pool2d_backward(gy, p.indices, x.shape()).data_ptr());
  report_ms(state);
}

}  // namespace

BENCHMARK_CAPTURE(conv_forward, conv1_1to32_28x28, kConv1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_backward, conv1_weight_bias_only, kConv1, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_forward, pool1_32x28x28, 32, 28)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_backward, pool1_32x28x28, 32, 28)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_forward, conv2_32to64_14x14, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_backward, conv2_all_grads, kConv2, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_forward, pool2_64x14x14, 64, 14)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_backward, pool2_64x14x14, 64, 14)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
