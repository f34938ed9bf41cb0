// nn::Module and the containers: names as torch gives them, state_dict round trips and load
// errors, train/eval behaviour, in-place dtype moves, zero_grad, apply, printing against torch's
// print(model), and an end-to-end check: a small MLP trained 20 steps by hand-written SGD matches
// torch's loss curve (tests/fixtures/nn/mlp.txt) within 1e-4 relative.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <tuple>

#include "autograd/grad_mode.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/conv.h"
#include "nn/layers/linear.h"
#include "nn/layers/norm.h"
#include "nn/layers/pool.h"
#include "nn_fixture.h"

namespace kt = kiln::testing;
using namespace kiln;
namespace F = kiln::nn::functional;
using std::make_shared;

namespace {

std::vector<std::string> names_of(const nn::NamedTensors& named) {
  std::vector<std::string> out;
  for (const auto& [name, t] : named) out.push_back(name);
  return out;
}

// An encoder with a ModuleList inside a ModuleDict inside a custom module, as torch models nest.
struct Encoder : nn::Module {
  Encoder() : Module("Encoder") {
    auto layers = make_shared<nn::ModuleList>(std::initializer_list<nn::ModulePtr>{
        make_shared<nn::Linear>(4, 4), make_shared<nn::Linear>(4, 4, nn::LinearOptions{.bias = false})});
    this->layers = register_module("layers", layers);
    scale = register_parameter("scale", ones({4}));
    register_buffer("steps", zeros({}, {.dtype = DType::i64}));
    register_buffer("cache", zeros({2}), /*persistent=*/false);
  }
  Tensor forward(const Tensor& x) override {
    return layers->at<nn::Linear>(1)->forward(layers->at<nn::Linear>(0)->forward(x)) * scale;
  }
  std::shared_ptr<nn::ModuleList> layers;
  Tensor scale;
};

std::shared_ptr<nn::Module> nested_model() {
  auto model = make_shared<nn::ModuleDict>();
  model->insert("encoder", make_shared<Encoder>());
  model->insert("head", make_shared<nn::Sequential>(make_shared<nn::Linear>(4, 2), make_shared<nn::BatchNorm1d>(2)));
  return model;
}

TEST(Module, NamesFollowTorch) {
  auto model = nested_model();
  const std::vector<std::string> params = {"encoder.scale", "encoder.layers.0.weight", "encoder.layers.0.bias",
                                           "encoder.layers.1.weight", "head.0.weight", "head.0.bias",
                                           "head.1.weight", "head.1.bias"};
  EXPECT_EQ(names_of(model->named_parameters()), params);
  EXPECT_EQ(model->parameters().size(), params.size());
  EXPECT_EQ(names_of(model->named_buffers()),
            (std::vector<std::string>{"encoder.steps", "encoder.cache", "head.1.running_mean", "head.1.running_var",
                                      "head.1.num_batches_tracked"}));
  std::vector<std::string> modules;
  for (const auto& [name, m] : model->named_modules()) modules.push_back(name + ":" + m->type_name());
  EXPECT_EQ(modules, (std::vector<std::string>{":ModuleDict", "encoder:Encoder", "encoder.layers:ModuleList",
                                               "encoder.layers.0:Linear", "encoder.layers.1:Linear",
                                               "head:Sequential", "head.0:Linear", "head.1:BatchNorm1d"}));
  EXPECT_EQ(model->children().size(), 2u);
  EXPECT_EQ(model->named_parameters(/*recurse=*/false).size(), 0u);
  // Dotted lookups, and what a wrong name says.
  EXPECT_TRUE(model->parameter("head.0.bias").is_same(model->submodule("head")->named_parameters()[1].second));
  EXPECT_EQ(model->buffer("head.1.running_var").shape(), Dims({2}));
  kt::expect_error([&] { model->submodule("encoder.layer"); }, {"no submodule \"encoder.layer\"", "\"layers\""});
  kt::expect_error([&] { model->parameter("head.0.wieght"); },
                   {"no parameter \"head.0.wieght\"", "\"weight\", \"bias\""});
}

TEST(Module, SharedParametersAndModulesAreListedOnce) {
  auto shared = make_shared<nn::Linear>(3, 3);
  nn::Sequential seq{shared, make_shared<nn::ReLU>(), shared};
  EXPECT_EQ(names_of(seq.named_parameters()), (std::vector<std::string>{"0.weight", "0.bias"}));
  EXPECT_EQ(seq.modules().size(), 3u);  // Sequential, Linear (once), ReLU
  EXPECT_EQ(seq.state_dict().keys(),    // state_dict keeps every name, as torch's does
            (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
}

TEST(Module, RegistrationErrors) {
  nn::Module m("Custom");
  m.register_parameter("w", zeros({2}));
  kt::expect_error([&] { m.register_parameter("w", zeros({2})); }, {"Custom", "\"w\" already exists"});
  kt::expect_error([&] { m.register_buffer("a.b", zeros({2})); }, {"Custom", "can't contain \".\"", "a.b"});
  kt::expect_error([&] { m.register_parameter("i", zeros({2}, {.dtype = DType::i64})); }, {"Custom", "\"i\"", "int64"});
  kt::expect_error([&] { m.register_module("child", nn::ModulePtr()); }, {"Custom", "\"child\"", "null"});
  kt::expect_error([&] { m.forward(zeros({1})); }, {"Custom", "no forward"});
  EXPECT_TRUE(m.parameter("w").requires_grad());
}

TEST(Module, StateDictOrderAndRoundTrip) {
  auto a = nested_model();
  EXPECT_EQ(a->state_dict().keys(),
            (std::vector<std::string>{"encoder.scale", "encoder.steps", "encoder.layers.0.weight",
                                      "encoder.layers.0.bias", "encoder.layers.1.weight", "head.0.weight",
                                      "head.0.bias", "head.1.weight", "head.1.bias", "head.1.running_mean",
                                      "head.1.running_var", "head.1.num_batches_tracked"}));
  EXPECT_FALSE(a->state_dict().contains("encoder.cache"));  // not persistent
  EXPECT_FALSE(a->state_dict().at("head.0.weight").requires_grad());

  auto b = nested_model();
  const Tensor b_weight = b->parameter("head.0.weight");
  const nn::LoadResult r = b->load_state_dict(a->state_dict());
  EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty());
  for (const auto& [name, t] : a->state_dict()) EXPECT_TRUE(equal(b->state_dict().at(name), t)) << name;
  EXPECT_TRUE(b->parameter("head.0.weight").is_same(b_weight));   // copied into, not replaced
  EXPECT_TRUE(b_weight.requires_grad());
  NoGradGuard no_grad;
  a->parameter("head.0.weight").fill_(5.0);                       // no aliasing between the models
  EXPECT_NE(b_weight.sum().item<double>(), a->parameter("head.0.weight").sum().item<double>());
}

TEST(Module, LoadStateDictReportsEveryProblemAtOnce) {
  nn::Sequential model(make_shared<nn::Linear>(3, 2), make_shared<nn::BatchNorm1d>(2));
  TensorDict state = model.state_dict();
  state.erase("0.bias");
  state.erase("1.running_var");
  state.set("0.weight", zeros({2, 4}));
  state.insert("2.weight", zeros({1}));
  kt::expect_error(
      [&] { model.load_state_dict(state); },
      {"Error(s) in loading state_dict for Sequential", "Missing key(s) in state_dict: \"0.bias\", \"1.running_var\"",
       "Unexpected key(s) in state_dict: \"2.weight\"",
       "size mismatch for 0.weight: copying a param with shape torch.Size([2, 4]) from checkpoint, the shape "
       "in current model is torch.Size([2, 3])"});
  // Non-strict tolerates missing and unexpected keys but never a size mismatch.
  kt::expect_error([&] { model.load_state_dict(state, /*strict=*/false); }, {"size mismatch for 0.weight"});
  state.set("0.weight", full({2, 3}, 0.5));
  const nn::LoadResult r = model.load_state_dict(state, /*strict=*/false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"0.bias", "1.running_var"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"2.weight"}));
  kt::expect_close(model.parameter("0.weight"), std::vector<double>(6, 0.5), 0, 0);
  // Values convert: an f64 state loads into f32 parameters.
  TensorDict f64_state;
  for (const auto& [name, t] : model.state_dict())
    f64_state.insert(name, t.is_floating() ? full_like(t, 2.0, {.dtype = DType::f64}) : t);
  model.load_state_dict(f64_state);
  EXPECT_EQ(model.parameter("0.bias").dtype(), DType::f32);
  kt::expect_close(model.parameter("0.bias"), {2, 2}, 0, 0);
}

