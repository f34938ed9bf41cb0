// autograd::register_post_accumulate_grad_hook: called once per backward per leaf, after that
// backward's whole contribution is in .grad (what DDP's reducer relies on to start a bucket), never
// for non-leaves or for grad(), and no more once its handle is removed.
#include <gtest/gtest.h>

#include "kiln/kiln.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;

namespace {

Tensor leaf(std::initializer_list<double> v) { return kiln::tensor(v, {.dtype = DType::f64}).requires_grad_(); }

TEST(PostAccumulateHook, SeesTheFinalGradOncePerBackward) {
  Tensor w = leaf({1, 2});
  std::vector<std::vector<double>> seen;
  autograd::HookHandle handle = autograd::register_post_accumulate_grad_hook(w, [&](const Tensor& t) {
    EXPECT_EQ(t.impl(), w.impl());  // the leaf itself, not a copy
    seen.push_back(kt::values(t.grad()));
  });
  // w reaches the loss through three paths; the hook sees their sum: 2w + 3 + 1.
  Tensor loss = (w * w).sum() + (w * 3.0).sum() + w.sum();
  loss.backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], (std::vector<double>{6, 8}));

  // A second backward accumulates, and the hook sees the accumulated .grad: 6 + 5, 8 + 5.
  (w * 5.0).sum().backward();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1], (std::vector<double>{11, 13}));

  handle.remove();
  (w * 5.0).sum().backward();
  EXPECT_EQ(seen.size(), 2u);
  kt::expect_close(w.grad(), {16, 18}, 0, 0);
}

TEST(PostAccumulateHook, RunsAfterGradientHooksAndInRegistrationOrder) {
  Tensor w = leaf({1});
  std::vector<std::string> order;
  w.register_hook([&](const Tensor& g) {
    order.push_back("grad hook");
    return g * 10.0;  // replaces the gradient before it is accumulated
  });
  autograd::register_post_accumulate_grad_hook(w, [&](const Tensor& t) {
    order.push_back("post " + std::to_string(kt::values(t.grad())[0]));
  });
  autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) { order.push_back("second"); });
  (w * 2.0).sum().backward();
  EXPECT_EQ(order, (std::vector<std::string>{"grad hook", "post 20.000000", "second"}));
}

// Note [Leaves accumulate early]: a leaf's .grad is final once its oldest consumer has run, and its
// hook runs then, before the backward of the ops recorded earlier (so DDP can start communicating).
TEST(PostAccumulateHook, RunsAsSoonAsTheLeafsLastConsumerHasRun) {
  Tensor w1 = leaf({2}), w2 = leaf({3});
  Tensor x = kiln::tensor({5.0}, {.dtype = DType::f64});
  Tensor h = x * w1;
  Tensor out = (h * w2 + h * w2 * 2.0).sum();  // w2 used twice, by ops newer than x * w1
  std::vector<std::string> order;
  h.register_hook([&](const Tensor&) {
    order.push_back("backward of x * w1");
    return Tensor();
  });
  autograd::register_post_accumulate_grad_hook(w2, [&](const Tensor& t) {
    order.push_back("w2 " + std::to_string(kt::values(t.grad())[0]));
  });
  autograd::register_post_accumulate_grad_hook(w1, [&](const Tensor&) { order.push_back("w1"); });
  out.backward();
  EXPECT_EQ(order, (std::vector<std::string>{"w2 30.000000", "backward of x * w1", "w1"}));
  kt::expect_close(w1.grad(), {45}, 0, 0);  // 3 * x * w2
}

TEST(PostAccumulateHook, OnlyLeavesThatAccumulate) {
  Tensor w = leaf({1, 2});
  Tensor h = w * 2.0;
  kt::expect_error([&] { autograd::register_post_accumulate_grad_hook(h, [](const Tensor&) {}); },
                   {"register_post_accumulate_grad_hook", "only leaf tensors", "shape [2]", "register_hook"});
  Tensor plain = kiln::tensor({1.0});
  kt::expect_error([&] { autograd::register_post_accumulate_grad_hook(plain, [](const Tensor&) {}); },
                   {"register_post_accumulate_grad_hook", "does not require grad"});

  // grad() returns gradients without touching .grad, so nothing is accumulated and no hook runs.
  int calls = 0;
  autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) { ++calls; });
  TensorList g = autograd::grad({(w * w).sum()}, {w});
  kt::expect_close(g[0], {2, 4}, 0, 0);
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(w.grad().defined());
  // A leaf that the outputs do not depend on gets no gradient and no call.
  Tensor unused = leaf({3});
  autograd::register_post_accumulate_grad_hook(unused, [&](const Tensor&) { ++calls; });
  (w * 1.0).sum().backward();
  EXPECT_EQ(calls, 1);
}

TEST(PostAccumulateHook, AHookMayRemoveItselfWhileRunning) {
  Tensor w = leaf({1});
  int calls = 0;
  autograd::HookHandle handle;
  handle = autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) {
    ++calls;
    handle.remove();
  });
  int other = 0;
  autograd::register_post_accumulate_grad_hook(w, [&](const Tensor&) { ++other; });
  w.sum().backward();
  w.sum().backward();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(other, 2);
}

}  // namespace
