// Tests of mm, bmm, matmul, addmm, linear, softmax and log_softmax against naive f64 references
// that read inputs through testing::at. Two tables (products, softmax-like ops); generic tests loop
// over them for every dtype and layout, and f64 gradcheck over both. Broadcast biases, huge and
// infinite inputs, integer wrapping, threads sharing the primitive cache, the derivatives of addmm
// and linear, bf16 products where oneDNN has no kernel, and error messages have their own tests.

#include <cmath>
#include <limits>
#include <thread>

#include "autograd/gradcheck.h"
#include "testing.h"

namespace kiln {
namespace {

using testing::at;

// ---------------------------------------------------------------------------------------------
// Products

struct RefProduct {
  Dims shape;
  std::vector<double> values;
  std::vector<double> abs_values;  // sum of |a||b| per element: the scale of rounding errors
};

// torch.matmul in f64 by triple loops: 1-d operands become a row / a column, batch dims broadcast.
RefProduct ref_matmul(const Tensor& a, const Tensor& b) {
  Dims as = a.shape(), bs = b.shape();
  if (as.size() == 1) as.insert(0, 1);
  if (bs.size() == 1) bs.push_back(1);
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const int nb = std::max(as.size(), bs.size()) - 2;
  Dims batch = Dims::filled(nb, 1);
  for (int d = 0; d < nb; ++d) {
    const int da = d - (nb - (as.size() - 2)), db = d - (nb - (bs.size() - 2));
    const int64_t sa = da >= 0 ? as[da] : 1, sb = db >= 0 ? bs[db] : 1;
    batch[d] = sa == 1 ? sb : sa;
  }
  int64_t B = 1;
  for (int64_t s : batch) B *= s;
  const std::vector<double> va = testing::values(a), vb = testing::values(b);
  RefProduct r;
  r.values.assign(static_cast<size_t>(B * M * N), 0.0);
  r.abs_values.assign(r.values.size(), 0.0);
  for (int64_t bi = 0; bi < B; ++bi) {
    // Batch offsets of a and b: the broadcast index, with size-1 dims pinned to 0.
    const std::vector<int64_t> idx = testing::unravel(bi, batch);
    int64_t oa = 0, ob = 0;
    for (int d = 0; d < nb; ++d) {
      const int da = d - (nb - (as.size() - 2)), db = d - (nb - (bs.size() - 2));
      if (da >= 0) oa = oa * as[da] + (as[da] == 1 ? 0 : idx[static_cast<size_t>(d)]);
      if (db >= 0) ob = ob * bs[db] + (bs[db] == 1 ? 0 : idx[static_cast<size_t>(d)]);
    }
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0, sabs = 0;
        for (int64_t k = 0; k < K; ++k) {
          const double p =
              va[static_cast<size_t>((oa * M + i) * K + k)] * vb[static_cast<size_t>((ob * K + k) * N + j)];
          s += p;
          sabs += std::abs(p);
        }
        r.values[static_cast<size_t>((bi * M + i) * N + j)] = s;
        r.abs_values[static_cast<size_t>((bi * M + i) * N + j)] = sabs;
      }
  }
  r.shape = batch;
  if (a.dim() > 1) r.shape.push_back(M);
  if (b.dim() > 1) r.shape.push_back(N);
  return r;
}

// Relative error allowed against sum |a||b|: f32 accumulates in a different order than the
// reference; bf16/f16 round the output once; integers are exact.
double product_tol(DType t) {
  switch (t) {
    case DType::f32: return 1e-5;
    case DType::f64: return 1e-12;
    case DType::f16: return 2e-3;
    case DType::bf16: return 1.6e-2;
    default: return 0.0;
  }
}

void expect_product(const Tensor& got, const RefProduct& want, DType t, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape) << what;
  ASSERT_EQ(got.dtype(), t) << what;
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    double w = want.values[static_cast<size_t>(i)];
    if (t == DType::u8) w = static_cast<double>(static_cast<uint8_t>(static_cast<int64_t>(w)));  // wraps as torch
    const double g = at(got, i);
    const double allowed = product_tol(t) * (std::abs(w) + want.abs_values[static_cast<size_t>(i)]);
    if (std::abs(g - w) > allowed && reported++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << g << ", expected " << w;
  }
}

