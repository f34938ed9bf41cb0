// Tests of the skinny f32 product path (kernels/cpu/small_matmul.cpp, chosen in matmul.cpp when M
// or N is at most 8) through mm and addmm, against a naive f64 loop: every layout pair (row- or
// column-major, with and without a leading dimension wider than the matrix), tails that are not
// multiples of the vector width, biases with alpha/beta, 1 and 2 threads, and the MLP's three
// last-layer products. The shapes stay inside matmul.cpp's dispatch condition (small_matmul_wins),
// except the pairs it leaves to oneDNN (small M with a column-major b; M or N = 10 in the MLP),
// which are checked all the same.
#include <cmath>

#include "testing.h"

namespace kiln {
namespace {

using testing::at;

// out = beta * bias + alpha * a @ b in f64, with the scale of its rounding error: sum |alpha a b| +
// |beta bias| per element. bias may be undefined (mm).
struct Ref {
  std::vector<double> values, scale;
};

Ref ref_addmm(const Tensor& bias, const Tensor& a, const Tensor& b, double beta, double alpha) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const std::vector<double> va = testing::values(a), vb = testing::values(b);
  Ref r;
  r.values.assign(static_cast<size_t>(M * N), 0.0);
  r.scale.assign(r.values.size(), 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0, sabs = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = va[static_cast<size_t>(i * K + k)] * vb[static_cast<size_t>(k * N + j)];
        s += p;
        sabs += std::abs(p);
      }
      double v = alpha * s, scale = std::abs(alpha) * sabs;
      if (bias.defined() && beta != 0.0) {
        const double c = beta * at(bias.expand({M, N}), i * N + j);
        v += c;
        scale += std::abs(c);
      }
      r.values[static_cast<size_t>(i * N + j)] = v;
      r.scale[static_cast<size_t>(i * N + j)] = scale;
    }
  return r;
}

// f32 sums K products in another order than the reference: allow 1e-6 sqrt(K) of the scale.
void expect_matches(const Tensor& got, const Ref& want, int64_t K, const std::string& what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.values.size())) << what;
  const double rtol = 1e-6 * std::sqrt(static_cast<double>(K)) + 1e-7;
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = at(got, i), w = want.values[static_cast<size_t>(i)];
    const double allowed = rtol * (want.scale[static_cast<size_t>(i)] + std::abs(w)) + 1e-30;
    if (!(std::abs(g - w) <= allowed) && reported++ < 5)
      ADD_FAILURE() << what << ": element " << i << " (row " << i / got.size(1) << ", col " << i % got.size(1)
                    << ") is " << g << ", expected " << w;
  }
}

// The same values as t (rows x cols) in one of the layouts the product takes in place.
enum class Layout { row_major, col_major, row_major_ld, col_major_ld };
const Layout kLayouts[] = {Layout::row_major, Layout::col_major, Layout::row_major_ld, Layout::col_major_ld};

const char* layout_name(Layout l) {
  switch (l) {
    case Layout::row_major: return "row";
    case Layout::col_major: return "col";
    case Layout::row_major_ld: return "row+ld";
    case Layout::col_major_ld: return "col+ld";
  }
  return "?";
}

Tensor in_layout(const Tensor& t, Layout l) {
  switch (l) {
    case Layout::row_major: return t.contiguous();
    case Layout::col_major: return t.t().contiguous().t();
    case Layout::row_major_ld: {  // a slice of a wider matrix: leading dimension cols + 5
      Tensor v = zeros({t.size(0), t.size(1) + 5}).narrow(1, 2, t.size(1));
      v.copy_(t);
      return v;
    }
    case Layout::col_major_ld: {  // the transpose of such a slice: leading dimension rows + 3
      Tensor v = zeros({t.size(1), t.size(0) + 3}).narrow(1, 1, t.size(0)).t();
      v.copy_(t);
      return v;
    }
  }
  return t;
}

struct Shape {
  int64_t M, K, N;
};

// Small N (1..8, the tile is 8 rows x 8 columns) with M and K not multiples of anything, then
// small M (1..8) with N past one 32-column tile, or just under it.
std::vector<Shape> skinny_shapes() {
  std::vector<Shape> s;
  for (int64_t M : {1, 3, 8, 17, 33, 127})
    for (int64_t N : {1, 3, 5, 7, 8})
      for (int64_t K : {1, 7, 10, 129}) s.push_back({M, K, N});
  for (int64_t M : {1, 2, 5, 7, 8})
    for (int64_t N : {9, 31, 33, 127})
      for (int64_t K : {1, 7, 129}) s.push_back({M, K, N});
  return s;
}

