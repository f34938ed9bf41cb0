// Tests of the ops along one dim (cumsum, sort, topk) and of tril/triu, against naive f64 references
// that read inputs through testing::at. One table of cases; generic tests loop over it for every
// dtype, layout and shape, and f64 gradcheck of the values. Ties, NaN ordering, thread-sized inputs
// and errors have their own tests.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "autograd/gradcheck.h"
#include "testing.h"

namespace kiln {
namespace {

using testing::at;

// Flat positions (row-major in shape, a 0-d shape counting as [1]) of every 1-d slice along dim.
std::vector<std::vector<int64_t>> slices(Dims shape, int dim) {
  if (shape.empty()) shape = {1};
  std::vector<std::vector<int64_t>> out;
  int64_t total = 1;
  for (int64_t s : shape) total *= s;
  if (total == 0) return out;
  for (int64_t flat = 0; flat < total; ++flat) {
    std::vector<int64_t> idx = testing::unravel(flat, shape);
    if (idx[static_cast<size_t>(dim)] != 0) continue;
    std::vector<int64_t> slice;
    for (int64_t j = 0; j < shape[dim]; ++j) {
      idx[static_cast<size_t>(dim)] = j;
      slice.push_back(testing::ravel(idx, shape));
    }
    out.push_back(slice);
  }
  return out;
}

// NaN above every number, as torch sorts.
bool ref_less(double a, double b) { return std::isnan(b) ? !std::isnan(a) : a < b; }

// A stable order of one slice's positions: ascending or descending, ties in input order.
std::vector<int64_t> ref_order(const Tensor& x, const std::vector<int64_t>& slice, bool descending) {
  std::vector<double> v;
  for (int64_t p : slice) v.push_back(at(x, p));
  std::vector<int64_t> order(slice.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const double va = v[static_cast<size_t>(a)], vb = v[static_cast<size_t>(b)];
    return descending ? ref_less(vb, va) : ref_less(va, vb);
  });
  return order;
}

struct Expected {
  Dims shape;
  DType dtype;
  std::vector<double> values;
  std::vector<double> indices;  // empty: any indices whose elements equal the values pass
};

struct OpCase {
  std::string name;
  std::function<TensorPair(const Tensor& x, int64_t dim)> run;  // indices undefined for ops without them
  std::function<Expected(const Tensor& x, int dim)> ref;        // dim already wrapped
  std::vector<DType> dtypes = testing::kAllDTypes;
};

Dims as_1d(const Dims& s) { return s.empty() ? Dims{1} : s; }

// Sort (or the first k of a sort) of every slice; the indices are checked exactly only when stable.
Expected ref_sorted(const Tensor& x, int dim, bool descending, int64_t k, bool exact_indices) {
  const Dims in = as_1d(x.shape());
  Dims shape = in;
  if (k >= 0) shape[dim] = k;
  Expected e{x.dim() == 0 ? Dims{} : shape, x.dtype(), {}, {}};
  int64_t total = 1;
  for (int64_t s : shape) total *= s;
  e.values.resize(static_cast<size_t>(total));
  if (exact_indices) e.indices.resize(static_cast<size_t>(total));
  for (const auto& slice : slices(in, dim)) {
    const std::vector<int64_t> order = ref_order(x, slice, descending);
    std::vector<int64_t> pos = testing::unravel(slice[0], in);
    for (int64_t j = 0; j < shape[dim]; ++j) {
      pos[static_cast<size_t>(dim)] = j;
      const size_t o = static_cast<size_t>(testing::ravel(pos, shape));
      e.values[o] = at(x, slice[static_cast<size_t>(order[static_cast<size_t>(j)])]);
      if (exact_indices) e.indices[o] = static_cast<double>(order[static_cast<size_t>(j)]);
    }
  }
  return e;
}

Expected ref_cumsum(const Tensor& x, int dim) {
  Expected e{x.shape(), is_floating(x.dtype()) ? x.dtype() : DType::i64, std::vector<double>(x.numel()), {}};
  for (const auto& slice : slices(x.shape(), dim)) {
    double acc = 0;
    for (int64_t p : slice) e.values[static_cast<size_t>(p)] = acc += at(x, p);
  }
  return e;
}

Expected ref_tri(const Tensor& x, int64_t diagonal, bool lower) {
  Expected e{x.shape(), x.dtype(), std::vector<double>(x.numel()), {}};
  for (int64_t f = 0; f < x.numel(); ++f) {
    const std::vector<int64_t> idx = testing::unravel(f, x.shape());
    const int64_t i = idx[idx.size() - 2], j = idx.back();
    const bool keep = lower ? j - i <= diagonal : j - i >= diagonal;
    e.values[static_cast<size_t>(f)] = keep ? at(x, f) : 0.0;
  }
  return e;
}

TensorPair values_only(const Tensor& t) { return {t, Tensor()}; }
int64_t slice_len(const Tensor& x, int64_t dim) { return x.dim() ? x.size(dim) : 1; }

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cases = {
      {"cumsum", [](const Tensor& x, int64_t d) { return values_only(cumsum(x, d)); }, ref_cumsum},
      {"sort", [](const Tensor& x, int64_t d) { return sort(x, d); },
       [](const Tensor& x, int d) { return ref_sorted(x, d, false, -1, false); }},
      {"sort_stable", [](const Tensor& x, int64_t d) { return sort(x, d, false, true); },
       [](const Tensor& x, int d) { return ref_sorted(x, d, false, -1, true); }},
      {"sort_descending_stable", [](const Tensor& x, int64_t d) { return sort(x, d, true, true); },
       [](const Tensor& x, int d) { return ref_sorted(x, d, true, -1, true); }},
      {"topk_largest", [](const Tensor& x, int64_t d) { return topk(x, std::min<int64_t>(slice_len(x, d), 3), d); },
       [](const Tensor& x, int d) { return ref_sorted(x, d, true, std::min<int64_t>(slice_len(x, d), 3), false); }},
      {"topk_smallest",
       [](const Tensor& x, int64_t d) { return topk(x, std::min<int64_t>(slice_len(x, d), 2), d, false); },
       [](const Tensor& x, int d) { return ref_sorted(x, d, false, std::min<int64_t>(slice_len(x, d), 2), false); }},
      {"topk_all", [](const Tensor& x, int64_t d) { return topk(x, slice_len(x, d), d); },
       [](const Tensor& x, int d) { return ref_sorted(x, d, true, slice_len(x, d), false); }},
  };
  for (int64_t diag : {int64_t{-2}, int64_t{0}, int64_t{1}, int64_t{1} << 40}) {
    const std::string suffix = "_diag" + std::to_string(diag < 0 ? -diag : diag) + (diag < 0 ? "neg" : "");
    cases.push_back({"tril" + suffix, [diag](const Tensor& x, int64_t) { return values_only(tril(x, diag)); },
                     [diag](const Tensor& x, int) { return ref_tri(x, diag, true); }});
    cases.push_back({"triu" + suffix, [diag](const Tensor& x, int64_t) { return values_only(x.triu(diag)); },
                     [diag](const Tensor& x, int) { return ref_tri(x, diag, false); }});
  }
  return cases;
}

