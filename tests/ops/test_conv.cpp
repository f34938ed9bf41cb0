// Tests of conv1d, conv2d and conv_transpose2d, forward and backward: forwards against naive f64
// loops written here (the transposed one as a scatter, independent of the kernel's reuse of the
// plain passes), f64 backwards against central differences, f32/bf16 (oneDNN) against f64, a
// PyTorch fixture (tests/fixtures/nn_kernels), hand-checked values and error messages.
#include <array>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/ops/nn_ops.h"
#include "nn_kernel_testing.h"
#include "testing.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using kt::numeric_grad;

struct ConvCase {
  Dims x, w;
  bool bias;
  std::array<int64_t, 2> stride{1, 1}, padding{0, 0}, dilation{1, 1}, output_padding{0, 0};
  int64_t groups = 1;
  bool transposed = false;
};

Dims dims2(const std::array<int64_t, 2>& v) { return {v[0], v[1]}; }

Dims out_shape_of(const ConvCase& c) {
  std::array<int64_t, 2> out{};
  for (int d = 0; d < 2; ++d) {
    const int64_t in = c.x[2 + d], k = c.w[2 + d];
    out[d] = c.transposed ? (in - 1) * c.stride[d] - 2 * c.padding[d] + c.dilation[d] * (k - 1) + c.output_padding[d] + 1
                          : (in + 2 * c.padding[d] - c.dilation[d] * (k - 1) - 1) / c.stride[d] + 1;
  }
  const int64_t o = c.transposed ? c.w[1] * c.groups : c.w[0];
  return {c.x[0], o, out[0], out[1]};
}

// The definition, in f64: a plain convolution gathers over its window; a transposed one scatters
// each input element through the kernel into the output.
std::vector<double> ref_conv(const ConvCase& c, const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& b) {
  const Dims os = out_shape_of(c);
  const int64_t N = c.x[0], C = c.x[1], H = c.x[2], W = c.x[3], O = os[1], Ho = os[2], Wo = os[3];
  const int64_t kh = c.w[2], kw = c.w[3], G = c.groups;
  std::vector<double> y(static_cast<size_t>(N * O * Ho * Wo), 0.0);
  auto X = [&](int64_t n, int64_t ch, int64_t h, int64_t ww) { return x[static_cast<size_t>(((n * C + ch) * H + h) * W + ww)]; };
  auto Wt = [&](int64_t a, int64_t bb, int64_t i, int64_t j) { return w[static_cast<size_t>(((a * c.w[1] + bb) * kh + i) * kw + j)]; };
  auto Y = [&](int64_t n, int64_t o, int64_t h, int64_t ww) -> double& { return y[static_cast<size_t>(((n * O + o) * Ho + h) * Wo + ww)]; };
  for (int64_t n = 0; n < N; ++n) {
    if (!c.transposed) {
      const int64_t cg = C / G, og = O / G;
      for (int64_t o = 0; o < O; ++o)
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) {
            double s = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
            for (int64_t ci = 0; ci < cg; ++ci)
              for (int64_t i = 0; i < kh; ++i)
                for (int64_t j = 0; j < kw; ++j) {
                  const int64_t ih = oh * c.stride[0] - c.padding[0] + i * c.dilation[0];
                  const int64_t iw = ow * c.stride[1] - c.padding[1] + j * c.dilation[1];
                  if (ih >= 0 && ih < H && iw >= 0 && iw < W) s += X(n, (o / og) * cg + ci, ih, iw) * Wt(o, ci, i, j);
                }
            Y(n, o, oh, ow) = s;
          }
    } else {
      const int64_t cg = C / G, og = O / G;
      for (int64_t o = 0; o < O; ++o)
        for (int64_t oh = 0; oh < Ho; ++oh)
          for (int64_t ow = 0; ow < Wo; ++ow) Y(n, o, oh, ow) = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t ww = 0; ww < W; ++ww)
            for (int64_t oi = 0; oi < og; ++oi)
              for (int64_t i = 0; i < kh; ++i)
                for (int64_t j = 0; j < kw; ++j) {
                  const int64_t oh = h * c.stride[0] - c.padding[0] + i * c.dilation[0];
                  const int64_t ow = ww * c.stride[1] - c.padding[1] + j * c.dilation[1];
                  if (oh >= 0 && oh < Ho && ow >= 0 && ow < Wo) Y(n, (ch / cg) * og + oi, oh, ow) += X(n, ch, h, ww) * Wt(ch, oi, i, j);
                }
    }
  }
  return y;
}