class ThreadCount : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    saved_ = get_num_threads();
    set_num_threads(GetParam());
  }
  void TearDown() override { set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

std::string describe(const Shape& s, Layout la, Layout lb, const char* op) {
  return std::string(op) + " M=" + std::to_string(s.M) + " K=" + std::to_string(s.K) + " N=" + std::to_string(s.N) +
         " a " + layout_name(la) + " b " + layout_name(lb);
}

TEST_P(ThreadCount, EveryLayoutPairWithAndWithoutRowBias) {
  uint64_t seed = 1;
  for (const Shape& s : skinny_shapes()) {
    const Tensor a = testing::random_tensor({s.M, s.K}, DType::f32, -2, 2, seed++);
    const Tensor b = testing::random_tensor({s.K, s.N}, DType::f32, -2, 2, seed++);
    const Tensor bias = testing::random_tensor({s.N}, DType::f32, -2, 2, seed++);
    const Ref plain = ref_addmm(Tensor(), a, b, 0.0, 1.0), biased = ref_addmm(bias, a, b, 1.0, 1.0);
    for (Layout la : kLayouts)
      for (Layout lb : kLayouts) {
        const Tensor av = in_layout(a, la), bv = in_layout(b, lb);
        expect_matches(mm(av, bv), plain, s.K, describe(s, la, lb, "mm"));
        expect_matches(addmm(bias, av, bv), biased, s.K, describe(s, la, lb, "addmm row bias"));
      }
  }
}

TEST_P(ThreadCount, AlphaBetaAndFullBias) {
  uint64_t seed = 100;
  for (const Shape& s : {Shape{33, 129, 7}, Shape{3, 7, 5}, Shape{5, 129, 127}, Shape{1, 10, 33}}) {
    const Tensor a = testing::random_tensor({s.M, s.K}, DType::f32, -2, 2, seed++);
    const Tensor b = testing::random_tensor({s.K, s.N}, DType::f32, -2, 2, seed++);
    const Tensor full = testing::random_tensor({s.M, s.N}, DType::f32, -2, 2, seed++);
    const Tensor column = testing::random_tensor({s.M, 1}, DType::f32, -2, 2, seed++);
    const Tensor scalar = testing::random_tensor({}, DType::f32, -2, 2, seed++);
    for (Layout la : {Layout::row_major, Layout::col_major_ld})
      for (Layout lb : {Layout::col_major, Layout::row_major_ld}) {
        const Tensor av = in_layout(a, la), bv = in_layout(b, lb);
        for (const auto& [beta, alpha] : {std::pair{1.0, 1.0}, {0.5, -2.0}, {-1.0, 0.25}, {1.0, 0.0}})
          for (const Tensor& bias : {full, in_layout(full, Layout::col_major), column, scalar})
            expect_matches(addmm(bias, av, bv, beta, alpha), ref_addmm(bias, a, b, beta, alpha), s.K,
                           describe(s, la, lb, "addmm") + " beta=" + std::to_string(beta) +
                               " alpha=" + std::to_string(alpha) + " bias " + std::to_string(bias.dim()) + "-d");
      }
    // beta = 0 ignores the bias, NaN included, as torch does.
    Tensor nan_bias = full.clone();
    nan_bias.fill_(testing::kNaN);
    expect_matches(addmm(nan_bias, a, b, 0.0, 1.5), ref_addmm(Tensor(), a, b, 0.0, 1.5), s.K,
                   describe(s, Layout::row_major, Layout::row_major, "addmm beta=0 NaN bias"));
  }
}

// The MLP 784-512-512-10 at batch 128: its last layer's forward, input gradient and weight gradient
// (at 10 wide, oneDNN computes them: see small_matmul_wins), and the same with an 8-wide layer.
TEST_P(ThreadCount, MlpLastLayer) {
  const Tensor h = testing::random_tensor({128, 512}, DType::f32, -2, 2, 11);
  const Tensor w = testing::random_tensor({10, 512}, DType::f32, -2, 2, 12);
  const Tensor bias = testing::random_tensor({10}, DType::f32, -2, 2, 13);
  const Tensor g = testing::random_tensor({128, 10}, DType::f32, -2, 2, 14);
  expect_matches(addmm(bias, h, w.t()), ref_addmm(bias, h, w.t(), 1.0, 1.0), 512, "forward addmm");
  expect_matches(mm(h, w.t()), ref_addmm(Tensor(), h, w.t(), 0.0, 1.0), 512, "forward mm");
  expect_matches(linear(h, w, bias), ref_addmm(bias, h, w.t(), 1.0, 1.0), 512, "forward linear");
  expect_matches(mm(g, w), ref_addmm(Tensor(), g, w, 0.0, 1.0), 10, "grad input");
  expect_matches(mm(g.t(), h), ref_addmm(Tensor(), g.t(), h, 0.0, 1.0), 128, "grad weight");
  const Tensor w8 = w.narrow(0, 0, 8), b8 = bias.narrow(0, 0, 8), g8 = g.narrow(1, 0, 8);
  expect_matches(linear(h, w8, b8), ref_addmm(b8, h, w8.t(), 1.0, 1.0), 512, "forward linear, 8 wide");
  expect_matches(mm(g8.t(), h), ref_addmm(Tensor(), g8.t(), h, 0.0, 1.0), 128, "grad weight, 8 wide");
}

INSTANTIATE_TEST_SUITE_P(SmallMatmul, ThreadCount, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int>& p) { return std::to_string(p.param) + "_threads"; });

// Tiles, not k, are split over threads: each element is the same sum for any thread count. The
// shapes are big enough to be split.
TEST(SmallMatmul, ResultsDoNotDependOnThreadCount) {
  const int threads = get_num_threads();
  for (const Shape& s : {Shape{1000, 512, 8}, Shape{999, 300, 3}, Shape{8, 256, 2000}, Shape{3, 512, 999}}) {
    const Tensor a = testing::random_tensor({s.M, s.K}, DType::f32, -2, 2, 21);
    const Tensor b = s.N <= 8 ? testing::random_tensor({s.N, s.K}, DType::f32, -2, 2, 22).t()
                              : testing::random_tensor({s.K, s.N}, DType::f32, -2, 2, 22);
    set_num_threads(2);
    const std::vector<double> two = testing::values(mm(a, b));
    set_num_threads(1);
    const std::vector<double> one = testing::values(mm(a, b));
    set_num_threads(threads);
    EXPECT_EQ(one, two) << "M=" << s.M << " K=" << s.K << " N=" << s.N;
  }
}

}  // namespace
}  // namespace kiln
