// Views share storage and never copy; reshape copies only when no view exists; every impossible
// view is a kiln::Error naming the op and the shapes. Gradients: a table of every view op, each
// gradchecked in f64 on contiguous and non-contiguous inputs; views of graph tensors refuse in-place
// changes.
#include "autograd/gradcheck.h"
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
using kiln::testing::at;
using kiln::testing::expect_error;

namespace {
Tensor iota(const Dims& shape, DType dtype = DType::f32) {
  return arange(0, checked_numel(shape, "iota"), 1, {.dtype = dtype}).view(shape);
}
// Element at multi-index idx of t, read through its strides.
double elem(const Tensor& t, std::initializer_list<int64_t> idx) {
  return at(t, kt::ravel(std::vector<int64_t>(idx), t.shape()));
}
bool shares(const Tensor& a, const Tensor& b) { return a.storage().data() == b.storage().data(); }
}  // namespace

TEST(Views, ViewAndReshapeShareStorage) {
  Tensor a = iota({2, 3, 4});
  Tensor v = a.view({6, -1});
  EXPECT_EQ(v.shape(), (Dims{6, 4}));
  EXPECT_TRUE(shares(a, v));
  EXPECT_EQ(elem(v, {5, 3}), 23);
  Tensor r = a.reshape({4, 6});
  EXPECT_TRUE(shares(a, r));
  v.fill_(7);
  EXPECT_EQ(elem(a, {1, 2, 3}), 7);  // writes through a view reach the base
}

TEST(Views, ReshapeCopiesOnlyWhenNeeded) {
  Tensor a = iota({3, 4});
  Tensor t = a.t();
  EXPECT_FALSE(t.is_contiguous());
  expect_error([&] { (void)t.view({12}); }, {"view", "[4, 3]", "reshape"});
  Tensor r = t.reshape({12});
  EXPECT_FALSE(shares(a, r));
  const std::vector<double> want = {0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11};
  kt::expect_close(r, want, 0, 0, "reshape of a transpose");
  // A transposed pair of dims that stays contiguous in memory can still be viewed.
  Tensor b = iota({2, 3, 4}).permute({1, 0, 2});
  EXPECT_NO_THROW((void)b.view({3, 2, 2, 2}));
}

TEST(Views, TransposePermuteT) {
  Tensor a = iota({2, 3, 4});
  Tensor p = a.permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Dims{4, 2, 3}));
  EXPECT_EQ(elem(p, {3, 1, 2}), elem(a, {1, 2, 3}));
  Tensor tr = a.transpose(-1, 0);
  EXPECT_EQ(tr.shape(), (Dims{4, 3, 2}));
  EXPECT_EQ(elem(tr, {1, 2, 0}), elem(a, {0, 2, 1}));
  EXPECT_EQ(iota({5}).t().shape(), (Dims{5}));
  expect_error([&] { (void)a.t(); }, {"t:", "[2, 3, 4]"});
  expect_error([&] { (void)a.permute({0, 0, 1}); }, {"permute", "repeats"});
  expect_error([&] { (void)a.permute({0, 1}); }, {"permute", "[2, 3, 4]"});
  expect_error([&] { (void)a.transpose(0, 3); }, {"transpose", "dim 3", "3-d"});
}

TEST(Views, NarrowSliceSelect) {
  Tensor a = iota({4, 10});
  Tensor n = a.narrow(1, 2, 5);
  EXPECT_EQ(n.shape(), (Dims{4, 5}));
  EXPECT_EQ(elem(n, {3, 0}), 32);
  Tensor s = a.slice(1, 1, 10, 3);  // columns 1, 4, 7
  EXPECT_EQ(s.shape(), (Dims{4, 3}));
  EXPECT_EQ(elem(s, {2, 2}), 27);
  EXPECT_EQ(a.slice(1, -3, 100).shape(), (Dims{4, 3}));  // end clamps, negative start wraps
  EXPECT_EQ(a.slice(0, 3, 1).shape(), (Dims{0, 10}));     // empty, not an error
  Tensor row = a.select(0, -1);
  EXPECT_EQ(row.shape(), (Dims{10}));
  EXPECT_EQ(elem(row, {4}), 34);
  EXPECT_EQ(a.select(1, 3).select(0, 2).dim(), 0);
  EXPECT_EQ(a.select(1, 3).select(0, 2).item<float>(), 23.0f);
  expect_error([&] { (void)a.select(0, 4); }, {"select", "index 4", "size 4"});
  expect_error([&] { (void)a.narrow(1, 8, 5); }, {"narrow", "start 8", "length 5"});
  expect_error([&] { (void)a.slice(1, 0, 5, 0); }, {"slice", "step"});
}