Tensor run_conv(const ConvCase& c, const Tensor& x, const Tensor& w, const Tensor& b) {
  if (c.transposed)
    return conv_transpose2d(x, w, b, dims2(c.stride), dims2(c.padding), dims2(c.output_padding), c.groups, dims2(c.dilation));
  return conv2d(x, w, b, dims2(c.stride), dims2(c.padding), dims2(c.dilation), c.groups);
}

LayerGrads run_conv_backward(const ConvCase& c, const Tensor& gy, const Tensor& x, const Tensor& w, LayerGradMask m = {}) {
  if (c.transposed)
    return conv_transpose2d_backward(gy, x, w, dims2(c.stride), dims2(c.padding), dims2(c.output_padding), c.groups,
                                     dims2(c.dilation), m);
  return conv2d_backward(gy, x, w, dims2(c.stride), dims2(c.padding), dims2(c.dilation), c.groups, m);
}

const std::vector<ConvCase> kCases = {
    {{2, 3, 6, 5}, {4, 3, 3, 3}, true},
    {{1, 1, 5, 5}, {2, 1, 2, 2}, false, {2, 2}},
    {{2, 4, 7, 6}, {6, 2, 3, 2}, true, {2, 1}, {1, 0}, {1, 2}, {0, 0}, 2},
    {{1, 6, 5, 5}, {6, 1, 3, 3}, true, {1, 1}, {2, 2}, {2, 1}, {0, 0}, 6},   // depthwise, wide padding
    {{2, 3, 4, 3}, {3, 2, 3, 2}, true, {2, 1}, {1, 0}, {1, 1}, {1, 0}, 1, true},
    {{1, 4, 3, 4}, {4, 3, 2, 3}, false, {2, 3}, {0, 1}, {2, 1}, {1, 2}, 2, true},
    {{1, 2, 3, 3}, {2, 2, 2, 2}, true, {1, 1}, {0, 0}, {2, 2}, {1, 1}, 1, true},  // output_padding < dilation only
    // 16 channels and more take oneDNN's channels-last kernels (Note [Convolution layouts]).
    {{2, 16, 5, 6}, {16, 16, 3, 3}, true, {1, 1}, {1, 1}},
    {{1, 16, 7, 6}, {24, 16, 3, 2}, false, {2, 1}, {1, 0}, {1, 2}},
    {{1, 16, 4, 3}, {16, 20, 3, 3}, true, {2, 2}, {1, 1}, {1, 1}, {1, 0}, 1, true},
    // Stride 1: the input gradient (and a transposed forward) runs as a flipped forward
    // convolution (Note [Backward data as a forward convolution]).
    {{2, 16, 6, 7}, {20, 16, 2, 3}, false, {1, 1}, {0, 1}},
    {{1, 16, 5, 4}, {16, 24, 3, 3}, true, {1, 1}, {1, 0}, {1, 1}, {0, 0}, 1, true},
    // f32 with stride 1, few input channels and outputs at least 16 wide: the direct kernels (Note
    // [Few-channel convolution]), with rows of whole registers and ragged row ends at 16, 8 and 4
    // lanes; one and three channels of 3x3 have their own compiled layouts, the rest the general one.
    {{2, 1, 6, 20}, {5, 1, 3, 3}, true, {1, 1}, {1, 1}},
    {{1, 1, 3, 32}, {2, 1, 3, 3}, true, {1, 1}, {1, 1}},
    {{1, 3, 5, 33}, {4, 3, 3, 3}, true, {1, 1}, {1, 1}},
    {{2, 1, 7, 21}, {3, 1, 5, 5}, false, {1, 1}, {2, 1}},
    {{1, 2, 4, 17}, {3, 2, 2, 1}, true},
    {{1, 4, 5, 18}, {4, 2, 3, 3}, true, {1, 1}, {1, 1}, {1, 1}, {0, 0}, 1, true},  // its input gradient
};

