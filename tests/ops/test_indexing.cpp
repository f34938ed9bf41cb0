// Tests of joining, gathering and scattering against naive f64 references over multi-indices that
// read inputs through testing::at. One table of cases; generic tests loop over it for every dtype,
// layout (contiguous, strided, transposed) and shape (0-d, empty, thread-sized), and f64 gradcheck
// with respect to every floating input. split, chunk, one_hot, embedding (with padding_idx), cat's
// promotion rules and every error message have their own tests.
#include <algorithm>
#include <numeric>
#include <random>
#include <sstream>

#include "autograd/gradcheck.h"
#include "testing.h"

namespace kiln {
namespace {

using testing::at;
using Idx = std::vector<int64_t>;

Dims as_1d(const Dims& s) { return s.empty() ? Dims{1} : s; }
int64_t numel_of(const Dims& s) {
  int64_t n = 1;
  for (int64_t v : s) n *= v;
  return n;
}
int64_t idx_at(const Idx& i, int d) { return i[static_cast<size_t>(d)]; }

// The inputs of one op call: ts are (x, index, src) for the index ops, the list for cat/stack.
struct Args {
  std::vector<Tensor> ts;
  int64_t dim = 0;
  Scalar alpha = 1;
};

struct OpCase {
  std::string name;
  std::function<Args(const Dims& shape, int64_t dim, DType t, uint64_t seed)> sample;  // x of `shape`
  std::function<Tensor(const Args&)> run;
  std::function<Dims(const Args&, int d)> out_shape;                 // d: dim wrapped for x
  std::function<std::vector<double>(const Args&, int d, const Dims& out_shape)> ref;  // the output, row-major
  std::vector<DType> dtypes = testing::kAllDTypes;
  bool takes_0d = true;
};

// Random int64 values in [0, hi) of `shape` (empty when hi is 0), in a std::vector first.
Tensor random_index(const Dims& shape, int64_t hi, uint64_t seed, DType t = DType::i64) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> v(static_cast<size_t>(numel_of(shape)));
  for (auto& e : v) e = hi > 0 ? static_cast<int64_t>(rng() % static_cast<uint64_t>(hi)) : 0;
  return kiln::tensor<int64_t>(v, shape).to(t);
}

// An index of `shape` whose slices along dim hold distinct values from [0, n): scatter without
// duplicate targets, whose result torch leaves unspecified.
Tensor distinct_index(const Dims& shape, int dim, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const Dims s = as_1d(shape);
  std::vector<int64_t> v(static_cast<size_t>(numel_of(s)));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t f = 0; f < numel_of(s); ++f) {
    Idx i = testing::unravel(f, s);
    if (idx_at(i, dim) != 0) continue;
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t j = 0; j < s[dim]; ++j) {
      i[static_cast<size_t>(dim)] = j;
      v[static_cast<size_t>(testing::ravel(i, s))] = perm[static_cast<size_t>(j)];
    }
  }
  return kiln::tensor<int64_t>(v, shape);
}

// The value of t at multi-index i (a 0-d tensor counts as shape [1]).
double value_at(const Tensor& t, const Idx& i) { return at(t, testing::ravel(i, as_1d(t.shape()))); }

// index's shape for gather/scatter: one smaller in the other dims (torch allows <=), `at_dim` at dim.
Dims smaller(const Dims& shape, int d, int64_t at_dim) {
  if (shape.empty()) return shape;
  Dims s = shape;
  for (int k = 0; k < s.size(); ++k) s[k] = k == d ? at_dim : std::max<int64_t>(s[k] - 1, std::min<int64_t>(s[k], 1));
  return s;
}

// A reference that computes each output element on its own from its multi-index.
using ElementRef = std::function<double(const Args&, int d, const Idx& out_idx)>;
std::function<std::vector<double>(const Args&, int, const Dims&)> per_element(ElementRef f) {
  return [f](const Args& a, int d, const Dims& shape) {
    std::vector<double> out(static_cast<size_t>(numel_of(shape)));
    for (int64_t i = 0; i < numel_of(shape); ++i)
      out[static_cast<size_t>(i)] = f(a, d, testing::unravel(i, as_1d(shape)));
    return out;
  };
}

