// The module hooks a Lightning user overrides, checked by their effect: the batch-transfer hooks
// (order and what the steps see), optimizer_step, configure_gradient_clipping, lr_scheduler_step,
// the step outputs the batch-end hooks receive, and where epoch-interval schedulers step (with a
// bit-exact resume around them). The expected orders were read from Lightning 2.x's loops.
#include <gtest/gtest.h>

#include <cmath>

#include "testing.h"
#include "nn/optim/lr_scheduler.h"
#include "train/seed.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

// ---- batch transfer

std::vector<std::string>* g_calls = nullptr;
void note(const std::string& s) { g_calls->push_back(s); }

// Doubles the features after the transfer; the steps must see the doubled batch.
class TransferModule : public TinyClassifier {
 public:
  TransferModule() : TinyClassifier(0.0) {}
  data::Batch on_before_batch_transfer(data::Batch batch, int64_t idx) override {
    note("before:" + std::to_string(idx));
    return batch;
  }
  data::Batch transfer_batch_to_device(data::Batch batch, Device device, int64_t idx) override {
    note("transfer:" + device.str());
    return TrainModule::transfer_batch_to_device(std::move(batch), device, idx);
  }
  data::Batch on_after_batch_transfer(data::Batch batch, int64_t) override {
    note("after");
    batch[0] = batch[0] * 2.0;
    return batch;
  }
  bool on_train_batch_start(const data::Batch&, int64_t i) override { return note("train:" + std::to_string(i)), true; }
  void on_validation_batch_start(const data::Batch&, int64_t i) override { note("val:" + std::to_string(i)); }
  void on_test_batch_start(const data::Batch&, int64_t i) override { note("test:" + std::to_string(i)); }
  void on_predict_batch_start(const data::Batch&, int64_t i) override { note("predict:" + std::to_string(i)); }
};

std::shared_ptr<data::DataLoader> loader_of(Tensor x, Tensor y, int64_t batch_size) {
  auto ds = std::make_shared<data::TensorDataset>(std::vector<Tensor>{std::move(x), std::move(y)});
  return std::make_shared<data::DataLoader>(std::shared_ptr<const data::Dataset>(ds),
                                            data::DataLoaderOptions{.batch_size = batch_size});
}

std::vector<std::string> transferred(const std::string& step) { return {"before:0", "transfer:cpu", "after", step}; }

TEST(BatchTransfer, HooksRunBeforeEachStagesBatchStartInLightningsOrder) {
  std::vector<std::string> calls;
  g_calls = &calls;
  TransferModule module;
  auto ds = make_dataset();
  Trainer trainer(quiet({.max_epochs = 1, .num_sanity_val_steps = 1, .logger = false}));
  trainer.fit(module, Loaders{.train = make_loader(20, false, 0), .val = make_loader(40, false, 0)});
  std::vector<std::string> expected;
  for (const char* step : {"val:0", "train:0", "train:1", "val:0"})  // sanity check, 2 batches, validation
    for (const std::string& s : transferred(step)) expected.push_back(s);
  EXPECT_EQ(calls, expected);

  for (auto stage : {TrainerStage::validating, TrainerStage::testing, TrainerStage::predicting}) {
    calls.clear();
    const Loaders loaders{.val = make_loader(40, false, 0), .test = make_loader(40, false, 0),
                          .predict = make_loader(40, false, 0)};
    if (stage == TrainerStage::validating) trainer.validate(module, loaders);
    if (stage == TrainerStage::testing) trainer.test(module, loaders);
    if (stage == TrainerStage::predicting) {
      const std::vector<Tensor> out = trainer.predict(module, loaders);
      // predict_step saw the doubled features.
      EXPECT_TRUE(bitwise_equal(out.at(0), module.forward(ds->tensors()[0] * 2.0)));
    }
    const char* step = stage == TrainerStage::validating ? "val:0" : stage == TrainerStage::testing ? "test:0" : "predict:0";
    EXPECT_EQ(calls, transferred(step));
  }
  g_calls = nullptr;
}

