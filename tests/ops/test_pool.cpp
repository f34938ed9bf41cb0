// Tests of max_pool2d, avg_pool2d and adaptive_avg_pool2d, forward and backward: forwards against
// naive f64 loops written here from torch's definitions, backwards against central differences
// (f64), a PyTorch fixture for ceil_mode / padding / dilation conventions, hand-checked values,
// non-contiguous and unbatched inputs, and error messages.
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "autograd/ops/nn_ops.h"
#include "nn/functional.h"
#include "nn/nn_fixture.h"
#include "nn_kernel_testing.h"
#include "testing.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using kt::NnFixture;
using kt::numeric_grad;

struct PoolCase {
  Dims x;
  int64_t k, s, p, d;
  bool ceil;
  bool count_include_pad = true;
};

int64_t out_size(int64_t in, const PoolCase& c) {
  const int64_t span = c.d * (c.k - 1) + 1;
  int64_t o = (in + 2 * c.p - span + (c.ceil ? c.s - 1 : 0)) / c.s + 1;
  if (c.ceil && (o - 1) * c.s >= in + c.p) --o;
  return o;
}

// Reference max pool: values, and the first row-major position holding the maximum.
void ref_max_pool(const PoolCase& c, const std::vector<double>& x, std::vector<double>& vals, std::vector<int64_t>& idx) {
  const int64_t planes = c.x[0] * c.x[1], H = c.x[2], W = c.x[3], Ho = out_size(H, c), Wo = out_size(W, c);
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double best = -kt::kInf;
        int64_t at = -1;
        for (int64_t i = 0; i < c.k; ++i)
          for (int64_t j = 0; j < c.k; ++j) {
            const int64_t h = oh * c.s - c.p + i * c.d, w = ow * c.s - c.p + j * c.d;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const double v = x[static_cast<size_t>(pl * H * W + h * W + w)];
            if (at < 0 || v > best) { best = v; at = h * W + w; }
          }
        vals.push_back(best);
        idx.push_back(at);
      }
}

std::vector<double> ref_avg_pool(const PoolCase& c, const std::vector<double>& x) {
  const int64_t planes = c.x[0] * c.x[1], H = c.x[2], W = c.x[3], Ho = out_size(H, c), Wo = out_size(W, c);
  std::vector<double> out;
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) {
        double sum = 0;
        int64_t inside = 0, padded = 0;
        for (int64_t i = 0; i < c.k; ++i)
          for (int64_t j = 0; j < c.k; ++j) {
            const int64_t h = oh * c.s - c.p + i, w = ow * c.s - c.p + j;
            // torch counts padding cells up to size + pad, not cells past it (ceil_mode overhang)
            if (h < H + c.p && w < W + c.p) ++padded;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            sum += x[static_cast<size_t>(pl * H * W + h * W + w)];
            ++inside;
          }
        out.push_back(sum / static_cast<double>(c.count_include_pad ? padded : inside));
      }
  return out;
}

const std::vector<PoolCase> kCases = {
    {{2, 3, 8, 8}, 2, 2, 0, 1, false},      {{1, 2, 7, 6}, 3, 2, 1, 1, true},
    {{2, 2, 7, 6}, 3, 2, 1, 1, true, false}, {{1, 2, 6, 7}, 2, 1, 1, 2, true},
    {{1, 1, 5, 5}, 3, 1, 1, 1, false},      {{2, 2, 9, 9}, 2, 2, 0, 1, false},
    // 2x2 windows over widths that fill whole registers (16, 8 or 4 lanes by ISA level) and leave
    // ragged tails (Wo 14, 17, 33)
    {{2, 3, 28, 28}, 2, 2, 0, 1, false},    {{1, 2, 6, 34}, 2, 2, 0, 1, false},
    {{1, 1, 5, 67}, 2, 2, 0, 1, false},
    // outputs at most half a register wide go two rows per register, the last row alone when Ho is
    // odd; Wo 2, 4 and 5 sit at that bound for 4 and 8 lanes
    {{2, 3, 14, 14}, 2, 2, 0, 1, false},    {{1, 2, 7, 15}, 2, 2, 0, 1, false},
    {{1, 1, 2, 16}, 2, 2, 0, 1, false},     {{1, 2, 6, 4}, 2, 2, 0, 1, false},
    {{1, 2, 5, 8}, 2, 2, 0, 1, false},      {{2, 1, 6, 11}, 2, 2, 0, 1, false},
};

std::string name_of(const PoolCase& c) {
  std::ostringstream os;
  os << "x" << c.x << " k" << c.k << " s" << c.s << " p" << c.p << " d" << c.d << (c.ceil ? " ceil" : "")
     << (c.count_include_pad ? "" : " exclude_pad");
  return os.str();
}