// Scatter's reference: start from x, then apply each index element (the index is distinct or the
// op adds, so order does not matter). Bool sums saturate at true.
std::vector<double> ref_scatter(const Args& a, int d, bool add, const std::optional<double>& value) {
  const Tensor &x = a.ts[0], &index = a.ts[1];
  std::vector<double> out = testing::values(x);
  const Dims is = as_1d(index.shape());
  for (int64_t f = 0; f < numel_of(is); ++f) {
    const Idx i = testing::unravel(f, is);
    Idx o = i;
    o[static_cast<size_t>(d)] = static_cast<int64_t>(value_at(index, i));
    const double v = value ? *value : value_at(a.ts[2], i);
    double& r = out[static_cast<size_t>(testing::ravel(o, as_1d(x.shape())))];
    r = add ? r + v : v;
    if (x.dtype() == DType::boolean) r = r != 0;
  }
  return out;
}

Dims same_as_x(const Args& a, int) { return a.ts[0].shape(); }

std::vector<OpCase> op_cases() {
  std::vector<OpCase> cases;
  cases.push_back({
      "cat",
      [](const Dims& s, int64_t dim, DType t, uint64_t seed) {
        const int d = wrap_dim(dim, s.size(), "test");
        Args a{{}, dim};
        for (int64_t extra : {0, 2, -1}) {
          Dims p = s;
          p[d] = std::max<int64_t>(p[d] + extra, 0);
          a.ts.push_back(testing::random_tensor(p, t, -9, 9, seed + static_cast<uint64_t>(extra + 5)));
        }
        return a;
      },
      [](const Args& a) { return cat(a.ts, a.dim); },
      [](const Args& a, int d) {
        Dims s = a.ts[0].shape();
        s[d] = 0;
        for (const Tensor& t : a.ts) s[d] += t.shape()[d];
        return s;
      },
      per_element([](const Args& a, int d, const Idx& o) {
        Idx i = o;
        for (const Tensor& t : a.ts) {
          if (idx_at(i, d) < t.shape()[d]) return value_at(t, i);
          i[static_cast<size_t>(d)] -= t.shape()[d];
        }
        return -1e300;
      }),
      testing::kAllDTypes, false});
  cases.push_back({
      "stack",
      [](const Dims& s, int64_t dim, DType t, uint64_t seed) {
        return Args{{testing::random_tensor(s, t, -9, 9, seed), testing::random_tensor(s, t, -9, 9, seed + 1)}, dim};
      },
      [](const Args& a) { return stack(a.ts, a.dim); },
      [](const Args& a, int) {
        Dims s = a.ts[0].shape();
        s.insert(wrap_dim(a.dim, s.size() + 1, "test"), 2);
        return s;
      },
      per_element([](const Args& a, int, const Idx& o) {
        const int d = wrap_dim(a.dim, a.ts[0].dim() + 1, "test");
        Idx i = o;
        i.erase(i.begin() + d);
        const Tensor& part = a.ts[static_cast<size_t>(idx_at(o, d))];
        return i.empty() ? at(part, 0) : value_at(part, i);
      })});
  cases.push_back({
      "gather",
      [](const Dims& s, int64_t dim, DType t, uint64_t seed) {
        const int d = wrap_dim(dim, s.size(), "test");
        const int64_t n = as_1d(s)[d];
        const Tensor x = testing::random_tensor(s, t, -9, 9, seed);
        return Args{{x, random_index(smaller(s, d, n ? n + 2 : 0), n, seed + 1)}, dim};
      },
      [](const Args& a) { return a.ts[0].gather(a.dim, a.ts[1]); },
      [](const Args& a, int) { return a.ts[1].shape(); },
      per_element([](const Args& a, int d, const Idx& o) {
        Idx i = o;
        i[static_cast<size_t>(d)] = static_cast<int64_t>(value_at(a.ts[1], o));
        return value_at(a.ts[0], i);
      })});
  auto scatter_sample = [](bool distinct) {
    return [distinct](const Dims& s, int64_t dim, DType t, uint64_t seed) {
      const int d = wrap_dim(dim, s.size(), "test");
      const int64_t n = as_1d(s)[d];
      const Dims is = smaller(s, d, distinct ? std::min<int64_t>(n, 3) : 2 * n);
      Dims ss = is;  // src may be larger than the index
      for (int k = 0; k < ss.size(); ++k) ss[k] += 1;
      const Tensor index = distinct ? distinct_index(is, d, n, seed + 1) : random_index(is, n, seed + 1);
      const Tensor x = testing::random_tensor(s, t, -9, 9, seed);
      return Args{{x, index, testing::random_tensor(ss, t, -9, 9, seed + 2)}, dim};
    };
  };
  cases.push_back({"scatter", scatter_sample(true),
                   [](const Args& a) { return scatter(a.ts[0], a.dim, a.ts[1], a.ts[2]); }, same_as_x,
                   [](const Args& a, int d, const Dims&) { return ref_scatter(a, d, false, std::nullopt); }});
  cases.push_back({"scatter_value", scatter_sample(true),
                   [](const Args& a) { return scatter(a.ts[0], a.dim, a.ts[1], Scalar(1)); }, same_as_x,
                   [](const Args& a, int d, const Dims&) { return ref_scatter(a, d, false, 1.0); }});
  cases.push_back({"scatter_add", scatter_sample(false),
                   [](const Args& a) { return scatter_add(a.ts[0], a.dim, a.ts[1], a.ts[2]); }, same_as_x,
                   [](const Args& a, int d, const Dims&) { return ref_scatter(a, d, true, std::nullopt); },
                   testing::kAllDTypes});
  for (DType it : {DType::i64, DType::i32}) {
    const std::string suffix = it == DType::i32 ? "_int32" : "";
    cases.push_back({
        "index_select" + suffix,
        [it](const Dims& s, int64_t dim, DType t, uint64_t seed) {
          const int64_t n = as_1d(s)[wrap_dim(dim, s.size(), "test")];
          const Dims is = s.empty() ? Dims{} : Dims{n ? n + 3 : 0};
          return Args{{testing::random_tensor(s, t, -9, 9, seed), random_index(is, n, seed + 1, it)}, dim};
        },
        [](const Args& a) { return a.ts[0].index_select(a.dim, a.ts[1]); },
        [](const Args& a, int d) {
          Dims s = a.ts[0].shape();
          if (!s.empty()) s[d] = a.ts[1].numel();
          return s;
        },
        per_element([](const Args& a, int d, const Idx& o) {
          Idx i = o;
          i[static_cast<size_t>(d)] = static_cast<int64_t>(at(a.ts[1], idx_at(o, d)));
          return value_at(a.ts[0], i);
        })});
    cases.push_back({
        "index_add" + suffix,
        [it](const Dims& s, int64_t dim, DType t, uint64_t seed) {
          const int d = wrap_dim(dim, s.size(), "test");
          const int64_t n = as_1d(s)[d], k = s.empty() ? 1 : (n ? n + 3 : 0);
          Dims ss = s;
          if (!s.empty()) ss[d] = k;
          const Tensor index = random_index(s.empty() ? Dims{} : Dims{k}, n, seed + 1, it);
          const Tensor x = testing::random_tensor(s, t, -9, 9, seed);
          return Args{{x, index, testing::random_tensor(ss, t, -9, 9, seed + 2)}, dim,
                      is_floating(t) ? Scalar(0.5) : Scalar(2)};
        },
        [](const Args& a) { return index_add(a.ts[0], a.dim, a.ts[1], a.ts[2], a.alpha); }, same_as_x,
        [](const Args& a, int d, const Dims&) {  // out = x, then each src element adds into its row
          const Tensor &x = a.ts[0], &index = a.ts[1], &src = a.ts[2];
          std::vector<double> out = testing::values(x);
          const Dims ss = as_1d(src.shape());
          for (int64_t f = 0; f < numel_of(ss); ++f) {
            const Idx i = testing::unravel(f, ss);
            Idx o = i;
            o[static_cast<size_t>(d)] = static_cast<int64_t>(at(index, idx_at(i, d)));
            out[static_cast<size_t>(testing::ravel(o, as_1d(x.shape())))] += a.alpha.to_double() * at(src, f);
          }
          return out;
        },
        {DType::f32, DType::f64, DType::f16, DType::bf16, DType::i64, DType::i32, DType::u8}});
  }
  return cases;
}

