// Every nn layer against PyTorch (tests/fixtures/nn/layers.txt): the layer is loaded with torch's
// parameters, its output and the gradients of its inputs and parameters (for sum(out * gy)) and
// its buffers after forward are compared within 1e-5 relative. Then f64 gradchecks of the
// functional wrappers, and the layers' error messages.
#include <gtest/gtest.h>

#include <functional>
#include <map>

#include "autograd/gradcheck.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/attention.h"
#include "nn/layers/conv.h"
#include "nn/layers/linear.h"
#include "nn/layers/norm.h"
#include "nn/layers/pool.h"
#include "nn/containers.h"
#include "nn_fixture.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace F = kiln::nn::functional;

namespace {

using Inputs = std::map<std::string, Tensor>;
using Forward = std::function<Tensor(nn::Module&, Inputs&)>;

const kt::NnFixture& fixture() {
  static const kt::NnFixture fx("layers.txt");
  return fx;
}

Tensor one_input(nn::Module& m, Inputs& in) { return m.forward(in.at("x")); }

// Loads torch's parameters into m, runs the case and compares everything the fixture holds.
void check_layer(const std::string& name, nn::Module& m, const Forward& forward = one_input, bool train = true) {
  SCOPED_TRACE(name);
  const kt::NnFixture& fx = fixture();
  m.train(train);
  TensorDict state;
  for (auto& [key, value] : fx.with_prefix(name + ".param")) state.insert(key, value);
  m.load_state_dict(state);
  Inputs inputs = fx.with_prefix(name + ".in");
  for (auto& [key, t] : inputs)
    if (t.is_floating() && key.find("mask") == std::string::npos) t.requires_grad_();
  Tensor out = forward(m, inputs);
  kt::expect_matches(out, fx[name + ".out"], "output");
  out.backward(fx[name + ".gy"]);
  for (auto& [key, grad] : fx.with_prefix(name + ".grad.in"))
    kt::expect_matches(inputs.at(key).grad(), grad, "grad of " + key);
  const auto param_grads = fx.with_prefix(name + ".grad.param");
  EXPECT_EQ(param_grads.size(), m.parameters().size()) << "torch and kiln disagree on the parameters";
  for (auto& [key, grad] : param_grads) kt::expect_matches(m.parameter(key).grad(), grad, "grad of " + key);
  for (auto& [key, value] : fx.with_prefix(name + ".after"))
    kt::expect_matches(m.buffer(key), value, key + " after forward");
}

TEST(Layers, Linear) {
  nn::Linear a(5, 3);
  check_layer("linear", a);
  nn::Linear b(5, 3, {.bias = false});
  EXPECT_FALSE(b.bias.defined());
  check_layer("linear_3d_nobias", b);
}

TEST(Layers, Convolutions) {
  nn::Conv1d c1(3, 4, 3, {.stride = 2, .padding = 1});
  check_layer("conv1d", c1);
  nn::Conv2d c2(4, 6, 3, {.stride = {2, 1}, .padding = 1, .groups = 2});
  check_layer("conv2d", c2);
  nn::Conv2d c3(3, 4, {3, 2}, {.padding = {2, 1}, .dilation = 2, .bias = false});
  check_layer("conv2d_dilated", c3);
  nn::ConvTranspose2d ct(4, 6, 3, {.stride = 2, .padding = 1, .output_padding = 1, .groups = 2});
  check_layer("conv_transpose2d", ct);
}

TEST(Layers, Pooling) {
  nn::MaxPool2d mp(3, {.stride = 2, .padding = 1});
  check_layer("max_pool2d", mp);
  nn::MaxPool2d mp_ceil(2, {.ceil_mode = true});
  check_layer("max_pool2d_ceil", mp_ceil);
  nn::AvgPool2d ap(3, {.stride = 2, .padding = 1, .count_include_pad = false});
  check_layer("avg_pool2d", ap);
  nn::AvgPool2d ap_plain(2);
  check_layer("avg_pool2d_plain", ap_plain);
  nn::AdaptiveAvgPool2d aap({2, 3});
  check_layer("adaptive_avg_pool2d", aap);
}

TEST(Layers, BatchNorm) {
  nn::BatchNorm2d train(3, {.momentum = 0.2});
  check_layer("batch_norm2d_train", train);  // includes running stats and num_batches_tracked = 1
  nn::BatchNorm2d eval(3);
  check_layer("batch_norm2d_eval", eval, one_input, /*train=*/false);
  nn::BatchNorm1d bn1(4);
  check_layer("batch_norm1d_train", bn1);
  nn::BatchNorm1d bn1_plain(4, {.affine = false});
  EXPECT_TRUE(bn1_plain.parameters().empty());
  check_layer("batch_norm1d_3d_noaffine", bn1_plain);
}

TEST(Layers, LayerRmsGroupNorm) {
  nn::LayerNorm ln(Dims{4, 5});
  check_layer("layer_norm", ln);
  nn::RMSNorm rms(6, {.eps = 1e-6});
  check_layer("rms_norm", rms);
  nn::RMSNorm rms_default(Dims{2, 3});
  check_layer("rms_norm_default_eps", rms_default);
  nn::GroupNorm gn(2, 6);
  check_layer("group_norm", gn);
}

TEST(Layers, EmbeddingPaddingRowGetsNoGradient) {
  nn::Embedding emb(10, 4, {.padding_idx = 1});
  check_layer("embedding", emb, [](nn::Module& m, Inputs& in) { return m.forward(in.at("indices")); });
  kt::expect_close(emb.weight.grad().select(0, 1), {0, 0, 0, 0}, 0, 0, "padding row");
  nn::Embedding fresh(5, 3, {.padding_idx = -1});
  EXPECT_EQ(*fresh.padding_idx, 4);
  kt::expect_close(fresh.weight.select(0, 4), {0, 0, 0}, 0, 0, "padding row initialised to zero");
}

TEST(Layers, Activations) {
  const std::vector<std::pair<std::string, nn::ModulePtr>> cases = {
      {"relu", std::make_shared<nn::ReLU>()},           {"gelu", std::make_shared<nn::GELU>()},
      {"gelu_tanh", std::make_shared<nn::GELU>("tanh")}, {"silu", std::make_shared<nn::SiLU>()},
      {"tanh", std::make_shared<nn::Tanh>()},           {"sigmoid", std::make_shared<nn::Sigmoid>()},
      {"leaky_relu", std::make_shared<nn::LeakyReLU>(0.2)}, {"softmax", std::make_shared<nn::Softmax>(1)},
      {"flatten", std::make_shared<nn::Flatten>()}};
  for (const auto& [name, m] : cases) check_layer(name, *m);
  nn::Dropout dropout(0.3);
  check_layer("dropout_eval", dropout, one_input, /*train=*/false);  // the identity in eval mode
}

TEST(Layers, MultiheadAttentionWithMasks) {
  nn::MultiheadAttention mha(8, 2);
  Tensor weights, per_head;
  check_layer("mha", mha, [&](nn::Module& m, Inputs& in) {
    auto& attn = static_cast<nn::MultiheadAttention&>(m);
    nn::AttentionArgs args{.key_padding_mask = in.at("key_padding_mask"), .attn_mask = in.at("attn_mask")};
    nn::AttentionOutput r = attn.forward(in.at("q"), in.at("k"), in.at("v"), args);
    weights = r.weights;
    args.average_attn_weights = false;
    per_head = attn.forward(in.at("q"), in.at("k"), in.at("v"), args).weights;
    return r.output;
  });
  kt::expect_matches(weights, fixture()["mha.weights"], "weights averaged over heads");
  kt::expect_matches(per_head, fixture()["mha.weights_per_head"], "weights per head");
}

TEST(Layers, MultiheadAttentionCausalBatchFirst) {
  nn::MultiheadAttention mha(8, 4, {.batch_first = true});
  check_layer("mha_causal_batch_first", mha, [](nn::Module& m, Inputs& in) {
    const Tensor& x = in.at("x");
    return static_cast<nn::MultiheadAttention&>(m)
        .forward(x, x, x, {.need_weights = false, .attn_mask = in.at("attn_mask")})
        .output;
  });
  // is_causal alone builds the same mask.
  nn::MultiheadAttention again(8, 4, {.batch_first = true});
  check_layer("mha_causal_batch_first", again, [](nn::Module& m, Inputs& in) {
    const Tensor& x = in.at("x");
    return static_cast<nn::MultiheadAttention&>(m).forward(x, x, x, {.need_weights = false, .is_causal = true}).output;
  });
}

TEST(Layers, TransformerBlock) {
  nn::TransformerBlock block(8, 2);
  check_layer("transformer_block", block);
  const std::vector<std::string> expected = {"ln1.weight", "ln1.bias", "attn.in_proj_weight", "attn.in_proj_bias",
                                             "attn.out_proj.weight", "attn.out_proj.bias", "ln2.weight", "ln2.bias",
                                             "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"};
  EXPECT_EQ(block.state_dict().keys(), expected);
}

TEST(Layers, ScaledDotProductAttention) {
  nn::Module identity("Identity");
  check_layer("sdpa_causal", identity, [](nn::Module&, Inputs& in) {
    return F::scaled_dot_product_attention(in.at("q"), in.at("k"), in.at("v"), {.is_causal = true});
  });
  check_layer("sdpa_bool_mask", identity, [](nn::Module&, Inputs& in) {
    return F::scaled_dot_product_attention(in.at("q"), in.at("k"), in.at("v"), {.attn_mask = in.at("attn_mask")});
  });
  check_layer("sdpa_float_mask_scale", identity, [](nn::Module&, Inputs& in) {
    return F::scaled_dot_product_attention(in.at("q"), in.at("k"), in.at("v"),
                                           {.attn_mask = in.at("attn_mask"), .scale = 0.3});
  });
}

TEST(Layers, ErrorsNameTheLayerAndValues) {
  kt::expect_error([] { nn::Conv2d(3, 4, 3, {.groups = 2}); }, {"Conv2d", "in_channels (3)", "groups (2)"});
  kt::expect_error([] { nn::GroupNorm(4, 6); }, {"GroupNorm", "num_channels (6)", "num_groups (4)"});
  kt::expect_error([] { nn::MultiheadAttention(10, 3); }, {"MultiheadAttention", "embed_dim (10)", "num_heads (3)"});
  kt::expect_error([] { nn::Embedding(5, 2, {.padding_idx = 5}); }, {"Embedding", "padding_idx 5"});
  kt::expect_error([] { nn::GELU("fast"); }, {"GELU", "'fast'"});
  nn::BatchNorm2d bn(3);
  kt::expect_error([&] { bn.forward(zeros({2, 3})); }, {"BatchNorm2d", "expected 4D input", "2D"});
  nn::Linear lin(4, 2);
  kt::expect_error([&] { lin.forward(zeros({3, 5})); }, {"[3, 5]"});
  kt::expect_error([] { F::dropout(zeros({2}), 1.5); }, {"dropout", "1.5"});
  kt::expect_error([] { F::scaled_dot_product_attention(zeros({2, 4}), zeros({3, 5}), zeros({3, 5})); },
                   {"scaled_dot_product_attention", "[2, 4]", "[3, 5]"});
  kt::expect_error([] { F::embedding(zeros({2}), zeros({4, 3})); }, {"embedding", "integer"});
}

TEST(Layers, DropoutScalesKeptElementsAndIsSeeded) {
  Tensor x = ones({100000});
  Generator gen(7);
  Tensor y = F::dropout(x, 0.25, true, &gen);
  const std::vector<double> v = kt::values(y);
  double kept = 0;
  for (double e : v) {
    ASSERT_TRUE(e == 0 || std::abs(e - 1 / 0.75) < 1e-6) << e;
    kept += e != 0;
  }
  EXPECT_NEAR(kept / static_cast<double>(v.size()), 0.75, 0.01);  // 7 sigma of a binomial
  Generator same(7);
  EXPECT_TRUE(equal(F::dropout(x, 0.25, true, &same), y));
  EXPECT_TRUE(F::dropout(x, 0.25, false).is_same(x));
  kt::expect_close(F::dropout(x.slice(0, 0, 3), 1.0), {0, 0, 0}, 0, 0);
}

// ---- gradchecks of the functional wrappers in f64

Tensor f64_leaf(const Dims& shape, uint64_t seed, double lo = -1, double hi = 1) {
  return kt::random_tensor(shape, DType::f64, lo, hi, seed).requires_grad_();
}

void expect_gradcheck(const std::function<TensorList(const TensorList&)>& fn, const TensorList& inputs,
                      const std::string& what) {
  const autograd::GradcheckResult r = autograd::gradcheck(fn, inputs);
  EXPECT_TRUE(r.ok) << what << ": " << r.message;
}

TEST(Layers, GradcheckConvolutionsAndPooling) {
  expect_gradcheck(
      [](const TensorList& t) {
        return TensorList{F::conv2d(t[0], t[1], t[2], {.stride = {2, 1}, .padding = 1, .groups = 2})};
      },
      {f64_leaf({2, 4, 5, 4}, 1), f64_leaf({4, 2, 3, 2}, 2), f64_leaf({4}, 3)}, "conv2d");
  expect_gradcheck(
      [](const TensorList& t) {
        return TensorList{F::conv1d(t[0], t[1], t[2], {.stride = 2, .padding = 1, .dilation = 2})};
      },
      {f64_leaf({2, 3, 7}, 4), f64_leaf({2, 3, 3}, 5), f64_leaf({2}, 6)}, "conv1d");
  expect_gradcheck(
      [](const TensorList& t) {
        return TensorList{F::conv_transpose2d(t[0], t[1], t[2], {.stride = 2, .output_padding = 1})};
      },
      {f64_leaf({1, 2, 3, 3}, 7), f64_leaf({2, 3, 2, 2}, 8), f64_leaf({3}, 9)}, "conv_transpose2d");
  expect_gradcheck([](const TensorList& t) { return TensorList{F::max_pool2d(t[0], 2, {.stride = 1, .padding = 1})}; },
                   {f64_leaf({1, 2, 4, 5}, 10)}, "max_pool2d");
  expect_gradcheck(
      [](const TensorList& t) {
        return TensorList{F::avg_pool2d(t[0], 3, {.stride = 2, .padding = 1, .ceil_mode = true})};
      },
      {f64_leaf({1, 2, 5, 6}, 11)}, "avg_pool2d");
  expect_gradcheck([](const TensorList& t) { return TensorList{F::adaptive_avg_pool2d(t[0], {2, 3})}; },
                   {f64_leaf({2, 1, 5, 7}, 12)}, "adaptive_avg_pool2d");
}

TEST(Layers, GradcheckNormsAndEmbedding) {
  expect_gradcheck([](const TensorList& t) {
    Tensor rm = zeros({3}, {.dtype = DType::f64}), rv = ones({3}, {.dtype = DType::f64});
    return TensorList{F::batch_norm(t[0], rm, rv, t[1], t[2], /*training=*/true)};
  }, {f64_leaf({4, 3, 2}, 13), f64_leaf({3}, 14), f64_leaf({3}, 15)}, "batch_norm train");
  expect_gradcheck([](const TensorList& t) {
    Tensor rm = full({3}, 0.2, {.dtype = DType::f64}), rv = full({3}, 1.5, {.dtype = DType::f64});
    return TensorList{F::batch_norm(t[0], rm, rv, t[1], t[2], /*training=*/false)};
  }, {f64_leaf({4, 3}, 16), f64_leaf({3}, 17), f64_leaf({3}, 18)}, "batch_norm eval");
  expect_gradcheck([](const TensorList& t) { return TensorList{F::layer_norm(t[0], {3, 2}, t[1], t[2])}; },
                   {f64_leaf({2, 3, 2}, 19), f64_leaf({3, 2}, 20), f64_leaf({3, 2}, 21)}, "layer_norm");
  expect_gradcheck([](const TensorList& t) { return TensorList{F::rms_norm(t[0], {4}, t[1], 1e-6)}; },
                   {f64_leaf({3, 4}, 22), f64_leaf({4}, 23)}, "rms_norm");
  expect_gradcheck([](const TensorList& t) { return TensorList{F::group_norm(t[0], 2, t[1], t[2])}; },
                   {f64_leaf({2, 4, 3}, 24), f64_leaf({4}, 25), f64_leaf({4}, 26)}, "group_norm");
  const Tensor idx = tensor(std::vector<int64_t>{0, 3, 3, 1, 2, 0}, Dims{2, 3});
  // Without padding_idx: the padding row's zero gradient is by design not the numerical one (the
  // fixture test covers it).
  expect_gradcheck([&](const TensorList& t) { return TensorList{F::embedding(idx, t[0])}; }, {f64_leaf({4, 2}, 27)},
                   "embedding");
}

TEST(Layers, GradcheckAttention) {
  const Tensor mask = tensor(std::vector<double>{1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1}, Dims{3, 4}).to(DType::boolean);
  expect_gradcheck([&](const TensorList& t) {
    return TensorList{F::scaled_dot_product_attention(t[0], t[1], t[2], {.attn_mask = mask})};
  }, {f64_leaf({2, 3, 5}, 28), f64_leaf({2, 4, 5}, 29), f64_leaf({2, 4, 2}, 30)}, "sdpa with mask");
  expect_gradcheck([](const TensorList& t) {
    return TensorList{F::scaled_dot_product_attention(t[0], t[1], t[2], {.is_causal = true, .scale = 0.7})};
  }, {f64_leaf({3, 4}, 31), f64_leaf({3, 4}, 32), f64_leaf({3, 4}, 33)}, "sdpa causal");
}

}  // namespace