const std::vector<DType> kProductDTypes = {DType::f32, DType::f64, DType::f16, DType::bf16,
                                           DType::i64, DType::i32, DType::u8};

Tensor product_input(const Dims& shape, DType t, uint64_t seed) {
  if (t == DType::u8) return testing::random_tensor(shape, t, 0, 4, seed);
  if (!is_floating(t)) return testing::random_tensor(shape, t, -3, 3, seed);
  return testing::random_tensor(shape, t, -2.0, 2.0, seed);
}

using ProductFn = std::function<Tensor(const Tensor&, const Tensor&)>;
// Gradcheck runs on every entry with at most kGradcheckMaxElements input elements (finite
// differences cost two products per element); products are smooth, so any values will do.
struct ProductCase {
  std::string name;
  Dims a, b;
  ProductFn fn;
};

ProductFn kMm = [](const Tensor& a, const Tensor& b) { return mm(a, b); };
ProductFn kBmm = [](const Tensor& a, const Tensor& b) { return a.bmm(b); };
ProductFn kMatmul = [](const Tensor& a, const Tensor& b) { return a.matmul(b); };

const std::vector<ProductCase> kProducts = {
    {"mm 1x1", {1, 1}, {1, 1}, kMm},
    {"mm 17x33x9", {17, 33}, {33, 9}, kMm},
    {"mm 64x784x128", {64, 784}, {784, 128}, kMm},
    {"mm K=0", {3, 0}, {0, 4}, kMm},
    {"mm M=0", {0, 5}, {5, 4}, kMm},
    {"mm N=0", {3, 5}, {5, 0}, kMm},
    {"bmm", {3, 17, 33}, {3, 33, 9}, kBmm},
    {"bmm B=0", {0, 2, 3}, {0, 3, 4}, kBmm},
    {"matmul 1d@1d", {7}, {7}, kMatmul},
    {"matmul 1d@2d", {5}, {5, 3}, kMatmul},
    {"matmul 2d@1d", {4, 5}, {5}, kMatmul},
    {"matmul 2d@2d", {6, 5}, {5, 3}, kMatmul},
    {"matmul 3d@1d", {2, 3, 4}, {4}, kMatmul},
    {"matmul 1d@3d", {4}, {2, 4, 3}, kMatmul},
    {"matmul 3d@2d", {2, 3, 4}, {4, 5}, kMatmul},
    {"matmul 2d@3d", {3, 4}, {2, 4, 5}, kMatmul},
    {"matmul 3d@3d", {2, 3, 4}, {2, 4, 5}, kMatmul},
    {"matmul 4d@3d broadcast", {2, 1, 3, 4}, {5, 4, 6}, kMatmul},
    {"matmul batch of 1 broadcast", {1, 3, 4}, {5, 4, 2}, kMatmul},
    {"matmul 1d@1d K=0", {0}, {0}, kMatmul},
    {"matmul 3d@2d K=0", {2, 3, 0}, {0, 4}, kMatmul},
};

// The same values in another layout: noncontiguous (inner stride 2, which oneDNN cannot read in
// place), transposed (column-major), and sliced (a leading dimension larger than the row).
using LayoutFn = std::function<Tensor(const Tensor&)>;
const std::vector<std::pair<std::string, LayoutFn>> kLayouts = {
    {"contiguous", [](const Tensor& t) { return t; }},
    {"noncontiguous", [](const Tensor& t) { return testing::noncontiguous(t); }},
    {"transposed",
     [](const Tensor& t) { return t.dim() < 2 ? t : t.transpose(-1, -2).contiguous().transpose(-1, -2); }},
    {"sliced",
     [](const Tensor& t) {
       if (t.dim() == 0) return t;
       Dims big = t.shape();
       big[big.size() - 1] += 3;
       Tensor v = zeros(big, {.dtype = t.dtype()}).narrow(-1, 1, t.shape().back());
       v.copy_(t);
       return v;
     }},
};

TEST(Products, EveryDTypeAgainstReference) {
  for (const ProductCase& c : kProducts)
    for (DType t : kProductDTypes) {
      const Tensor a = product_input(c.a, t, 1), b = product_input(c.b, t, 2);
      expect_product(c.fn(a, b), ref_matmul(a, b), t, c.name + " " + std::string(dtype_name(t)));
    }
}