Args noncontiguous(Args a) {
  for (Tensor& t : a.ts) t = testing::noncontiguous(t);
  return a;
}

// Values wrap as the dtype wraps (int32 and u8 sums), so the reference is cast like the result.
double as_dtype_value(double v, DType t) {
  if (t == DType::i32) return static_cast<double>(static_cast<int32_t>(static_cast<int64_t>(v)));
  if (t == DType::u8) return static_cast<double>(static_cast<uint8_t>(static_cast<int64_t>(v)));
  return v;
}

void check_case(const OpCase& c, const Args& a, const std::string& what) {
  const Tensor got = c.run(a);
  const int d = wrap_dim(a.dim, a.ts[0].dim(), "test");
  const Dims want_shape = c.out_shape(a, d);
  ASSERT_EQ(got.shape(), want_shape) << what;
  ASSERT_EQ(got.dtype(), a.ts[0].dtype()) << what;
  std::vector<double> want = c.ref(a, d, want_shape);
  for (double& v : want) v = as_dtype_value(v, got.dtype());
  // Copies are exact; sums round once per addition in the output dtype.
  const bool sums = c.name.find("add") != std::string::npos;
  const double tol = sums ? testing::tolerance(got.dtype()) : 0.0;
  testing::expect_close(got, want, tol, 8 * tol, what);
}

