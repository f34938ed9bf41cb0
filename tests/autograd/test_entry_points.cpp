// One differentiable entry point per layer op: every forward that autograd/ops/nn_ops.h exports
// (plus linear, linear_relu and embedding) records a node when an input requires grad, its gradient
// passes an f64 finite-difference gradcheck, and nn::functional's form gives the same values and
// gradients bit for bit; the explicit *_backward functions refuse to run on the tape. A test reads
// nn_ops.h and fails when it declares a function this file does not cover. Also the named fused
// layers, nn::LinearReLU and nn::MaxPool2dReLU, against the layer pairs Sequential fuses.
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>

#include "autograd/gradcheck.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace F = kiln::nn::functional;

namespace {

using Fn = std::function<TensorList(const TensorList&)>;

struct EntryCase {
  std::string name;      // the function and its node's name
  std::string node;      // the grad_fn's name where it differs (*_with_indices, *_forward), else empty
  Dims shapes[3];        // the f64 leaves' shapes (x, weight, bias); empty: not an input
  Fn op;                 // the kiln:: entry point
  Fn functional;         // the nn::functional form, where there is one
};

Tensor leaf(const Dims& shape, uint64_t seed, DType dtype = DType::f64) {
  return kt::random_tensor(shape, dtype, -1, 1, seed).requires_grad_();
}

TensorList leaves(const EntryCase& c, DType dtype = DType::f64) {
  TensorList t;
  for (int i = 0; i < 3 && !c.shapes[i].empty(); ++i) t.push_back(leaf(c.shapes[i], 100 + i, dtype));
  return t;
}

Tensor running(double v, int64_t n, const Tensor& like) { return full({n}, v, {.dtype = like.dtype()}); }

Tensor ids() { return tensor<int64_t>({3, 0, 3, 1, 4}); }

std::vector<EntryCase> entry_cases() {
  return {
      {"conv1d", "", {{2, 4, 7}, {2, 2, 3}, {2}},
       [](const TensorList& t) { return TensorList{conv1d(t[0], t[1], t[2], 2, 1, 2, 2)}; },
       [](const TensorList& t) { return TensorList{F::conv1d(t[0], t[1], t[2], {2, 1, 2, 2})}; }},
      {"conv2d", "", {{2, 4, 5, 4}, {4, 2, 3, 2}, {4}},
       [](const TensorList& t) { return TensorList{conv2d(t[0], t[1], t[2], {2, 1}, {1}, {1}, 2)}; },
       [](const TensorList& t) {
         return TensorList{F::conv2d(t[0], t[1], t[2], {.stride = {2, 1}, .padding = 1, .groups = 2})};
       }},
      {"conv_transpose2d", "", {{1, 2, 3, 3}, {2, 3, 2, 2}, {3}},
       [](const TensorList& t) { return TensorList{conv_transpose2d(t[0], t[1], t[2], {2}, {0}, {1})}; },
       [](const TensorList& t) {
         return TensorList{F::conv_transpose2d(t[0], t[1], t[2], {.stride = 2, .output_padding = 1})};
       }},
      {"max_pool2d_with_indices", "max_pool2d", {{1, 2, 4, 5}},
       [](const TensorList& t) { return TensorList{max_pool2d_with_indices(t[0], {2}, {1}, {1}).values}; }, nullptr},
      {"max_pool2d", "", {{1, 2, 4, 5}},
       [](const TensorList& t) { return TensorList{max_pool2d(t[0], {2}, {1}, {1})}; },
       [](const TensorList& t) { return TensorList{F::max_pool2d(t[0], 2, {.stride = 1, .padding = 1})}; }},
      {"max_pool2d_relu_with_indices", "max_pool2d_relu", {{2, 3, 5, 4}},
       [](const TensorList& t) { return TensorList{max_pool2d_relu_with_indices(t[0], {3}, {2}, {1}).values}; },
       nullptr},
      {"max_pool2d_relu", "", {{2, 3, 5, 4}},
       [](const TensorList& t) { return TensorList{max_pool2d_relu(t[0], {3}, {2}, {1})}; },
       [](const TensorList& t) { return TensorList{F::max_pool2d_relu(t[0], 3, {.stride = 2, .padding = 1})}; }},
      {"avg_pool2d", "", {{1, 2, 5, 6}},
       [](const TensorList& t) { return TensorList{avg_pool2d(t[0], {3}, {2}, {1}, true, false)}; },
       [](const TensorList& t) {
         return TensorList{F::avg_pool2d(t[0], 3, {.stride = 2, .padding = 1, .ceil_mode = true,
                                                   .count_include_pad = false})};
       }},
      {"adaptive_avg_pool2d", "", {{2, 1, 5, 7}},
       [](const TensorList& t) { return TensorList{adaptive_avg_pool2d(t[0], {2, 3})}; },
       [](const TensorList& t) { return TensorList{F::adaptive_avg_pool2d(t[0], {2, 3})}; }},
      {"batch_norm_forward", "batch_norm", {{4, 3, 2}, {3}, {3}},
       [](const TensorList& t) {
         return TensorList{batch_norm_forward(t[0], running(0, 3, t[0]), running(1, 3, t[0]), t[1], t[2], true).output};
       },
       nullptr},
      {"batch_norm", "", {{4, 3}, {3}, {3}},  // eval: the running statistics normalise
       [](const TensorList& t) {
         return TensorList{batch_norm(t[0], running(0.2, 3, t[0]), running(1.5, 3, t[0]), t[1], t[2], false)};
       },
       [](const TensorList& t) {
         return TensorList{F::batch_norm(t[0], running(0.2, 3, t[0]), running(1.5, 3, t[0]), t[1], t[2], false)};
       }},
      {"layer_norm_forward", "layer_norm", {{2, 3, 2}, {3, 2}, {3, 2}},
       [](const TensorList& t) { return TensorList{layer_norm_forward(t[0], {3, 2}, t[1], t[2]).output}; }, nullptr},
      {"layer_norm", "", {{2, 3, 2}, {3, 2}, {3, 2}},
       [](const TensorList& t) { return TensorList{layer_norm(t[0], {3, 2}, t[1], t[2])}; },
       [](const TensorList& t) { return TensorList{F::layer_norm(t[0], {3, 2}, t[1], t[2])}; }},
      {"rms_norm_forward", "rms_norm", {{3, 4}, {4}},
       [](const TensorList& t) { return TensorList{rms_norm_forward(t[0], {4}, t[1], 1e-6).output}; }, nullptr},
      {"rms_norm", "", {{3, 4}, {4}},
       [](const TensorList& t) { return TensorList{rms_norm(t[0], {4}, t[1], 1e-6)}; },
       [](const TensorList& t) { return TensorList{F::rms_norm(t[0], {4}, t[1], 1e-6)}; }},
      {"group_norm_forward", "group_norm", {{2, 4, 3}, {4}, {4}},
       [](const TensorList& t) { return TensorList{group_norm_forward(t[0], 2, t[1], t[2]).output}; }, nullptr},
      {"group_norm", "", {{2, 4, 3}, {4}, {4}},
       [](const TensorList& t) { return TensorList{group_norm(t[0], 2, t[1], t[2])}; },
       [](const TensorList& t) { return TensorList{F::group_norm(t[0], 2, t[1], t[2])}; }},
      {"embedding", "", {{5, 3}},
       // padding_idx 2, a row no index picks: its zero gradient is then also the true one
       [](const TensorList& t) { return TensorList{embedding(t[0], ids(), 2)}; },
       [](const TensorList& t) { return TensorList{F::embedding(ids(), t[0], 2)}; }},
      {"linear", "", {{4, 3}, {2, 3}, {2}},
       [](const TensorList& t) { return TensorList{linear(t[0], t[1], t[2])}; },
       [](const TensorList& t) { return TensorList{F::linear(t[0], t[1], t[2])}; }},
      {"linear_relu", "", {{4, 3}, {2, 3}, {2}},
       [](const TensorList& t) { return TensorList{linear_relu(t[0], t[1], t[2])}; },
       [](const TensorList& t) { return TensorList{F::linear_relu(t[0], t[1], t[2])}; }},
  };
}

// Each explicit backward, called with one input that requires grad (true) or not (false).
struct BackwardCase {
  std::string name;
  std::function<void(bool requires_grad)> call;
};

Tensor maybe_leaf(const Dims& shape, uint64_t seed, bool requires_grad) {
  Tensor t = kt::random_tensor(shape, DType::f32, -1, 1, seed);
  return requires_grad ? t.requires_grad_() : t;
}

std::vector<BackwardCase> backward_cases() {
  const Tensor w1 = kt::random_tensor({2, 3, 2}, DType::f32), w2 = kt::random_tensor({2, 3, 2, 2}, DType::f32);
  const Tensor stat = ones({2}), stat4 = ones({4});
  return {
      {"conv1d_backward", [=](bool rg) { conv1d_backward(maybe_leaf({1, 2, 4}, 1, rg), zeros({1, 3, 5}), w1); }},
      {"conv2d_backward",
       [=](bool rg) { conv2d_backward(maybe_leaf({1, 2, 2, 2}, 1, rg), zeros({1, 3, 3, 3}), w2); }},
      {"conv_transpose2d_backward",
       [=](bool rg) { conv_transpose2d_backward(maybe_leaf({1, 3, 3, 3}, 1, rg), zeros({1, 2, 2, 2}), w2); }},
      {"max_pool2d_backward",
       [](bool rg) {
         const TensorPair p = max_pool2d_with_indices(kt::random_tensor({1, 1, 4, 4}, DType::f32), {2});
         max_pool2d_backward(maybe_leaf({1, 1, 2, 2}, 1, rg), p.indices, {1, 1, 4, 4});
       }},
      {"avg_pool2d_backward", [](bool rg) { avg_pool2d_backward(maybe_leaf({1, 1, 2, 2}, 1, rg), {1, 1, 4, 4}, {2}); }},
      {"adaptive_avg_pool2d_backward",
       [](bool rg) { adaptive_avg_pool2d_backward(maybe_leaf({1, 1, 2, 2}, 1, rg), {1, 1, 5, 5}); }},
      {"batch_norm_backward",
       [=](bool rg) { batch_norm_backward(ones({3, 2}), maybe_leaf({3, 2}, 1, rg), {}, stat, stat, true); }},
      {"layer_norm_backward",
       [=](bool rg) { layer_norm_backward(ones({2, 4}), maybe_leaf({2, 4}, 1, rg), {4}, {}, stat, stat); }},
      {"rms_norm_backward",
       [=](bool rg) { rms_norm_backward(ones({2, 4}), maybe_leaf({2, 4}, 1, rg), {4}, {}, stat); }},
      {"group_norm_backward",
       [=](bool rg) { group_norm_backward(ones({2, 4}), maybe_leaf({2, 4}, 1, rg), 2, {}, stat4, stat4); }},
  };
}

// Bit-for-bit equality (NaN and the sign of zero included) of two tensors.
void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (!a.defined()) return;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double s = kt::at(a, i), t = kt::at(b, i);
    ASSERT_TRUE(std::isnan(s) ? std::isnan(t) : s == t && std::signbit(s) == std::signbit(t))
        << what << " element " << i << ": " << s << " vs " << t;
  }
}

}  // namespace

