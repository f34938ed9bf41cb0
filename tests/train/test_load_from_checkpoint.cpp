// TrainModule::load_from_checkpoint (Lightning's Model.load_from_checkpoint): a module built from a
// Trainer checkpoint's hyperparameters, by a Json constructor or a factory, with overrides; strict
// and non-strict loading naming the missing and unexpected keys; shape mismatches; map_location;
// on_load_checkpoint; files that are not Trainer checkpoints.
#include <gtest/gtest.h>

#include "testing.h"
#include "io/checkpoint/writer.h"
#include "tensor/device.h"
#include "train/seed.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

// TinyClassifier built from its hyperparameters, noting what on_load_checkpoint was given.
class JsonClassifier : public TinyClassifier {
 public:
  explicit JsonClassifier(const Json& h) : TinyClassifier(h.at("dropout").get<double>(), h.at("lr").get<double>()) {}
  void on_load_checkpoint(const State& checkpoint) override {
    loaded_step = checkpoint.meta.at("global_step").get<int64_t>();
    weights_loaded_before = bitwise_equal(fc1->parameter("weight"), checkpoint.tensors.at("state_dict.fc1.weight"));
  }
  int64_t loaded_step = -1;
  bool weights_loaded_before = true;
};

// TinyClassifier's layers plus one the checkpoint lacks, or without fc2, or with another hidden width.
class Variant : public TrainModule {
 public:
  Variant(int64_t hidden, bool with_fc2, bool with_extra) : TrainModule("Variant") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, hidden));
    if (with_fc2) fc2 = register_module("fc2", std::make_shared<nn::Linear>(hidden, 3));
    if (with_extra) register_module("extra", std::make_shared<nn::Linear>(3, 3));
  }
  StepOutput training_step(const data::Batch&, int64_t) override { return {}; }
  std::vector<OptimizerConfig> configure_optimizers() override { return {}; }
  std::shared_ptr<nn::Linear> fc1, fc2;
};

// A checkpoint of TinyClassifier(dropout 0.3, lr 0.05) after one epoch; the fitted module's weights.
std::pair<std::string, TensorDict> fitted_checkpoint(const std::string& name) {
  const std::string path = fresh_dir(name) + "/fitted.ckpt";
  seed_everything(42);
  TinyClassifier module(0.3, 0.05);
  Trainer trainer(quiet({.max_epochs = 1, .logger = false}));
  trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5)});
  trainer.save_checkpoint(path);
  return {path, module.state_dict()};
}

void expect_weights(const TrainModule& module, const TensorDict& expected) {
  const TensorDict got = module.state_dict();
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [name, t] : expected) EXPECT_TRUE(bitwise_equal(got.at(name), t)) << name;
}

TEST(LoadFromCheckpoint, BuildsTheModuleFromItsSavedHyperparametersAndLoadsItsWeights) {
  const auto [path, fitted] = fitted_checkpoint("lfc_build");
  const auto model = TrainModule::load_from_checkpoint<JsonClassifier>(path);
  expect_weights(*model, fitted);
  EXPECT_EQ(model->hparams(), (Json{{"dropout", 0.3}, {"lr", 0.05}}));
  EXPECT_DOUBLE_EQ(model->drop->p, 0.3);  // built from the saved value, not the default 0.2
  EXPECT_EQ(model->loaded_step, 5);         // on_load_checkpoint saw the checkpoint ...
  EXPECT_FALSE(model->weights_loaded_before);  // ... before the weights were loaded, as in Lightning
  EXPECT_TRUE(model->is_training());

  // A factory, and overrides by name (Lightning's **kwargs).
  auto make = [](const Json& h) {
    return std::make_unique<TinyClassifier>(h.at("dropout").get<double>(), h.at("lr").get<double>());
  };
  const auto overridden = TrainModule::load_from_checkpoint(path, make, {.hparams = {{"dropout", 0.0}}});
  EXPECT_EQ(overridden->hparams(), (Json{{"dropout", 0.0}, {"lr", 0.05}}));
  expect_weights(*overridden, fitted);

  // map_location moves the loaded module.
  const auto on_cpu = TrainModule::load_from_checkpoint<JsonClassifier>(path, {.map_location = Device::cpu()});
  for (const Tensor& p : on_cpu->parameters()) EXPECT_EQ(p.device(), Device::cpu());
  if (!cuda::is_available()) {
    kt::expect_error([&] { TrainModule::load_from_checkpoint<JsonClassifier>(path, {.map_location = Device::cuda()}); },
                     {"cuda"});
  }
}

TEST(LoadFromCheckpoint, StrictNamesMissingAndUnexpectedKeysNonStrictWarnsAndShapesAlwaysMatter) {
  const auto [path, fitted] = fitted_checkpoint("lfc_strict");
  auto extra = [](const Json&) { return std::make_shared<Variant>(8, true, true); };
  auto no_fc2 = [](const Json&) { return std::make_shared<Variant>(8, false, false); };
  kt::expect_error([&] { TrainModule::load_from_checkpoint(path, extra); },
                   {"load_from_checkpoint(" + path + ")", "Missing key(s) in state_dict", "\"extra.weight\"",
                    "\"extra.bias\""});
  kt::expect_error([&] { TrainModule::load_from_checkpoint(path, no_fc2); },
                   {"Unexpected key(s) in state_dict", "\"fc2.weight\"", "\"fc2.bias\""});

  ::testing::internal::CaptureStderr();
  const auto loose = TrainModule::load_from_checkpoint(path, extra, {.strict = false});
  const auto partial = TrainModule::load_from_checkpoint(path, no_fc2, {.strict = false});
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("Found keys that are in the model state dict but not in the checkpoint: ['extra.weight', "
                     "'extra.bias']"), std::string::npos) << err;
  EXPECT_NE(err.find("Found keys that are not in the model state dict but in the checkpoint: ['fc2.weight', "
                     "'fc2.bias']"), std::string::npos) << err;
  for (const char* name : {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"})
    EXPECT_TRUE(bitwise_equal(loose->state_dict().at(name), fitted.at(name))) << name;
  EXPECT_TRUE(bitwise_equal(partial->state_dict().at("fc1.weight"), fitted.at("fc1.weight")));

  auto wider = [](const Json&) { return std::make_shared<Variant>(16, true, false); };
  kt::expect_error([&] { TrainModule::load_from_checkpoint(path, wider, {.strict = false}); },
                   {"size mismatch for fc1.weight", "torch.Size([8, 4])", "torch.Size([16, 4])"});
}

TEST(LoadFromCheckpoint, RefusesFilesThatAreNotTrainerCheckpoints) {
  const std::string path = fresh_dir("lfc_bare") + "/bare.kiln";
  TinyClassifier module;
  io::save(path, State{module.state_dict(), Json::object()});
  kt::expect_error([&] { TrainModule::load_from_checkpoint<JsonClassifier>(path); },
                   {"load_from_checkpoint", "bare.kiln", "not a Trainer checkpoint", "module.load_state_dict"});
  auto make = [](const Json&) { return std::make_shared<TinyClassifier>(); };
  kt::expect_error([&] { TrainModule::load_from_checkpoint(path + ".missing", make); }, {"bare.kiln.missing"});
}

}  // namespace