struct Sample {
  Dims shape;
  int64_t dim;
};
const std::vector<Sample> kSamples = {{{5, 7}, 1},  {{4, 3, 6}, -2}, {{4, 3, 6}, 0}, {{9}, 0},
                                      {{9}, -1},    {{}, 0},         {{3, 0, 4}, 1}, {{3, 0, 4}, 2}};

TEST(IndexingOps, MatchReferenceForEveryDtypeAndLayout) {
  for (const OpCase& c : op_cases()) {
    for (DType t : c.dtypes) {
      for (const Sample& s : kSamples) {
        if (s.shape.empty() && !c.takes_0d) continue;
        std::ostringstream os;
        os << c.name << " " << t << " shape " << s.shape << " dim " << s.dim;
        const Args a = c.sample(s.shape, s.dim, t, 17);
        check_case(c, a, os.str());
        check_case(c, noncontiguous(a), os.str() + " noncontiguous");
      }
    }
  }
}

// Transposed inputs: the sliced dim is no longer the innermost in memory.
TEST(IndexingOps, TransposedInputs) {
  for (const OpCase& c : op_cases()) {
    Args a = c.sample({6, 5, 4}, 1, DType::f32, 23);
    for (Tensor& t : a.ts) t = t.dim() == 3 ? t.transpose(0, 2).contiguous().transpose(0, 2) : t;
    check_case(c, a, c.name + " transposed");
  }
}

// Enough slices (and rows) to be spread over threads; integer sums check the scatter order too.
TEST(IndexingOps, SlicesOverTheThreadingThreshold) {
  for (const OpCase& c : op_cases()) {
    for (DType t : {DType::f32, DType::i64}) {
      if (t == DType::i64 && (c.name != "scatter_add" && c.name != "index_add")) continue;
      check_case(c, c.sample({64, 600}, 1, t, 31), c.name + " large dim 1");
      check_case(c, c.sample({600, 64}, 0, t, 37), c.name + " large dim 0");
    }
  }
}