TEST(Products, EveryLayout) {
  // Each layout on each side, not every pair: a new layout is a new oneDNN primitive to create.
  const size_t n = kLayouts.size();
  for (const ProductCase& c : kProducts) {
    if (c.a.size() == 2 && c.a[0] * c.a[1] > 10000) continue;  // the big case: once is enough
    for (DType t : {DType::f32, DType::bf16, DType::f64, DType::i32})
      for (size_t i = 0; i < n; ++i)
        for (size_t j : {i, (i + 1) % n}) {
          const auto& [la, fa] = kLayouts[i];
          const auto& [lb, fb] = kLayouts[j];
          const Tensor a = product_input(c.a, t, 3), b = product_input(c.b, t, 4);
          expect_product(c.fn(fa(a), fb(b)), ref_matmul(a, b), t,
                         c.name + " " + std::string(dtype_name(t)) + " " + la + " @ " + lb);
        }
  }
}

TEST(Products, BatchViewsWithOddStrides) {
  // Batches interleaved in memory (a transposed (M,B,K) buffer) and an expanded batch.
  const Tensor base = testing::random_tensor({5, 3, 4}, DType::f32, -2, 2, 7);
  const Tensor a = base.transpose(0, 1);  // (3,5,4), batch stride 4 < matrix size
  const Tensor b = testing::random_tensor({1, 4, 6}, DType::f32, -2, 2, 8).expand({3, 4, 6});
  expect_product(bmm(a, b), ref_matmul(a, b), DType::f32, "interleaved bmm");
  const Tensor a1 = testing::random_tensor({1, 5, 4}, DType::f32, -2, 2, 9).expand({3, 5, 4});
  for (DType t : {DType::f32, DType::bf16, DType::f64})
    expect_product(bmm(a1.to(t), b.to(t)), ref_matmul(a1.to(t), b.to(t)), t, "both expanded");
  expect_product(matmul(b.transpose(1, 2), a.transpose(1, 2)), ref_matmul(b.transpose(1, 2), a.transpose(1, 2)),
                 DType::f32, "transposed batches");
}

TEST(Products, RepeatedCallsReuseAndStayCorrect) {
  // The second call of each shape runs a cached primitive; a third shape evicts nothing here but
  // must not be confused with the first (same numel, other dims).
  for (int rep = 0; rep < 3; ++rep)
    for (Dims s : {Dims{8, 12}, Dims{12, 8}}) {
      const Tensor a = product_input(s, DType::f32, 10 + rep), b = product_input({s[1], 5}, DType::f32, 20);
      expect_product(mm(a, b), ref_matmul(a, b), DType::f32, "repeat");
    }
}

TEST(Products, ThreadsShareThePrimitiveCache) {
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([w, &failures] {
      for (int it = 0; it < 10; ++it) {
        const int64_t m = 8 + (it % 3) * 8;
        const Tensor a = testing::random_tensor({m, 16}, DType::f32, -1, 1, static_cast<uint64_t>(w * 100 + it));
        const Tensor b = testing::random_tensor({16, 24}, DType::f32, -1, 1, 5);
        const Tensor got = mm(a, b);
        const RefProduct want = ref_matmul(a, b);
        for (int64_t i = 0; i < got.numel(); ++i)
          if (std::abs(at(got, i) - want.values[static_cast<size_t>(i)]) > 1e-4) ++failures[static_cast<size_t>(w)];
      }
    });
  for (auto& t : threads) t.join();
  for (int f : failures) EXPECT_EQ(f, 0);
}

TEST(Products, IntegersWrapAroundAsTorch) {
  const Tensor a = tensor(std::vector<int32_t>{65536, 3}, Dims{1, 2});
  const Tensor b = tensor(std::vector<int32_t>{65536, 5}, Dims{2, 1});
  EXPECT_EQ(mm(a, b).item<int64_t>(), 15);  // 2^32 wraps to 0 in int32
  const Tensor u = tensor(std::vector<uint8_t>{200, 100}, Dims{1, 2});
  EXPECT_EQ(matmul(u, tensor(std::vector<uint8_t>{1, 1}, Dims{2})).item<int64_t>(), 44);  // 300 mod 256
}

// ---------------------------------------------------------------------------------------------
// addmm and linear