TEST(Module, TrainAndEvalSwitchDropoutAndBatchNorm) {
  nn::Sequential model(make_shared<nn::Dropout>(0.5), make_shared<nn::BatchNorm1d>(3));
  EXPECT_TRUE(model.is_training());
  const Tensor x = kt::random_tensor({64, 3}, DType::f32, 1, 3, 5);
  auto bn = std::dynamic_pointer_cast<nn::BatchNorm1d>(model[1]);
  model.forward(x);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1);
  const std::vector<double> running_after_train = kt::values(bn->running_mean);
  EXPECT_GT(running_after_train[0], 0.05);  // moved toward the batch mean (about 2)

  model.eval();
  EXPECT_FALSE(model.is_training());
  EXPECT_FALSE(model[0]->is_training());
  const Tensor y1 = model.forward(x), y2 = model.forward(x);
  EXPECT_TRUE(equal(y1, y2));                            // no dropout, running statistics
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 1);  // untouched in eval
  kt::expect_close(bn->running_mean, running_after_train, 0, 0);
  // Eval output is (x - running_mean) / sqrt(running_var + eps) with weight 1, bias 0.
  const double rm = kt::at(bn->running_mean, 0), rv = kt::at(bn->running_var, 0);
  EXPECT_NEAR(kt::at(y1, 0), (kt::at(x, 0) - rm) / std::sqrt(rv + 1e-5), 1e-5);

  model.train();
  const Tensor y3 = model.forward(x);
  EXPECT_EQ(bn->num_batches_tracked.item<int64_t>(), 2);
  EXPECT_FALSE(equal(y3, y1));  // dropout and batch statistics again
}