TEST(IndexingOps, ScatterAddIsDeterministicWithManyDuplicates) {
  // 100000 additions into 3 targets per column: the sum order must not depend on the threads.
  const Tensor src = testing::random_tensor({100000, 8}, DType::f32, -1, 1, 41);
  const Tensor index = random_index({100000, 8}, 3, 43);
  const Tensor zero = zeros({3, 8});
  const Tensor a = scatter_add(zero, 0, index, src), b = scatter_add(zero, 0, index, src);
  EXPECT_EQ(testing::values(a), testing::values(b));
  const int threads = get_num_threads();
  set_num_threads(1);
  const Tensor serial = scatter_add(zero, 0, index, src);
  set_num_threads(threads);
  EXPECT_EQ(testing::values(serial), testing::values(a));
  const Tensor rows = random_index({100000}, 3, 47);
  EXPECT_EQ(testing::values(index_add(zero, 0, rows, src)), testing::values(index_add(zero, 0, rows, src)));
}

TEST(IndexingOps, CatPromotesAndSkipsLegacyEmptyTensors) {
  const Tensor a = tensor({1, 2}, {.dtype = DType::i32}), b = tensor({2.5});
  const Tensor c = cat({a, b});
  EXPECT_EQ(c.dtype(), DType::f32);
  testing::expect_close(c, {1, 2, 2.5}, 0, 0, "cat promotes");
  EXPECT_EQ(cat({a, tensor({7}, {.dtype = DType::f64})}).dtype(), DType::f64);
  const Tensor m = testing::random_tensor({2, 3}, DType::f32);
  const Tensor skip = cat({empty({0}), m, empty({0}, {.dtype = DType::i64})}, 1);
  EXPECT_EQ(skip.shape(), (Dims{2, 3}));
  testing::expect_close(skip, testing::values(m), 0, 0, "legacy empty skipped");
  EXPECT_EQ(cat({empty({0}), empty({0})}).shape(), (Dims{0}));
  EXPECT_EQ(cat({empty({2, 0}), m}, 1).shape(), (Dims{2, 3}));
  EXPECT_EQ(stack({tensor({1}).view({}), tensor({2}).view({})}).shape(), (Dims{2}));
}

TEST(IndexingOps, SplitAndChunkAreViews) {
  const Tensor x = arange(10, {.dtype = DType::f32}).view({2, 5});
  auto parts = split(x, 2, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[2].shape(), (Dims{2, 1}));
  testing::expect_close(parts[1], {2, 3, 7, 8}, 0, 0, "split 2");
  EXPECT_EQ(parts[0].data_ptr(), x.data_ptr());  // a view, not a copy
  auto sized = split(x, {1, 0, 4}, -1);
  ASSERT_EQ(sized.size(), 3u);
  EXPECT_EQ(sized[1].shape(), (Dims{2, 0}));
  testing::expect_close(sized[2], {1, 2, 3, 4, 6, 7, 8, 9}, 0, 0, "split sizes");
  // torch.chunk: ceil(6 / 4) = 2 per piece gives 3 pieces, not 4.
  EXPECT_EQ(chunk(arange(6), 4).size(), 3u);
  EXPECT_EQ(chunk(arange(5), 2)[1].shape(), (Dims{2}));
  EXPECT_EQ(chunk(arange(5), 5).size(), 5u);
  EXPECT_EQ(chunk(empty({0, 3}), 3).size(), 3u);
  EXPECT_EQ(split(empty({0}), 0).size(), 1u);
  EXPECT_EQ(split(arange(5), 10).size(), 1u);
}