TEST(Pool, MaxPoolMatchesNaiveLoops) {
  for (const PoolCase& c : kCases)
    for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
      const Tensor x = kt::random_tensor(c.x, dt, -2, 2, 1);
      const TensorPair r = max_pool2d_with_indices(x, {c.k}, {c.s}, {c.p}, {c.d}, c.ceil);
      std::vector<double> vals;
      std::vector<int64_t> idx;
      ref_max_pool(c, kt::values(x), vals, idx);
      ASSERT_EQ(r.values.shape(), (Dims{c.x[0], c.x[1], out_size(c.x[2], c), out_size(c.x[3], c)})) << name_of(c);
      kt::expect_close(r.values, vals, 0, 0, name_of(c));
      kt::expect_close(r.indices, std::vector<double>(idx.begin(), idx.end()), 0, 0, name_of(c) + " indices");
    }
}

TEST(Pool, MaxPoolTiesAndNaNFollowTorch) {
  // Ties keep the first position; a NaN wins over numbers.
  const Tensor x = tensor({1, 1, 3, kt::kNaN, 1, 0, 3, 2}).view({1, 1, 2, 4});
  const TensorPair r = max_pool2d_with_indices(x, {2});  // the 2x2 fast path
  kt::expect_close(r.values, {1, kt::kNaN}, 0, 0, "values");
  kt::expect_close(r.indices, {0, 3}, 0, 0, "indices");
  const TensorPair g = max_pool2d_with_indices(x, {2}, {1});  // the general path
  kt::expect_close(g.values, {1, 3, kt::kNaN}, 0, 0, "general-path values");
  kt::expect_close(g.indices, {0, 2, 3}, 0, 0, "general-path indices");
}

TEST(Pool, AvgPoolMatchesNaiveLoops) {
  for (const PoolCase& c : kCases) {
    if (c.d != 1) continue;
    for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
      const Tensor x = kt::random_tensor(c.x, dt, -2, 2, 2);
      const Tensor y = avg_pool2d(x, {c.k}, {c.s}, {c.p}, c.ceil, c.count_include_pad);
      kt::expect_close(y, ref_avg_pool(c, kt::values(x)), kt::tolerance(dt) * 4, 1e-6, name_of(c));
    }
  }
  const Tensor x = kt::random_tensor({1, 1, 4, 4}, DType::f64);
  kt::expect_close(avg_pool2d(x, {2}, {2}, {0}, false, true, 3), kt::values(avg_pool2d(x, {2}) * (4.0 / 3.0)), 1e-12, 0,
                   "divisor_override");
}

TEST(Pool, AdaptiveAvgPoolUsesTorchWindows) {
  // 5 -> 3: windows [0,2), [1,4), [3,5).
  const Tensor x = arange(0, 5, 1, {.dtype = DType::f64}).view({1, 1, 1, 5});
  kt::expect_close(adaptive_avg_pool2d(x, {1, 3}), {0.5, 2.0, 3.5}, 1e-15, 0, "5 -> 3");
  // 2 -> 5 (upsampling): windows of 1 cell.
  kt::expect_close(adaptive_avg_pool2d(tensor({1, 2}).view({1, 1, 2}), {1, 5}), {1, 1, 1.5, 2, 2}, 0, 0, "2 -> 5");
  const Tensor y = adaptive_avg_pool2d(kt::random_tensor({2, 3, 7, 6}, DType::f32), {1});
  ASSERT_EQ(y.shape(), (Dims{2, 3, 1, 1}));
}

TEST(Pool, BackwardsMatchFiniteDifferences) {
  for (const PoolCase& c : kCases) {
    const Tensor x = kt::random_tensor(c.x, DType::f64, -2, 2, 3);
    const TensorPair m = max_pool2d_with_indices(x, {c.k}, {c.s}, {c.p}, {c.d}, c.ceil);
    const Tensor r = kt::random_tensor(m.values.shape(), DType::f64, -1, 1, 4);
    auto fmax = [&] { return max_pool2d(x, {c.k}, {c.s}, {c.p}, {c.d}, c.ceil); };
    kt::expect_close(max_pool2d_backward(r, m.indices, x.shape()), numeric_grad(x, fmax, r), 1e-7, 1e-8,
                     name_of(c) + " max");
    if (c.d != 1) continue;
    auto favg = [&] { return avg_pool2d(x, {c.k}, {c.s}, {c.p}, c.ceil, c.count_include_pad); };
    const Tensor ra = kt::random_tensor(favg().shape(), DType::f64, -1, 1, 5);
    kt::expect_close(avg_pool2d_backward(ra, x.shape(), {c.k}, {c.s}, {c.p}, c.ceil, c.count_include_pad),
                     numeric_grad(x, favg, ra), 1e-7, 1e-8, name_of(c) + " avg");
  }
  const Tensor x = kt::random_tensor({1, 2, 7, 5}, DType::f64, -2, 2, 6);
  const Tensor r = kt::random_tensor({1, 2, 3, 4}, DType::f64, -1, 1, 7);
  kt::expect_close(adaptive_avg_pool2d_backward(r, x.shape()),
                   numeric_grad(x, [&] { return adaptive_avg_pool2d(x, {3, 4}); }, r), 1e-7, 1e-8, "adaptive");
}