TEST(Module, ToDtypeKeepsParameterIdentity) {
  nn::Sequential model(make_shared<nn::Linear>(3, 2), make_shared<nn::BatchNorm1d>(2));
  auto linear = std::dynamic_pointer_cast<nn::Linear>(model[0]);
  const Tensor weight_before = model.parameter("0.weight");
  const std::vector<double> values_before = kt::values(weight_before);
  model.forward(ones({4, 3})).sum().backward();
  model.to(DType::f64);
  EXPECT_TRUE(model.parameter("0.weight").is_same(weight_before));
  EXPECT_EQ(weight_before.dtype(), DType::f64);
  EXPECT_EQ(linear->weight.dtype(), DType::f64);        // the layer's member is the same tensor
  EXPECT_TRUE(weight_before.requires_grad());
  EXPECT_TRUE(weight_before.is_leaf());
  EXPECT_EQ(weight_before.grad().dtype(), DType::f64);  // .grad moves along, as in torch
  kt::expect_close(weight_before, values_before, 1e-7, 0);
  EXPECT_EQ(model.buffer("1.running_mean").dtype(), DType::f64);
  EXPECT_EQ(model.buffer("1.num_batches_tracked").dtype(), DType::i64);  // integers stay
  model.zero_grad();
  const Tensor y = model.forward(ones({4, 3}, {.dtype = DType::f64}));
  EXPECT_EQ(y.dtype(), DType::f64);
  y.sum().backward();
  EXPECT_EQ(weight_before.grad().dtype(), DType::f64);
  model.to(Device::cpu());  // same device: nothing changes
  EXPECT_TRUE(model.parameter("0.weight").is_same(weight_before));
  kt::expect_error([&] { model.to(DType::i32); }, {"to", "floating", "int32"});
}