bool is_tri(const OpCase& c) { return c.name.rfind("tri", 0) == 0; }

void check_case(const OpCase& c, const Tensor& x, int64_t dim, const std::string& what) {
  const int d = wrap_dim(dim, x.dim(), "test");
  const TensorPair got = c.run(x, dim);
  const Expected want = c.ref(x, d);
  ASSERT_EQ(got.values.shape(), want.shape) << what;
  ASSERT_EQ(got.values.dtype(), want.dtype) << what;
  double rtol = 0, atol = 0;
  if (c.name == "cumsum" && is_floating(x.dtype())) {  // sums round; 16-bit floats round once per output
    const bool wide = x.dtype() == DType::f32 || x.dtype() == DType::f64;
    rtol = testing::tolerance(x.dtype());
    atol = rtol * (wide ? static_cast<double>(as_1d(x.shape())[d]) : 4.0);
  }
  testing::expect_close(got.values, want.values, rtol, atol, what + " values");
  if (!got.indices.defined()) return;
  ASSERT_EQ(got.indices.dtype(), DType::i64) << what;
  ASSERT_EQ(got.indices.shape(), want.shape) << what;
  if (!want.indices.empty()) testing::expect_close(got.indices, want.indices, 0, 0, what + " indices");
  // Every index points at an element of x equal to the value beside it.
  const Dims in = as_1d(x.shape()), out = as_1d(got.values.shape());
  for (int64_t f = 0; f < got.values.numel(); ++f) {
    std::vector<int64_t> pos = testing::unravel(f, out);
    const int64_t k = static_cast<int64_t>(at(got.indices, f));
    ASSERT_TRUE(k >= 0 && k < in[d]) << what << ": index " << k;
    pos[static_cast<size_t>(d)] = k;
    const double v = at(x, testing::ravel(pos, in)), g = at(got.values, f);
    ASSERT_TRUE(v == g || (std::isnan(v) && std::isnan(g))) << what << ": element " << f << " index " << k;
  }
}

