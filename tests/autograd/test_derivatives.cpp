// Derivatives that the op tables do not cover: in-place ops (their history, saved values, version
// checks and refusals), copies and conversions (identity, cast back), composite ops recording no
// node of their own, and values by hand for the conventions at kinks. The per-op gradchecks live
// with each op family's table (tests/ops/, tests/test_views.cpp).
#include <gtest/gtest.h>

#include "autograd/gradcheck.h"
#include "kiln/kiln.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;

namespace {

Tensor leaf(std::initializer_list<double> v) { return kiln::tensor(v, {.dtype = DType::f64}).requires_grad_(); }

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

TEST(Derivatives, InPlaceMulRebasesHistory) {
  Tensor x = leaf({1, 2});
  Tensor y = x * 2.0;
  Tensor& same = y.mul_(3.0);
  EXPECT_TRUE(same.is_same(y));
  EXPECT_EQ(y.grad_fn()->name(), "mul_");
  y.sum().backward();
  kt::expect_close(x.grad(), {6, 6}, 0, 0, "x * 2, then *= 3");
  kt::expect_close(y, {6, 12}, 0, 0, "values");
}

// Every in-place arithmetic op against its out-of-place twin, with the other operand requiring grad
// too (so mul_ and div_ need self's old value), broadcast, and the operand aliasing self.
TEST(Derivatives, InPlaceArithmeticGradcheck) {
  const Tensor a = kt::random_tensor({3, 4}, DType::f64, 0.5, 2, 1).requires_grad_();
  const Tensor b = kt::random_tensor({4}, DType::f64, 0.5, 2, 2).requires_grad_();
  using InPlace = std::function<void(Tensor&, const Tensor&)>;
  const std::vector<std::pair<std::string, InPlace>> ops = {
      {"add_", [](Tensor& s, const Tensor& o) { s.add_(o, 2.5); }},
      {"sub_", [](Tensor& s, const Tensor& o) { s.sub_(o, 0.5); }},
      {"mul_", [](Tensor& s, const Tensor& o) { s.mul_(o); }},
      {"div_", [](Tensor& s, const Tensor& o) { s.div_(o); }},
      {"copy_", [](Tensor& s, const Tensor& o) { s.copy_(o); }},
      {"add_ scalar", [](Tensor& s, const Tensor&) { s.add_(3.0); }},
      {"mul_ scalar", [](Tensor& s, const Tensor&) { s.mul_(-2.0); }},
      {"div_ scalar", [](Tensor& s, const Tensor&) { s.div_(4.0); }},
      {"fill_", [](Tensor& s, const Tensor&) { s.fill_(1.5); }},
      {"zero_", [](Tensor& s, const Tensor&) { s.zero_(); }},
  };
  for (const auto& [name, op] : ops) {
    expect_gradcheck(
        [&](const TensorList& in) {
          Tensor self = in[0] * 1.0;  // a non-leaf, so in-place is allowed
          op(self, in[1]);
          return TensorList{self * in[0]};  // self's old history still matters through in[0]
        },
        {a, b}, name);
    expect_gradcheck(
        [&](const TensorList& in) {
          Tensor self = in[0] * 2.0;  // mul saves neither factor's output, so self may change
          op(self, self);  // the operand is self: read before it is overwritten
          return TensorList{self};
        },
        {a}, name + " with itself");
  }
}

TEST(Derivatives, ModifyingASavedTensorIsDetected) {
  Tensor x = leaf({1, 2});
  Tensor y = x.exp();  // exp saves its output
  Tensor z = y.sum();
  y.mul_(2.0);
  kt::expect_error([&] { z.backward(); }, {"backward of 'exp'", "modified by an in-place"});
  // mul_ with an operand that requires grad saves a copy of self's old value, not self.
  Tensor w = leaf({3, 4});
  Tensor s = x * 1.0;
  s.mul_(w);
  s.sum().backward();
  kt::expect_close(w.grad(), {1, 2}, 0, 0, "mul_ saved the old self");
}

TEST(Derivatives, InPlaceOnALeafRequiringGrad) {
  Tensor x = leaf({1, 2});
  for (const auto& [name, op] : std::vector<std::pair<std::string, std::function<void()>>>{
           {"add_", [&] { x.add_(1.0); }},
           {"mul_", [&] { x.mul_(x); }},
           {"copy_", [&] { x.copy_(kiln::zeros({2}, {.dtype = DType::f64})); }},
           {"fill_", [&] { x.fill_(0); }},
           {"fill_", [&] { x.zero_(); }},
           {"sub_", [&] { x.sub_(1.0); }},
           {"div_", [&] { x.div_(2.0); }}})
    kt::expect_error(op, {name, "leaf", "NoGradGuard"});
  kt::expect_close(x, {1, 2}, 0, 0, "untouched");
  {
    NoGradGuard no_grad;  // how optimizers update parameters
    x.mul_(3.0).sub_(1.0);
  }
  kt::expect_close(x, {2, 5}, 0, 0, "updated under NoGradGuard");
  EXPECT_TRUE(x.is_leaf());
  EXPECT_TRUE(x.requires_grad());
}

TEST(Derivatives, CopiesAndConversionsPassGradientsBack) {
  const Tensor x = leaf({1.5, -2, 3});
  // to() casts the gradient back to the input's dtype.
  Tensor y = x.to(DType::f32);
  EXPECT_EQ(y.grad_fn()->name(), "to");
  (y * y).sum().backward();
  EXPECT_EQ(x.grad().dtype(), DType::f64);
  kt::expect_close(x.grad(), {3, -4, 6}, 0, 0, "through f32");
  const Tensor h = kiln::tensor({1, 2}, {.dtype = DType::f32}).requires_grad_();
  h.to(DType::bf16).sum().backward();
  EXPECT_EQ(h.grad().dtype(), DType::f32);
  kt::expect_close(h.grad(), {1, 1}, 0, 0, "through bf16");
  EXPECT_FALSE(x.to(DType::i64).requires_grad());  // an integer result carries no gradient
  // copy_ sends the gradient to the source, summed over broadcasting, in the source's dtype.
  const Tensor row = kiln::tensor({1, 2, 3}, {.dtype = DType::f32}).requires_grad_();
  Tensor dst = kiln::zeros({4, 3}, {.dtype = DType::f64});
  dst.copy_(row);
  EXPECT_EQ(dst.grad_fn()->name(), "copy_");
  (dst * 2.0).sum().backward();
  EXPECT_EQ(row.grad().dtype(), DType::f32);
  kt::expect_close(row.grad(), {8, 8, 8}, 0, 0, "copy_ broadcast");
  // The old history of the overwritten tensor gets nothing.
  const Tensor a = leaf({1, 2, 3});
  Tensor t = a * 5.0;
  t.copy_(x);
  TensorList g = autograd::grad({t.sum()}, {a, x}, {.allow_unused = true});
  EXPECT_FALSE(g[0].defined());
  kt::expect_close(g[1], {1, 1, 1}, 0, 0, "copy_ source");
  expect_gradcheck([](const TensorList& in) { return TensorList{in[0].clone() * in[0].contiguous()}; }, {x}, "clone");
}

TEST(Derivatives, CompositesNeedNoNodeOfTheirOwn) {
  const Tensor x = kt::random_tensor({3, 4}, DType::f64, -1, 1, 3).requires_grad_();
  // masked_fill is a where: the gradient is g where the mask is off.
  const Tensor mask = kiln::tensor(std::vector<bool>{true, false, false, true});
  Tensor y = x.masked_fill(mask, 7.0);
  EXPECT_EQ(y.grad_fn()->name(), "where");
  expect_gradcheck([&](const TensorList& in) { return TensorList{in[0].masked_fill(mask, 7.0)}; }, {x}, "masked_fill");
  // matmul of every rank is views around mm/bmm.
  EXPECT_EQ(kiln::matmul(x, x.t()).grad_fn()->name(), "mm");
  // pow with a scalar base.
  expect_gradcheck([](const TensorList& in) { return TensorList{kiln::pow(2.5, in[0])}; }, {x}, "pow(scalar, x)");
}

// The activations' backward kernels: contiguous f32 runs eight double lanes with a ragged tail (relu:
// a select in f32), strided f32 and f64 run one element at a time; all agree with the f64
// derivative (which the op table's gradcheck checks against finite differences) to float rounding.
TEST(Derivatives, ActivationBackwardKernelsMatchF64) {
  const Tensor x64 = kt::random_tensor({3, 37}, DType::f64, -6, 6, 11);  // 111 elements: 13 vectors + 7
  const Tensor g64 = kt::random_tensor({3, 37}, DType::f64, -1, 1, 12);
  using Act = Tensor (*)(const Tensor&);
  const std::pair<const char*, Act> acts[] = {
      {"relu", [](const Tensor& t) { return t.relu(); }},
      {"silu", [](const Tensor& t) { return silu(t); }},
      {"gelu", [](const Tensor& t) { return gelu(t, "none"); }},
      {"gelu tanh", [](const Tensor& t) { return gelu(t, "tanh"); }},
  };
  for (const auto& [name, act] : acts) {
    const Tensor x = x64.detach().requires_grad_();
    const Tensor want = autograd::grad({act(x)}, {x}, {.grad_outputs = {g64}})[0];
    const Tensor xf = x64.to(DType::f32).requires_grad_();
    const Tensor gf = g64.to(DType::f32);
    const Tensor got = autograd::grad({act(xf)}, {xf}, {.grad_outputs = {gf}})[0];
    kt::expect_close(got, kt::values(want), 2e-6, 1e-6, std::string(name) + " contiguous f32");
    const Tensor xt = x64.to(DType::f32).t().contiguous().t().requires_grad_();  // strided
    const Tensor strided = autograd::grad({act(xt)}, {xt}, {.grad_outputs = {gf}})[0];
    kt::expect_close(strided, kt::values(got), 0, 0, std::string(name) + " strided f32 equals contiguous");
  }
  // torch's threshold_backward: a NaN output passes its gradient through.
  const Tensor n = leaf({std::nan(""), -1, 1});
  kt::expect_close(autograd::grad({n.relu().sum()}, {n})[0], {1, 0, 1}, 0, 0, "relu at NaN");
}

// relu's backward is a select run in the tensor's own dtype: over a size that spans both threads'
// chunks with a ragged end, every element is g where the output is > 0 or NaN, else +0.
TEST(Derivatives, ReluBackwardSelectOverThreadChunks) {
  kiln::set_num_threads(2);
  for (const DType dtype : {DType::f32, DType::f64}) {
    const int64_t n = 2 * kElementwiseGrain + 77;
    Tensor x = kt::random_tensor({n}, dtype, -1, 1, 21);
    x.select(0, 5).fill_(std::nan(""));
    x.select(0, n - 1).fill_(-0.0);
    const Tensor g = kt::random_tensor({n}, dtype, -1, 1, 22);
    const Tensor xg = x.detach().requires_grad_();
    const std::vector<double> got = kt::values(autograd::grad({xg.relu()}, {xg}, {.grad_outputs = {g}})[0]);
    const std::vector<double> xv = kt::values(x), gv = kt::values(g);
    for (int64_t i = 0; i < n; ++i) {
      const double want = (xv[i] > 0 || std::isnan(xv[i])) ? gv[i] : 0.0;
      ASSERT_EQ(got[i], want) << dtype << " at " << i;
      ASSERT_FALSE(std::signbit(got[i]) && want == 0.0) << dtype << " at " << i << ": -0";
    }
  }
}

// torch's conventions at the points where a derivative is not unique, by hand.
TEST(Derivatives, ConventionsAtKinks) {
  auto grad_of = [](const Tensor& x, const Tensor& y) { return autograd::grad({y.sum()}, {x})[0]; };
  const Tensor x = leaf({-1, 0, 2});
  kt::expect_close(grad_of(x, x.abs()), {-1, 0, 1}, 0, 0, "abs at 0");
  kt::expect_close(grad_of(x, x.relu()), {0, 0, 1}, 0, 0, "relu at 0");
  kt::expect_close(grad_of(x, sign(x)), {0, 0, 0}, 0, 0, "sign");
  kt::expect_close(grad_of(x, x.clamp(0, 2)), {0, 1, 1}, 0, 0, "clamp: bounds pass the gradient");
  kt::expect_close(grad_of(x, maximum(x, kiln::zeros({3}, {.dtype = DType::f64}))), {0, 0.5, 1}, 0, 0,
                   "maximum splits ties");
  kt::expect_close(grad_of(x, minimum(x, kiln::zeros({3}, {.dtype = DType::f64}))), {1, 0.5, 0}, 0, 0,
                   "minimum splits ties");
  kt::expect_close(grad_of(x, x.pow(0)), {0, 0, 0}, 0, 0, "x^0");
  kt::expect_close(grad_of(x, x.pow(2)), {-2, 0, 4}, 0, 0, "x^2");
  const Tensor e = leaf({0, 2, -1});
  const Tensor zero_base = kiln::zeros({3}, {.dtype = DType::f64}).requires_grad_();
  const TensorList g = autograd::grad({zero_base.pow(e).sum()}, {zero_base, e});
  // d/da 0^b = b 0^(b-1): 0 for b = 2, and 0 by convention for b = 0 (not 0 * 0^-1 = NaN).
  EXPECT_EQ(kt::values(g[0])[0], 0.0);
  EXPECT_EQ(kt::values(g[0])[1], 0.0);
  // d/db 0^b is 0 where b >= 0 (not 0 * log 0), as torch.
  EXPECT_EQ(kt::values(g[1])[0], 0.0);
  EXPECT_EQ(kt::values(g[1])[1], 0.0);
}

}  // namespace