TEST(IndexingOps, OneHotAndEmbedding) {
  const Tensor idx = kiln::tensor<int64_t>({2, 0, 1, 2}, Dims{2, 2});
  const Tensor oh = one_hot(idx);
  EXPECT_EQ(oh.dtype(), DType::i64);
  EXPECT_EQ(oh.shape(), (Dims{2, 2, 3}));
  testing::expect_close(oh, {0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1}, 0, 0, "one_hot");
  EXPECT_EQ(one_hot(idx, 5).shape(), (Dims{2, 2, 5}));
  EXPECT_EQ(one_hot(kiln::tensor<int64_t>({}, Dims{0}), 4).shape(), (Dims{0, 4}));
  EXPECT_EQ(one_hot(kiln::tensor<int64_t>({3}, Dims{})).shape(), (Dims{4}));

  for (DType t : testing::kAllDTypes) {
    const Tensor w = testing::random_tensor({10, 6}, t, -9, 9, 3);
    for (const Tensor& ids : {random_index({3, 4}, 10, 5), random_index({3, 4}, 10, 5, DType::i32).t(),
                              random_index({}, 10, 7), random_index({0, 2}, 10, 7)}) {
      for (const Tensor& weight : {w, testing::noncontiguous(w)}) {
        const Tensor e = embedding(weight, ids);
        Dims want = ids.shape();
        want.push_back(6);
        ASSERT_EQ(e.shape(), want);
        for (int64_t f = 0; f < e.numel(); ++f)
          ASSERT_EQ(at(e, f), at(weight, static_cast<int64_t>(at(ids, f / 6)) * 6 + f % 6)) << t << " element " << f;
      }
    }
  }
}


// ---- gradients: every floating input of a case requires grad (indices never do). The ops are
// linear in their floating inputs, so any values pass; scatter's samples have distinct indices
// (with duplicates the surviving write, and so the gradient, is unspecified).

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

// The same values in a non-contiguous layout, built from differentiable ops so gradients flow back.
Tensor noncontiguous_copy(const Tensor& x) { return x.dim() == 0 ? x : stack({x, zeros_like(x)}, -1).select(-1, 0); }

TEST(IndexingOps, GradcheckTable) {
  const std::vector<Sample> samples = {{{5, 7}, 1}, {{4, 3, 6}, -2}, {{4, 3, 6}, 0}, {{9}, 0}, {{}, 0}, {{3, 0, 4}, 1}};
  for (const OpCase& c : op_cases()) {
    if (std::find(c.dtypes.begin(), c.dtypes.end(), DType::f64) == c.dtypes.end()) continue;
    for (const Sample& s : samples) {
      if (s.shape.empty() && !c.takes_0d) continue;
      const Args a = c.sample(s.shape, s.dim, DType::f64, 31);
      TensorList inputs;
      std::vector<size_t> slots;  // where each checked input sits in a.ts
      for (size_t i = 0; i < a.ts.size(); ++i)
        if (a.ts[i].is_floating()) {
          inputs.push_back(a.ts[i].detach().contiguous().requires_grad_());
          slots.push_back(i);
        }
      auto run_with = [&](const TensorList& in, bool noncontiguous) {
        Args b = a;
        for (size_t k = 0; k < slots.size(); ++k) b.ts[slots[k]] = noncontiguous ? noncontiguous_copy(in[k]) : in[k];
        return TensorList{c.run(b)};
      };
      std::ostringstream what;
      what << c.name << " shape " << s.shape << " dim " << s.dim;
      expect_gradcheck([&](const TensorList& in) { return run_with(in, false); }, inputs, what.str());
      expect_gradcheck([&](const TensorList& in) { return run_with(in, true); }, inputs, what.str() + " noncontiguous");
    }
  }
}

