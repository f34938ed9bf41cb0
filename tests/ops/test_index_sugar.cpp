// Tests of Tensor indexing sugar (x[i], x.index, x.index_put_): values against references written
// out by hand or as naive loops over testing::at, view-vs-copy behaviour, f64 gradcheck of reading
// and writing, and the error messages (out of range, too many indices, index dtype, negative step).
#include "autograd/gradcheck.h"
#include "testing.h"

namespace kiln {
namespace {

using namespace indexing;
using testing::at;
using testing::values;
namespace kt = kiln::testing;

Tensor iota(const Dims& shape, DType dtype = DType::f64) {
  return arange(checked_numel(shape, "iota"), {.dtype = dtype}).view(shape);
}
Tensor i64s(const std::vector<int64_t>& v, std::optional<Dims> shape = std::nullopt) {
  return kiln::tensor<int64_t>(v, shape);
}
Tensor bools(const std::vector<bool>& v, const Dims& shape) {
  std::vector<int64_t> ints(v.begin(), v.end());
  return kiln::tensor<int64_t>(ints, shape).to(DType::boolean);
}
// The element of x (any rank) at a multi-index, read through strides (no Kiln kernel).
double elem(const Tensor& x, const std::vector<int64_t>& idx) { return at(x, kt::ravel(idx, x.shape())); }

void expect_tensor(const Tensor& t, const Dims& shape, const std::vector<double>& want) {
  ASSERT_EQ(t.shape(), shape);
  EXPECT_EQ(values(t), want);
}

TEST(IndexSugar, IntegersAndSlicesAreViews) {
  const Tensor x = iota({2, 3, 4});
  expect_tensor(x[0], {3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  expect_tensor(x[-1][1], {4}, {16, 17, 18, 19});
  EXPECT_EQ(x[1].storage_offset(), 12);
  EXPECT_EQ(x[1].impl()->storage.get(), x.impl()->storage.get());
  expect_tensor(x.index({Slice(1, None), 0}), {1, 4}, {12, 13, 14, 15});
  expect_tensor(x.index({"...", Slice(None, None, 2)}), {2, 3, 2}, {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22});
  expect_tensor(x.index({Ellipsis, 1, 3}), {2}, {7, 19});
  expect_tensor(x.index({0, "...", -1}), {3}, {3, 7, 11});
  expect_tensor(x.index({Slice(), Slice(-2, None), Slice(1, -1)}), {2, 2, 2}, {5, 6, 9, 10, 17, 18, 21, 22});
  expect_tensor(x.index({1, Slice(0, 100), Slice(5, 9)}), {3, 0}, {});  // bounds clamp, as Python's
  expect_tensor(iota({10}).index({Slice(2, 9, 3)}), {3}, {2, 5, 8});
  // None inserts a dim of size 1 wherever it stands.
  EXPECT_EQ(x.index({None, 0, Slice(), None}).shape(), (Dims{1, 3, 1, 4}));
  EXPECT_EQ(x.index({"...", None}).shape(), (Dims{2, 3, 4, 1}));
  EXPECT_EQ(scalar_tensor(2.5, DType::f64).index({None, None}).shape(), (Dims{1, 1}));
  // A write through a view shows in x.
  Tensor y = iota({2, 3});
  y[1].fill_(-1);
  EXPECT_EQ(values(y), (std::vector<double>{0, 1, 2, -1, -1, -1}));
}

TEST(IndexSugar, IntegerTensorIndicesGather) {
  const Tensor x = iota({3, 4});
  expect_tensor(x[i64s({2, 0, -1})], {3, 4}, {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
  expect_tensor(x[i64s({2, 0}).to(DType::i32)], {2, 4}, {8, 9, 10, 11, 0, 1, 2, 3});
  expect_tensor(x.index({Slice(), i64s({3, 0, 1, 1}, Dims{2, 2})}), {3, 2, 2}, {3, 0, 1, 1, 7, 4, 5, 5, 11, 8, 9, 9});
  expect_tensor(x.index({i64s({0, 2}), i64s({1, 3})}), {2}, {1, 11});  // pairs of positions
  expect_tensor(x.index({scalar_tensor(1, DType::i64)}), {4}, {4, 5, 6, 7});
  // Broadcast index tensors: rows (2, 1) against columns (3) pick a (2, 3) block.
  expect_tensor(x.index({i64s({0, 2}, Dims{2, 1}), i64s({1, 2, 3})}), {2, 3}, {1, 2, 3, 9, 10, 11});
  // The result is a copy: writing to it leaves x alone.
  Tensor picked = x[i64s({0})];
  picked.fill_(7);
  EXPECT_EQ(at(x, 0), 0);
}

// Where the dims of B (the index tensors' broadcast shape) land, checked element by element.
TEST(IndexSugar, TensorIndicesKeepTorchsPlacement) {
  const Tensor x = iota({2, 3, 4, 5});
  const std::vector<int64_t> a = {1, 0, 1}, b = {2, 3, 0}, c = {4, 0, 2};
  // Adjacent tensor indices: B replaces their dims in place -> (2, 3, 5).
  const Tensor adjacent = x.index({Slice(), i64s(a), i64s(b)});
  ASSERT_EQ(adjacent.shape(), (Dims{2, 3, 5}));
  for (int64_t i = 0; i < 2; ++i)
    for (size_t k = 0; k < 3; ++k)
      for (int64_t l = 0; l < 5; ++l)
        EXPECT_EQ(elem(adjacent, {i, static_cast<int64_t>(k), l}), elem(x, {i, a[k], b[k], l}));
  // Separated by slices: B goes first -> (3, 3, 4).
  const Tensor apart = x.index({i64s(a), Slice(), Slice(), i64s(c)});
  ASSERT_EQ(apart.shape(), (Dims{3, 3, 4}));
  for (size_t k = 0; k < 3; ++k)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t m = 0; m < 4; ++m)
        EXPECT_EQ(elem(apart, {static_cast<int64_t>(k), j, m}), elem(x, {a[k], j, m, c[k]}));
  // torch, not NumPy: an integer is a select first, so idx stays where it stands -> (3, 2, 5).
  const Tensor after_int = x.index({0, Slice(), i64s({2, 3})});
  ASSERT_EQ(after_int.shape(), (Dims{3, 2, 5}));
  for (int64_t j = 0; j < 3; ++j)
    for (int64_t k = 0; k < 2; ++k)
      for (int64_t l = 0; l < 5; ++l) EXPECT_EQ(elem(after_int, {j, k, l}), elem(x, {0, j, 2 + k, l}));
}

TEST(IndexSugar, BoolMasks) {
  const Tensor x = iota({3, 4});
  expect_tensor(x[x > Scalar(7.5)], {4}, {8, 9, 10, 11});
  expect_tensor(x[bools({true, false, true}, {3})], {2, 4}, {0, 1, 2, 3, 8, 9, 10, 11});
  expect_tensor(x.index({Slice(), bools({false, true, false, true}, {4})}), {3, 2}, {1, 3, 5, 7, 9, 11});
  expect_tensor(x[bools({false, false, false}, {3})], {0, 4}, {});
  // A 0-d bool inserts a dim it keeps or empties.
  EXPECT_EQ(x.index({true}).shape(), (Dims{1, 3, 4}));
  EXPECT_EQ(x.index({false}).shape(), (Dims{0, 3, 4}));
  EXPECT_EQ(x.index({Slice(), scalar_tensor(true, DType::boolean)}).shape(), (Dims{3, 1, 4}));
  const Tensor z = iota({2, 2, 3});
  expect_tensor(z.index({bools({true, false, false, true}, {2, 2}), Slice(1, None)}), {2, 2}, {1, 2, 10, 11});
  expect_tensor(nonzero(bools({false, true, true, false, false, true}, {2, 3})), {3, 2}, {0, 1, 0, 2, 1, 2});
}

TEST(IndexSugar, IndexPutWritesInPlace) {
  Tensor y = zeros({3, 4}, {.dtype = DType::f64});
  y.index_put_({1}, 5.0);
  y.index_put_({Slice(), 0}, kiln::tensor({1, 2, 3}, {.dtype = DType::f64}));
  y.index_put_({Slice(0, 1), Slice(2, None)}, kiln::tensor({7, 8}, {.dtype = DType::f64}));  // broadcast rows
  EXPECT_EQ(values(y), (std::vector<double>{1, 0, 7, 8, 2, 5, 5, 5, 3, 0, 0, 0}));
  y.index_put_({y > Scalar(4.5)}, -1.0);
  EXPECT_EQ(values(y), (std::vector<double>{1, 0, -1, -1, 2, -1, -1, -1, 3, 0, 0, 0}));
  y.index_put_({i64s({2, -3}), i64s({3, 1})}, kiln::tensor({20, 21}, {.dtype = DType::f64}));
  EXPECT_EQ(at(y, 11), 20);
  EXPECT_EQ(at(y, 1), 21);
  y.index_put_({i64s({1}), Slice(None, None, 2)}, i64s({9, 9}));  // int64 values convert to f64
  EXPECT_EQ(values(y[1]), (std::vector<double>{9, -1, 9, -1}));
  // Non-adjacent tensor indices with a slice between: values arrive in B-first order.
  Tensor w = zeros({2, 3, 2}, {.dtype = DType::f64});
  const Tensor six = kiln::tensor({1, 2, 3, 4, 5, 6}, {.dtype = DType::f64}).view({2, 3});
  w.index_put_({i64s({0, 1}), Slice(), i64s({1, 0})}, six);
  EXPECT_EQ(values(w), (std::vector<double>{0, 1, 0, 2, 0, 3, 4, 0, 5, 0, 6, 0}));
  // Leading 1s of values are dropped before broadcasting, as torch's setitem does.
  Tensor v = zeros({4}, {.dtype = DType::f64});
  v.index_put_({Slice(1, 3)}, kiln::tensor({1, 2}, {.dtype = DType::f64}).view({1, 1, 2}));
  EXPECT_EQ(values(v), (std::vector<double>{0, 1, 2, 0}));
}

TEST(IndexSugar, IndexPutThroughStridedViews) {
  // A transposed target (strides 1, 3) and a narrowed one: the writes land in the base.
  Tensor base = zeros({4, 3}, {.dtype = DType::f64});
  Tensor t = base.t();  // (3, 4)
  t.index_put_({i64s({0, 2}), i64s({3, 1})}, kiln::tensor({5, 6}, {.dtype = DType::f64}));
  EXPECT_EQ(elem(base, {3, 0}), 5);
  EXPECT_EQ(elem(base, {1, 2}), 6);
  Tensor part = base.narrow(0, 1, 2);  // rows 1 and 2
  part.index_put_({Slice(), i64s({0, 2})}, kiln::tensor({8, 9}, {.dtype = DType::f64}));
  EXPECT_EQ(values(base), (std::vector<double>{0, 0, 0, 8, 0, 9, 8, 0, 9, 5, 0, 0}));
  // index_put leaves its input alone.
  const Tensor x = iota({3});
  expect_tensor(x.index_put({i64s({1})}, 10.0), {3}, {0, 10, 2});
  EXPECT_EQ(values(x), (std::vector<double>{0, 1, 2}));
}

TEST(IndexSugar, GradientsOfReadsAddUpRepeats) {
  Tensor x = iota({3, 2}).requires_grad_();
  x.index({i64s({0, 0, 2})}).sum().backward();
  EXPECT_EQ(values(x.grad()), (std::vector<double>{2, 2, 0, 0, 1, 1}));
  Tensor y = iota({3, 2}).requires_grad_();
  (y.index({Slice(1, None), 1}) * 3.0).sum().backward();
  EXPECT_EQ(values(y.grad()), (std::vector<double>{0, 0, 0, 3, 0, 3}));
}

TEST(IndexSugar, GradcheckReads) {
  const Tensor x = randn({3, 4, 5}, {.dtype = DType::f64}).requires_grad_();
  const Tensor mask = randn({4, 5}, {.dtype = DType::f64}) > Scalar(0);
  const std::vector<std::function<Tensor(const Tensor&)>> reads = {
      [](const Tensor& t) { return t.index({Slice(1, None), "...", Slice(None, None, 2)}); },
      [](const Tensor& t) { return t.index({None, -1, Slice(), 2}); },
      [](const Tensor& t) { return t.index({Slice(), i64s({3, 0, 3, 1})}); },
      [](const Tensor& t) { return t.index({i64s({2, 0}), Slice(), i64s({4, 4})}); },
      [](const Tensor& t) { return t.index({Slice(), i64s({1, 2}, Dims{2, 1}), i64s({0, 3, 4})}); },
      [&](const Tensor& t) { return t.index({Slice(), mask}); },
  };
  for (size_t i = 0; i < reads.size(); ++i) {
    const auto r = autograd::gradcheck([&](const TensorList& in) { return TensorList{reads[i](in[0])}; }, {x});
    EXPECT_TRUE(r.ok) << "read " << i << ": " << r.message;
  }
}

TEST(IndexSugar, GradcheckWrites) {
  const Tensor x = randn({3, 4}, {.dtype = DType::f64}).requires_grad_();
  const Tensor row = randn({4}, {.dtype = DType::f64}).requires_grad_();
  const Tensor pts = randn({2}, {.dtype = DType::f64}).requires_grad_();
  const Tensor one = randn({1, 1}, {.dtype = DType::f64}).requires_grad_();
  const std::vector<std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&)>> writes = {
      [](const Tensor& t, const Tensor& r, const Tensor&, const Tensor&) { return t.index_put({1}, r); },
      [](const Tensor& t, const Tensor& r, const Tensor&, const Tensor&) { return t.index_put({i64s({2, 0})}, r); },
      [](const Tensor& t, const Tensor&, const Tensor& p, const Tensor&) {
        return t.index_put({i64s({0, 2}), i64s({3, 1})}, p);
      },
      [](const Tensor& t, const Tensor&, const Tensor&, const Tensor& o) { return t.index_put({t > Scalar(0)}, o); },
      [](const Tensor& t, const Tensor&, const Tensor&, const Tensor& o) {
        return t.index_put({Slice(), Slice(1, None, 2)}, o);
      },
  };
  for (size_t i = 0; i < writes.size(); ++i) {
    const auto r = autograd::gradcheck(
        [&](const TensorList& in) { return TensorList{writes[i](in[0], in[1], in[2], in[3])}; }, {x, row, pts, one});
    EXPECT_TRUE(r.ok) << "write " << i << ": " << r.message;
  }
  // In place on a non-leaf records one node: x's gradient is cut where values went in.
  Tensor leaf = ones({2, 3}, {.dtype = DType::f64}).requires_grad_();
  Tensor y = leaf * 2.0;
  y.index_put_({Slice(), 1}, 0.0);
  y.sum().backward();
  EXPECT_EQ(values(leaf.grad()), (std::vector<double>{2, 0, 2, 2, 0, 2}));
}

TEST(IndexSugar, ErrorsNameTheShape) {
  const Tensor x = iota({2, 3, 4});
  kt::expect_error([&] { x[2]; }, {"index: index 2 is out of bounds for dim 0 with size 2", "[2, 3, 4]"});
  kt::expect_error([&] { x.index({0, -4}); }, {"index -4 is out of bounds for dim 1 with size 3"});
  kt::expect_error([&] { x.index({Slice(), Slice(), i64s({1, 4})}); },
                   {"index 4 is out of bounds for dim 2 with size 4", "[2, 3, 4]"});
  kt::expect_error([&] { x.index({0, 0, 0, 0}); }, {"too many indices for a tensor of shape [2, 3, 4]"});
  kt::expect_error([&] { x.index({bools({true, false}, {2}), 0, 0, 0}); }, {"too many indices"});
  kt::expect_error([&] { x[kiln::tensor({1.0})]; },
                   {"tensors used as indices must be int64, int32 or bool", "float32"});
  kt::expect_error([&] { x.index({Slice(None, None, -1)}); }, {"step must be greater than zero"});
  kt::expect_error([&] { x.index({Slice(None, None, 0)}); }, {"step must be greater than zero"});
  kt::expect_error([&] { x.index({"...", 0, "..."}); }, {"single ellipsis"});
  kt::expect_error([&] { x.index({".."}); }, {"the only string index is \"...\""});
  kt::expect_error([&] { x.index({bools({true, false, true}, {3})}); }, {"the mask of shape [3]", "[2, 3, 4]"});
  kt::expect_error([&] { x.index({i64s({0, 1}), i64s({0, 1, 2})}); }, {"shape mismatch", "[2], [3]"});
  kt::expect_error([&] { x[Tensor()]; }, {"undefined tensor"});
  Tensor y = zeros({3, 4});
  kt::expect_error([&] { y.index_put_({0}, ones({3})); }, {"index_put_: values of shape [3]", "indexed shape [4]"});
  kt::expect_error([&] { y.index_put_({i64s({0, 9})}, 1.0); }, {"index_put_: index 9 is out of bounds for dim 0"});
  Tensor leaf = zeros({3}).requires_grad_();
  kt::expect_error([&] { leaf.index_put_({0}, 1.0); }, {"index_put_: a leaf tensor that requires grad"});
}

}  // namespace
}  // namespace kiln