struct Sample {
  Dims shape;
  int64_t dim;
};

const std::vector<Sample> kSamples = {{{5, 7}, 1}, {{4, 3, 6}, -2}, {{4, 3, 6}, 0}, {{9}, 0},  {{}, 0},
                                      {{}, -1},    {{3, 0, 4}, 1},  {{3, 0, 4}, 2},  {{2, 3, 4, 5}, -1}};

TEST(SortingOps, MatchReferenceForEveryDtypeAndLayout) {
  for (const OpCase& c : op_cases()) {
    for (DType t : c.dtypes) {
      for (const Sample& s : kSamples) {
        if (is_tri(c) && s.shape.size() < 2) continue;
        const Tensor x = testing::random_tensor(s.shape, t, -4, 4, 7);
        std::ostringstream what_os;
        what_os << c.name << " " << t << " shape " << s.shape << " dim " << s.dim;
        const std::string what = what_os.str();
        check_case(c, x, s.dim, what);
        check_case(c, testing::noncontiguous(x), s.dim, what + " noncontiguous");
        if (x.dim() >= 2) check_case(c, x.transpose(0, -1), s.dim, what + " transposed");
      }
    }
  }
}

// One case per kernel, on slices long and many enough to be spread over threads.
TEST(SortingOps, SlicesOverTheThreadingThreshold) {
  for (const OpCase& c : op_cases()) {
    if (c.name != "cumsum" && c.name != "sort_stable" && c.name != "topk_largest" && c.name != "topk_all" &&
        c.name != "tril_diag1")
      continue;
    for (DType t : {DType::f32, DType::bf16}) {
      const Tensor x = testing::random_tensor({96, 700}, t, -50, 50, 11);
      check_case(c, x, 1, c.name + " large dim 1");
      check_case(c, x, 0, c.name + " large dim 0");
    }
  }
}

TEST(SortingOps, StableSortKeepsManyTiesInInputOrder) {
  // Four distinct values over 2000 elements per row, 64 rows: enough rows to spread over threads.
  const Tensor x = testing::random_tensor({64, 2000}, DType::i64, 0, 4, 3);
  for (DType t : {DType::f32, DType::i32, DType::f16}) {
    const Tensor xt = x.to(t);
    for (bool descending : {false, true}) {
      const TensorPair got = sort(xt, 1, descending, true);
      const Expected want = ref_sorted(xt, 1, descending, -1, true);
      testing::expect_close(got.values, want.values, 0, 0, "stable values");
      testing::expect_close(got.indices, want.indices, 0, 0, "stable indices");
    }
  }
}

TEST(SortingOps, NanSortsAsTheLargestValue) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType t : testing::kFloatDTypes) {
    const Tensor x = tensor({3.0, nan, 1.0, nan, 2.0, -INFINITY}, {.dtype = t});
    TensorPair up = sort(x, 0, false, true);
    testing::expect_close(up.values, {-INFINITY, 1, 2, 3, nan, nan}, 0, 0, "ascending");
    testing::expect_close(up.indices, {5, 2, 4, 0, 1, 3}, 0, 0, "ascending indices");
    TensorPair down = sort(x, 0, true, true);
    testing::expect_close(down.values, {nan, nan, 3, 2, 1, -INFINITY}, 0, 0, "descending");
    testing::expect_close(down.indices, {1, 3, 0, 4, 2, 5}, 0, 0, "descending indices");
    testing::expect_close(sort(x).values, {-INFINITY, 1, 2, 3, nan, nan}, 0, 0, "unstable");
    TensorPair top = topk(x, 3);
    testing::expect_close(top.values, {nan, nan, 3}, 0, 0, "topk largest");
    testing::expect_close(topk(x, 2, 0, false).values, {-INFINITY, 1}, 0, 0, "topk smallest");
  }
}

TEST(SortingOps, TopkUnsortedHoldsTheTopValues) {
  const Tensor x = testing::random_tensor({8, 500}, DType::f64, -1, 1, 5);
  for (int64_t k : {1, 5, 300, 500}) {
    const TensorPair got = topk(x, k, -1, true, false);
    const Expected want = ref_sorted(x, 1, true, k, false);
    ASSERT_EQ(got.values.shape(), (Dims{8, k}));
    for (int64_t r = 0; r < 8; ++r) {  // the same multiset per row
      std::vector<double> g, w;
      for (int64_t j = 0; j < k; ++j) {
        g.push_back(at(got.values, r * k + j));
        w.push_back(want.values[static_cast<size_t>(r * k + j)]);
        EXPECT_EQ(at(x, r * 500 + static_cast<int64_t>(at(got.indices, r * k + j))), g.back());
      }
      std::sort(g.begin(), g.end());
      std::sort(w.begin(), w.end());
      EXPECT_EQ(g, w) << "k " << k << " row " << r;
    }
  }
}