// beta * bias + alpha * (a @ b), the bias broadcast to (M,N) by index arithmetic.
std::vector<double> ref_addmm(const Tensor& bias, const Tensor& a, const Tensor& b, double beta, double alpha,
                              std::vector<double>* scale) {
  const RefProduct p = ref_matmul(a, b);
  const int64_t M = a.size(0), N = b.size(1);
  std::vector<double> out(static_cast<size_t>(M * N));
  scale->assign(out.size(), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      int64_t flat = 0;  // bias index with broadcast dims pinned to 0
      const int nd = bias.dim();
      if (nd == 2) flat = (bias.size(0) == 1 ? 0 : i) * bias.size(1) + (bias.size(1) == 1 ? 0 : j);
      if (nd == 1) flat = bias.size(0) == 1 ? 0 : j;
      const double bv = beta == 0.0 ? 0.0 : at(bias, flat);
      const size_t o = static_cast<size_t>(i * N + j);
      out[o] = beta * bv + alpha * p.values[o];
      (*scale)[o] = std::abs(beta * bv) + std::abs(alpha) * p.abs_values[o];
    }
  return out;
}

TEST(Addmm, BroadcastBiasesAndScalars) {
  const int64_t M = 13, K = 21, N = 7;
  const std::vector<Dims> bias_shapes = {{N}, {1, N}, {M, 1}, {M, N}, {}, {1}};
  const std::vector<std::pair<double, double>> betas_alphas = {{1, 1}, {0.5, 2}, {1, 0.5}, {0, 1}, {2, 1}, {1, 0}};
  for (DType t : {DType::f32, DType::bf16, DType::f64, DType::f16})
    for (const Dims& bs : bias_shapes)
      for (auto [beta, alpha] : betas_alphas)
        for (bool transposed : {false, true}) {
          const Tensor a = product_input({M, K}, t, 1);
          const Tensor b = transposed ? product_input({N, K}, t, 2).t() : product_input({K, N}, t, 2);
          const Tensor bias = product_input(bs, t, 3);
          std::vector<double> scale;
          const std::vector<double> want = ref_addmm(bias, a, b, beta, alpha, &scale);
          const Tensor got = addmm(bias, a, b, beta, alpha);
          ASSERT_EQ(got.shape(), (Dims{M, N}));
          for (int64_t i = 0; i < got.numel(); ++i) {
            const double w = want[static_cast<size_t>(i)];
            const double allowed = product_tol(t) * (std::abs(w) + scale[static_cast<size_t>(i)]);
            ASSERT_LE(std::abs(at(got, i) - w), allowed + 1e-12)
                << dtype_name(t) << " bias " << bs << " beta " << beta << " alpha " << alpha << " element " << i;
          }
        }
}

TEST(Addmm, ZeroBetaIgnoresNaNBiasAndKZeroGivesBias) {
  const Tensor bias = full({2, 3}, std::numeric_limits<double>::quiet_NaN());
  const Tensor a = ones({2, 4}), b = ones({4, 3});
  testing::expect_close(addmm(bias, a, b, 0, 1), std::vector<double>(6, 4.0), 0, 0, "beta 0");
  const Tensor bias2 = tensor({1, 2, 3});
  testing::expect_close(addmm(bias2, zeros({2, 0}), zeros({0, 3}), 2, 5), {2, 4, 6, 2, 4, 6}, 0, 0, "K=0");
}

TEST(Addmm, IntegerScalars) {
  const Tensor bias = tensor(std::vector<int64_t>{1, 2}, Dims{2});
  const Tensor a = tensor(std::vector<int64_t>{1, 2, 3, 4}, Dims{2, 2});
  const Tensor b = tensor(std::vector<int64_t>{1, 0, 0, 1}, Dims{2, 2});
  testing::expect_close(addmm(bias, a, b, 3, 2), {5, 10, 9, 14}, 0, 0, "int64 addmm");
}

TEST(Linear, LeadingDimsAndBias) {
  const Tensor w = testing::random_tensor({4, 5}, DType::f32, -1, 1, 1);
  const Tensor bias = testing::random_tensor({4}, DType::f32, -1, 1, 2);
  for (const Dims& xs : {Dims{5}, Dims{3, 5}, Dims{2, 3, 5}, Dims{0, 5}})
    for (bool with_bias : {false, true}) {
      const Tensor x = testing::random_tensor(xs, DType::f32, -1, 1, 3);
      const Tensor got = linear(x, w, with_bias ? bias : Tensor());
      RefProduct want = ref_matmul(x, w.t());
      if (with_bias)
        for (size_t i = 0; i < want.values.size(); ++i) want.values[i] += at(bias, static_cast<int64_t>(i % 4));
      expect_product(got, want, DType::f32, "linear");
    }
}


