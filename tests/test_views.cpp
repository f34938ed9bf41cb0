// Views share storage and never copy; reshape copies only when no view exists; every impossible
// view is a kiln::Error naming the op and the shapes.
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