TEST(IndexingOps, GradientsOfSplitChunkStackAndEmbedding) {
  const Tensor x = testing::random_tensor({4, 6}, DType::f64, -2, 2, 41).requires_grad_();
  // All pieces used, some pieces used, pieces of size 0.
  expect_gradcheck([](const TensorList& in) { return TensorList(split(in[0], 4, 1)); }, {x}, "split all");
  expect_gradcheck([](const TensorList& in) { return TensorList{split(in[0], {1, 0, 3}, 0)[2] * 2.0}; }, {x},
                   "split one piece");
  expect_gradcheck([](const TensorList& in) { return TensorList{chunk(in[0], 3, 1)[1].exp()}; }, {x}, "chunk");
  expect_gradcheck([](const TensorList& in) { return TensorList{stack({in[0], in[0] * 3.0}, 1)}; }, {x}, "stack");
  {  // one node for all the pieces, and the pieces are views
    auto parts = split(x, 2, 0);
    EXPECT_TRUE(parts[0].grad_fn().get() != nullptr);
    EXPECT_TRUE(parts[0].grad_fn().get() == parts[1].grad_fn().get());
    testing::expect_error([&] { parts[0].mul_(2.0); }, {"mul_", "view"});
    (parts[1] * 3.0).sum().backward();
    testing::expect_close(x.grad(), {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}, 0, 0,
                          "split gradient");
  }
  // embedding: rows sum the gradients of the positions that used them; padding_idx gets none.
  const Tensor w = testing::random_tensor({5, 3}, DType::f64, -1, 1, 42).requires_grad_();
  const Tensor ids = kiln::tensor<int64_t>({1, 3, 1, 4, 0, 1}, Dims{2, 3});
  expect_gradcheck([&](const TensorList& in) { return TensorList{embedding(in[0], ids)}; }, {w}, "embedding");
  const std::vector<double> row_hits = {1, 3, 0, 1, 1};
  for (std::optional<int64_t> padding :
       {std::optional<int64_t>(), std::optional<int64_t>(1), std::optional<int64_t>(-4)}) {
    const TensorList g = autograd::grad({embedding(w, ids, padding).sum()}, {w});
    std::vector<double> want;
    for (int64_t r = 0; r < 5; ++r)
      for (int k = 0; k < 3; ++k) want.push_back(padding && r == 1 ? 0.0 : row_hits[static_cast<size_t>(r)]);
    testing::expect_close(g[0], want, 0, 0, "embedding padding_idx");
  }
  testing::expect_error([&] { embedding(w, ids, 5); }, {"embedding", "padding_idx", "5"});
  EXPECT_FALSE(one_hot(ids).requires_grad());
}