TEST(SortingOps, HandWrittenValues) {
  testing::expect_close(cumsum(tensor({1, 2, 3, 4}), 0), {1, 3, 6, 10}, 0, 0, "cumsum");
  const Tensor b = tensor({1, 0, 1, 1}).to(DType::boolean);
  EXPECT_EQ(b.cumsum(0).dtype(), DType::i64);
  testing::expect_close(b.cumsum(0), {1, 1, 2, 3}, 0, 0, "cumsum bool");
  EXPECT_EQ(cumsum(tensor({1, 2}, {.dtype = DType::u8}), 0).dtype(), DType::i64);
  const Tensor m = tensor({1, 2, 3, 4, 5, 6, 7, 8, 9}).view({3, 3});
  testing::expect_close(m.tril(), {1, 0, 0, 4, 5, 0, 7, 8, 9}, 0, 0, "tril");
  testing::expect_close(m.triu(1), {0, 2, 3, 0, 0, 6, 0, 0, 0}, 0, 0, "triu 1");
  testing::expect_close(tril(m, -1), {0, 0, 0, 4, 0, 0, 7, 8, 0}, 0, 0, "tril -1");
  testing::expect_close(triu(m, std::numeric_limits<int64_t>::min()), testing::values(m), 0, 0, "triu min");
  const TensorPair s = topk(tensor({5}).view({}), 1);
  EXPECT_EQ(s.values.dim(), 0);
  EXPECT_EQ(s.values.item<double>(), 5.0);
  EXPECT_EQ(topk(tensor({5}).view({}), 0).values.shape(), (Dims{0}));
  const TensorPair z = sort(tensor({4}).view({}));
  EXPECT_EQ(z.indices.dim(), 0);
  EXPECT_EQ(z.indices.item<int64_t>(), 0);
}


// ---- gradients of the values (indices carry none). Continuous random f64 inputs have no ties,
// where sort and topk are not differentiable.
TEST(SortingOps, GradcheckTable) {
  const std::vector<Sample> samples = {{{5, 7}, 1}, {{4, 3, 6}, -2}, {{4, 3, 6}, 0}, {{9}, 0}, {{}, 0}, {{3, 0, 4}, 1}};
  for (const OpCase& c : op_cases())
    for (const Sample& s : samples) {
      if (is_tri(c) && s.shape.size() < 2) continue;
      std::ostringstream what;
      what << c.name << " shape " << s.shape << " dim " << s.dim;
      const Tensor x = testing::random_tensor(s.shape, DType::f64, -4, 4, 9).requires_grad_();
      auto check = [&](const std::function<TensorList(const TensorList&)>& fn, const std::string& how) {
        const autograd::GradcheckResult r = autograd::gradcheck(fn, {x});
        EXPECT_TRUE(r.ok) << what.str() << how << ": " << r.message;
      };
      check([&](const TensorList& in) { return TensorList{c.run(in[0], s.dim).values}; }, "");
      if (s.shape.size() < 2) continue;
      // A transposed (non-contiguous) input.
      check([&](const TensorList& in) { return TensorList{c.run(in[0].transpose(0, -1), s.dim).values}; },
            " transposed");
    }
}

TEST(SortingOps, Errors) {
  const Tensor x = testing::random_tensor({3, 4}, DType::f32);
  testing::expect_error([&] { topk(x, 5, 1); }, {"topk", "k = 5", "dim 1 of size 4"});
  testing::expect_error([&] { topk(x, -1); }, {"topk", "k = -1"});
  testing::expect_error([&] { sort(x, 2); }, {"sort", "dim 2", "2-d"});
  testing::expect_error([&] { cumsum(x, -3); }, {"cumsum", "dim -3"});
  testing::expect_error([&] { topk(x, 1, 3); }, {"topk", "dim 3"});
  testing::expect_error([&] { tril(tensor({1, 2})); }, {"tril", "at least 2 dims", "[2]"});
  testing::expect_error([&] { triu(tensor({1}).view({})); }, {"triu", "at least 2 dims", "[]"});
  testing::expect_error([&] { sort(Tensor()); }, {"sort", "undefined"});
}

}  // namespace
}  // namespace kiln
