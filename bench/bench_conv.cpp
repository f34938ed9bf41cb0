// The CNN benchmark's layers, one op at a time, forward and backward, at batch 128 on 28x28:
// conv(1->32, 3x3, pad 1) -> maxpool 2 -> conv(32->64, 3x3, pad 1) -> maxpool 2 (ReLU is an
// elementwise op, timed in bench_elementwise). Each figure is what a caller pays per call: output
// allocation, checks, primitive-cache lookup and layout reorders included. Reports ms per call on
// 2 threads (KILN_BENCH_THREADS overrides). The first layer also runs through oneDNN directly, as
// its documentation recommends (layouts "any", reorders to and from the caller's NCHW), beside
// Kiln's direct kernels (Note [Few-channel convolution]).
//   ./bench_conv --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>

#include <kiln/kiln.h>
#include <oneapi/dnnl/dnnl.hpp>

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

// oneDNN on its own: primitives made once, each call reorders NCHW in, runs, reorders out.
struct OnednnConv1 {
  using md = dnnl::memory::desc;
  using tag = dnnl::memory::format_tag;
  static constexpr auto f32 = dnnl::memory::data_type::f32;
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{eng};
  dnnl::memory::dims src{kBatch, kConv1.in, kConv1.size, kConv1.size}, wei{kConv1.out, kConv1.in, 3, 3}, bia{kConv1.out},
      dst{kBatch, kConv1.out, kConv1.size, kConv1.size}, one{1, 1};
  dnnl::convolution_forward::primitive_desc fwd{
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                      md(src, f32, tag::any), md(wei, f32, tag::any), md(bia, f32, tag::x),
                                      md(dst, f32, tag::any), one, one, one),
      eng};
  dnnl::convolution_backward_weights::primitive_desc bwd{
      dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, md(src, f32, tag::any),
                                               md(wei, f32, tag::any), md(bia, f32, tag::x), md(dst, f32, tag::any),
                                               one, one, one),
      eng, fwd};
  // A plain NCHW/OIHW buffer in, the primitive's layout out (or back).
  dnnl::memory plain(const dnnl::memory::dims& d, tag t, void* p) { return dnnl::memory(md(d, f32, t), eng, p); }
  void reorder(dnnl::memory from, dnnl::memory to) { dnnl::reorder(from, to).execute(stream, from, to); }
};

void onednn_conv1_forward(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  OnednnConv1 c;
  const Tensor x = kiln::randn({kBatch, 1, 28, 28}), w = kiln::randn({32, 1, 3, 3}) * 0.1, b = kiln::randn({32});
  const dnnl::memory src(c.fwd.src_desc(), c.eng), wei(c.fwd.weights_desc(), c.eng), dst(c.fwd.dst_desc(), c.eng);
  const dnnl::primitive prim(c.fwd);
  for (auto _ : state) {
    Tensor y = kiln::empty({kBatch, 32, 28, 28});
    c.reorder(c.plain(c.src, OnednnConv1::tag::nchw, x.data_ptr()), src);
    c.reorder(c.plain(c.wei, OnednnConv1::tag::oihw, w.data_ptr()), wei);
    prim.execute(c.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, c.plain(c.bia, OnednnConv1::tag::x, b.data_ptr())},
                            {DNNL_ARG_DST, dst}});
    c.reorder(dst, c.plain(c.dst, OnednnConv1::tag::nchw, y.data_ptr()));
    c.stream.wait();
    benchmark::DoNotOptimize(y.data_ptr());
  }
  report_ms(state);
}

void onednn_conv1_backward_weights(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  OnednnConv1 c;
  const Tensor x = kiln::randn({kBatch, 1, 28, 28}), gy = kiln::randn({kBatch, 32, 28, 28});
  const dnnl::memory src(c.bwd.src_desc(), c.eng), diff_dst(c.bwd.diff_dst_desc(), c.eng),
      diff_wei(c.bwd.diff_weights_desc(), c.eng);
  const dnnl::primitive prim(c.bwd);
  for (auto _ : state) {
    Tensor gw = kiln::empty({32, 1, 3, 3}), gb = kiln::empty({32});
    c.reorder(c.plain(c.src, OnednnConv1::tag::nchw, x.data_ptr()), src);
    c.reorder(c.plain(c.dst, OnednnConv1::tag::nchw, gy.data_ptr()), diff_dst);
    prim.execute(c.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                            {DNNL_ARG_DIFF_BIAS, c.plain(c.bia, OnednnConv1::tag::x, gb.data_ptr())}});
    c.reorder(diff_wei, c.plain(c.wei, OnednnConv1::tag::oihw, gw.data_ptr()));
    c.stream.wait();
    benchmark::DoNotOptimize(gw.data_ptr());
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
BENCHMARK(onednn_conv1_forward)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_backward, conv1_weight_bias_only, kConv1, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(onednn_conv1_backward_weights)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_forward, pool1_32x28x28, 32, 28)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_backward, pool1_32x28x28, 32, 28)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_forward, conv2_32to64_14x14, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_backward, conv2_all_grads, kConv2, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_forward, pool2_64x14x14, 64, 14)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_backward, pool2_64x14x14, 64, 14)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