// ---------------------------------------------------------------------------------------------
// Gradients

constexpr int64_t kGradcheckMaxElements = 2000;

Tensor grad_input(const Dims& shape, uint64_t seed) {
  return testing::random_tensor(shape, DType::f64, -2.0, 2.0, seed).requires_grad_();
}

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

// The transpose of the last two dims, for a non-contiguous operand built inside the checked function.
Tensor swap_last(const Tensor& t) { return t.dim() < 2 ? t : t.transpose(-1, -2); }
Dims swapped_last(Dims s) {
  if (s.size() >= 2) std::swap(s[s.size() - 1], s[s.size() - 2]);
  return s;
}

TEST(Products, GradcheckTable) {
  for (const ProductCase& c : kProducts) {
    if (checked_numel(c.a, "test") + checked_numel(c.b, "test") > kGradcheckMaxElements) continue;
    expect_gradcheck([&](const TensorList& in) { return TensorList{c.fn(in[0], in[1])}; },
                     {grad_input(c.a, 1), grad_input(c.b, 2)}, c.name);
    // Transposed (column-major) operands on both sides.
    expect_gradcheck([&](const TensorList& in) { return TensorList{c.fn(swap_last(in[0]), swap_last(in[1]))}; },
                     {grad_input(swapped_last(c.a), 3), grad_input(swapped_last(c.b), 4)}, c.name + " transposed");
    // Only one side requires grad: the other gets no gradient and is not saved for.
    const Tensor fixed = testing::random_tensor(c.b, DType::f64, -2.0, 2.0, 5);
    expect_gradcheck([&](const TensorList& in) { return TensorList{c.fn(in[0], fixed)}; }, {grad_input(c.a, 6)},
                     c.name + " left only");
  }
}

TEST(Addmm, Gradcheck) {
  for (const Dims& bias_shape : {Dims{4}, Dims{1, 4}, Dims{3, 1}, Dims{3, 4}, Dims{}})
    for (auto [beta, alpha] : {std::pair{1.0, 1.0}, std::pair{0.5, 2.0}, std::pair{0.0, 1.0}}) {
      std::ostringstream what;
      what << "addmm bias " << bias_shape << " beta " << beta << " alpha " << alpha;
      expect_gradcheck(
          [&](const TensorList& in) { return TensorList{addmm(in[0], in[1], in[2], beta, alpha)}; },
          {grad_input(bias_shape, 1), grad_input({3, 5}, 2), grad_input({5, 4}, 3)}, what.str());
    }
}

TEST(Linear, GradcheckAndContiguousWeightGradient) {
  for (const Dims& xs : {Dims{5}, Dims{3, 5}, Dims{2, 3, 5}})
    for (const Dims& bias_shape : {Dims{0}, Dims{4}, Dims{}, Dims{3, 4}}) {
      if (bias_shape.size() == 2 && xs.size() < 2) continue;
      const bool with_bias = bias_shape != Dims{0};
      std::ostringstream what;
      what << "linear x " << xs << " bias " << (with_bias ? bias_shape : Dims{});
      TensorList inputs{grad_input(xs, 1), grad_input({4, 5}, 2)};
      if (with_bias) inputs.push_back(grad_input(bias_shape, 3));
      expect_gradcheck(
          [&](const TensorList& in) { return TensorList{linear(in[0], in[1], with_bias ? in[2] : Tensor())}; }, inputs,
          what.str());
    }
  const Tensor w = grad_input({4, 5}, 4);
  linear(testing::random_tensor({3, 5}, DType::f64, -1, 1, 5), w).sum().backward();
  EXPECT_TRUE(w.grad().is_contiguous());
  EXPECT_EQ(w.grad().shape(), (Dims{4, 5}));
}

// ---------------------------------------------------------------------------------------------
// softmax and log_softmax