TEST(EntryPoints, EveryLayerOpRecordsItsGradient) {
  for (const EntryCase& c : entry_cases()) {
    SCOPED_TRACE(c.name);
    const TensorList in = leaves(c);
    const Tensor out = c.op(in)[0];
    ASSERT_TRUE(out.grad_fn()) << c.name << " recorded no node for an input that requires grad";
    EXPECT_EQ(out.grad_fn()->name(), c.node.empty() ? c.name : c.node);

    const autograd::GradcheckResult r = autograd::gradcheck(c.op, leaves(c));
    EXPECT_TRUE(r.ok) << c.name << ": " << r.message;

    {
      NoGradGuard no_grad;
      EXPECT_FALSE(c.op(leaves(c))[0].grad_fn()) << c.name << " recorded under NoGradGuard";
    }
  }
}

// The nn::functional form is the same op: the same values and gradients, bit for bit, in f32.
TEST(EntryPoints, FunctionalFormIsTheSameOp) {
  for (const EntryCase& c : entry_cases()) {
    if (!c.functional) continue;
    SCOPED_TRACE(c.name);
    const TensorList a = leaves(c, DType::f32), b = leaves(c, DType::f32);
    const Tensor ya = c.op(a)[0], yb = c.functional(b)[0];
    ASSERT_TRUE(yb.grad_fn());
    EXPECT_EQ(ya.grad_fn()->name(), yb.grad_fn()->name());
    expect_same(ya, yb, c.name + " output");
    const Tensor g = kt::random_tensor(ya.shape(), DType::f32, -1, 1, 7);
    ya.backward(g);
    yb.backward(g);
    for (size_t i = 0; i < a.size(); ++i) expect_same(a[i].grad(), b[i].grad(), c.name + " grad " + std::to_string(i));
  }
}

