// End-to-end parity with PyTorch: three small f32 models trained for 20 steps from torch's initial
// weights on torch's batches (tests/fixtures/training/, written by make_training_fixtures.py) must
// give torch's loss at every step within 1e-4 relative and end at torch's parameters and buffers.
// The same three in bf16-mixed (forward and loss under AutocastGuard, f32 master weights) against
// torch's bf16 autocast run: losses within 1e-2 relative (Note [bf16-mixed tolerances]).
// This checks layers, losses, autograd, optimizers and the scheduler together; each piece's own
// reference tests live beside it (tests/nn, tests/optim).
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nn/optim/adam.h"
#include "nn/optim/lr_scheduler.h"
#include "nn/optim/sgd.h"
#include "nn/nn_fixture.h"
#include "testing.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace F = kiln::nn::F;
using std::make_shared;

namespace {

constexpr int kSteps = 20;
constexpr double kLossRtol = 1e-4;
constexpr double kLogitsRtol = 1e-5;
// Note [Final-parameter tolerance]: after 20 updates, f32 rounding differences (summation order in
// matmul, conv and reductions, ~1e-7 relative per op) have been carried and amplified by the
// optimizer state. Measured: every final tensor within 3e-7 of its largest magnitude. 1e-4 leaves
// room for other kernels, thread counts and summation orders, and still catches a wrong update rule,
// which is off by the size of an update (lr 1e-2 or 3e-3 on weights of ~0.1: >= 1e-2 relative).
// Parameters with a gradient that is zero in exact arithmetic are the exception: see
// Note [Zero-gradient parameters].
constexpr double kFinalRtol = 1e-4;
// Note [bf16-mixed tolerances]: under autocast every product rounds its inputs and output to bf16
// (2^-9 relative), so where Kiln and torch round at other places, or sum in another order, they
// differ by bf16 ulps, not f32 ones. Issue 15 holds each step's loss to 1e-2 relative. Measured
// (every CPU level): the MLP and the CNN follow torch's bf16 run to f32 rounding (losses and final
// state within 2e-7), so their final state keeps the f32 tolerance kFinalRtol. The transformer's
// step-0 logits differ by at most one bf16 ulp (5e-3 of the largest; held to kBf16LogitsRtol) and
// its losses by at most 4e-4 relative, but its final parameters by up to 4e-2 of a tensor's
// largest magnitude (the MLP's second linear): AdamW divides small, noisy gradients by sqrt(v), so
// one-ulp differences early on grow into another trajectory. torch does the same to itself: its
// bf16 run with the fused attention kernel replaced by the bf16 composition (one-ulp changes) ends
// 4.0e-2 away too. So the final values are held to twice that, kBf16LmFinalRtol, which alone would
// not notice a parameter that never trained (tok_emb moves by only 1.3e-2 in 20 steps); each
// parameter's update (final - init) must also point where torch's did, with a cosine similarity of
// at least kBf16LmUpdateCosine (measured: 0.9987 and up; a frozen parameter gives none).
constexpr double kBf16LossRtol = 1e-2;
constexpr double kBf16LogitsRtol = 1e-2;
constexpr double kBf16LmFinalRtol = 8e-2;
constexpr double kBf16LmUpdateCosine = 0.99;

kt::NnFixture load_case(const std::string& file) { return kt::NnFixture("../training/" + file); }

TensorDict dict_of(const kt::NnFixture& fx, const std::string& prefix) {
  TensorDict out;
  for (auto& [name, t] : fx.with_prefix(prefix)) out.insert(name, t);
  return out;
}

struct Curve {
  std::vector<double> losses, lrs;
};

// torch's loop: zero_grad, forward, loss, backward, step, then the scheduler. Records each step's
// loss and the lr the step used; checks step 0's logits on the way, so that a forward mismatch is
// told apart from an optimizer one.
// bf16: forward and loss under bf16 autocast, backward and step outside it (Lightning's bf16-mixed),
// with the step-0 logits and the curve taken from `expected` (the bf16 fixture; init and data are
// always fx's).
Curve train(const kt::NnFixture& fx, nn::Module& model, optim::Optimizer& optimizer, optim::LRScheduler* scheduler,
            const std::function<Tensor(const Tensor&, const Tensor&)>& loss_fn, const kt::NnFixture* bf16 = nullptr) {
  model.load_state_dict(dict_of(fx, "init"));  // strict: every torch key maps to one kiln key
  model.train();
  const Tensor xs = fx["x"], ys = fx["y"];
  EXPECT_EQ(xs.size(0), kSteps);
  Curve curve;
  for (int64_t step = 0; step < kSteps; ++step) {
    optimizer.zero_grad();
    Tensor logits, loss;
    {
      AutocastGuard autocast(DeviceType::cpu, DType::bf16, /*enabled=*/bf16 != nullptr);
      logits = model.forward(xs.select(0, step));
      loss = loss_fn(logits, ys.select(0, step));
    }
    if (step == 0 && bf16) kt::expect_matches(logits.detach().to(DType::f32), (*bf16)["step0.logits"],
                                              "step 0 logits", kBf16LogitsRtol);
    if (step == 0 && !bf16) kt::expect_matches(logits.detach(), fx["step0.logits"], "step 0 logits", kLogitsRtol);
    loss.backward();
    curve.lrs.push_back(optimizer.param_groups()[0].lr);
    optimizer.step();
    if (scheduler) scheduler->step();
    curve.losses.push_back(loss.item<double>());
  }
  return curve;
}

void expect_curve_matches(const kt::NnFixture& fx, const Curve& got, double loss_rtol = kLossRtol) {
  const std::vector<double> want_losses = kt::values(fx["losses"]), want_lrs = kt::values(fx["lrs"]);
  ASSERT_EQ(want_losses.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(got.losses.size(), want_losses.size());
  for (size_t i = 0; i < want_losses.size(); ++i) {
    EXPECT_NEAR(got.losses[i], want_losses[i], loss_rtol * std::abs(want_losses[i])) << "loss at step " << i;
    EXPECT_NEAR(got.lrs[i], want_lrs[i], 1e-12 * want_lrs[i]) << "lr at step " << i;
  }
  EXPECT_LT(want_losses.back(), want_losses.front());  // the fixture does train
}

// Every entry of torch's final state_dict (parameters and buffers) against the model's. `compared`
// picks the part of a tensor whose value is determined (see Note [Zero-gradient parameters]).
using Selector = std::function<Tensor(const std::string& name, const Tensor& t)>;
void expect_final_state_matches(const kt::NnFixture& fx, const nn::Module& model, const Selector& compared = nullptr,
                                double rtol = kFinalRtol) {
  const TensorDict got = model.state_dict();
  const TensorDict want = dict_of(fx, "final");
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [name, w] : want) {
    const Tensor* g = got.find(name);
    ASSERT_NE(g, nullptr) << "model has no '" << name << "'";
    if (w.dtype() == DType::i64) {
      EXPECT_EQ(kt::values(*g), kt::values(w)) << name;
    } else {
      kt::expect_matches(compared ? compared(name, *g) : *g, compared ? compared(name, w) : w, "final " + name, rtol);
    }
  }
}

// Each parameter's update over the run (final - init) points where torch's did: their cosine
// similarity is at least min_cosine (Note [bf16-mixed tolerances]). A parameter that did not train
// has no update to align; a wrong update rule points elsewhere.
void expect_updates_align(const kt::NnFixture& fx, const kt::NnFixture& want, const nn::Module& model,
                          const Selector& compared, double min_cosine) {
  const TensorDict got = model.state_dict(), init = dict_of(fx, "init"), final = dict_of(want, "final");
  for (const auto& [name, w] : final) {
    if (w.dtype() == DType::i64) continue;
    auto part = [&](const Tensor& t) { return compared(name, t).to(DType::f64); };
    const Tensor ours = part(got.at(name)) - part(init.at(name)), theirs = part(w) - part(init.at(name));
    const double cosine =
        (ours * theirs).sum().item<double>() / std::sqrt((ours * ours).sum().item<double>() *
                                                         (theirs * theirs).sum().item<double>());
    EXPECT_GE(cosine, min_cosine) << name << ": its update over the run points away from torch's";
  }
}

std::shared_ptr<nn::Sequential> make_mlp() {
  return make_shared<nn::Sequential>(make_shared<nn::Linear>(20, 32), make_shared<nn::ReLU>(),
                                     make_shared<nn::Linear>(32, 32), make_shared<nn::ReLU>(),
                                     make_shared<nn::Linear>(32, 5));
}

std::shared_ptr<nn::Sequential> make_cnn(int64_t first_channels = 4) {
  return make_shared<nn::Sequential>(
      make_shared<nn::Conv2d>(1, first_channels, 3, nn::Conv2dOptions{.padding = 1, .bias = false}),
      make_shared<nn::BatchNorm2d>(first_channels), make_shared<nn::ReLU>(), make_shared<nn::MaxPool2d>(2),
      make_shared<nn::Conv2d>(first_channels, 8, 3, nn::Conv2dOptions{.padding = 1}), make_shared<nn::ReLU>(),
      make_shared<nn::MaxPool2d>(2), make_shared<nn::Flatten>(), make_shared<nn::Linear>(8 * 2 * 2, 10));
}

// The TinyLM of make_training_fixtures.py, with the same module tree and hence state_dict keys.
class TinyLM : public nn::Module {
 public:
  TinyLM(int64_t vocab, int64_t d_model, int64_t heads, int64_t layers, int64_t context) : Module("TinyLM") {
    tok_emb = register_module("tok_emb", make_shared<nn::Embedding>(vocab, d_model));
    pos_emb = register_parameter("pos_emb", zeros({context, d_model}));
    blocks = register_module("blocks", make_shared<nn::ModuleList>());
    for (int64_t i = 0; i < layers; ++i) blocks->push_back(make_shared<nn::TransformerBlock>(d_model, heads));
    ln_f = register_module("ln_f", make_shared<nn::LayerNorm>(d_model));
    head = register_module("head", make_shared<nn::Linear>(d_model, vocab));
  }