TEST(BatchTransfer, TheStepsTrainOnWhatOnAfterBatchTransferReturns) {
  std::vector<std::string> calls;
  g_calls = &calls;
  TransferModule hooked;
  auto ds = make_dataset();
  Trainer(quiet({.max_epochs = 2, .logger = false})).fit(hooked, Loaders{.train = make_loader(8, false, 0)});
  g_calls = nullptr;
  TinyClassifier plain(0.0);
  Trainer(quiet({.max_epochs = 2, .logger = false}))
      .fit(plain, Loaders{.train = loader_of(ds->tensors()[0] * 2.0, ds->tensors()[1], 8)});
  for (const auto& [name, t] : plain.state_dict()) EXPECT_TRUE(bitwise_equal(t, hooked.state_dict().at(name))) << name;
}

// ---- optimizer_step

class SkipsOddSteps : public TinyClassifier {
 public:
  SkipsOddSteps() : TinyClassifier(0.0) {}
  void optimizer_step(int64_t epoch, int64_t batch_idx, TrainOptimizer& optimizer) override {
    calls.emplace_back(epoch, batch_idx);
    if (batch_idx % 2 == 0) optimizer.step();
  }
  void on_before_optimizer_step(optim::Optimizer&) override { ++before_steps; }
  std::vector<std::pair<int64_t, int64_t>> calls;
  int before_steps = 0;
};

