// Tests of batch_norm, layer_norm, rms_norm and group_norm, forward and backward: forwards against
// f64 references written here (one routine: normalise sets of elements, then an affine per
// element), backwards against central differences (f64) and f32 against f64, running-statistics
// updates, a PyTorch fixture for batch_norm, torch's default rms eps, and error messages.
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "autograd/ops/nn_ops.h"
#include "nn_kernel_testing.h"
#include "testing.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using kt::numeric_grad;

// y[i] = (x[i] - mean_s) / sqrt(var_s + eps) * w[a(i)] + b[a(i)], where s = set(i) and the
// statistics are over each set (biased variance; rms: mean 0 and var = mean of squares).
std::vector<double> ref_norm(const std::vector<double>& x, const std::function<int64_t(int64_t)>& set, int64_t sets,
                             const std::function<int64_t(int64_t)>& affine, const std::vector<double>& w,
                             const std::vector<double>& b, double eps, bool rms) {
  std::vector<double> sum(static_cast<size_t>(sets)), sq(static_cast<size_t>(sets)), cnt(static_cast<size_t>(sets));
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t s = static_cast<size_t>(set(static_cast<int64_t>(i)));
    sum[s] += x[i];
    cnt[s] += 1;
  }
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t s = static_cast<size_t>(set(static_cast<int64_t>(i)));
    const double m = rms ? 0.0 : sum[s] / cnt[s];
    sq[s] += (x[i] - m) * (x[i] - m);
  }
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const size_t s = static_cast<size_t>(set(static_cast<int64_t>(i)));
    const double m = rms ? 0.0 : sum[s] / cnt[s];
    const size_t a = static_cast<size_t>(affine(static_cast<int64_t>(i)));
    y[i] = (x[i] - m) / std::sqrt(sq[s] / cnt[s] + eps) * (w.empty() ? 1.0 : w[a]) + (b.empty() ? 0.0 : b[a]);
  }
  return y;
}


double norm_tol(DType t) { return t == DType::f64 ? 1e-12 : t == DType::f32 ? 1e-5 : 3e-2; }

TEST(Norm, BatchNormTrainingAndRunningStats) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    const int64_t N = 4, C = 3, L = 10;
    const Tensor x = kt::random_tensor({N, C, 2, 5}, dt, -3, 5, 1);
    const Tensor w = kt::random_tensor({C}, dt, 0.5, 2, 2), b = kt::random_tensor({C}, dt, -1, 1, 3);
    Tensor rm = zeros({C}, {.dtype = dt}), rv = ones({C}, {.dtype = dt});
    const NormOutput r = batch_norm_forward(x, rm, rv, w, b, true, 0.1, 1e-5);
    auto channel = [&](int64_t i) { return (i / L) % C; };
    const std::vector<double> xv = kt::values(x);
    kt::expect_close(r.output, ref_norm(xv, channel, C, channel, kt::values(w), kt::values(b), 1e-5, false),
                     norm_tol(dt), norm_tol(dt), "batch_norm output");
    // running = 0.9 * running + 0.1 * batch statistic (unbiased variance)
    for (int64_t c = 0; c < C; ++c) {
      double s = 0, sq = 0;
      for (int64_t i = 0; i < N * C * L; ++i) s += channel(i) == c ? xv[static_cast<size_t>(i)] : 0.0;
      const double m = s / static_cast<double>(N * L);
      for (int64_t i = 0; i < N * C * L; ++i)
        if (channel(i) == c) sq += (xv[static_cast<size_t>(i)] - m) * (xv[static_cast<size_t>(i)] - m);
      EXPECT_NEAR(kt::at(rm, c), 0.1 * m, norm_tol(dt) * 4) << dt;
      EXPECT_NEAR(kt::at(rv, c), 0.9 + 0.1 * sq / static_cast<double>(N * L - 1), norm_tol(dt) * 4) << dt;
      EXPECT_NEAR(kt::at(r.mean, c), m, norm_tol(dt) * 4) << dt;
    }
    // Eval mode normalises with the running statistics.
    const Tensor y = batch_norm(x, rm, rv, w, b, false);
    std::vector<double> want(xv.size());
    for (size_t i = 0; i < xv.size(); ++i) {
      const int64_t c = channel(static_cast<int64_t>(i));
      want[i] = (xv[i] - kt::at(rm, c)) / std::sqrt(kt::at(rv, c) + 1e-5) * kt::at(w, c) + kt::at(b, c);
    }
    kt::expect_close(y, want, norm_tol(dt), norm_tol(dt), "batch_norm eval");
  }
}

