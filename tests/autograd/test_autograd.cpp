// The autograd core: backward and grad() semantics, leaves, accumulation, retain_graph, hooks,
// grad mode, in-place checks through version counters, memory release, deep graphs, anomaly mode
// and gradcheck itself. Op derivatives are tested per family with gradcheck over each op table.
#include <gtest/gtest.h>

#include "kiln/kiln.h"
#include "autograd/gradcheck.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;

namespace {

Tensor leaf(std::initializer_list<double> v, DType dtype = DType::f64) {
  return kiln::tensor(v, {.dtype = dtype}).requires_grad_();
}

TEST(Autograd, ScalarBackwardFillsLeafGrads) {
  Tensor x = leaf({1, 2, 3});
  Tensor w = leaf({4, 5, 6});
  Tensor loss = (x * w + x).sum();  // d/dx = w + 1, d/dw = x
  EXPECT_FALSE(loss.is_leaf());
  EXPECT_TRUE(loss.requires_grad());
  loss.backward();
  kt::expect_close(x.grad(), {5, 6, 7}, 0, 0);
  kt::expect_close(w.grad(), {1, 2, 3}, 0, 0);
}

TEST(Autograd, GradientsAccumulateAcrossBackwards) {
  Tensor x = leaf({1, 2});
  (x * x).sum().backward();  // 2x
  (x * 3.0).sum().backward();  // + 3
  kt::expect_close(x.grad(), {5, 7}, 0, 0);
  x.mutable_grad() = Tensor();
  (x * 3.0).sum().backward();
  kt::expect_close(x.grad(), {3, 3}, 0, 0);
}

TEST(Autograd, LeafUsedTwiceSumsBothPaths) {
  Tensor x = leaf({2});
  Tensor y = x * x * x;  // 3x^2 = 12
  y.sum().backward();
  kt::expect_close(x.grad(), {12}, 0, 0);
}

// Note [Gradient buffers]: the engine adds later contributions into a buffered gradient in place
// when nothing else refers to it. A gradient that is also delivered elsewhere, seen by a hook, or
// an expanded (stride-0) view must not be written into.
TEST(Autograd, ManyUsesOfALeafSumWithoutTouchingSharedGradients) {
  Tensor w = leaf({1, 2, 3});
  Tensor h = w * 1.0;
  std::vector<Tensor> seen;  // handles on the gradients the hook got, read after backward
  h.register_hook([&](const Tensor& g) { seen.push_back(g); return Tensor(); });
  Tensor loss = (w * 2.0).sum() + (h * 4.0).sum();
  for (int i = 0; i < 20; ++i) loss = loss + (w * 0.5).sum();
  // Backward runs newest first, so sum()'s gradient reaches w first: an expanded view of a fresh
  // 1-element tensor (3 * 1), which the products' gradients must not be added into.
  loss = loss + w.sum() * 3.0;
  loss.backward();
  kt::expect_close(w.grad(), {19, 19, 19}, 0, 0);  // 2 + 4 + 20 * 0.5 + 3
  ASSERT_EQ(seen.size(), 1u);
  kt::expect_close(seen[0], {4, 4, 4}, 0, 0);

  // A chain y = y + w: each add hands the same gradient tensor to w and to the previous add.
  Tensor v = leaf({1});
  Tensor y = kiln::zeros({1}, {.dtype = DType::f64});
  std::vector<Tensor> chain_grads;
  for (int i = 0; i < 5; ++i) {
    y = y + v;
    y.register_hook([&](const Tensor& g) { chain_grads.push_back(g); return Tensor(); });
  }
  (y * 3.0).sum().backward();
  kt::expect_close(v.grad(), {15}, 0, 0);
  ASSERT_EQ(chain_grads.size(), 5u);
  for (const Tensor& g : chain_grads) kt::expect_close(g, {3}, 0, 0);
}

// The engine keeps its buffers per thread between backwards; a backward started from a hook while
// another runs gets buffers of its own.
TEST(Autograd, BackwardInsideAHookRunsOnItsOwnBuffers) {
  Tensor x = leaf({1, 2});
  Tensor other = leaf({5});
  Tensor h = x * 2.0;
  h.register_hook([&](const Tensor& g) {
    EnableGradGuard record;  // hooks run with grad mode off, as backward formulas do
    (other * other).sum().backward();  // d/dother = 2 * other
    return Tensor();
  });
  (h * h).sum().backward();  // d/dx = 8x
  kt::expect_close(x.grad(), {8, 16}, 0, 0);
  kt::expect_close(other.grad(), {10}, 0, 0);
  (x * 3.0).sum().backward();  // the buffers, reused, start empty
  kt::expect_close(x.grad(), {11, 19}, 0, 0);
}

TEST(Autograd, BackwardWithExplicitGradient) {
  Tensor x = leaf({1, 2, 3});
  Tensor y = x * 2.0;
  y.backward(kiln::tensor({1, 10, 100}, {.dtype = DType::f64}));
  kt::expect_close(x.grad(), {2, 20, 200}, 0, 0);
  kt::expect_error([&] { (x * 2.0).backward(); }, {"backward", "one-element", "[3]"});
  kt::expect_error([&] { (x * 2.0).backward(kiln::tensor({1.0}, {.dtype = DType::f64})); },
                   {"backward", "shape [1]", "[3]"});
}

TEST(Autograd, BroadcastGradientsAreReducedToTheInputShape) {
  Tensor a = kiln::ones({2, 3}, {.dtype = DType::f64}).requires_grad_();
  Tensor b = kiln::tensor({1, 2, 3}, {.dtype = DType::f64}).requires_grad_();
  Tensor c = kiln::full({2, 1}, 2.0, {.dtype = DType::f64}).requires_grad_();
  ((a * b) * c).sum().backward();
  kt::expect_close(a.grad(), {2, 4, 6, 2, 4, 6}, 0, 0);
  kt::expect_close(b.grad(), {4, 4, 4}, 0, 0);  // sum over rows of a*c
  kt::expect_close(c.grad(), {6, 6}, 0, 0);
  EXPECT_EQ(b.grad().shape(), Dims({3}));
  EXPECT_EQ(c.grad().shape(), Dims({2, 1}));
}

TEST(Autograd, SecondBackwardNeedsRetainGraph) {
  Tensor x = leaf({3});
  Tensor y = (x * x).sum();
  y.backward({}, /*retain_graph=*/true);
  y.backward();
  kt::expect_close(x.grad(), {12}, 0, 0);
  kt::expect_error([&] { y.backward(); }, {"backward", "second time", "retain_graph = true"});
}

TEST(Autograd, GradReturnsWithoutTouchingDotGrad) {
  Tensor x = leaf({1, 2});
  Tensor w = leaf({3, 4});
  Tensor y = (x * w).sum();
  TensorList g = autograd::grad({y}, {x});
  kt::expect_close(g[0], {3, 4}, 0, 0);
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  Tensor unused = leaf({1});
  kt::expect_error([&] { autograd::grad({(x * w).sum()}, {unused}); }, {"grad", "not used"});
  TensorList none = autograd::grad({(x * w).sum()}, {unused}, {.allow_unused = true});
  EXPECT_FALSE(none[0].defined());
}

TEST(Autograd, GradOfANonLeafInput) {
  Tensor x = leaf({1, 2});
  Tensor h = x * 3.0;
  Tensor y = (h * h).sum();
  TensorList g = autograd::grad({y}, {h});
  kt::expect_close(g[0], {6, 12}, 0, 0);
}

TEST(Autograd, NoGradGuardStopsRecording) {
  Tensor x = leaf({1});
  {
    NoGradGuard no_grad;
    Tensor y = x * 2.0;
    EXPECT_FALSE(y.requires_grad());
    {
      EnableGradGuard enable;
      EXPECT_TRUE((x * 2.0).requires_grad());
    }
  }
  EXPECT_TRUE((x * 2.0).requires_grad());
  kt::expect_error([&] { NoGradGuard g; (x * 2.0).sum().backward(); }, {"backward", "does not require grad"});
}

TEST(Autograd, LeafAndRequiresGradRules) {
  Tensor x = kiln::ones({2});
  EXPECT_TRUE(x.is_leaf());
  EXPECT_FALSE(x.requires_grad());
  kt::expect_error([&] { kiln::ones({2}, {.dtype = DType::i64}).requires_grad_(); },
                   {"requires_grad_", "floating", "int64"});
  x.requires_grad_();
  Tensor y = x * 2.0;
  kt::expect_error([&] { y.requires_grad_(false); }, {"requires_grad_", "leaf", "mul"});
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.data_ptr(), y.data_ptr());
}