std::string name_of(const ConvCase& c) {
  std::ostringstream os;
  os << (c.transposed ? "conv_transpose2d" : "conv2d") << " x" << c.x << " w" << c.w << " stride " << dims2(c.stride)
     << " pad " << dims2(c.padding) << " dil " << dims2(c.dilation) << " groups " << c.groups;
  return os.str();
}

// Relative error allowed against sum |x||w| per output, by dtype.
double conv_tol(DType t) { return t == DType::f64 ? 1e-12 : t == DType::f32 ? 1e-5 : 1.6e-2; }

TEST(Conv, ForwardMatchesNaiveLoopsInEveryDtype) {
  for (const ConvCase& c : kCases)
    for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
      const Tensor x = kt::random_tensor(c.x, dt, -2, 2, 1), w = kt::random_tensor(c.w, dt, -1, 1, 2);
      const Dims os = out_shape_of(c);
      const Tensor b = c.bias ? kt::random_tensor({os[1]}, dt, -1, 1, 3) : Tensor();
      const Tensor y = run_conv(c, x, w, b);
      ASSERT_EQ(y.shape(), os) << name_of(c);
      const std::vector<double> want = ref_conv(c, kt::values(x), kt::values(w), b.defined() ? kt::values(b) : std::vector<double>{});
      // Scale: the same sum over |x|, |w|.
      const std::vector<double> scale = ref_conv(c, kt::values(kiln::abs(x)), kt::values(kiln::abs(w)),
                                                 b.defined() ? kt::values(kiln::abs(b)) : std::vector<double>{});
      for (int64_t i = 0; i < y.numel(); ++i)
        ASSERT_NEAR(kt::at(y, i), want[static_cast<size_t>(i)], conv_tol(dt) * (scale[static_cast<size_t>(i)] + 1e-30))
            << name_of(c) << " " << dt << " element " << i;
    }
}

TEST(Conv, F64BackwardMatchesFiniteDifferences) {
  for (const ConvCase& c : kCases) {
    // The f64 loops are the same at any channel count and size, and central differences of a sum
    // over hundreds of outputs lose ~1e-8 to round-off: the wide and the long cases are checked
    // against f64 below.
    if (c.x[1] >= 16 || checked_numel(out_shape_of(c), "conv test") > 400) continue;
    const Tensor x = kt::random_tensor(c.x, DType::f64, -2, 2, 4), w = kt::random_tensor(c.w, DType::f64, -1, 1, 5);
    const Dims os = out_shape_of(c);
    const Tensor b = kt::random_tensor({os[1]}, DType::f64, -1, 1, 6);
    const Tensor r = kt::random_tensor(os, DType::f64, -1, 1, 7);
    const LayerGrads g = run_conv_backward(c, r, x, w);
    auto f = [&] { return run_conv(c, x, w, b); };
    kt::expect_close(g.input, numeric_grad(x, f, r), 1e-7, 1e-8, name_of(c) + " grad_input");
    kt::expect_close(g.weight, numeric_grad(w, f, r), 1e-7, 1e-8, name_of(c) + " grad_weight");
    kt::expect_close(g.bias, numeric_grad(b, f, r), 1e-7, 1e-8, name_of(c) + " grad_bias");
  }
}

