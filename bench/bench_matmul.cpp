// Kiln's mm against oneDNN called directly, side by side in one binary: dnnl_sgemm (f32) and a
// matmul primitive created once outside the timed loop (f32 and bf16). Kiln's figure includes
// what a user pays per call: the output allocation, the primitive-cache lookup and the memory
// objects. Reports GFLOP/s. bf16 also runs the way Kiln multiplies it where oneDNN has no bf16
// kernel (through f32), and f16, which always goes that way (under ONEDNN_MAX_CPU_ISA=AVX2,
// kiln_mm/bf16 itself takes that path). Then the skinny products of an MLP's 10-wide last layer, in the layouts
// autograd passes them, where Kiln's mm takes its own kernel (kernels/cpu/small_matmul.cpp), beside
// a oneDNN matmul primitive on the same layouts. Runs on 2 threads (KILN_BENCH_THREADS overrides):
//   ./bench_matmul --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <unordered_map>
#include <utility>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include <kiln/kiln.h>

namespace {

using kiln::DType;
using kiln::Tensor;

int bench_threads() {
  const char* env = std::getenv("KILN_BENCH_THREADS");
  return env ? std::max(1, std::atoi(env)) : 2;
}

// Shapes (M, K, N): square sizes, and an MNIST-sized layer (128x784)·(784x512).
const std::vector<std::array<int64_t, 3>> kShapes = {
    {128, 128, 128}, {256, 256, 256}, {512, 512, 512}, {1024, 1024, 1024}, {2048, 2048, 2048}, {128, 784, 512}};

void set_flops(benchmark::State& state) {
  const double flops = 2.0 * static_cast<double>(state.range(0) * state.range(1) * state.range(2));
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

Tensor random_matrix(int64_t rows, int64_t cols, DType t) { return kiln::randn({rows, cols}).to(t); }

template <DType T>
void BM_kiln_mm(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  const Tensor a = random_matrix(state.range(0), state.range(1), T);
  const Tensor b = random_matrix(state.range(1), state.range(2), T);
  benchmark::DoNotOptimize(kiln::mm(a, b));  // warm-up: creates and caches the primitive
  for (auto _ : state) benchmark::DoNotOptimize(kiln::mm(a, b));
  set_flops(state);
}

// What Kiln's mm does for a 16-bit dtype where oneDNN has no kernel (Note [16-bit products through
// f32], kernels/cpu/matmul.cpp), spelled with public ops so that it runs beside oneDNN's own bf16
// kernels in one process: both operands to f32, the f32 product, one rounding back.
template <DType T>
void BM_kiln_mm_via_f32(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  const Tensor a = random_matrix(state.range(0), state.range(1), T);
  const Tensor b = random_matrix(state.range(1), state.range(2), T);
  auto run = [&] { return kiln::mm(a.to(DType::f32), b.to(DType::f32)).to(T); };
  benchmark::DoNotOptimize(run());
  for (auto _ : state) benchmark::DoNotOptimize(run());
  set_flops(state);
}

void BM_dnnl_sgemm(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const Tensor a = random_matrix(M, K, DType::f32), b = random_matrix(K, N, DType::f32);
  Tensor c = kiln::empty({M, N});
  dnnl_sgemm('N', 'N', M, N, K, 1.0f, a.data_ptr<float>(), K, b.data_ptr<float>(), N, 0.0f, c.data_ptr<float>(), N);
  for (auto _ : state) {
    dnnl_sgemm('N', 'N', M, N, K, 1.0f, a.data_ptr<float>(), K, b.data_ptr<float>(), N, 0.0f, c.data_ptr<float>(), N);
    benchmark::ClobberMemory();
  }
  set_flops(state);
}

template <DType T>
void BM_dnnl_matmul_primitive(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const Tensor a = random_matrix(M, K, T), b = random_matrix(K, N, T);
  Tensor c = kiln::empty({M, N}, {.dtype = T});
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dt type = T == DType::bf16 ? dt::bf16 : dt::f32;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  const dnnl::memory::desc a_md({M, K}, type, tag::ab), b_md({K, N}, type, tag::ab), c_md({M, N}, type, tag::ab);
  const dnnl::matmul prim(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md), eng));
  dnnl::memory ma(a_md, eng, a.data_ptr()), mb(b_md, eng, b.data_ptr()), mc(c_md, eng, c.data_ptr());
  prim.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
  stream.wait();
  for (auto _ : state) {
    prim.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    stream.wait();
    benchmark::ClobberMemory();
  }
  set_flops(state);
}