TEST(Pool, NonContiguousUnbatchedAndF32) {
  const Tensor x = kt::random_tensor({2, 3, 8, 8}, DType::f32, -2, 2, 8);
  const Tensor y = max_pool2d(x, {2});
  kt::expect_close(max_pool2d(kt::noncontiguous(x), {2}), kt::values(y), 0, 0, "noncontiguous");
  kt::expect_close(max_pool2d(x.select(0, 1), {2}), kt::values(y.select(0, 1)), 0, 0, "unbatched");
  const TensorPair m = max_pool2d_with_indices(x, {2});
  const Tensor r = kt::random_tensor(m.values.shape(), DType::f32, -1, 1, 9);
  const Tensor g = max_pool2d_backward(kt::noncontiguous(r), m.indices, x.shape());
  kt::expect_close(g, kt::values(max_pool2d_backward(r.to(DType::f64), m.indices, x.shape())), 0, 0, "f32 backward");
  kt::expect_close(avg_pool2d(kt::noncontiguous(x), {3}, {1}, {1}), kt::values(avg_pool2d(x, {3}, {1}, {1})), 0, 0,
                   "avg noncontiguous");
}

TEST(Pool, MatchesPyTorchFixture) {
  std::map<std::string, Tensor> f = kt::load_nn_kernel_fixture();
  struct Case { std::string name; int64_t k, s, p, d; };
  for (const Case& c : {Case{"max_pool2d", 3, 2, 1, 1}, Case{"max_pool2d_dilated", 2, 1, 1, 2}}) {
    const Tensor x = f[c.name + ".x"];
    const TensorPair r = max_pool2d_with_indices(x, {c.k}, {c.s}, {c.p}, {c.d}, true);
    ASSERT_EQ(r.values.shape(), f[c.name + ".out"].shape()) << c.name;
    kt::expect_close(r.values, kt::values(f[c.name + ".out"]), 0, 0, c.name);
    kt::expect_close(r.indices, kt::values(f[c.name + ".indices"]), 0, 0, c.name + " indices");
    kt::expect_close(max_pool2d_backward(f[c.name + ".gy"], r.indices, x.shape()), kt::values(f[c.name + ".grad_x"]),
                     1e-6, 1e-6, c.name + " grad");
  }
  const Tensor x = f["avg_pool2d.x"];
  const Tensor y = avg_pool2d(x, {3}, {2}, {1}, true, false);
  ASSERT_EQ(y.shape(), f["avg_pool2d.out"].shape());
  kt::expect_close(y, kt::values(f["avg_pool2d.out"]), 1e-5, 1e-6, "avg_pool2d");
  kt::expect_close(avg_pool2d_backward(f["avg_pool2d.gy"], x.shape(), {3}, {2}, {1}, true, false),
                   kt::values(f["avg_pool2d.grad_x"]), 1e-5, 1e-6, "avg_pool2d grad");
}