TEST(Views, ExpandSqueezeUnsqueeze) {
  Tensor a = iota({3, 1});
  Tensor e = a.expand({2, 3, 4});
  EXPECT_EQ(e.shape(), (Dims{2, 3, 4}));
  EXPECT_EQ(e.strides()[0], 0);
  EXPECT_EQ(elem(e, {1, 2, 3}), 2);
  EXPECT_EQ(a.expand({-1, 5}).shape(), (Dims{3, 5}));
  expect_error([&] { (void)a.expand({4, 4}); }, {"expand", "3", "4"});
  Tensor u = a.unsqueeze(0).unsqueeze(-1);
  EXPECT_EQ(u.shape(), (Dims{1, 3, 1, 1}));
  EXPECT_EQ(u.squeeze().shape(), (Dims{3}));
  EXPECT_EQ(u.squeeze(0).shape(), (Dims{3, 1, 1}));
  EXPECT_EQ(u.squeeze(1).shape(), (Dims{1, 3, 1, 1}));  // size != 1: unchanged
  EXPECT_EQ(iota({}).unsqueeze(0).shape(), (Dims{1}));
  expect_error([&] { (void)a.unsqueeze(3); }, {"unsqueeze", "dim 3"});
}

TEST(Views, FlattenUnflatten) {
  Tensor a = iota({2, 3, 4, 5});
  EXPECT_EQ(a.flatten().shape(), (Dims{120}));
  EXPECT_EQ(a.flatten(1, 2).shape(), (Dims{2, 12, 5}));
  EXPECT_EQ(a.flatten(1, 2).unflatten(1, {3, -1}).shape(), (Dims{2, 3, 4, 5}));
  EXPECT_EQ(iota({}).flatten().shape(), (Dims{1}));
  expect_error([&] { (void)a.flatten(2, 1); }, {"flatten", "start_dim"});
  expect_error([&] { (void)a.unflatten(1, {2, 2}); }, {"unflatten", "[2, 2]", "size 3"});
}

TEST(Views, ContiguousAndClone) {
  Tensor a = iota({3, 4});
  EXPECT_TRUE(a.contiguous().is_same(a));
  Tensor c = a.t().contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(shares(a, c));
  EXPECT_EQ(elem(c, {3, 2}), 11);
  Tensor k = a.clone();
  k.fill_(0);
  EXPECT_EQ(elem(a, {2, 3}), 11);
}

TEST(Views, ViewErrorsAndLimits) {
  Tensor a = iota({2, 6});
  expect_error([&] { (void)a.view({5, -1}); }, {"view", "[5, -1]", "12"});
  expect_error([&] { (void)a.view({-1, -1}); }, {"view", "only one dim"});
  expect_error([&] { (void)a.view({3, 5}); }, {"view", "[3, 5]", "size 12"});
  expect_error([&] { (void)zeros({1 << 20, 1 << 20, 1 << 20, 1 << 20}); }, {"[1048576, 1048576, 1048576, 1048576]"});
  Dims too_many;
  expect_error([&] { for (int i = 0; i < 20; ++i) too_many.push_back(1); }, {"at most 16 dims"});
  expect_error([&] { (void)a.as_strided({2, 7}, {6, 1}, 0); }, {"as_strided", "storage of 12"});
}

TEST(Views, InPlaceBumpsVersionSharedByViews) {
  Tensor a = zeros({4});
  Tensor v = a.view({2, 2});
  const uint32_t before = a.version();
  v.fill_(1);
  EXPECT_GT(a.version(), before);
  EXPECT_EQ(a.version(), v.version());
  const uint32_t mid = a.version();
  a.add_(1);
  EXPECT_GT(v.version(), mid);
  EXPECT_EQ(elem(a, {3}), 2);
}

TEST(Views, EmptyAndZeroDim) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.reshape({3, 0, 5}).shape(), (Dims{3, 0, 5}));
  EXPECT_EQ(e.t().shape(), (Dims{3, 0}));
  EXPECT_EQ((e + 1).shape(), (Dims{0, 3}));
  Tensor s = full({}, 2.5);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item<double>(), 2.5);
  EXPECT_EQ(s.view({1, 1}).shape(), (Dims{1, 1}));
  EXPECT_EQ((s * s).item<float>(), 6.25f);
  expect_error([&] { (void)e.item(); }, {"item", "0 elements"});
}

// ---- gradients