TEST(Autograd, RetainGradKeepsNonLeafGrads) {
  Tensor x = leaf({1, 2});
  Tensor h = x * 2.0;
  h.retain_grad();
  Tensor z = x * 5.0;
  (h * h + z).sum().backward();
  EXPECT_TRUE(h.retains_grad());
  kt::expect_close(h.grad(), {4, 8}, 0, 0);  // 2h
  EXPECT_FALSE(z.grad().defined());
}

TEST(Autograd, HooksSeeAndReplaceGradients) {
  Tensor x = leaf({1, 2});
  std::vector<double> seen;
  auto handle = x.register_hook([&](const Tensor& g) { seen = kt::values(g); return g * 10.0; });
  Tensor h = x * 3.0;
  h.register_hook([](const Tensor& g) { return g + 1.0; });
  h.sum().backward();
  EXPECT_EQ(seen, (std::vector<double>{6, 6}));  // (1 + 1) * 3
  kt::expect_close(x.grad(), {60, 60}, 0, 0);
  handle.remove();
  x.mutable_grad() = Tensor();
  (x * 3.0).sum().backward();
  kt::expect_close(x.grad(), {3, 3}, 0, 0);
}

TEST(Autograd, InPlaceChangeOfASavedTensorIsDetected) {
  Tensor x = leaf({1, 2});
  Tensor a = x * 2.0;
  Tensor b = kiln::tensor({3, 4}, {.dtype = DType::f64});
  Tensor y = (a * b).sum();  // saves b
  b.add_(1.0);
  kt::expect_error([&] { y.backward(); }, {"backward of 'mul'", "modified by an in-place", "at version 2", "expected version 1"});
}