struct SoftmaxCase {
  std::string name;
  std::function<Tensor(const Tensor&, int64_t)> run;
  bool log;
};
const std::vector<SoftmaxCase> kSoftmaxOps = {
    {"softmax", [](const Tensor& x, int64_t d) { return x.softmax(d); }, false},
    {"log_softmax", [](const Tensor& x, int64_t d) { return x.log_softmax(d); }, true},
};

// Max-subtracted softmax of every slice along dim, in f64: a row of all -inf gives NaN.
std::vector<double> ref_softmax(const Tensor& x, int dim, bool log) {
  const Dims shape = x.dim() == 0 ? Dims{1} : x.shape();
  std::vector<double> out(static_cast<size_t>(x.numel()));
  for (int64_t flat = 0; flat < x.numel(); ++flat) {
    std::vector<int64_t> idx = testing::unravel(flat, shape);
    if (idx[static_cast<size_t>(dim)] != 0) continue;
    std::vector<int64_t> pos;
    for (int64_t j = 0; j < shape[dim]; ++j) {
      idx[static_cast<size_t>(dim)] = j;
      pos.push_back(testing::ravel(idx, shape));
    }
    double m = -std::numeric_limits<double>::infinity(), s = 0;
    for (int64_t p : pos) m = std::max(m, at(x, p));
    for (int64_t p : pos) s += std::exp(at(x, p) - m);
    for (int64_t p : pos)
      out[static_cast<size_t>(p)] = log ? (at(x, p) - m) - std::log(s) : std::exp(at(x, p) - m) / s;
  }
  return out;
}

double softmax_rtol(DType t) { return t == DType::f32 ? 1e-5 : testing::tolerance(t); }

void expect_softmax(const SoftmaxCase& op, const Tensor& x, int64_t dim, const std::string& what) {
  const int d = x.dim() == 0 ? 0 : static_cast<int>(dim < 0 ? dim + x.dim() : dim);
  const Tensor got = op.run(x, dim);
  ASSERT_EQ(got.shape(), x.shape()) << what;
  ASSERT_EQ(got.dtype(), x.dtype()) << what;
  // log_softmax near 0 (the largest entry) has no relative scale: allow an absolute error too.
  const double atol = op.log ? softmax_rtol(x.dtype()) : softmax_rtol(x.dtype()) * 1e-3;
  testing::expect_close(got, ref_softmax(x, d, op.log), softmax_rtol(x.dtype()), atol, what);
}

TEST(Softmax, EveryDTypeDimAndLayout) {
  const std::vector<std::pair<Dims, std::vector<int64_t>>> shapes = {
      {{7}, {0, -1}},          {{4, 33}, {0, 1, -1}}, {{3, 4, 5}, {0, 1, 2}}, {{2, 1000}, {1}},
      {{4, 50, 70}, {1, 0}},   {{}, {0, -1}},         {{0, 5}, {0, 1}},       {{3, 0}, {1}},
      // Rows of at most 16 go 16 at a time (Note [Narrow rows]): partial blocks, 1..16 and 17 wide.
      {{37, 10}, {1, -1}},     {{130, 16}, {1}},      {{33, 1}, {1}},         {{20, 17}, {1}},
  };
  for (const SoftmaxCase& op : kSoftmaxOps)
    for (DType t : testing::kFloatDTypes)
      for (const auto& [shape, dims] : shapes)
        for (int64_t dim : dims)
          for (bool noncontig : {false, true}) {
            Tensor x = testing::random_tensor(shape, t, -20.0, 20.0, 4);
            if (noncontig) x = testing::noncontiguous(x);
            expect_softmax(op, x, dim,
                           op.name + " " + std::string(dtype_name(t)) + " dim " + std::to_string(dim) +
                               (noncontig ? " noncontiguous" : ""));
          }
}

TEST(Softmax, Gradcheck) {
  const std::vector<std::pair<Dims, std::vector<int64_t>>> shapes = {
      {{7}, {0}}, {{3, 4}, {0, 1, -1}}, {{2, 3, 4}, {1}}, {{}, {0}}};
  for (const SoftmaxCase& op : kSoftmaxOps)
    for (const auto& [shape, dims] : shapes)
      for (int64_t dim : dims) {
        const std::string what = op.name + " dim " + std::to_string(dim);
        expect_gradcheck([&](const TensorList& in) { return TensorList{op.run(in[0], dim)}; }, {grad_input(shape, 7)},
                         what);
        if (shape.size() < 2) continue;
        Dims t = shape;
        std::swap(t[0], t[t.size() - 1]);
        expect_gradcheck([&](const TensorList& in) { return TensorList{op.run(in[0].transpose(0, -1), dim)}; },
                         {grad_input(t, 8)}, what + " transposed");
      }
}