TEST(Module, ZeroGradAndApply) {
  nn::Sequential model(make_shared<nn::Linear>(2, 2), make_shared<nn::ReLU>(), make_shared<nn::Linear>(2, 1));
  model.forward(ones({3, 2})).sum().backward();
  for (const Tensor& p : model.parameters()) EXPECT_TRUE(p.grad().defined());
  model.zero_grad(/*set_to_none=*/false);
  for (const Tensor& p : model.parameters()) {
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0);
  }
  model.zero_grad();
  for (const Tensor& p : model.parameters()) EXPECT_FALSE(p.grad().defined());

  std::vector<std::string> visited;
  model.apply([&](nn::Module& m) { visited.push_back(m.type_name()); });
  EXPECT_EQ(visited, (std::vector<std::string>{"Linear", "ReLU", "Linear", "Sequential"}));  // children first
  model.apply([](nn::Module& m) {
    if (auto* lin = dynamic_cast<nn::Linear*>(&m)) {
      NoGradGuard no_grad;
      lin->weight.fill_(0.25);
    }
  });
  kt::expect_close(model.parameter("2.weight"), {0.25, 0.25}, 0, 0);
}

TEST(Module, ContainersIndexAndChain) {
  nn::Sequential seq(make_shared<nn::Linear>(2, 3), make_shared<nn::ReLU>());
  seq.push_back(make_shared<nn::Linear>(3, 1));
  EXPECT_EQ(seq.size(), 3u);
  EXPECT_EQ(seq[-1]->type_name(), "Linear");
  kt::expect_error([&] { seq[3]; }, {"Sequential", "index 3", "3 modules"});
  const Tensor x = kt::random_tensor({5, 2}, DType::f32, -1, 1, 3);
  auto l0 = std::dynamic_pointer_cast<nn::Linear>(seq[0]);
  auto l2 = std::dynamic_pointer_cast<nn::Linear>(seq[2]);
  kt::expect_close(seq.forward(x), kt::values(l2->forward(l0->forward(x).relu())), 1e-6, 1e-7);

  nn::Sequential named(nn::NamedModules{{"fc", make_shared<nn::Linear>(2, 2)}, {"act", make_shared<nn::Tanh>()}});
  EXPECT_EQ(named.state_dict().keys(), (std::vector<std::string>{"fc.weight", "fc.bias"}));
  nn::ModuleDict dict(nn::NamedModules{{"a", make_shared<nn::ReLU>()}});
  EXPECT_TRUE(dict.contains("a"));
  EXPECT_FALSE(dict.contains("b"));
  EXPECT_EQ(dict.keys(), std::vector<std::string>{"a"});
  kt::expect_error([&] { dict["b"]; }, {"no submodule \"b\""});
  nn::ModuleList list{make_shared<nn::ReLU>()};
  kt::expect_error([&] { list.at<nn::Linear>(0); }, {"ModuleList", "element 0 is a ReLU"});
  kt::expect_error([&] { list.forward(x); }, {"ModuleList", "no forward"});
}