TEST(OptimizerStep, AnOverrideDecidesWhetherTheOptimizerStepsAndTheGlobalStepStillCounts) {
  SkipsOddSteps module;
  Trainer trainer(quiet({.max_epochs = 2, .logger = false}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
  EXPECT_EQ(trainer.global_step(), 10);  // as Lightning's: counted by the loop, stepped or not
  EXPECT_EQ(module.before_steps, 6);     // the hook runs inside optimizer.step()
  std::vector<std::pair<int64_t, int64_t>> expected;
  for (int64_t epoch : {0, 1})
    for (int64_t i = 0; i < 5; ++i) expected.emplace_back(epoch, i);
  EXPECT_EQ(module.calls, expected);

  // The same updates, written by hand.
  TinyClassifier reference(0.0);
  optim::SGD sgd(reference.parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
  auto ds = make_dataset();
  for (int epoch = 0; epoch < 2; ++epoch)
    for (int64_t i = 0; i < 5; ++i) {
      sgd.zero_grad(true);
      Tensor x = ds->tensors()[0].slice(0, i * 8, i * 8 + 8), y = ds->tensors()[1].slice(0, i * 8, i * 8 + 8);
      nn::F::cross_entropy(reference.forward(x), y).backward();
      if (i % 2 == 0) sgd.step();
    }
  for (const auto& [name, t] : reference.state_dict()) EXPECT_TRUE(bitwise_equal(t, module.state_dict().at(name))) << name;
}

class StepsInTrainingStep : public TinyClassifier {
 public:
  StepOutput training_step(const data::Batch& batch, int64_t idx) override {
    optimizers()[0].step();
    return TinyClassifier::training_step(batch, idx);
  }
};

TEST(OptimizerStep, StepOutsideOptimizerStepIsRefusedUnderAutomaticOptimization) {
  StepsInTrainingStep module;
  Trainer trainer(quiet({.max_epochs = 1, .logger = false}));
  kt::expect_error([&] { trainer.fit(module, Loaders{.train = make_loader(8, false, 0)}); },
                   {"optimizer.step()", "automatic optimization", "automatic_optimization = false"});
}

// ---- configure_gradient_clipping

class ClipsItself : public TinyClassifier {
 public:
  explicit ClipsItself(std::optional<double> value) : TinyClassifier(0.0), value(value) {}
  void configure_gradient_clipping(optim::Optimizer& optimizer, std::optional<double> gradient_clip_val,
                                   const std::string& gradient_clip_algorithm) override {
    seen.emplace_back(gradient_clip_val, gradient_clip_algorithm);
    if (value) clip_gradients(optimizer, *value, "value");
  }
  std::optional<double> value;
  std::vector<std::pair<std::optional<double>, std::string>> seen;
};

TensorDict train_for_clipping(TinyClassifier& module, TrainerConfig config) {
  config.max_epochs = 2;
  config.logger = false;
  Trainer(quiet(config)).fit(module, Loaders{.train = make_loader(8, false, 0)});
  return module.state_dict();
}

void expect_same_weights(const TensorDict& a, const TensorDict& b, bool same) {
  bool all = true;
  for (const auto& [name, t] : a) all = all && bitwise_equal(t, b.at(name));
  EXPECT_EQ(all, same);
}

TEST(GradientClipping, AModuleOverrideClipsAndReplacesTheTrainersClipping) {
  TinyClassifier plain(0.0), by_trainer(0.0);
  const TensorDict unclipped = train_for_clipping(plain, {});
  const TensorDict trainer_clipped =
      train_for_clipping(by_trainer, {.gradient_clip_val = 0.01, .gradient_clip_algorithm = "value"});
  expect_same_weights(unclipped, trainer_clipped, false);  // 0.01 does clip these gradients

  ClipsItself module(0.01);
  expect_same_weights(train_for_clipping(module, {}), trainer_clipped, true);
  ASSERT_EQ(module.seen.size(), 10u);  // once per optimizer step
  EXPECT_EQ(module.seen[0].first, std::nullopt);
  EXPECT_EQ(module.seen[0].second, "norm");

  // An override that does not clip: the Trainer's setting reaches it, and nothing is clipped.
  ClipsItself ignores(std::nullopt);
  expect_same_weights(train_for_clipping(ignores, {.gradient_clip_val = 0.01}), unclipped, true);
  EXPECT_EQ(ignores.seen[0].first, std::optional<double>(0.01));

  ClipsItself conflicting(0.5);
  kt::expect_error([&] { train_for_clipping(conflicting, {.gradient_clip_val = 0.01}); },
                   {"clip_gradients", "gradient_clip_val = 0.01", "0.5", "use only one of them"});
}

// ---- schedulers: lr_scheduler_step, and when epoch-interval ones step

class Scheduled : public TinyClassifier {
 public:
  explicit Scheduled(bool plateau = false) : TinyClassifier(0.0), plateau(plateau) {}
  std::vector<OptimizerConfig> configure_optimizers() override {
    auto sgd = std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = 0.1});
    OptimizerConfig config{sgd, {}};
    config.schedulers.push_back({.scheduler = std::make_shared<optim::StepLR>(*sgd, optim::StepLROptions{1, 0.5})});
    if (plateau)
      config.schedulers.push_back({.plateau = std::make_shared<optim::ReduceLROnPlateau>(
                                       *sgd, optim::ReduceLROnPlateauOptions{.patience = 0}),
                                   .monitor = "val_loss"});
    return {config};
  }
  void lr_scheduler_step(SchedulerConfig& scheduler, std::optional<double> metric) override {
    const auto& metrics = trainer().callback_metrics();
    calls.push_back({scheduler.plateau != nullptr, metric, metrics.count("val_loss") ? metrics.at("val_loss") : -1});
    if (step) TrainModule::lr_scheduler_step(scheduler, metric);
  }
  struct Call {
    bool plateau;
    std::optional<double> metric;
    double val_loss;
  };
  bool plateau;
  bool step = true;
  std::vector<Call> calls;
};

TEST(LrSchedulerStep, TheOverrideGetsEachSchedulerAndThePlateausMetric) {
  Scheduled module(true);
  Trainer trainer(quiet({.max_epochs = 2, .logger = false}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(20, false, 0)});
  ASSERT_EQ(module.calls.size(), 4u);  // per epoch: StepLR on the last batch, then the plateau at epoch end
  for (size_t i : {0, 2}) {
    EXPECT_FALSE(module.calls[i].plateau);
    EXPECT_EQ(module.calls[i].metric, std::nullopt);
    EXPECT_TRUE(module.calls[i + 1].plateau);
    EXPECT_EQ(module.calls[i + 1].metric, std::optional<double>(module.calls[i + 1].val_loss));
  }

  Scheduled frozen;
  frozen.step = false;
  Trainer again(quiet({.max_epochs = 2, .logger = false}));
  again.fit(frozen, Loaders{.train = make_loader(8, false, 0)});
  EXPECT_EQ(frozen.calls.size(), 2u);
  EXPECT_EQ(again.optimizer_configs()[0].optimizer->param_groups()[0].lr, 0.1);  // never stepped
}

double lr_of(Trainer& trainer) { return trainer.optimizer_configs()[0].optimizer->param_groups()[0].lr; }

struct LrProbe : Callback {
  std::string name() const override { return "LrProbe"; }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    at_batch_end.push_back(lr_of(t));
  }
  void on_validation_end(Trainer& t, TrainModule&) override {
    if (!t.sanity_checking()) at_validation_end.push_back(lr_of(t));
  }
  std::vector<double> at_batch_end, at_validation_end;
};