  // idx (N, T) int64 -> logits (N, T, vocab)
  Tensor forward(const Tensor& idx) override {
    Tensor x = tok_emb->forward(idx) + pos_emb.narrow(0, 0, idx.size(1));
    for (size_t i = 0; i < blocks->size(); ++i) x = (*blocks)[static_cast<int64_t>(i)]->forward(x);
    return head->forward(ln_f->forward(x));
  }

  std::shared_ptr<nn::Embedding> tok_emb;
  Tensor pos_emb;
  std::shared_ptr<nn::ModuleList> blocks;
  std::shared_ptr<nn::LayerNorm> ln_f;
  std::shared_ptr<nn::Linear> head;
};

constexpr int64_t kVocab = 17, kModelWidth = 16, kHeads = 2, kLayers = 2, kContext = 8;

// Note [Zero-gradient parameters]: the key bias b_k (rows E..2E-1 of in_proj_bias) adds q.b_k to
// every attention score of a query, which softmax ignores, so its gradient is zero in exact
// arithmetic and only f32 rounding noise in practice. AdamW divides by sqrt(v), turning that noise
// into steps of about lr, so its final value is not reproducible across libraries (nor across
// summation orders in one library). The test checks instead that its gradient is noise-sized, and
// compares the query and value rows by value. (The CNN avoids the same trap, a conv bias before
// batchnorm, by having no such bias, as is usual.)
Tensor without_key_bias(const std::string& name, const Tensor& t) {
  if (!name.ends_with("in_proj_bias")) return t;
  return cat({t.narrow(0, 0, kModelWidth), t.narrow(0, 2 * kModelWidth, kModelWidth)});
}

Tensor token_cross_entropy(const Tensor& logits, const Tensor& targets) {
  return F::cross_entropy(logits.reshape({-1, kVocab}), targets.reshape({-1}));
}

TEST(TrainingParity, MlpWithNesterovSgdAndWeightDecay) {
  const kt::NnFixture fx = load_case("mlp_sgd.txt");
  auto model = make_mlp();
  optim::SGD sgd(model->parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true});
  const Curve curve = train(fx, *model, sgd, nullptr, [](const Tensor& z, const Tensor& y) {
    return F::cross_entropy(z, y);
  });
  expect_curve_matches(fx, curve);
  expect_final_state_matches(fx, *model);
}