// max_pool2d(kernel 2, padding 1, dilation 2) of 1-row planes: both rows of every window lie in
// the padding. Values as torch (tests/fixtures/nn/edges.txt): -inf, also after the fused ReLU, as
// max_pool2d(relu(x)) gives. torch's index there points outside the window and its backward adds
// the gradient at it (into the next plane); Kiln's index is -1, and no element gets a gradient.
TEST(Pool, MaxPoolWindowsWhollyInThePaddingFollowTorch) {
  const NnFixture fx("edges.txt");
  const Tensor x = fx["pool_all_padding.input"];
  for (const bool relu : {false, true}) {
    SCOPED_TRACE(relu ? "max_pool2d_relu" : "max_pool2d");
    const TensorPair r = relu ? max_pool2d_relu_with_indices(x, {2}, {}, {1}, {2})
                              : max_pool2d_with_indices(x, {2}, {}, {1}, {2});
    const Tensor want = fx[relu ? "pool_all_padding.out_relu" : "pool_all_padding.out"];
    ASSERT_EQ(r.values.shape(), want.shape());
    kt::expect_close(r.values, kt::values(want), 0, 0, "values");
    kt::expect_close(r.indices, std::vector<double>(static_cast<size_t>(want.numel()), -1.0), 0, 0, "indices");
    const Tensor gy = fx["pool_all_padding.gy"];
    const Tensor grad = max_pool2d_backward(gy, r.indices, x.shape(), relu ? r.values : Tensor());
    kt::expect_close(grad, kt::values(fx["pool_all_padding.grad"]), 0, 0, "grad");
    Tensor leaf = x.clone().requires_grad_();  // and through autograd
    const nn::functional::MaxPool2dArgs args{.padding = 1, .dilation = 2};
    (relu ? nn::functional::max_pool2d_relu(leaf, 2, args) : nn::functional::max_pool2d(leaf, 2, args)).backward(gy);
    kt::expect_close(leaf.grad(), kt::values(fx["pool_all_padding.grad"]), 0, 0, "autograd grad");
  }
}

// Scatter-add reference of max_pool2d_backward for f32: each gradient added at its recorded
// position, in float and in output order (as torch sums where windows overlap).
std::vector<double> ref_max_pool_backward(const Tensor& g, const Tensor& indices, const Dims& x_shape) {
  const int64_t plane = x_shape[2] * x_shape[3], out_plane = g.size(2) * g.size(3);
  const std::vector<double> gv = kt::values(g), iv = kt::values(indices);
  std::vector<float> out(static_cast<size_t>(x_shape[0] * x_shape[1] * plane), 0.0f);
  for (size_t j = 0; j < gv.size(); ++j)
    out[j / out_plane * plane + static_cast<size_t>(iv[j])] += static_cast<float>(gv[j]);
  return {out.begin(), out.end()};
}

// Inputs that tile into 2x2 windows take the dense backward (Note [Dense 2x2 max-pool backward]);
// a plane whose indices leave their windows takes the scatter.
TEST(Pool, MaxPoolBackwardOverTiledPlanesMatchesScatter) {
  // Up to half a register wide (8, 4 or 2 by ISA level): two rows per register; Ho = 3.
  for (const int64_t Wo : {1, 2, 3, 4, 5, 7, 8, 9, 14, 16, 17, 33}) {
    const Dims shape{2, 3, 6, 2 * Wo};
    Tensor x = kt::random_tensor(shape, DType::f32, -2, 2, 30 + Wo);
    x.select(0, 1).select(0, 2).select(0, 3).select(0, 2 * Wo - 1).fill_(kt::kNaN);  // a NaN wins its window
    const TensorPair m = max_pool2d_with_indices(x, {2});
    const Tensor g = kt::random_tensor(m.values.shape(), DType::f32, -1, 1, 40 + Wo);
    const std::string what = "Wo " + std::to_string(Wo);
    kt::expect_close(max_pool2d_backward(g, m.indices, shape), ref_max_pool_backward(g, m.indices, shape), 0, 0, what);
    // Overlapping 3x3 windows (stride 2, padding 1) give the same output size; where two windows
    // share a maximum, that position collects both gradients.
    const TensorPair o = max_pool2d_with_indices(x, {3}, {2}, {1});
    ASSERT_EQ(o.indices.shape(), m.indices.shape());
    kt::expect_close(max_pool2d_backward(g, o.indices, shape), ref_max_pool_backward(g, o.indices, shape), 0, 0,
                     what + " overlapping windows");
    // One index moved outside its window, in plane (1, 2) only: the other planes stay dense.
    Tensor moved = m.indices.clone();
    moved.select(0, 1).select(0, 2).select(0, 1).select(0, 0).fill_(0);
    kt::expect_close(max_pool2d_backward(g, moved, shape), ref_max_pool_backward(g, moved, shape), 0, 0,
                     what + " one index outside its window");
  }
  const Tensor g = ones({1, 1, 2, 8});
  Tensor bad = max_pool2d_with_indices(zeros({1, 1, 4, 16}), {2}).indices;
  bad.select(0, 0).select(0, 0).select(0, 1).select(0, 7).fill_(64);
  kt::expect_error([&] { max_pool2d_backward(g, bad, {1, 1, 4, 16}); }, {"max_pool2d_backward", "index 64", "4x16"});
}

// Note [16-bit pooling through f32]: bf16/f16 planes take the f32 2x2 paths through exact
// conversions, so values, indices and gradients equal the f32 results on the same values, bit for bit.
bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return a.shape() == b.shape() && a.dtype() == b.dtype() && std::memcmp(ca.data_ptr(), cb.data_ptr(), a.nbytes()) == 0;
}