// Note [Pooling before ReLU]: Sequential runs ReLU -> MaxPool2d as one fused MaxPool2d -> ReLU op
// (Note [Fused pooling and ReLU]); values and input gradients must be those of the written order
// bit for bit, sign of zero included, on windows that are all negative, hold zeros, tie on
// positive values, hold NaN or -inf, under padding and ceil mode, on inputs that tile into 2x2
// windows (the dense backward, one and two output rows per vector) and in bf16.
TEST(Module, SequentialPoolsBeforeReluBitForBit) {
  const std::vector<std::pair<std::string, F::MaxPool2dArgs>> pools = {
      {"2x2", {}}, {"3x3 stride 2 pad 1 ceil", {.stride = F::IntPair{2}, .padding = 1, .ceil_mode = true}}};
  for (const Dims& shape : {Dims{2, 3, 7, 6}, Dims{2, 3, 8, 40}, Dims{1, 2, 6, 12}})
    for (const DType dtype : {DType::f32, DType::bf16}) {
      Tensor x = kt::random_tensor(shape, DType::f32, -2, 2, 11);
      float* p = static_cast<float*>(x.data_ptr());
      const int64_t W = shape[3];
      const auto at = [&](int64_t h, int64_t w) -> float& { return p[h * W + w]; };
      at(0, 0) = at(0, 1) = at(1, 0) = at(1, 1) = -1.5f;               // an all-negative window
      at(0, 2) = 0.0f, at(0, 3) = -0.0f, at(1, 2) = at(1, 3) = -3.0f;  // zeros only
      at(0, 4) = at(0, 5) = at(1, 4) = 1.25f, at(1, 5) = -0.5f;        // a positive tie
      at(2, 2) = -0.0f, at(2, 3) = 0.0f, at(3, 2) = -1.0f, at(3, 3) = -2.0f;  // -0 first: its max, kept by ReLU
      at(2, 4) = -1.0f, at(2, 5) = -0.0f, at(3, 4) = -2.0f, at(3, 5) = -3.0f;  // max -0, not first: +0 after ReLU
      at(2, 0) = std::numeric_limits<float>::quiet_NaN();
      at(2, 1) = -std::numeric_limits<float>::infinity();
      at(4, 2) = std::numeric_limits<float>::quiet_NaN(), at(4, 3) = 5.0f;
      x = x.to(dtype);
      for (const auto& [label, args] : pools) {
        std::ostringstream what;
        what << label << " " << shape << " " << dtype;
        const F::IntPair kernel = label == "2x2" ? F::IntPair{2} : F::IntPair{3};
        nn::Sequential seq(make_shared<nn::ReLU>(), make_shared<nn::MaxPool2d>(kernel, args));
        const Tensor a = x.detach().requires_grad_(), b = x.detach().requires_grad_();
        const Tensor got = seq.forward(a);
        ASSERT_TRUE(got.grad_fn());
        EXPECT_EQ(got.grad_fn()->name(), "max_pool2d_relu") << what.str();
        const Tensor want = F::max_pool2d(b.relu(), kernel, args);
        ASSERT_EQ(got.shape(), want.shape()) << what.str();
        Tensor g = kt::random_tensor(want.shape(), DType::f32, -1, 1, 12);
        static_cast<float*>(g.data_ptr())[1] = -0.0f;  // a -0 gradient: its sign as the written order leaves it
        g = g.to(dtype);
        got.backward(g);
        want.backward(g);
        for (const auto& [part, u, v] : {std::tuple{"output", got, want}, std::tuple{"grad", a.grad(), b.grad()}})
          for (int64_t i = 0; i < u.numel(); ++i) {
            const double s = kt::at(u, i), t = kt::at(v, i);
            EXPECT_TRUE(std::isnan(s) ? std::isnan(t) : s == t && std::signbit(s) == std::signbit(t))
                << what.str() << " " << part << " element " << i << ": " << s << " vs " << t;
          }
      }
    }
}

std::vector<std::string> torch_reprs() {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/nn/reprs.txt");
  std::stringstream all;
  all << in.rdbuf();
  std::vector<std::string> out;
  std::string text = all.str(), sep = "\n----\n";
  for (size_t pos; (pos = text.find(sep)) != std::string::npos; text = text.substr(pos + sep.size()))
    out.push_back(text.substr(0, pos));
  if (!text.empty() && text.back() == '\n') text.pop_back();
  out.push_back(text);
  return out;
}