TEST(TrainingParity, CnnWithBatchNormAndAdam) {
  const kt::NnFixture fx = load_case("cnn_adam.txt");
  auto model = make_cnn();
  optim::Adam adam(model->parameters(), {.lr = 1e-2});
  const Curve curve = train(fx, *model, adam, nullptr, [](const Tensor& z, const Tensor& y) {
    return F::cross_entropy(z, y);
  });
  expect_curve_matches(fx, curve);
  // Includes BatchNorm's running mean and variance (unbiased) after 20 batches, and its count.
  expect_final_state_matches(fx, *model);
  EXPECT_EQ(model->state_dict().at("1.num_batches_tracked").item<int64_t>(), kSteps);
}

TEST(TrainingParity, TransformerLmWithAdamWAndCosineSchedule) {
  const kt::NnFixture fx = load_case("transformer_adamw.txt");
  TinyLM model(kVocab, kModelWidth, kHeads, kLayers, kContext);
  optim::AdamW adamw(model.parameters(), {.lr = 3e-3, .weight_decay = 0.1});
  optim::CosineAnnealingLR cosine(adamw, {.T_max = kSteps});
  const Curve curve = train(fx, model, adamw, &cosine, token_cross_entropy);
  expect_curve_matches(fx, curve);
  expect_final_state_matches(fx, model, without_key_bias);
  for (size_t i = 0; i < model.blocks->size(); ++i) {
    const Tensor grad = model.blocks->at<nn::TransformerBlock>(static_cast<int64_t>(i))->attn->in_proj_bias.grad();
    ASSERT_TRUE(grad.defined());
    const double key_part = grad.narrow(0, kModelWidth, kModelWidth).abs().amax().item<double>();
    const double query_value_part = without_key_bias("in_proj_bias", grad).abs().amax().item<double>();
    EXPECT_LT(key_part, 1e-5 * query_value_part) << "block " << i << ": the key bias should get no gradient";
  }
  EXPECT_NEAR(adamw.param_groups()[0].lr, 0.0, 1e-15);  // a full cosine half-period ends at eta_min
}