TEST(Pool, SixteenBitTwoByTwoPoolingHasTheF32Bits) {
  for (const DType dt : {DType::bf16, DType::f16}) {
    for (const int64_t Wo : {1, 3, 8, 9, 14, 17}) {
      const Dims shape{2, 3, 4, 2 * Wo};
      Tensor x = kt::random_tensor(shape, DType::f32, -2, 2, 50 + Wo).to(dt);
      x.select(0, 1).select(0, 2).select(0, 3).select(0, 2 * Wo - 1).fill_(kt::kNaN);
      x.select(0, 0).select(0, 0).select(0, 0).fill_(-0.0);
      const std::string what = std::string(dtype_name(dt)) + " Wo " + std::to_string(Wo);
      for (const bool relu : {false, true}) {
        const Tensor x16 = x.detach().requires_grad_(true), x32 = x.to(DType::f32).requires_grad_(true);
        const TensorPair m16 = relu ? max_pool2d_relu_with_indices(x16, {2}) : max_pool2d_with_indices(x16, {2});
        const TensorPair m32 = relu ? max_pool2d_relu_with_indices(x32, {2}) : max_pool2d_with_indices(x32, {2});
        EXPECT_TRUE(same_bits(m16.values, m32.values.to(dt))) << what << " relu " << relu;
        EXPECT_TRUE(same_bits(m16.indices, m32.indices)) << what << " relu " << relu;
        const Tensor g = kt::random_tensor(m16.values.shape(), DType::f32, -1, 1, 60 + Wo).to(dt);
        m16.values.backward(g);
        m32.values.backward(g.to(DType::f32));
        EXPECT_TRUE(same_bits(x16.grad(), x32.grad().to(dt))) << what << " relu " << relu << " backward";
      }
    }
  }
}

TEST(Pool, ErrorsNameTheOpAndValues) {
  const Tensor x = zeros({2, 3, 4, 4});
  kt::expect_error([&] { max_pool2d(zeros({4, 4}), {2}); }, {"max_pool2d", "3-d (C,H,W) or 4-d", "[4, 4]"});
  kt::expect_error([&] { max_pool2d(x, {0}); }, {"max_pool2d", "kernel_size must be positive"});
  kt::expect_error([&] { max_pool2d(x, {2}, {2}, {-1}); }, {"max_pool2d", "padding must be non-negative"});
  kt::expect_error([&] { max_pool2d(x, {3}, {1}, {2}); }, {"max_pool2d", "at most half the kernel size", "[2]", "[3]"});
  kt::expect_error([&] { max_pool2d(x, {5}); }, {"max_pool2d", "[2, 3, 4, 4]", "output must not be empty"});
  kt::expect_error([&] { avg_pool2d(zeros({1, 1, 4, 4}, {.dtype = DType::i64}), {2}); }, {"avg_pool2d", "floating", "int64"});
  kt::expect_error([&] { avg_pool2d(x, {2}, {}, {0}, false, true, 0); }, {"avg_pool2d", "divisor_override"});
  kt::expect_error([&] { avg_pool2d_backward(zeros({2, 3, 3, 3}), x.shape(), {2}); },
                   {"avg_pool2d_backward", "[2, 3, 2, 2]", "[2, 3, 3, 3]"});
  kt::expect_error([&] { max_pool2d_backward(zeros({2, 3, 2, 2}), zeros({2, 3, 2, 2}), x.shape()); },
                   {"max_pool2d_backward", "int64 indices"});
  kt::expect_error([&] { max_pool2d_backward(zeros({1, 1, 1, 1}), full({1, 1, 1, 1}, 16, {.dtype = DType::i64}), {1, 1, 4, 4}); },
                   {"max_pool2d_backward", "index 16", "4x4"});
  kt::expect_error([&] { adaptive_avg_pool2d(x, {1, 2, 3}); }, {"adaptive_avg_pool2d", "output_size takes 1 or 2"});
  kt::expect_error([&] { max_pool2d_relu_with_indices(zeros({1, 2, 4, 4}, {.dtype = DType::i64}), {2}); },
                   {"max_pool2d_relu", "floating", "int64"});
  kt::expect_error([&] { max_pool2d_backward(zeros({1, 1, 2, 2}), zeros({1, 1, 2, 2}, {.dtype = DType::i64}), {1, 1, 4, 4},
                                             zeros({1, 1, 2, 3})); },
                   {"max_pool2d_backward", "relu_output [1, 1, 2, 3]", "grad_out [1, 1, 2, 2]"});
}

}  // namespace
}  // namespace kiln