TEST(Norm, LayerRmsAndGroupNormMatchReference) {
  for (DType dt : {DType::f64, DType::f32, DType::bf16}) {
    const Tensor x = kt::random_tensor({3, 4, 6}, dt, -2, 4, 4);
    const Tensor w = kt::random_tensor({4, 6}, dt, 0.5, 2, 5), b = kt::random_tensor({4, 6}, dt, -1, 1, 6);
    const std::vector<double> xv = kt::values(x);
    auto row = [](int64_t i) { return i / 24; };
    auto col = [](int64_t i) { return i % 24; };
    kt::expect_close(layer_norm(x, {4, 6}, w, b), ref_norm(xv, row, 3, col, kt::values(w), kt::values(b), 1e-5, false),
                     norm_tol(dt), norm_tol(dt), "layer_norm");
    auto row6 = [](int64_t i) { return i / 6; };
    auto col6 = [](int64_t i) { return i % 6; };
    kt::expect_close(layer_norm(x, {6}), ref_norm(xv, row6, 12, col6, {}, {}, 1e-5, false), norm_tol(dt), norm_tol(dt),
                     "layer_norm without affine");
    kt::expect_close(rms_norm(x, {4, 6}, w, 1e-6), ref_norm(xv, row, 3, col, kt::values(w), {}, 1e-6, true),
                     norm_tol(dt), norm_tol(dt), "rms_norm");
    // group_norm over (N=3, C=4, L=6) with 2 groups of 2 channels.
    const Tensor gw = kt::random_tensor({4}, dt, 0.5, 2, 7), gb = kt::random_tensor({4}, dt, -1, 1, 8);
    auto group = [](int64_t i) { return i / 12; };
    auto channel = [](int64_t i) { return (i / 6) % 4; };
    kt::expect_close(group_norm(x, 2, gw, gb), ref_norm(xv, group, 6, channel, kt::values(gw), kt::values(gb), 1e-5, false),
                     norm_tol(dt), norm_tol(dt), "group_norm");
  }
}

TEST(Norm, StatisticsAreStableForLargeMeans) {
  // A mean 1e4 times the spread: a one-pass E[x^2] - E[x]^2 in float would lose every digit.
  const Tensor x = kt::random_tensor({4, 256}, DType::f32, -1, 1, 9) + 1e4;
  const std::vector<double> want = ref_norm(kt::values(x), [](int64_t i) { return i / 256; }, 4,
                                            [](int64_t i) { return i % 256; }, {}, {}, 1e-5, false);
  kt::expect_close(layer_norm(x, {256}), want, 1e-5, 1e-5, "layer_norm at mean 1e4");
}

TEST(Norm, RmsNormDefaultEpsIsTheDtypeEpsilon) {
  const Tensor x = full({1, 2}, 1e-4, {.dtype = DType::f32});
  // mean(x^2) = 1e-8, comparable to eps = 2^-23 ~ 1.19e-7 (a fixed 1e-6 would give another value).
  const double want = 1e-4 / std::sqrt(1e-8 + 1.1920928955078125e-07);
  kt::expect_close(rms_norm(x, {2}), {want, want}, 1e-6, 0, "f32 default eps");
  const Tensor x64 = full({1, 2}, 1e-9, {.dtype = DType::f64});
  const double want64 = 1e-9 / std::sqrt(1e-18 + 2.220446049250313e-16);
  kt::expect_close(rms_norm(x64, {2}), {want64, want64}, 1e-12, 0, "f64 default eps");
}