TEST(Conv, OnednnBackwardMatchesF64) {
  for (const ConvCase& c : kCases)
    for (DType dt : {DType::f32, DType::bf16}) {
      const Tensor x = kt::random_tensor(c.x, dt, -2, 2, 8), w = kt::random_tensor(c.w, dt, -1, 1, 9);
      const Tensor r = kt::random_tensor(out_shape_of(c), dt, -1, 1, 10);
      const LayerGrads got = run_conv_backward(c, r, x, w);
      const LayerGrads want = run_conv_backward(c, r.to(DType::f64), x.to(DType::f64), w.to(DType::f64));
      // bf16 rounds every product's inputs and the output once; sums of ~100 terms of size ~1.
      const double rtol = dt == DType::f32 ? 1e-5 : 3e-2, atol = dt == DType::f32 ? 1e-5 : 0.1;
      kt::expect_close(got.input, kt::values(want.input), rtol, atol, name_of(c) + " grad_input");
      kt::expect_close(got.weight, kt::values(want.weight), rtol, atol, name_of(c) + " grad_weight");
      kt::expect_close(got.bias, kt::values(want.bias), rtol, atol, name_of(c) + " grad_bias");
    }
}

// The direct kernels split forward rows and backward output channels over threads; each sum runs
// in one order whatever the split.
TEST(Conv, FewChannelResultsDoNotDependOnThreadCount) {
  const ConvCase c{{3, 1, 9, 28}, {7, 1, 3, 3}, true, {1, 1}, {1, 1}};
  const Tensor x = kt::random_tensor(c.x, DType::f32, -2, 2, 11), w = kt::random_tensor(c.w, DType::f32, -1, 1, 12);
  const Tensor b = kt::random_tensor({7}, DType::f32, -1, 1, 13), r = kt::random_tensor(out_shape_of(c), DType::f32, -1, 1, 14);
  std::vector<std::vector<double>> runs;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const LayerGrads g = run_conv_backward(c, r, x, w);
    runs.push_back(kt::values(run_conv(c, x, w, b)));
    for (const Tensor& t : {g.weight, g.bias}) runs.push_back(kt::values(t));
  }
  set_num_threads(2);
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(runs[k], runs[k + 3]) << "result " << k;
}

TEST(Conv, MaskSkipsUnwantedGradients) {
  const ConvCase& c = kCases[0];
  const Tensor x = kt::random_tensor(c.x, DType::f32), w = kt::random_tensor(c.w, DType::f32);
  const Tensor r = kt::random_tensor(out_shape_of(c), DType::f32);
  const LayerGrads all = run_conv_backward(c, r, x, w);
  const LayerGrads only_w = run_conv_backward(c, r, x, w, {.input = false, .weight = true, .bias = false});
  EXPECT_FALSE(only_w.input.defined());
  EXPECT_FALSE(only_w.bias.defined());
  kt::expect_close(only_w.weight, kt::values(all.weight), 0, 0, "grad_weight alone");
  const LayerGrads only_b = run_conv_backward(c, r, x, w, {.input = false, .weight = false, .bias = true});
  EXPECT_FALSE(only_b.weight.defined());
  kt::expect_close(only_b.bias, kt::values(all.bias), 1e-6, 1e-6, "grad_bias alone");
}

TEST(Conv, HandCheckedValues) {
  // 1..9 in a 3x3 plane, a 2x2 kernel of ones: each output is the sum of a 2x2 block.
  const Tensor x = arange(1, 10, 1, {.dtype = DType::f32}).view({1, 1, 3, 3});
  const Tensor w = ones({1, 1, 2, 2});
  kt::expect_close(conv2d(x, w), {12, 16, 24, 28}, 0, 0, "conv2d");
  kt::expect_close(conv2d(x, w, tensor({0.5}), {2}, {1}), {1.5, 5.5, 11.5, 28.5}, 0, 0, "conv2d pad 1 stride 2");
  // A transposed 1x1 kernel of 2 with stride 2 spreads the inputs out: zeros in between.
  const Tensor t = conv_transpose2d(tensor({1, 2, 3, 4}).view({1, 1, 2, 2}), full({1, 1, 1, 1}, 2.0), {}, {2});
  kt::expect_close(t, {2, 0, 4, 0, 0, 0, 6, 0, 8}, 0, 0, "conv_transpose2d");
  // gradient of sum(conv2d) w.r.t. the weight: each tap sums the input block it sees.
  const LayerGrads g = conv2d_backward(ones({1, 1, 2, 2}), x, w);
  kt::expect_close(g.weight, {12, 16, 24, 28}, 0, 0, "grad_weight");
  kt::expect_close(g.input, {1, 2, 1, 2, 4, 2, 1, 2, 1}, 0, 0, "grad_input");
  kt::expect_close(g.bias, {4}, 0, 0, "grad_bias");
}