TEST(Module, PrintsLikeTorch) {
  const std::vector<std::string> want = torch_reprs();
  ASSERT_EQ(want.size(), 4u);
  nn::Sequential mlp(make_shared<nn::Linear>(784, 512), make_shared<nn::ReLU>(), make_shared<nn::Linear>(512, 512),
                     make_shared<nn::ReLU>(), make_shared<nn::Linear>(512, 10));
  EXPECT_EQ(mlp.str(), want[0]);
  nn::Sequential cnn(
      make_shared<nn::Conv2d>(1, 32, 3, nn::Conv2dOptions{.padding = 1}), make_shared<nn::BatchNorm2d>(32),
      make_shared<nn::ReLU>(), make_shared<nn::MaxPool2d>(2),
      make_shared<nn::Conv2d>(32, 64, F::IntPair{3, 5},
                              nn::Conv2dOptions{.stride = 2, .dilation = {1, 2}, .groups = 2, .bias = false}),
      make_shared<nn::AvgPool2d>(2), make_shared<nn::AdaptiveAvgPool2d>(F::IntPair{2, 2}), make_shared<nn::Flatten>(),
      make_shared<nn::Dropout>(0.1), make_shared<nn::Linear>(256, 10, nn::LinearOptions{.bias = false}),
      make_shared<nn::LayerNorm>(10), make_shared<nn::GELU>("tanh"), make_shared<nn::Softmax>(1));
  EXPECT_EQ(cnn.str(), want[1]);
  nn::ModuleList list{make_shared<nn::Linear>(4, 4), make_shared<nn::Linear>(4, 4), make_shared<nn::Linear>(4, 4),
                      make_shared<nn::Tanh>()};
  EXPECT_EQ(list.str(), want[2]);
  nn::Sequential misc(
      make_shared<nn::Embedding>(100, 16, nn::EmbeddingOptions{.padding_idx = 0}), make_shared<nn::RMSNorm>(16),
      make_shared<nn::GroupNorm>(4, 16), make_shared<nn::SiLU>(), make_shared<nn::LeakyReLU>(0.2),
      make_shared<nn::Sigmoid>(),
      make_shared<nn::ConvTranspose2d>(16, 8, 3, nn::ConvTranspose2dOptions{.stride = 2, .output_padding = 1}),
      make_shared<nn::Conv1d>(3, 4, 5),
      make_shared<nn::BatchNorm1d>(4, nn::BatchNormOptions{.eps = 1e-3, .momentum = 0.01}));
  EXPECT_EQ(misc.str(), want[3]);
  std::ostringstream os;
  os << nn::ReLU();
  EXPECT_EQ(os.str(), "ReLU()");
}

TEST(Module, MlpTrainedWithHandWrittenSgdMatchesTorch) {
  const kt::NnFixture fx("mlp.txt");
  nn::Sequential model(make_shared<nn::Linear>(6, 16), make_shared<nn::ReLU>(), make_shared<nn::Linear>(16, 3));
  TensorDict state;
  for (auto& [name, t] : fx.with_prefix("param")) state.insert(name, t);
  model.load_state_dict(state);
  const Tensor x = fx["x"], y = fx["y"];
  const std::vector<double> want = kt::values(fx["losses"]);
  ASSERT_EQ(want.size(), 20u);
  const double lr = 0.1;
  for (size_t step = 0; step < want.size(); ++step) {
    Tensor loss = F::cross_entropy(model.forward(x), y);
    model.zero_grad();
    loss.backward();
    {
      NoGradGuard no_grad;
      for (Tensor& p : model.parameters()) p.sub_(p.grad() * lr);
    }
    EXPECT_NEAR(loss.item<double>(), want[step], 1e-4 * std::abs(want[step])) << "step " << step;
  }
  EXPECT_LT(want.back(), want.front());  // the fixture does train
}

}  // namespace