// One normalisation with its backward, for the generic gradient tests.
struct NormCase {
  std::string name;
  Dims x, param;
  std::function<NormOutput(const Tensor&, const Tensor&, const Tensor&)> forward;
  std::function<LayerGrads(const Tensor&, const Tensor&, const Tensor&, const NormOutput&)> backward;
};

std::vector<NormCase> norm_cases() {
  return {
      {"batch_norm training", {4, 3, 5}, {3},
       [](const Tensor& x, const Tensor& w, const Tensor& b) { return batch_norm_forward(x, {}, {}, w, b, true); },
       [](const Tensor& gy, const Tensor& x, const Tensor& w, const NormOutput& o) {
         return batch_norm_backward(gy, x, w, o.mean, o.rstd, true);
       }},
      {"batch_norm eval", {4, 3, 5}, {3},
       [](const Tensor& x, const Tensor& w, const Tensor& b) {
         const Tensor rm = full({3}, 0.25, {.dtype = x.dtype()}), rv = full({3}, 1.5, {.dtype = x.dtype()});
         return batch_norm_forward(x, rm, rv, w, b, false);
       },
       [](const Tensor& gy, const Tensor& x, const Tensor& w, const NormOutput& o) {
         return batch_norm_backward(gy, x, w, o.mean, o.rstd, false);
       }},
      {"layer_norm", {3, 2, 5}, {2, 5},
       [](const Tensor& x, const Tensor& w, const Tensor& b) { return layer_norm_forward(x, {2, 5}, w, b); },
       [](const Tensor& gy, const Tensor& x, const Tensor& w, const NormOutput& o) {
         return layer_norm_backward(gy, x, {2, 5}, w, o.mean, o.rstd);
       }},
      {"rms_norm", {3, 2, 5}, {5},
       [](const Tensor& x, const Tensor& w, const Tensor&) { return rms_norm_forward(x, {5}, w, 1e-5); },
       [](const Tensor& gy, const Tensor& x, const Tensor& w, const NormOutput& o) {
         return rms_norm_backward(gy, x, {5}, w, o.rstd);
       }},
      {"group_norm", {2, 6, 4}, {6},
       [](const Tensor& x, const Tensor& w, const Tensor& b) { return group_norm_forward(x, 3, w, b); },
       [](const Tensor& gy, const Tensor& x, const Tensor& w, const NormOutput& o) {
         return group_norm_backward(gy, x, 3, w, o.mean, o.rstd);
       }},
  };
}

TEST(Norm, F64BackwardsMatchFiniteDifferences) {
  for (const NormCase& c : norm_cases()) {
    const Tensor x = kt::random_tensor(c.x, DType::f64, -2, 3, 10);
    const Tensor w = kt::random_tensor(c.param, DType::f64, 0.5, 2, 11), b = kt::random_tensor(c.param, DType::f64, -1, 1, 12);
    const NormOutput o = c.forward(x, w, b);
    const Tensor r = kt::random_tensor(c.x, DType::f64, -1, 1, 13);
    const LayerGrads g = c.backward(r, x, w, o);
    auto f = [&] { return c.forward(x, w, b).output; };
    kt::expect_close(g.input, numeric_grad(x, f, r), 1e-6, 1e-7, c.name + " grad_input");
    kt::expect_close(g.weight, numeric_grad(w, f, r), 1e-6, 1e-7, c.name + " grad_weight");
    if (c.name != "rms_norm") kt::expect_close(g.bias, numeric_grad(b, f, r), 1e-6, 1e-7, c.name + " grad_bias");
    else EXPECT_FALSE(g.bias.defined());
  }
}