// A node for any input that requires grad, and gradients only for those.
TEST(EntryPoints, RecordsWhenOnlyTheWeightRequiresGrad) {
  const Tensor x = kt::random_tensor({1, 2, 4, 4}, DType::f32), w = leaf({3, 2, 3, 3}, 1, DType::f32);
  const Tensor y = conv2d(x, w);
  ASSERT_TRUE(y.grad_fn());
  y.sum().backward();
  EXPECT_FALSE(x.grad().defined());
  ASSERT_TRUE(w.grad().defined());
  // d sum(y) / d w[o, c, i, j] is the sum of x over the window's positions: the 2x2 corner block
  // of each input plane for i = j = 0.
  const Tensor xs = x.select(0, 0);
  for (int64_t c = 0; c < 2; ++c) {
    double want = 0;
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t v = 0; v < 2; ++v) want += kt::at(xs.select(0, c), h * 4 + v);
    EXPECT_NEAR(kt::at(w.grad(), c * 9), want, 1e-5) << "channel " << c;
  }
  const Tensor ln = layer_norm(kt::random_tensor({2, 3}, DType::f32), {3}, {}, leaf({3}, 2, DType::f32));
  ASSERT_TRUE(ln.grad_fn());
  EXPECT_EQ(ln.grad_fn()->name(), "layer_norm");
}