// Skinny products (M, K, N, a column-major, b column-major, fused row bias): the last layer of a
// 784-512-512-10 MLP at batch 128 (forward x @ W.t() with and without its bias, grad input g @ W,
// grad weight g.t() @ h; at 10 wide Kiln leaves them to oneDNN), the same layer 8 wide (Kiln's own
// kernel), and M or N of 1 and 4 around them.
const std::vector<std::array<int64_t, 6>> kSkinny = {
    {128, 512, 10, 0, 1, 1}, {128, 512, 10, 0, 1, 0}, {128, 10, 512, 0, 0, 0}, {10, 128, 512, 1, 0, 0},
    {128, 512, 8, 0, 1, 1},  {8, 128, 512, 1, 0, 0},  {128, 512, 1, 0, 1, 0},  {1, 512, 512, 0, 0, 0},
    {4, 512, 512, 0, 0, 0},  {1024, 512, 8, 0, 1, 0}};

// A (rows, cols) operand, column-major (a transposed contiguous buffer) when col is set.
Tensor skinny_operand(int64_t rows, int64_t cols, bool col) {
  return col ? kiln::randn({cols, rows}).t() : kiln::randn({rows, cols});
}

void BM_kiln_skinny(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const Tensor a = skinny_operand(M, K, state.range(3)), b = skinny_operand(K, N, state.range(4));
  const Tensor bias = kiln::randn({N});
  auto run = [&] { return state.range(5) ? kiln::addmm(bias, a, b) : kiln::mm(a, b); };
  benchmark::DoNotOptimize(run());
  for (auto _ : state) benchmark::DoNotOptimize(run());
  set_flops(state);
}

void BM_dnnl_skinny(benchmark::State& state) {
  kiln::set_num_threads(bench_threads());
  const int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const bool fused_bias = state.range(5);
  const Tensor a = skinny_operand(M, K, state.range(3)), b = skinny_operand(K, N, state.range(4));
  const Tensor bias = kiln::randn({1, N});
  Tensor c = kiln::empty({M, N});
  using dt = dnnl::memory::data_type;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  const dnnl::memory::desc a_md({M, K}, dt::f32, {a.stride(0), a.stride(1)}),
      b_md({K, N}, dt::f32, {b.stride(0), b.stride(1)}), c_md({M, N}, dt::f32, {N, 1}), bias_md({1, N}, dt::f32, {N, 1});
  const dnnl::matmul::desc desc = fused_bias ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md) : dnnl::matmul::desc(a_md, b_md, c_md);
  const dnnl::matmul prim(dnnl::matmul::primitive_desc(desc, eng));
  dnnl::memory ma(a_md, eng, a.data_ptr()), mb(b_md, eng, b.data_ptr()), mc(c_md, eng, c.data_ptr()),
      mbias(bias_md, eng, bias.data_ptr());
  std::unordered_map<int, dnnl::memory> args = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
  if (fused_bias) args[DNNL_ARG_BIAS] = mbias;
  prim.execute(stream, args);
  stream.wait();
  for (auto _ : state) {
    prim.execute(stream, args);
    stream.wait();
    benchmark::ClobberMemory();
  }
  set_flops(state);
}

}  // namespace

// Registered shape by shape, Kiln next to oneDNN, so that both sides of each ratio run close in time.
int main(int argc, char** argv) {
  using Fn = void (*)(benchmark::State&);
  const std::vector<std::pair<const char*, Fn>> variants = {
      {"kiln_mm/f32", BM_kiln_mm<DType::f32>},
      {"dnnl_sgemm/f32", BM_dnnl_sgemm},
      {"dnnl_matmul/f32", BM_dnnl_matmul_primitive<DType::f32>},
      {"kiln_mm/bf16", BM_kiln_mm<DType::bf16>},
      {"dnnl_matmul/bf16", BM_dnnl_matmul_primitive<DType::bf16>},
      {"kiln_mm_via_f32/bf16", BM_kiln_mm_via_f32<DType::bf16>},
      {"kiln_mm/f16", BM_kiln_mm<DType::f16>},
  };
  for (const auto& [m, k, n] : kShapes)
    for (const auto& [name, fn] : variants)
      benchmark::RegisterBenchmark(name, fn)
          ->Args({m, k, n})
          ->ArgNames({"M", "K", "N"})
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();  // oneDNN works on OpenMP threads: the main thread's CPU time is not the cost
  for (const auto& shape : kSkinny)
    for (const auto& [name, fn] : std::vector<std::pair<const char*, Fn>>{{"kiln_mm_skinny/f32", BM_kiln_skinny},
                                                                         {"dnnl_matmul_skinny/f32", BM_dnnl_skinny}})
      benchmark::RegisterBenchmark(name, fn)
          ->Args({shape.begin(), shape.end()})
          ->ArgNames({"M", "K", "N", "a_col", "b_col", "bias"})
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