TEST(Conv, Conv1dIsConv2dOverAHeightOfOne) {
  for (DType dt : {DType::f64, DType::f32}) {
    const Tensor x = kt::random_tensor({2, 4, 9}, dt, -2, 2, 11), w = kt::random_tensor({6, 2, 3}, dt, -1, 1, 12);
    const Tensor b = kt::random_tensor({6}, dt, -1, 1, 13);
    const Tensor y = conv1d(x, w, b, 2, 1, 2, 2);
    ASSERT_EQ(y.shape(), (Dims{2, 6, 4}));
    const ConvCase c{{2, 4, 1, 9}, {6, 2, 1, 3}, true, {1, 2}, {0, 1}, {1, 2}, {0, 0}, 2};
    const std::vector<double> want = ref_conv(c, kt::values(x), kt::values(w), kt::values(b));
    kt::expect_close(y, want, dt == DType::f64 ? 1e-12 : 1e-5, 1e-5, "conv1d");
    const Tensor r = kt::random_tensor(y.shape(), dt, -1, 1, 14);
    const LayerGrads g = conv1d_backward(r, x, w, 2, 1, 2, 2);
    const LayerGrads g2 = conv2d_backward(r.unsqueeze(2), x.unsqueeze(2), w.unsqueeze(2), {1, 2}, {0, 1}, {1, 2}, 2);
    EXPECT_EQ(g.input.shape(), x.shape());
    EXPECT_EQ(g.weight.shape(), w.shape());
    kt::expect_close(g.input, kt::values(g2.input), 1e-6, 1e-6, "conv1d grad_input");
    kt::expect_close(g.weight, kt::values(g2.weight), 1e-6, 1e-6, "conv1d grad_weight");
  }
}

TEST(Conv, NonContiguousAndUnbatchedInputs) {
  const ConvCase& c = kCases[2];
  const Tensor x = kt::random_tensor(c.x, DType::f32, -2, 2, 15), w = kt::random_tensor(c.w, DType::f32, -1, 1, 16);
  const Tensor b = kt::random_tensor({6}, DType::f32, -1, 1, 17);
  const Tensor y = run_conv(c, x, w, b);
  kt::expect_close(run_conv(c, kt::noncontiguous(x), kt::noncontiguous(w), b), kt::values(y), 0, 0, "noncontiguous");
  const Tensor y0 = run_conv(c, x.select(0, 1), w, b);
  ASSERT_EQ(y0.dim(), 3);
  kt::expect_close(y0, kt::values(y.select(0, 1)), 0, 0, "unbatched");
  const Tensor r = kt::random_tensor(y.shape(), DType::f32, -1, 1, 18);
  const LayerGrads g = run_conv_backward(c, r, x, w), gn = run_conv_backward(c, kt::noncontiguous(r), kt::noncontiguous(x), w);
  kt::expect_close(gn.input, kt::values(g.input), 0, 0, "noncontiguous grad_input");
  kt::expect_close(gn.weight, kt::values(g.weight), 0, 0, "noncontiguous grad_weight");
}

TEST(Conv, EmptyBatch) {
  const Tensor x = zeros({0, 3, 5, 5}), w = ones({4, 3, 3, 3});
  EXPECT_EQ(conv2d(x, w).shape(), (Dims{0, 4, 3, 3}));
  const LayerGrads g = conv2d_backward(zeros({0, 4, 3, 3}), x, w);
  kt::expect_close(g.weight, std::vector<double>(108, 0.0), 0, 0, "grad_weight of an empty batch");
}