TEST(Norm, F32BackwardsMatchF64AndTakeNonContiguousInputs) {
  for (const NormCase& c : norm_cases()) {
    const Tensor x = kt::random_tensor(c.x, DType::f32, -2, 3, 14);
    const Tensor w = kt::random_tensor(c.param, DType::f32, 0.5, 2, 15), b = kt::random_tensor(c.param, DType::f32, -1, 1, 16);
    const Tensor r = kt::random_tensor(c.x, DType::f32, -1, 1, 17);
    const NormOutput o = c.forward(kt::noncontiguous(x), w, b);
    kt::expect_close(o.output, kt::values(c.forward(x, w, b).output), 0, 0, c.name + " noncontiguous forward");
    const LayerGrads g = c.backward(kt::noncontiguous(r), kt::noncontiguous(x), w, o);
    const Tensor x64 = x.to(DType::f64), w64 = w.to(DType::f64);
    const LayerGrads want = c.backward(r.to(DType::f64), x64, w64, c.forward(x64, w64, b.to(DType::f64)));
    kt::expect_close(g.input, kt::values(want.input), 1e-5, 1e-5, c.name + " grad_input");
    kt::expect_close(g.weight, kt::values(want.weight), 1e-5, 1e-5, c.name + " grad_weight");
  }
}

TEST(Norm, MatchesPyTorchBatchNormFixture) {
  std::map<std::string, Tensor> f = kt::load_nn_kernel_fixture();
  const Tensor x = f["batch_norm.x"], w = f["batch_norm.w"], b = f["batch_norm.b"];
  Tensor rm = f["batch_norm.running_mean"].clone(), rv = f["batch_norm.running_var"].clone();
  const NormOutput o = batch_norm_forward(x, rm, rv, w, b, true, 0.1, 1e-5);
  kt::expect_close(o.output, kt::values(f["batch_norm.out"]), 1e-5, 1e-5, "out");
  kt::expect_close(rm, kt::values(f["batch_norm.new_running_mean"]), 1e-5, 1e-6, "running_mean");
  kt::expect_close(rv, kt::values(f["batch_norm.new_running_var"]), 1e-5, 1e-6, "running_var");
  const LayerGrads g = batch_norm_backward(f["batch_norm.gy"], x, w, o.mean, o.rstd, true);
  kt::expect_close(g.input, kt::values(f["batch_norm.grad_x"]), 1e-5, 1e-5, "grad_x");
  kt::expect_close(g.weight, kt::values(f["batch_norm.grad_w"]), 1e-5, 1e-5, "grad_w");
  kt::expect_close(g.bias, kt::values(f["batch_norm.grad_b"]), 1e-5, 1e-5, "grad_b");
}

TEST(Norm, ErrorsNameTheOpAndValues) {
  const Tensor x = zeros({2, 3, 4});
  kt::expect_error([&] { batch_norm(zeros({1, 3}), {}, {}, {}, {}, true); },
                   {"batch_norm", "more than 1 value per channel", "[1, 3]"});
  kt::expect_error([&] { batch_norm(x, {}, {}); }, {"batch_norm", "running_mean and running_var are required"});
  kt::expect_error([&] { batch_norm(x, zeros({4}), zeros({3}), {}, {}, false); },
                   {"batch_norm", "running_mean of shape [3]", "[4]"});
  kt::expect_error([&] { batch_norm(x, {}, {}, zeros({3}, {.dtype = DType::f64}), {}, true); },
                   {"batch_norm", "weight dtype float64", "float32"});
  kt::expect_error([&] { layer_norm(x, {3}); }, {"layer_norm", "normalized_shape [3]", "[2, 3, 4]"});
  kt::expect_error([&] { layer_norm(x, {4}, zeros({5})); }, {"layer_norm", "weight of shape [4]", "[5]"});
  kt::expect_error([&] { rms_norm(zeros({2, 4}, {.dtype = DType::i64}), {4}); }, {"rms_norm", "floating", "int64"});
  kt::expect_error([&] { group_norm(x, 2); }, {"group_norm", "channels (3", "num_groups (2)"});
  kt::expect_error([&] { group_norm(zeros({4}), 1); }, {"group_norm", "at least 2 dims", "[4]"});
  kt::expect_error([&] { layer_norm_backward(zeros({2, 3}), x, {4}, {}, zeros({6}), zeros({6})); },
                   {"layer_norm_backward", "grad_out", "[2, 3, 4]", "[2, 3]"});
  kt::expect_error([&] { layer_norm_backward(x, x, {4}, {}, zeros({5}), zeros({6})); },
                   {"layer_norm_backward", "mean with 6"});
}

}  // namespace
}  // namespace kiln