TEST(TrainingParity, MlpInBf16Mixed) {
  const kt::NnFixture fx = load_case("mlp_sgd.txt"), bf16 = load_case("mlp_sgd_bf16.txt");
  auto model = make_mlp();
  optim::SGD sgd(model->parameters(), {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-3, .nesterov = true});
  const Curve curve = train(
      fx, *model, sgd, nullptr, [](const Tensor& z, const Tensor& y) { return F::cross_entropy(z, y); }, &bf16);
  expect_curve_matches(bf16, curve, kBf16LossRtol);
  for (const Tensor& p : model->parameters()) EXPECT_EQ(p.dtype(), DType::f32);  // master weights stay f32
  expect_final_state_matches(bf16, *model);
}

TEST(TrainingParity, CnnInBf16Mixed) {
  const kt::NnFixture fx = load_case("cnn_adam.txt"), bf16 = load_case("cnn_adam_bf16.txt");
  auto model = make_cnn();
  optim::Adam adam(model->parameters(), {.lr = 1e-2});
  const Curve curve = train(
      fx, *model, adam, nullptr, [](const Tensor& z, const Tensor& y) { return F::cross_entropy(z, y); }, &bf16);
  expect_curve_matches(bf16, curve, kBf16LossRtol);
  // BatchNorm's running statistics are updated in f32 from the bf16 conv output (Note
  // [Mixed-precision norms] in autograd/ops/norm.cpp), as torch's.
  expect_final_state_matches(bf16, *model);
}

TEST(TrainingParity, TransformerLmInBf16Mixed) {
  const kt::NnFixture fx = load_case("transformer_adamw.txt"), bf16 = load_case("transformer_adamw_bf16.txt");
  TinyLM model(kVocab, kModelWidth, kHeads, kLayers, kContext);
  optim::AdamW adamw(model.parameters(), {.lr = 3e-3, .weight_decay = 0.1});
  optim::CosineAnnealingLR cosine(adamw, {.T_max = kSteps});
  const Curve curve = train(fx, model, adamw, &cosine, token_cross_entropy, &bf16);
  expect_curve_matches(bf16, curve, kBf16LossRtol);
  expect_final_state_matches(bf16, model, without_key_bias, kBf16LmFinalRtol);
  expect_updates_align(fx, bf16, model, without_key_bias, kBf16LmUpdateCosine);
}

TEST(TrainingParity, FixtureThatDoesNotFitTheModelIsRejectedByName) {
  const kt::NnFixture cnn = load_case("cnn_adam.txt");
  // Another architecture: keys missing, unexpected and of other sizes, all in one message.
  kt::expect_error([&] { make_mlp()->load_state_dict(dict_of(cnn, "init")); },
                   {"load_state_dict", "Missing key(s)", "\"2.weight\"", "Unexpected key(s)",
                    "\"1.running_mean\"", "size mismatch for 4.bias"});
  // The same architecture with other widths: the sizes are named.
  kt::expect_error([&] { make_cnn(6)->load_state_dict(dict_of(cnn, "init")); },
                   {"load_state_dict", "size mismatch for 0.weight", "torch.Size([4, 1, 3, 3])",
                    "torch.Size([6, 1, 3, 3])"});
  kt::expect_error([&] { load_case("no_such_case.txt"); }, {"missing fixture", "no_such_case.txt"});
}

}  // namespace