// Lightning steps epoch-interval schedulers on the epoch's last batch, before its
// on_train_batch_end and its validation (Note [When schedulers step] in fit_loop.cpp).
TEST(EpochSchedulers, StepOnTheLastBatchBeforeItsBatchEndHooksAndNotInACutShortEpoch) {
  Scheduled module;
  auto probe = std::make_shared<LrProbe>();
  Trainer trainer(quiet({.max_epochs = 2, .logger = false, .callbacks = {probe}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(20, false, 0)});
  EXPECT_EQ(probe->at_batch_end, (std::vector<double>{0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025}));
  EXPECT_EQ(probe->at_validation_end, (std::vector<double>{0.05, 0.025}));

  Scheduled cut;
  Trainer short_run(quiet({.max_steps = 3, .logger = false}));
  short_run.fit(cut, Loaders{.train = make_loader(8, false, 0)});
  EXPECT_EQ(lr_of(short_run), 0.1);
  EXPECT_TRUE(cut.calls.empty());
}

// ---- step outputs

class WithOutputs : public TinyClassifier {
 public:
  WithOutputs() : TinyClassifier(0.0) {}
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    Tensor logits = forward(batch[0]);
    StepOutput out = nn::F::cross_entropy(logits, batch[1]);
    out.outputs.insert("logits", logits.detach());
    return out;
  }
  void on_train_batch_end(const StepOutput& out, const data::Batch&, int64_t) override { module_losses.push_back(out.loss); }
  std::vector<Tensor> module_losses;
};

struct OutputProbe : Callback {
  std::string name() const override { return "OutputProbe"; }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput& out, const data::Batch& batch, int64_t) override {
    ASSERT_TRUE(out.outputs.contains("logits"));
    EXPECT_FALSE(out.loss.requires_grad());
    const double accumulate = static_cast<double>(t.config().accumulate_grad_batches);
    const double expected = nn::F::cross_entropy(out.outputs.at("logits"), batch[1]).item<double>() / accumulate;
    EXPECT_NEAR(out.loss.item<double>(), expected, 1e-6);
    losses.push_back(out.loss);
  }
  std::vector<Tensor> losses;
};

TEST(StepOutputs, ReachTheCallbacksBatchEndHooksDetachedAndScaledAsLightningsAre) {
  for (int64_t accumulate : {1, 2}) {
    SCOPED_TRACE("accumulate " + std::to_string(accumulate));
    WithOutputs module;
    auto probe = std::make_shared<OutputProbe>();
    Trainer trainer(quiet({.max_epochs = 1, .accumulate_grad_batches = accumulate, .logger = false,
                           .callbacks = {probe}}));
    trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
    ASSERT_EQ(probe->losses.size(), 5u);
    ASSERT_EQ(module.module_losses.size(), 5u);
    for (size_t i = 0; i < 5; ++i) EXPECT_TRUE(bitwise_equal(probe->losses[i], module.module_losses[i]));
  }
}