TEST(Autograd, InPlaceOnALeafThatRequiresGradIsRefused) {
  Tensor x = leaf({1, 2});
  kt::expect_error([&] { autograd::check_inplace(x, "add_"); }, {"add_", "leaf", "NoGradGuard"});
  NoGradGuard no_grad;
  autograd::check_inplace(x, "add_");  // optimizers update leaves under NoGradGuard
}

TEST(Autograd, GraphMemoryIsReleasedWithoutBackward) {
  Tensor w = kiln::randn({64, 64}).requires_grad_();
  Tensor x = kiln::randn({64, 64});
  for (int i = 0; i < 20; ++i) (x * w * w).sum();  // warm the allocator's caches
  const int64_t before = cpu_memory_stats().allocated_bytes;
  for (int i = 0; i < 1000; ++i) {
    Tensor y = (x * w * w).sum();  // each graph saves a 16 KiB intermediate
  }
  EXPECT_EQ(cpu_memory_stats().allocated_bytes, before);
}

TEST(Autograd, SavedTensorsAreReleasedAfterBackward) {
  Tensor w = kiln::randn({512, 512}).requires_grad_();
  Tensor x = kiln::randn({512, 512});
  w.mutable_grad() = kiln::zeros({512, 512});
  const int64_t before = cpu_memory_stats().allocated_bytes;
  Tensor y = (x * w * w).sum();
  const int64_t with_graph = cpu_memory_stats().allocated_bytes;
  EXPECT_GE(with_graph - before, 512 * 512 * 4);  // the intermediate x*w, saved by the second mul
  y.backward();
  // y and its node survive, but the saved intermediate (x*w) is gone; grads were accumulated in place.
  EXPECT_LT(cpu_memory_stats().allocated_bytes - before, 512 * 512 * 4);
}

TEST(Autograd, DeepChainsBackwardAndTearDownWithoutRecursion) {
  Tensor x = kiln::ones({1}).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 200000; ++i) y = y + 1.0;
  y.sum().backward();
  kt::expect_close(x.grad(), {1}, 0, 0);
  Tensor z = x;
  for (int i = 0; i < 200000; ++i) z = z * 1.0;
  z = Tensor();  // destroying 200k nodes must not overflow the stack
  SUCCEED();
}

TEST(Autograd, AnomalyModeNamesTheOpThatMadeNaN) {
  Tensor x = leaf({1, 2});
  Tensor inf = kiln::tensor({kt::kInf, 1.0}, {.dtype = DType::f64});
  {
    Tensor y = (x * inf).sum();
    y.backward();  // without anomaly mode the Inf lands in .grad silently, as in PyTorch
    EXPECT_TRUE(std::isinf(kt::values(x.grad())[0]));
  }
  autograd::DetectAnomalyGuard anomaly;
  Tensor y = (x * inf).sum();
  kt::expect_error([&] { y.backward(); }, {"anomaly", "'mul'", "NaN or Inf", "input 0"});
}

TEST(Autograd, GradcheckAcceptsRightAndCatchesWrongGradients) {
  Tensor a = kt::random_tensor({3, 4}, DType::f64).requires_grad_();
  Tensor b = kt::random_tensor({4}, DType::f64).requires_grad_();
  auto ok = autograd::gradcheck([](const TensorList& in) { return TensorList{in[0] * in[1] - in[0] * 2.0}; }, {a, b});
  EXPECT_TRUE(ok.ok) << ok.message;
  // A hook that corrupts the gradient must be caught.
  auto bad = autograd::gradcheck(
      [](const TensorList& in) {
        Tensor y = in[0] * 3.0;
        if (y.requires_grad()) y.register_hook([](const Tensor& g) { return g * 1.01; });
        return TensorList{y};
      },
      {a});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.message.find("analytic"), std::string::npos);
}

TEST(Autograd, SumToReducesBroadcastDims) {
  Tensor g = kiln::arange(24, {.dtype = DType::f64}).view({2, 3, 4});
  kt::expect_close(autograd::sum_to(g, {3, 1}), {60, 92, 124}, 0, 0);
  kt::expect_close(autograd::sum_to(g, {}), {276}, 0, 0);
}

}  // namespace
