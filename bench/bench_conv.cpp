// The CNN benchmark's layers, one op at a time, forward and backward, at batch 128 on 28x28:
// conv(1->32, 3x3, pad 1) -> maxpool 2 -> conv(32->64, 3x3, pad 1) -> maxpool 2 (ReLU is an
// elementwise op, timed in bench_elementwise). Each figure is what a caller pays per call: output
// allocation, checks, primitive-cache lookup and layout reorders included. Reports ms per call on
// 2 threads (KILN_BENCH_THREADS overrides). The first layer also runs through oneDNN directly, as
// its documentation recommends (layouts "any", reorders to and from the caller's NCHW), beside
// Kiln's direct kernels (Note [Few-channel convolution]), and a 3->32 first layer on 32x32 colour
// images runs beside them. KILN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 runs both sides at
// the AVX2 level (the direct oneDNN runs can make their primitives before Kiln caps oneDNN).
//   ./bench_conv --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <unordered_map>

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
constexpr ConvLayer kConvRgb{3, 32, 32};  // a first layer on colour images: the direct kernels' 27-tap layout

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

// oneDNN on its own: the convolution and its reorders made once, outside the timed loop; each
// call reorders the caller's NCHW/OIHW buffers in, runs, and reorders the result out.
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
  dnnl::memory plain(const dnnl::memory::dims& d, tag t, const Tensor& data) {
    return dnnl::memory(md(d, f32, t), eng, data.data_ptr());
  }
  // A reorder made once, run by each call.
  struct Reorder {
    dnnl::reorder prim;
    dnnl::memory from, to;
    void run(dnnl::stream& s) { prim.execute(s, from, to); }
  };
  static Reorder reorder(dnnl::memory from, dnnl::memory to) { return {dnnl::reorder(from, to), from, to}; }
};

void onednn_conv1_forward(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  OnednnConv1 c;
  using tag = OnednnConv1::tag;
  const Tensor x = kiln::randn({kBatch, 1, 28, 28}), w = kiln::randn({32, 1, 3, 3}) * 0.1, b = kiln::randn({32});
  const Tensor y = kiln::empty({kBatch, 32, 28, 28});
  const dnnl::memory src(c.fwd.src_desc(), c.eng), wei(c.fwd.weights_desc(), c.eng), dst(c.fwd.dst_desc(), c.eng);
  auto to_src = c.reorder(c.plain(c.src, tag::nchw, x), src), to_wei = c.reorder(c.plain(c.wei, tag::oihw, w), wei);
  auto from_dst = c.reorder(dst, c.plain(c.dst, tag::nchw, y));
  const dnnl::primitive prim(c.fwd);
  const std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_BIAS, c.plain(c.bia, tag::x, b)}, {DNNL_ARG_DST, dst}};
  for (auto _ : state) {
    to_src.run(c.stream);
    to_wei.run(c.stream);
    prim.execute(c.stream, args);
    from_dst.run(c.stream);
    c.stream.wait();
    benchmark::DoNotOptimize(y.data_ptr());
  }
  report_ms(state);
}

void onednn_conv1_backward_weights(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  OnednnConv1 c;
  using tag = OnednnConv1::tag;
  const Tensor x = kiln::randn({kBatch, 1, 28, 28}), gy = kiln::randn({kBatch, 32, 28, 28});
  const Tensor gw = kiln::empty({32, 1, 3, 3}), gb = kiln::empty({32});
  const dnnl::memory src(c.bwd.src_desc(), c.eng), diff_dst(c.bwd.diff_dst_desc(), c.eng),
      diff_wei(c.bwd.diff_weights_desc(), c.eng);
  auto to_src = c.reorder(c.plain(c.src, tag::nchw, x), src), to_diff_dst = c.reorder(c.plain(c.dst, tag::nchw, gy), diff_dst);
  auto from_diff_wei = c.reorder(diff_wei, c.plain(c.wei, tag::oihw, gw));
  const dnnl::primitive prim(c.bwd);
  const std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, src},
                                                   {DNNL_ARG_DIFF_DST, diff_dst},
                                                   {DNNL_ARG_DIFF_WEIGHTS, diff_wei},
                                                   {DNNL_ARG_DIFF_BIAS, c.plain(c.bia, tag::x, gb)}};
  for (auto _ : state) {
    to_src.run(c.stream);
    to_diff_dst.run(c.stream);
    prim.execute(c.stream, args);
    from_diff_wei.run(c.stream);
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
BENCHMARK_CAPTURE(conv_forward, rgb_3to32_32x32, kConvRgb)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_backward, rgb_weight_bias_only, kConvRgb, false)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_forward, pool1_32x28x28, 32, 28)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_backward, pool1_32x28x28, 32, 28)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_forward, conv2_32to64_14x14, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(conv_backward, conv2_all_grads, kConv2, true)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_forward, pool2_64x14x14, 64, 14)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(maxpool_backward, pool2_64x14x14, 64, 14)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