// What validation_step and test_step return reaches both stages' batch-end hooks, the callbacks'
// and the module's, as in Lightning: here TinyClassifier's loss, checked against the batch.
struct EvalOutputProbe : Callback {
  std::string name() const override { return "EvalOutputProbe"; }
  void on_validation_batch_end(Trainer&, TrainModule& m, const StepOutput& out, const data::Batch& batch,
                               int64_t) override {
    check(m, out, batch);
    ++validation;
  }
  void on_test_batch_end(Trainer&, TrainModule& m, const StepOutput& out, const data::Batch& batch, int64_t) override {
    check(m, out, batch);
    ++test;
  }
  static void check(TrainModule& m, const StepOutput& out, const data::Batch& batch) {
    ASSERT_TRUE(out.loss.defined());
    EXPECT_FALSE(out.loss.requires_grad());
    EXPECT_NEAR(out.loss.item<double>(), nn::F::cross_entropy(m.forward(batch[0]), batch[1]).item<double>(), 1e-6);
  }
  int validation = 0, test = 0;
};

class EvalOutputModule : public TinyClassifier {
 public:
  EvalOutputModule() : TinyClassifier(0.0) {}
  void on_validation_batch_end(const StepOutput& out, const data::Batch&, int64_t) override {
    seen.push_back(out.loss);
  }
  void on_test_batch_end(const StepOutput& out, const data::Batch&, int64_t) override { seen.push_back(out.loss); }
  std::vector<Tensor> seen;
};

TEST(StepOutputs, ValidationAndTestStepOutputsReachTheirBatchEndHooks) {
  EvalOutputModule module;
  auto probe = std::make_shared<EvalOutputProbe>();
  Trainer trainer(quiet({.max_epochs = 1, .num_sanity_val_steps = 0, .logger = false, .callbacks = {probe}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(10, false, 0)});
  trainer.test(module, Loaders{.test = make_loader(20, false, 0)});
  EXPECT_EQ(probe->validation, 4);
  EXPECT_EQ(probe->test, 2);
  EXPECT_EQ(module.seen.size(), 6u);
}

// ---- scheduler frequency

// Halves the lr at each scheduler step, stepping every `frequency` batches ("step" interval).
class HalvingEvery : public TinyClassifier {
 public:
  explicit HalvingEvery(int64_t frequency) : TinyClassifier(0.0), frequency_(frequency) {}
  std::vector<OptimizerConfig> configure_optimizers() override {
    sgd = std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = 0.1});
    OptimizerConfig config{sgd, {}};
    config.schedulers.push_back({.scheduler = std::make_shared<optim::StepLR>(*sgd, optim::StepLROptions{1, 0.5}),
                                 .interval = "step", .frequency = frequency_});
    return {config};
  }
  std::shared_ptr<optim::SGD> sgd;

 private:
  int64_t frequency_;
};

// Lightning's rule (training_epoch_loop.py, update_lr_schedulers): a step-interval scheduler steps
// at a batch that ended an accumulation window when (batch_idx + 1) % frequency == 0, batch_idx
// counting within the epoch. Counted by hand for 2 epochs of 10 batches (batch 4 of 40 samples).
TEST(SchedulerFrequency, CountsBatchesOfTheEpochAsLightningDoes) {
  struct Case {
    int64_t accumulate, frequency, batch_size, steps;
  };
  // accumulate 2, frequency 2: windows end at batches 1, 3, .., 9, all even counts: 5 per epoch.
  // accumulate 1, frequency 3, 5 batches per epoch: batch 2 of each epoch only (not global steps 3, 6, 9).
  // accumulate 2, frequency 3, 10 batches: windows end at 1, 3, 5, 7, 9; counts 2..10: 6 only.
  for (const Case c : {Case{2, 2, 4, 10}, Case{1, 3, 8, 2}, Case{2, 3, 4, 2}}) {
    SCOPED_TRACE("accumulate " + std::to_string(c.accumulate) + ", frequency " + std::to_string(c.frequency));
    HalvingEvery module(c.frequency);
    Trainer trainer(quiet({.max_epochs = 2, .accumulate_grad_batches = c.accumulate, .logger = false}));
    trainer.fit(module, Loaders{.train = make_loader(c.batch_size, false, 0)});
    EXPECT_DOUBLE_EQ(module.sgd->param_groups()[0].lr, 0.1 * std::pow(0.5, static_cast<double>(c.steps)));
  }
}