// ---- PyTorch fixture

// Within 1e-5 relative to the tensor's largest magnitude.
void expect_matches(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  double scale = 0;
  for (double v : kt::values(want)) scale = std::max(scale, std::abs(v));
  kt::expect_close(got, kt::values(want), 1e-5, 1e-5 * scale, what);
}

TEST(Conv, MatchesPyTorchFixture) {
  auto f = kt::load_nn_kernel_fixture();
  for (const std::string c : {"conv2d", "conv_transpose2d"}) {
    const Tensor x = f[c + ".x"], w = f[c + ".w"], b = f[c + ".b"], gy = f[c + ".gy"];
    const bool tr = c == "conv_transpose2d";
    const Tensor y = tr ? conv_transpose2d(x, w, b, {2, 2}, {1, 0}, {1, 1}, 2) : conv2d(x, w, b, {2, 1}, {1, 0}, {1, 2}, 2);
    expect_matches(y, f[c + ".out"], c + " out");
    const LayerGrads g = tr ? conv_transpose2d_backward(gy, x, w, {2, 2}, {1, 0}, {1, 1}, 2)
                            : conv2d_backward(gy, x, w, {2, 1}, {1, 0}, {1, 2}, 2);
    expect_matches(g.input, f[c + ".grad_x"], c + " grad_x");
    expect_matches(g.weight, f[c + ".grad_w"], c + " grad_w");
    expect_matches(g.bias, f[c + ".grad_b"], c + " grad_b");
  }
}

TEST(Conv, ErrorsNameTheOpAndShapes) {
  const Tensor x = zeros({2, 3, 5, 5}), w = zeros({4, 3, 3, 3});
  kt::expect_error([&] { conv2d(x, zeros({4, 2, 3, 3})); }, {"conv2d", "2 channels", "has 3", "[4, 2, 3, 3]", "[2, 3, 5, 5]"});
  kt::expect_error([&] { conv2d(zeros({2, 4, 5, 5}), zeros({3, 2, 3, 3}), {}, {1}, {0}, {1}, 2); },
                   {"conv2d", "out_channels (3", "divisible by groups (2)"});
  kt::expect_error([&] { conv2d(x, zeros({4, 3, 7, 7})); }, {"conv2d", "padded input", "(5 x 5)", "(7 x 7)"});
  kt::expect_error([&] { conv2d(zeros({5, 5}), w); }, {"conv2d", "3-d (unbatched) or 4-d", "[5, 5]"});
  kt::expect_error([&] { conv2d(x, zeros({4, 3, 3})); }, {"conv2d", "4-d weight", "[4, 3, 3]"});
  kt::expect_error([&] { conv2d(x, zeros({4, 3, 3, 3}, {.dtype = DType::f64})); }, {"conv2d", "float32", "float64"});
  kt::expect_error([&] { conv2d(x, w, zeros({5})); }, {"conv2d", "bias of shape [4]", "[5]"});
  kt::expect_error([&] { conv2d(x, w, {}, {1}, {-1}); }, {"conv2d", "padding must be non-negative", "-1"});
  kt::expect_error([&] { conv2d(x, w, {}, {0}); }, {"conv2d", "stride must be positive"});
  kt::expect_error([&] { conv2d(x, w, {}, {1, 1, 1}); }, {"conv2d", "stride takes 1 or 2 values"});
  kt::expect_error([&] { conv2d(zeros({2, 3, 5, 5}, {.dtype = DType::i64}), zeros({4, 3, 3, 3}, {.dtype = DType::i64})); },
                   {"conv2d", "floating", "int64"});
  kt::expect_error([&] { conv1d(zeros({2, 3, 4}), zeros({4, 3, 5})); }, {"conv1d", "(4)", "(5)"});
  kt::expect_error([&] { conv_transpose2d(x, zeros({3, 2, 3, 3}), {}, {2}, {0}, {2}); },
                   {"conv_transpose2d", "output_padding", "smaller than stride or dilation"});
  kt::expect_error([&] { conv_transpose2d(x, zeros({4, 2, 3, 3})); }, {"conv_transpose2d", "4 channels", "[2, 3, 5, 5]"});
  kt::expect_error([&] { conv2d_backward(zeros({2, 4, 4, 4}), x, w); },
                   {"conv2d_backward", "grad_out of shape [2, 4, 3, 3]", "[2, 4, 4, 4]"});
}