namespace {
// One view op applied to a (3, 4, 5) input; views are linear, so any input values will do.
struct ViewCase {
  std::string name;
  std::function<Tensor(const Tensor&)> call;
};

const std::vector<ViewCase>& view_cases() {
  using T = const Tensor&;
  static const std::vector<ViewCase> cases = {
      {"view", [](T x) { return x.contiguous().view({4, -1, 3}); }},
      {"reshape (a view)", [](T x) { return x.reshape({12, 5}); }},
      {"reshape (a copy)", [](T x) { return x.transpose(0, 2).reshape({-1}); }},
      {"transpose", [](T x) { return x.transpose(0, 2); }},
      {"permute", [](T x) { return x.permute({2, 0, 1}); }},
      {"t", [](T x) { return x.select(2, 1).t(); }},
      {"t of 1-d", [](T x) { return x.select(0, 1).select(0, 2).t(); }},
      {"narrow", [](T x) { return x.narrow(1, 1, 2); }},
      {"narrow negative start", [](T x) { return x.narrow(-1, -3, 2); }},
      {"slice with step", [](T x) { return x.slice(2, 0, 5, 2); }},
      {"slice past the end", [](T x) { return x.slice(0, 1, 100, 3); }},
      {"select", [](T x) { return x.select(1, -1); }},
      {"expand", [](T x) { return x.narrow(1, 0, 1).expand({2, 3, 4, 5}); }},
      {"expand_as", [](T x) { return x.select(0, 0).expand_as(x); }},
      {"squeeze", [](T x) { return x.narrow(1, 2, 1).squeeze(); }},
      {"squeeze dim", [](T x) { return x.narrow(1, 2, 1).squeeze(1); }},
      {"squeeze dim not 1", [](T x) { return x.squeeze(0); }},
      {"unsqueeze", [](T x) { return x.unsqueeze(1).unsqueeze(-1); }},
      {"flatten", [](T x) { return x.flatten(1); }},
      {"flatten of a transpose", [](T x) { return x.transpose(1, 2).flatten(); }},
      {"unflatten", [](T x) { return x.unflatten(2, {5, 1}); }},
      {"as_strided", [](T x) { return x.contiguous().as_strided({3, 3}, {20, 6}, 1); }},
      {"as_strided overlapping", [](T x) { return x.contiguous().as_strided({4, 4}, {1, 1}, 2); }},
      // as_strided takes storage positions: it must stay within its input's elements (torch's rule too).
      {"as_strided of a view", [](T x) { return x.contiguous().select(0, 1).as_strided({2, 2}, {5, 1}, 22); }},
      {"contiguous", [](T x) { return x.transpose(0, 1).contiguous(); }},
      {"clone", [](T x) { return x.clone(); }},
  };
  return cases;
}

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const Tensor& x,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, {x});
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}
}  // namespace

TEST(Views, GradcheckTable) {
  for (const ViewCase& c : view_cases()) {
    const Tensor x = kt::random_tensor({3, 4, 5}, DType::f64, -2, 2, 5).requires_grad_();
    // Weighted by position, so a gradient sent to the wrong element shows.
    expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(in[0])}; }, x, c.name);
    const Tensor xt = kt::random_tensor({5, 4, 3}, DType::f64, -2, 2, 6).requires_grad_();
    expect_gradcheck([&](const TensorList& in) { return TensorList{c.call(in[0].permute({2, 1, 0}))}; }, xt,
                     c.name + " of a non-contiguous input");
  }
}

TEST(Views, GradientsByHand) {
  Tensor x = arange(6, {.dtype = DType::f64}).view({2, 3}).detach().requires_grad_();
  x.slice(1, 0, 3, 2).sum().backward();
  kt::expect_close(x.grad(), {1, 0, 1, 1, 0, 1}, 0, 0, "slice with step");
  x.mutable_grad() = Tensor();
  x.narrow(1, 0, 1).expand({4, 2, 3}).sum().backward();
  kt::expect_close(x.grad(), {12, 0, 0, 12, 0, 0}, 0, 0, "expand sums back");
  x.mutable_grad() = Tensor();
  x.as_strided({3}, {0}, 1).sum().backward();  // one element seen three times
  kt::expect_close(x.grad(), {0, 3, 0, 0, 0, 0}, 0, 0, "as_strided with stride 0");
  x.mutable_grad() = Tensor();
  x.detach().view({6}).sum();
  EXPECT_FALSE(x.detach().view({6}).requires_grad());
  EXPECT_EQ(x.transpose(0, 1).grad_fn()->name(), "transpose");
}

TEST(Views, InPlaceOnAViewOfTheGraphIsRefused) {
  const Tensor x = kt::random_tensor({2, 3}, DType::f64).requires_grad_();
  Tensor y = x * 2.0;
  Tensor v = y.view({3, 2});
  expect_error([&] { v.add_(1.0); }, {"add_", "view", "[3, 2]"});
  expect_error([&] { y.select(0, 1).zero_(); }, {"fill_", "view"});
  {
    NoGradGuard no_grad;
    v.add_(1.0);  // outside autograd an in-place change of a view is plain memory
  }
  // A view of a plain tensor keeps no link to its base, so a tracked write into it would be lost to
  // the base: refused, with the way out.
  Tensor base = zeros({2, 3}, {.dtype = DType::f64});
  expect_error([&] { base.narrow(0, 1, 1).copy_(x.narrow(0, 1, 1)); }, {"copy_", "part of another tensor", "cat"});
  expect_error([&] { base.select(0, 0).add_(x.select(0, 0)); }, {"add_", "part of another tensor"});
  Tensor whole = zeros({2, 3}, {.dtype = DType::f64});
  whole.copy_(x * 3.0);  // the whole of a plain tensor: it takes the new history
  whole.sum().backward();
  kt::expect_close(x.grad(), {3, 3, 3, 3, 3, 3}, 0, 0, "copy_ into a plain tensor");
}