// ---- resume with schedulers of every kind

class AllSchedulers : public TinyClassifier {
 public:
  std::vector<OptimizerConfig> configure_optimizers() override {
    auto sgd = std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
    OptimizerConfig config{sgd, {}};
    config.schedulers.push_back({.scheduler = std::make_shared<optim::StepLR>(*sgd, optim::StepLROptions{1, 0.7})});
    config.schedulers.push_back({.scheduler = std::make_shared<optim::ExponentialLR>(*sgd, optim::ExponentialLROptions{0.97}),
                                 .interval = "step"});
    config.schedulers.push_back({.plateau = std::make_shared<optim::ReduceLROnPlateau>(
                                     *sgd, optim::ReduceLROnPlateauOptions{.factor = 0.5, .patience = 0}),
                                 .monitor = "val_loss"});
    return {config};
  }
};

// Saves a checkpoint and ends the run, at a batch end or at an epoch end.
struct StopAt : Callback {
  StopAt(int64_t batches, bool at_epoch_end, std::string path)
      : stop_after(batches), at_epoch_end(at_epoch_end), path(std::move(path)) {}
  std::string name() const override { return "StopAt"; }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    if (++seen == stop_after && !at_epoch_end) stop(t);
  }
  void on_train_epoch_end(Trainer& t, TrainModule&) override {
    if (seen == stop_after && at_epoch_end) stop(t);
  }
  void stop(Trainer& t) {
    t.save_checkpoint(path);
    throw std::runtime_error("stop for the test");
  }
  int64_t stop_after;
  bool at_epoch_end;
  std::string path;
  int64_t seen = 0;
};

std::pair<TensorDict, std::vector<std::pair<int64_t, std::map<std::string, double>>>> run(
    std::shared_ptr<Callback> extra = nullptr, const std::string& ckpt = "") {
  seed_everything(42);
  AllSchedulers module;
  auto logger = std::make_shared<RecordingLogger>();
  TrainerConfig c = quiet({.max_epochs = 3, .val_check_interval = int64_t{2}, .log_every_n_steps = 1,
                           .loggers = {logger}});
  if (extra) c.callbacks = {extra};
  Trainer trainer(c);
  try {
    trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5), .val = make_loader(20, false, 0)}, ckpt);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()) != "stop for the test") throw;
  }
  return {module.state_dict(), logger->rows};
}

TEST(EpochSchedulers, ResumeIsBitExactAtBatchEndsAndEpochEnds) {
  const std::string path = fresh_dir("hooks_resume") + "/stop.ckpt";
  const auto full = run();
  for (bool at_epoch_end : {false, true}) {
    for (int64_t stop : {3, 5, 7, 10}) {  // 5 batches per epoch; validation every 2
      if (at_epoch_end && stop % 5 != 0) continue;
      SCOPED_TRACE("stop after batch " + std::to_string(stop) + (at_epoch_end ? " at epoch end" : ""));
      run(std::make_shared<StopAt>(stop, at_epoch_end, path));
      const auto resumed = run(nullptr, path);
      for (const auto& [name, t] : full.first) EXPECT_TRUE(bitwise_equal(t, resumed.first.at(name))) << name;
      ASSERT_FALSE(resumed.second.empty());
      const size_t offset = full.second.size() - resumed.second.size();
      for (size_t i = 0; i < resumed.second.size(); ++i) EXPECT_EQ(resumed.second[i], full.second[offset + i]) << i;
    }
  }
}

}  // namespace