TEST(EntryPoints, ExplicitBackwardsRefuseToRecord) {
  for (const BackwardCase& c : backward_cases()) {
    SCOPED_TRACE(c.name);
    c.call(false);  // a derivative building block: fine off the tape
    kt::expect_error([&] { c.call(true); }, {c.name + ": is a derivative", "no double backward"});
    NoGradGuard no_grad;
    c.call(true);  // grad mode off, as the engine runs it
  }
}

// Every function nn_ops.h declares is a case above: a new layer op cannot skip these checks.
TEST(EntryPoints, CoverEveryFunctionOfNnOps) {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/../../autograd/ops/nn_ops.h");
  ASSERT_TRUE(in) << "cannot read autograd/ops/nn_ops.h";
  std::set<std::string> covered;
  for (const EntryCase& c : entry_cases()) covered.insert(c.name);
  for (const BackwardCase& c : backward_cases()) covered.insert(c.name);
  const std::regex decl(R"(^(Tensor|TensorPair|NormOutput|LayerGrads) (\w+)\()");
  std::string line;
  int declared = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, decl)) continue;
    ++declared;
    EXPECT_TRUE(covered.count(m[2].str())) << m[2].str() << " is declared in nn_ops.h but not covered here";
  }
  EXPECT_GE(declared, 27);  // the header's 27 functions when this test was written
}