TEST(IndexingOps, Errors) {
  const Tensor x = testing::random_tensor({3, 4}, DType::f32);
  const Tensor idx = kiln::tensor<int64_t>({0, 1, 5, 2}, Dims{1, 4});
  const Tensor neg = kiln::tensor<int64_t>({0, -1}, Dims{1, 2});
  const std::vector<std::pair<std::function<void()>, std::vector<std::string>>> cases = {
      // cat and stack
      {[&] { cat({}); }, {"cat", "non-empty"}},
      {[&] { cat({x, zeros({5, 4}), zeros({3, 2})}); },
       {"cat", "except in dim 0", "tensor 0", "[3, 4]", "tensor 2", "[3, 2]", "differ in dim 1"}},
      {[&] { cat({x, zeros({3, 4, 1})}, 1); }, {"cat", "tensor 1", "[3, 4, 1]", "[3, 4]"}},
      {[&] { cat({x, tensor({1}).view({})}); }, {"cat", "zero-dimensional", "position 1"}},
      {[&] { cat({x, x}, 2); }, {"cat", "dim 2"}},
      {[&] { stack({x, zeros({4, 3})}); }, {"stack", "tensor 1", "[4, 3]", "[3, 4]"}},
      {[&] { stack({x}, 3); }, {"stack", "dim 3"}},
      // split and chunk
      {[&] { split(x, {1, 1}, 0); }, {"split", "[1, 1]", "size 3", "dim 0"}},
      {[&] { split(x, -1); }, {"split", "-1"}},
      {[&] { split(x, 0); }, {"split", "size 3"}},
      {[&] { split(tensor({1}).view({}), 1); }, {"split", "0-d"}},
      {[&] { chunk(x, 0); }, {"chunk", "0"}},
      // gather
      {[&] { gather(x, 1, idx); }, {"gather", "index 5", "dim 1", "size 4"}},
      {[&] { gather(x, 1, neg); }, {"gather", "index -1", "dim 1", "size 4"}},
      {[&] { gather(x, 1, idx.to(DType::i32)); }, {"gather", "int64", "int32"}},
      {[&] { gather(x, 0, zeros({3}, {.dtype = DType::i64})); }, {"gather", "[3]", "[3, 4]", "dims"}},
      {[&] { gather(x, 0, zeros({2, 5}, {.dtype = DType::i64})); }, {"gather", "[2, 5]", "[3, 4]", "dim 1"}},
      {[&] { gather(x, 2, idx); }, {"gather", "dim 2"}},
      // scatter, scatter_add
      {[&] { scatter(x, 1, idx, ones({1, 4})); }, {"scatter", "index 5", "dim 1", "size 4"}},
      {[&] { scatter_add(x, 1, neg, ones({1, 2})); }, {"scatter_add", "index -1", "size 4"}},
      {[&] { scatter(x, 1, idx, ones({1, 4}, {.dtype = DType::f64})); }, {"scatter", "float64", "float32"}},
      {[&] { scatter(x, 1, idx, ones({1, 3})); }, {"scatter", "src", "[1, 3]", "dim 1"}},
      {[&] { scatter(x, 0, zeros({1, 5}, {.dtype = DType::i64}), ones({1, 5})); },
       {"scatter", "[1, 5]", "[3, 4]", "dim 1"}},
      {[&] { scatter(zeros({2}, {.dtype = DType::i64}), 0, zeros({1}, {.dtype = DType::i64}), Scalar(1.5)); },
       {"scatter", "1.5", "int64"}},
      {[&] { scatter_add(x, 0, idx.to(DType::f32), x); }, {"scatter_add", "int64", "float32"}},
      // index_select, index_add
      {[&] { index_select(x, 0, tensor<int64_t>({0, 3})); }, {"index_select", "index 3", "dim 0", "size 3"}},
      {[&] { index_select(x, 1, tensor<int32_t>({-2})); }, {"index_select", "index -2", "size 4"}},
      {[&] { index_select(x, 0, tensor({0.0})); }, {"index_select", "int64 or int32", "float32"}},
      {[&] { index_select(x, 0, zeros({1, 1}, {.dtype = DType::i64})); }, {"index_select", "1-d", "[1, 1]"}},
      {[&] { index_select(tensor({1}).view({}), 0, tensor<int64_t>({0, 0})); }, {"index_select", "0-d", "[2]"}},
      {[&] { index_add(x, 0, tensor<int64_t>({3}), ones({1, 4})); }, {"index_add", "index 3", "dim 0", "size 3"}},
      {[&] { index_add(x, 0, tensor<int64_t>({0}), ones({1, 5})); }, {"index_add", "[1, 5]", "[3, 4]"}},
      {[&] { index_add(x, 0, tensor<int64_t>({0, 1}), ones({1, 4})); }, {"index_add", "length 2"}},
      {[&] { index_add(x, 0, tensor<int64_t>({0}), ones({1, 4}, {.dtype = DType::f16})); }, {"index_add", "float16"}},
      {[&] {
         const Tensor i32 = zeros({2}, {.dtype = DType::i32});
         index_add(i32, 0, tensor<int64_t>({0}), i32.narrow(0, 0, 1), 0.5);
       },
       {"index_add", "alpha", "0.5"}},
      // one_hot, embedding
      {[&] { one_hot(tensor<int64_t>({1, -3})); }, {"one_hot", "non-negative", "-3"}},
      {[&] { one_hot(tensor<int64_t>({1, 4}), 3); }, {"one_hot", "4", "num_classes = 3"}},
      {[&] { one_hot(tensor<int64_t>({}, Dims{0})); }, {"one_hot", "empty"}},
      {[&] { one_hot(tensor<int32_t>({1})); }, {"one_hot", "int64", "int32"}},
      {[&] { embedding(x, tensor<int64_t>({0, 3})); }, {"embedding", "index 3", "size 3"}},
      {[&] { embedding(zeros({2, 3, 4}), tensor<int64_t>({0})); }, {"embedding", "2-d", "[2, 3, 4]"}},
      {[&] { embedding(x, tensor({1.0})); }, {"embedding", "int64 or int32", "float32"}},
  };
  for (const auto& [fn, fragments] : cases) testing::expect_error(fn, fragments);
}

}  // namespace
}  // namespace kiln