// A NaN in one narrow row makes that row NaN and leaves the other rows of its block alone.
TEST(Softmax, NaNStaysInItsNarrowRow) {
  Tensor x = testing::random_tensor({40, 10}, DType::f32, -3, 3, 9);
  x.view({-1}).narrow(0, 17 * 10 + 3, 1).fill_(testing::kNaN);
  for (const SoftmaxCase& op : kSoftmaxOps) {
    const Tensor y = op.run(x, 1);
    for (int64_t i = 0; i < y.numel(); ++i)
      EXPECT_EQ(std::isnan(at(y, i)), i / 10 == 17) << op.name << " element " << i;
  }
}

TEST(Softmax, HugeAndInfiniteInputs) {
  const double inf = std::numeric_limits<double>::infinity();
  const Tensor rows = tensor({1000, 1000, -1000, 0,  //
                              -inf, 0, 0, -inf,      //
                              -inf, -inf, -inf, -inf,
                              -1000, -1000, -1000, -999});
  for (const SoftmaxCase& op : kSoftmaxOps)
    for (DType t : testing::kFloatDTypes) {
      const Tensor x = rows.to(t).view({4, 4});
      expect_softmax(op, x, 1, op.name + " " + std::string(dtype_name(t)));
      expect_softmax(op, x.t(), 0, op.name + " transposed " + std::string(dtype_name(t)));
    }
  // Hand-computed: the all -inf row is NaN; the others have exact halves.
  const Tensor s = rows.view({4, 4}).softmax(1);
  EXPECT_NEAR(at(s, 0), 0.5, 1e-7);
  EXPECT_EQ(at(s, 2), 0.0);
  EXPECT_EQ(at(s, 4), 0.0);
  EXPECT_TRUE(std::isnan(at(s, 8)));
  EXPECT_NEAR(at(rows.view({4, 4}).log_softmax(1), 2), -2000 - std::log(2.0), 1e-3);
}

// ---------------------------------------------------------------------------------------------
// bf16 products where oneDNN has none (Note [16-bit products through f32], kernels/cpu/matmul.cpp)

// Element by element, bit for bit (both finite here).
void expect_same_values(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  int reported = 0;
  for (int64_t i = 0; i < want.numel(); ++i)
    if (at(got, i) != at(want, i) && reported++ < 5)
      ADD_FAILURE() << what << ": element " << i << " is " << at(got, i) << ", the f32 product rounded once is "
                    << at(want, i);
}