// ---- the named fusions

TEST(EntryPoints, LinearReluLayerIsTheFusedPair) {
  auto pair = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(5, 3), std::make_shared<nn::ReLU>());
  nn::LinearReLU fused(5, 3);
  EXPECT_EQ(fused.state_dict().keys(), (std::vector<std::string>{"weight", "bias"}));
  fused.load_state_dict(std::dynamic_pointer_cast<nn::Linear>((*pair)[0])->state_dict());
  const Tensor x = kt::random_tensor({4, 5}, DType::f32, -1, 1, 3);
  const Tensor a = x.detach().requires_grad_(), b = x.detach().requires_grad_();
  const Tensor ya = fused.forward(a), yb = pair->forward(b);
  ASSERT_TRUE(ya.grad_fn());
  EXPECT_EQ(ya.grad_fn()->name(), "linear_relu");
  expect_same(ya, yb, "LinearReLU output");
  // and the unfused composition, computed independently
  const auto& lin = *std::dynamic_pointer_cast<nn::Linear>((*pair)[0]);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 3; ++o) {
      double s = kt::at(lin.bias, o);
      for (int64_t k = 0; k < 5; ++k) s += kt::at(x, i * 5 + k) * kt::at(lin.weight, o * 5 + k);
      EXPECT_NEAR(kt::at(ya, i * 3 + o), s > 0 ? s : 0, 1e-5);
    }
  ya.sum().backward();
  yb.sum().backward();
  expect_same(a.grad(), b.grad(), "LinearReLU grad x");
  expect_same(fused.weight.grad(), lin.weight.grad(), "LinearReLU grad weight");
  expect_same(fused.bias.grad(), lin.bias.grad(), "LinearReLU grad bias");
  EXPECT_EQ(fused.str(), "LinearReLU(in_features=5, out_features=3, bias=True)");
}

TEST(EntryPoints, MaxPool2dReluLayerIsTheFusedPair) {
  const F::MaxPool2dArgs args{.stride = F::IntPair{2}, .padding = 1};
  nn::MaxPool2dReLU fused(3, args);
  nn::MaxPool2d pool(3, args);
  const Tensor x = kt::random_tensor({2, 3, 6, 5}, DType::f32, -2, 2, 4);
  const Tensor a = x.detach().requires_grad_(), b = x.detach().requires_grad_();
  const Tensor ya = fused.forward(a), yb = pool.forward(b.relu());
  ASSERT_TRUE(ya.grad_fn());
  EXPECT_EQ(ya.grad_fn()->name(), "max_pool2d_relu");
  expect_same(ya, yb, "MaxPool2dReLU output");
  const Tensor g = kt::random_tensor(ya.shape(), DType::f32, -1, 1, 5);
  ya.backward(g);
  yb.backward(g);
  expect_same(a.grad(), b.grad(), "MaxPool2dReLU grad");
  EXPECT_TRUE(fused.state_dict().keys().empty());
  EXPECT_EQ(fused.str(), "MaxPool2dReLU(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)");
}

// Sequential still fuses the written pairs, and its children (and so state_dict keys) stay as written.
TEST(EntryPoints, SequentialKeepsItsChildrenWhenFusing) {
  nn::Sequential seq(std::make_shared<nn::Linear>(4, 6), std::make_shared<nn::ReLU>(),
                     std::make_shared<nn::Linear>(6, 2));
  EXPECT_EQ(seq.state_dict().keys(), (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  EXPECT_EQ(seq.size(), 3u);
  const Tensor y = seq.forward(kt::random_tensor({3, 4}, DType::f32).requires_grad_());
  ASSERT_TRUE(y.grad_fn());
  // the last Linear's node takes the fused op's output
  ASSERT_FALSE(y.grad_fn()->next_edges.empty());
  EXPECT_EQ(y.grad_fn()->next_edges[0].node->name(), "linear_relu");
}