// Note [bf16 convolutions through f32] (kernels/cpu/conv.cpp), where oneDNN lacks bf16: every case
// forward and backward in bf16 against f64, and bit for bit against the f32 passes on the same
// values rounded once to bf16, which is what the fallback computes (the bf16 loops it replaced sum
// in another order).
TEST(Conv, Bf16WithoutOneDnnKernelsRunsThroughF32) {
  if (!kt::onednn_lacks_bf16())
    GTEST_SKIP() << "oneDNN has bf16 kernels at level " << cpu_capability() << "; the run at the avx2 level tests this";
  const DType t = DType::bf16;
  auto f32 = [](const Tensor& v) { return v.defined() ? v.to(DType::f32) : v; };
  auto rounded = [&](const Tensor& v) { return v.defined() ? v.to(t) : v; };
  for (const ConvCase& c : kCases) {
    const Tensor x = kt::random_tensor(c.x, t, -2, 2, 1), w = kt::random_tensor(c.w, t, -1, 1, 2);
    const Dims os = out_shape_of(c);
    const Tensor b = c.bias ? kt::random_tensor({os[1]}, t, -1, 1, 3) : Tensor();
    const Tensor y = run_conv(c, x, w, b);
    const std::vector<double> no_bias;
    const std::vector<double> want = ref_conv(c, kt::values(x), kt::values(w), b.defined() ? kt::values(b) : no_bias);
    const std::vector<double> scale = ref_conv(c, kt::values(kiln::abs(x)), kt::values(kiln::abs(w)),
                                               b.defined() ? kt::values(kiln::abs(b)) : no_bias);
    ASSERT_EQ(y.shape(), os) << name_of(c);
    for (int64_t i = 0; i < y.numel(); ++i)
      EXPECT_NEAR(kt::at(y, i), want[static_cast<size_t>(i)], conv_tol(t) * (scale[static_cast<size_t>(i)] + 1e-30))
          << name_of(c) << " element " << i;
    // A transposed convolution adds its bias to the rounded pass, in bf16, as with oneDNN's kernels.
    const Tensor y32 = rounded(run_conv(c, f32(x), f32(w), c.transposed ? Tensor() : f32(b)));
    const Tensor same_y = c.transposed && b.defined() ? y32 + b.view({1, os[1], 1, 1}) : y32;
    kt::expect_close(y, kt::values(same_y), 0, 0, name_of(c) + " forward (the f32 pass rounded once)");

    const Tensor r = kt::random_tensor(os, t, -1, 1, 10);
    const LayerGrads got = run_conv_backward(c, r, x, w);
    const LayerGrads exact = run_conv_backward(c, r.to(DType::f64), x.to(DType::f64), w.to(DType::f64));
    const LayerGrads same = run_conv_backward(c, f32(r), f32(x), f32(w));
    const std::array<std::tuple<const char*, Tensor, Tensor, Tensor>, 3> grads{
        {{" grad_input", got.input, exact.input, same.input},
         {" grad_weight", got.weight, exact.weight, same.weight},
         {" grad_bias", got.bias, exact.bias, same.bias}}};
    for (const auto& [what, g, e, s] : grads) {
      kt::expect_close(g, kt::values(e), 3e-2, 0.1, name_of(c) + what);  // as OnednnBackwardMatchesF64
      kt::expect_close(g, kt::values(rounded(s)), 0, 0, name_of(c) + what + " (the f32 pass rounded once)");
    }
  }
}

}  // namespace
}  // namespace kiln