// Every product case, layout and addmm bias against the f64 reference, and bit for bit against the
// f32 product of the same values rounded once to bf16: what the fallback computes, and what
// oneDNN's own bf16 kernels compute up to the order of the f32 sums. Each case runs twice; the
// second call takes the refusal remembered in the plan cache.
TEST(Products, Bf16WithoutOneDnnKernelsRunsThroughF32) {
  if (!testing::onednn_lacks_bf16())
    GTEST_SKIP() << "oneDNN has bf16 kernels at level " << cpu_capability() << "; the run at the avx2 level tests this";
  const DType t = DType::bf16;
  auto f32 = [](const Tensor& x) { return x.contiguous().to(DType::f32); };
  for (const ProductCase& c : kProducts) {
    const Tensor a = product_input(c.a, t, 1), b = product_input(c.b, t, 2);
    for (int call = 0; call < 2; ++call) {
      const Tensor got = c.fn(a, b);
      expect_product(got, ref_matmul(a, b), t, c.name);
      expect_same_values(got, c.fn(f32(a), f32(b)).to(t), c.name);
    }
    for (const auto& [la, fa] : kLayouts)
      expect_product(c.fn(fa(a), fa(b)), ref_matmul(a, b), t, c.name + " " + la);
  }
  const Tensor a1 = testing::random_tensor({1, 5, 4}, t, -2, 2, 9).expand({3, 5, 4});
  const Tensor b1 = testing::random_tensor({1, 4, 6}, t, -2, 2, 8).expand({3, 4, 6});
  expect_product(bmm(a1, b1), ref_matmul(a1, b1), t, "both expanded");
  const int64_t M = 13, K = 21, N = 7;
  for (const Dims& bs : {Dims{N}, Dims{M, 1}, Dims{M, N}})
    for (auto [beta, alpha] : {std::pair{1.0, 1.0}, std::pair{0.5, 2.0}}) {
      const Tensor a = product_input({M, K}, t, 1), b = product_input({N, K}, t, 2).t();
      const Tensor bias = product_input(bs, t, 3);
      std::vector<double> scale;
      const std::vector<double> want = ref_addmm(bias, a, b, beta, alpha, &scale);
      const Tensor got = addmm(bias, a, b, beta, alpha);
      for (int64_t i = 0; i < got.numel(); ++i)
        EXPECT_LE(std::abs(at(got, i) - want[static_cast<size_t>(i)]),
                  product_tol(t) * (std::abs(want[static_cast<size_t>(i)]) + scale[static_cast<size_t>(i)]))
            << "addmm bias " << bs << " beta " << beta << " element " << i;
      expect_same_values(got, addmm(f32(bias), f32(a), f32(b), beta, alpha).to(t), "addmm rounded once");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(Errors, MessagesNameOpShapesAndDTypes) {
  using testing::expect_error;
  const Tensor x = zeros({64, 784}), w = zeros({512, 10});
  expect_error([&] { matmul(x, w); }, {"matmul: shapes [64, 784] and [512, 10] cannot be multiplied (784 != 512)"});
  expect_error([&] { mm(x, w); }, {"mm: shapes [64, 784] and [512, 10] cannot be multiplied (784 != 512)"});
  expect_error([&] { matmul(zeros({3}), zeros({4})); }, {"matmul", "[3] and [4]", "3 != 4"});
  expect_error([&] { mm(zeros({2, 3}), zeros({3, 2}, {.dtype = DType::f64})); }, {"mm", "float32", "float64"});
  expect_error([&] { matmul(zeros({2, 3}), zeros({3}, {.dtype = DType::bf16})); }, {"matmul", "float32", "bfloat16"});
  expect_error([&] { matmul(zeros({}), zeros({2, 3})); }, {"matmul", "at least 1 dim", "[]", "[2, 3]"});
  expect_error([&] { mm(zeros({2, 3, 4}), zeros({4, 2})); }, {"mm", "2-d", "[2, 3, 4]"});
  expect_error([&] { bmm(zeros({2, 3, 4}), zeros({3, 4, 5})); }, {"bmm", "batch", "2 != 3"});
  expect_error([&] { bmm(zeros({2, 3, 4}), zeros({2, 5, 5})); }, {"bmm", "cannot be multiplied", "4 != 5"});
  expect_error([&] { matmul(zeros({2, 3, 4}), zeros({3, 4, 5})); },
               {"matmul", "batch dims", "[2, 3, 4]", "[3, 4, 5]", "2 vs 3"});
  expect_error([&] { mm(zeros({2, 2}, {.dtype = DType::boolean}), zeros({2, 2}, {.dtype = DType::boolean})); },
               {"mm", "bool"});
  expect_error([&] { addmm(zeros({3}), zeros({2, 4}), zeros({4, 5})); }, {"addmm", "[3]", "[2, 5]"});
  expect_error([&] { addmm(zeros({5}, {.dtype = DType::f64}), zeros({2, 4}), zeros({4, 5})); },
               {"addmm", "float64", "float32"});
  const Tensor i = zeros({2, 2}, {.dtype = DType::i64});
  expect_error([&] { addmm(i, i, i, 0.5, 1); }, {"addmm", "int64", "integers", "0.5"});
  expect_error([&] { linear(zeros({3, 6}), zeros({4, 5})); }, {"linear", "[3, 6]", "[4, 5]", "6 != 5"});
  expect_error([&] { softmax(zeros({2}, {.dtype = DType::i64}), 0); }, {"softmax", "floating", "int64"});
  expect_error([&] { log_softmax(zeros({2, 3}), 2); }, {"log_softmax", "dim 2", "out of range"});
  expect_error([&] { matmul(Tensor(), zeros({2})); }, {"matmul", "undefined"});
}

}  // namespace
}  // namespace kiln
