// The Trainer against Lightning 2.x's semantics where they are easy to get subtly wrong: global_step
// and logged steps under manual optimization and accumulation, sanity-check metrics, overfit_batches,
// validation intervals, setup/teardown order, and deterministic runs. The expected values were read
// from Lightning's loops and checked on Lightning itself with lightning_semantics.py (next to this file).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "testing.h"
#include "io/checkpoint/reader.h"
#include "nn/optim/lr_scheduler.h"
#include "tensor/parallel.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/seed.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

std::vector<int64_t> row_steps(const RecordingLogger& logger) {
  std::vector<int64_t> steps;
  for (const auto& row : logger.rows) steps.push_back(row.first);
  return steps;
}

// 40 samples with their ids as a third field, so a run can say which samples it trained on.
std::shared_ptr<data::DataLoader> loader_with_ids(int64_t batch_size, bool shuffle) {
  auto ds = make_dataset();
  Tensor ids = arange(40, {.dtype = DType::f32});
  auto with_ids = std::make_shared<data::TensorDataset>(std::vector<Tensor>{ds->tensors()[0], ds->tensors()[1], ids});
  return std::make_shared<data::DataLoader>(std::shared_ptr<const data::Dataset>(with_ids),
                                            data::DataLoaderOptions{.batch_size = batch_size, .shuffle = shuffle, .seed = 5});
}

struct Counter : Callback {
  std::string name() const override { return "Counter"; }
  void on_train_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override { ++train_batches; }
  void on_before_optimizer_step(Trainer&, TrainModule&, optim::Optimizer&) override { ++optimizer_steps; }
  void on_validation_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    if (!t.sanity_checking()) ++val_batches;
  }
  void on_validation_end(Trainer& t, TrainModule&) override {
    if (!t.sanity_checking()) ++validations;
  }
  int64_t train_batches = 0, optimizer_steps = 0, val_batches = 0, validations = 0;
};

// ---- manual optimization

// A GAN's shape: fc1 stepped by the first optimizer every batch, fc2 by the second on even batches.
class TwoOptimizers : public TinyClassifier {
 public:
  explicit TwoOptimizers(int64_t second_every = 2) : TinyClassifier(0.0), second_every_(second_every) {
    automatic_optimization = false;
  }
  StepOutput training_step(const data::Batch& batch, int64_t batch_idx) override {
    std::vector<TrainOptimizer> opts = optimizers();
    Tensor loss = nn::F::cross_entropy(forward(batch[0]), batch[1]);
    log("train_loss", loss);
    log("epoch_loss", loss, {.on_step = false, .on_epoch = true});
    opts[0].zero_grad();
    manual_backward(loss);
    opts[0].step();
    if (batch_idx % second_every_ == 0) {
      Tensor second = nn::F::cross_entropy(forward(batch[0]), batch[1]);
      opts[1].zero_grad();
      manual_backward(second);
      opts[1].step();
    }
    return {};
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    first = std::make_shared<optim::SGD>(fc1->parameters(), optim::SGDOptions{.lr = 0.1});
    auto second = std::make_shared<optim::SGD>(fc2->parameters(), optim::SGDOptions{.lr = 0.05});
    auto halve_each_step = std::make_shared<optim::StepLR>(*first, optim::StepLROptions{.step_size = 1, .gamma = 0.5});
    return {{first, {{.scheduler = halve_each_step, .interval = "step"}}}, {second, {}}};
  }

  std::shared_ptr<optim::SGD> first;

 private:
  int64_t second_every_;
};

TEST(ManualOptimization, GlobalStepCountsOptimizerStepsAndLogsCountBatches) {
  TwoOptimizers module;
  auto logger = std::make_shared<RecordingLogger>();
  auto counter = std::make_shared<Counter>();
  Trainer trainer(quiet({.max_epochs = 1, .log_every_n_steps = 2, .loggers = {logger}, .callbacks = {counter}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});  // 5 batches
  EXPECT_EQ(trainer.global_step(), 5 + 3);  // Lightning: 8
  EXPECT_EQ(counter->optimizer_steps, 8);
  // Steps of logged rows count batches (Lightning: [1, 3, 4]): batches 1 and 3, then the epoch row.
  EXPECT_EQ(row_steps(*logger), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_TRUE(logger->rows[2].second.count("epoch_loss"));
  // The Trainer leaves schedulers to the module under manual optimization (Lightning: lr stays 0.1).
  EXPECT_DOUBLE_EQ(module.first->param_groups()[0].lr, 0.1);
}

TEST(ManualOptimization, MatchesAHandWrittenLoopBitwise) {
  TwoOptimizers module;
  Trainer(quiet({.max_epochs = 2, .logger = false})).fit(module, Loaders{.train = make_loader(8, false, 0)});

  TinyClassifier reference(0.0);
  optim::SGD first(reference.fc1->parameters(), {.lr = 0.1});
  optim::SGD second(reference.fc2->parameters(), {.lr = 0.05});
  auto loader = make_loader(8, false, 0);
  for (int epoch = 0; epoch < 2; ++epoch) {
    int64_t batch_idx = 0;
    for (data::Batch& batch : *loader) {
      first.zero_grad();
      nn::F::cross_entropy(reference.forward(batch[0]), batch[1]).backward();
      first.step();
      if (batch_idx++ % 2 == 0) {
        second.zero_grad();
        nn::F::cross_entropy(reference.forward(batch[0]), batch[1]).backward();
        second.step();
      }
    }
  }
  for (const auto& [name, p] : reference.named_parameters())
    EXPECT_TRUE(bitwise_equal(module.parameter(name), p)) << name;
}

TEST(ManualOptimization, MaxStepsAndCheckpointTriggersFollowOptimizerSteps) {
  TwoOptimizers every_batch(1);  // two optimizer steps per batch
  auto counter = std::make_shared<Counter>();
  Trainer limited(quiet({.max_epochs = -1, .max_steps = 5, .logger = false, .callbacks = {counter}}));
  limited.fit(every_batch, Loaders{.train = make_loader(8, false, 0)});
  EXPECT_EQ(limited.global_step(), 6);  // Lightning: 6, after 3 batches
  EXPECT_EQ(counter->train_batches, 3);

  const std::string dir = fresh_dir("manual_ckpt");
  TwoOptimizers module(1);
  auto ckpt = std::make_shared<ModelCheckpoint>(
      callbacks::ModelCheckpointOptions{.dirpath = dir, .save_top_k = -1, .every_n_train_steps = 4});
  TrainerConfig c = quiet({.max_epochs = 1, .logger = false, .callbacks = {ckpt}});
  c.enable_checkpointing = true;
  Trainer(c).fit(module, Loaders{.train = make_loader(8, false, 0)});
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.insert(entry.path().filename().string());
  EXPECT_EQ(files, (std::set<std::string>{"epoch=0-step=4.ckpt", "epoch=0-step=8.ckpt"}));
  EXPECT_EQ(io::load(dir + "/epoch=0-step=8.ckpt").meta.at("global_step"), 8);
}

struct StopAfter : Callback {
  StopAfter(int64_t batches, std::string path) : stop_after(batches), path(std::move(path)) {}
  std::string name() const override { return "StopAfter"; }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    if (++seen == stop_after) {
      t.save_checkpoint(path);
      throw std::runtime_error("stop for the test");
    }
  }
  int64_t stop_after, seen = 0;
  std::string path;
};

TEST(ManualOptimization, ResumeContinuesBothCounts) {
  const std::string path = fresh_dir("manual_resume") + "/stop.ckpt";
  auto run = [&](std::shared_ptr<Callback> stop, const std::string& ckpt, int64_t* global_step) {
    TwoOptimizers module;
    auto logger = std::make_shared<RecordingLogger>();
    TrainerConfig c = quiet({.max_epochs = 2, .log_every_n_steps = 1, .loggers = {logger}});
    if (stop) c.callbacks = {stop};
    Trainer trainer(c);
    try {
      trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5)}, ckpt);
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()) != "stop for the test") throw;
    }
    if (global_step) *global_step = trainer.global_step();
    return std::make_pair(module.state_dict(), logger->rows);
  };
  int64_t full_steps = 0, resumed_steps = 0;
  const auto [full_weights, full_rows] = run(nullptr, "", &full_steps);
  run(std::make_shared<StopAfter>(7, path), "", nullptr);  // after epoch 1's batch 1
  EXPECT_EQ(io::load(path).meta.at("global_step"), 8 + 2 + 1);
  const auto [weights, rows] = run(nullptr, path, &resumed_steps);
  EXPECT_EQ(resumed_steps, full_steps);
  for (const auto& [name, t] : full_weights) EXPECT_TRUE(bitwise_equal(t, weights.at(name))) << name;
  // The stopped batch's row, sent by the resumed run (Note [No logged row is lost]), batches 7, 8, 9,
  // then the epoch row.
  ASSERT_EQ(rows.size(), 1u + 3u + 1u);
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i], full_rows[full_rows.size() - rows.size() + i]) << i;
}

class StepsInAutomaticMode : public TinyClassifier {
 public:
  StepOutput training_step(const data::Batch& b, int64_t i) override {
    optimizers()[0].step();
    return TinyClassifier::training_step(b, i);
  }
};

TEST(ManualOptimization, RefusesWhatLightningRefuses) {
  auto loaders = Loaders{.train = make_loader(8, false, 0)};
  kt::expect_error([&] {
    TwoOptimizers m;
    Trainer(quiet({.gradient_clip_val = 1.0, .logger = false})).fit(m, loaders);
  }, {"fit: automatic gradient clipping is not supported for manual optimization", "gradient_clip_val = 1"});
  kt::expect_error([&] {
    TwoOptimizers m;
    Trainer(quiet({.accumulate_grad_batches = 2, .logger = false})).fit(m, loaders);
  }, {"automatic gradient accumulation is not supported", "accumulate_grad_batches = 2"});
  kt::expect_error([&] {
    StepsInAutomaticMode m;
    Trainer(quiet({.logger = false})).fit(m, loaders);
  }, {"optimizer.step()", "automatic_optimization = false"});
}

// ---- automatic optimization: windows of batches, logged steps

class SkipsBatchOne : public TinyClassifier {
 public:
  SkipsBatchOne() : TinyClassifier(0.0) {}
  StepOutput training_step(const data::Batch& b, int64_t i) override {
    return i == 1 ? StepOutput{} : TinyClassifier::training_step(b, i);
  }
};

TEST(AutomaticOptimization, ABatchWithoutALossStillTakesItsStep) {
  SkipsBatchOne module;
  auto counter = std::make_shared<Counter>();
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .callbacks = {counter}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
  EXPECT_EQ(trainer.global_step(), 5);  // Lightning: 5
  EXPECT_EQ(counter->optimizer_steps, 5);
  // The step had no gradients, so SGD changed nothing: the same as training without batch 1.
  auto ds = make_dataset();
  std::vector<Tensor> fields;
  for (const Tensor& t : ds->tensors()) fields.push_back(cat({t.slice(0, 0, 8), t.slice(0, 16, 40)}));
  auto without_batch_one = std::make_shared<data::DataLoader>(
      std::shared_ptr<const data::Dataset>(std::make_shared<data::TensorDataset>(fields)),
      data::DataLoaderOptions{.batch_size = 8});
  TinyClassifier reference(0.0);
  Trainer(quiet({.max_epochs = 1, .logger = false})).fit(reference, Loaders{.train = without_batch_one});
  for (const auto& [name, p] : reference.named_parameters())
    EXPECT_TRUE(bitwise_equal(module.parameter(name), p)) << name;
}

TEST(AutomaticOptimization, OnlyBatchesThatStepAreLogged) {
  TinyClassifier module(0.0);
  auto logger = std::make_shared<RecordingLogger>();
  Trainer trainer(quiet({.max_epochs = 1, .accumulate_grad_batches = 2, .log_every_n_steps = 2, .loggers = {logger}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0, 1, 48)});  // 6 batches, 3 steps
  EXPECT_EQ(trainer.global_step(), 3);
  EXPECT_EQ(row_steps(*logger), (std::vector<int64_t>{1, 2}));  // Lightning: [1, 2]
}

// ---- sanity check

struct WatchMetrics : Callback {
  std::string name() const override { return "WatchMetrics"; }
  void on_sanity_check_end(Trainer& t, TrainModule&) override { at_sanity_end = t.callback_metrics(); }
  void on_train_start(Trainer& t, TrainModule&) override {
    at_train_start = t.callback_metrics();
    bar_at_train_start = t.progress_bar_metrics();
  }
  std::map<std::string, double> at_sanity_end, at_train_start, bar_at_train_start;
};

TEST(SanityCheck, ItsMetricsAreSeenAtItsEndOnly) {
  TinyClassifier module(0.0);
  auto watch = std::make_shared<WatchMetrics>();
  auto logger = std::make_shared<RecordingLogger>();
  Trainer trainer(quiet({.max_epochs = 1, .num_sanity_val_steps = 2, .limit_train_batches = int64_t{1},
                         .loggers = {logger}, .callbacks = {watch}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(8, false, 0)});
  EXPECT_EQ(watch->at_sanity_end.count("val_loss"), 1u);  // Lightning: ['val_acc', 'val_loss']
  EXPECT_TRUE(watch->at_train_start.empty());             // Lightning: [] and []
  EXPECT_TRUE(watch->bar_at_train_start.empty());
  int64_t rows_with_val_loss = 0;
  for (const auto& [step, row] : logger->rows) rows_with_val_loss += static_cast<int64_t>(row.count("val_loss"));
  EXPECT_EQ(rows_with_val_loss, 1);  // the real validation's only
  EXPECT_EQ(trainer.callback_metrics().count("val_loss"), 1u);  // the real validation's
}

// ---- overfit_batches

struct SeenIds : Callback {
  std::string name() const override { return "SeenIds"; }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch& b, int64_t) override {
    for (double id : kt::values(b[2])) ids[t.current_epoch()].push_back(static_cast<int>(id));
  }
  std::map<int64_t, std::vector<int>> ids;
};

TEST(OverfitBatches, TrainsOnTheSameBatchesEachEpochAndLimitsValidation) {
  for (bool shuffle : {false, true}) {
    SCOPED_TRACE(shuffle ? "shuffled train loader" : "sequential train loader");
    TinyClassifier module(0.0);
    auto seen = std::make_shared<SeenIds>();
    auto counter = std::make_shared<Counter>();
    Trainer trainer(quiet({.max_epochs = 2, .num_sanity_val_steps = 0, .limit_val_batches = int64_t{1},
                           .overfit_batches = int64_t{2}, .logger = false, .callbacks = {seen, counter}}));
    ::testing::internal::CaptureStderr();
    trainer.fit(module, Loaders{.train = loader_with_ids(4, shuffle), .val = loader_with_ids(4, false)});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(trainer.num_training_batches(), 2);
    EXPECT_EQ(counter->val_batches, 2 * 2);  // overfit_batches replaces limit_val_batches (Lightning: 2 per run)
    ASSERT_EQ(seen->ids.size(), 2u);
    EXPECT_EQ(seen->ids[0].size(), 8u);
    EXPECT_EQ(seen->ids[0], seen->ids[1]);
    // Lightning: [0..3], [4..7] in every epoch; a shuffled loader is rebuilt in order, with a warning.
    EXPECT_EQ(seen->ids[0], (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
    EXPECT_EQ(err.find("turning off the train dataloader shuffling") != std::string::npos, shuffle) << err;
  }
}

TEST(OverfitBatches, AFractionAppliesToEachLoaderAndToValidate) {
  TinyClassifier module(0.0);
  auto counter = std::make_shared<Counter>();
  Trainer trainer(quiet({.max_epochs = 1, .num_sanity_val_steps = 0, .overfit_batches = 0.25, .logger = false,
                         .callbacks = {counter}}));
  trainer.fit(module, Loaders{.train = loader_with_ids(4, false), .val = loader_with_ids(8, false)});
  EXPECT_EQ(trainer.num_training_batches(), 2);  // 10 batches * 0.25
  EXPECT_EQ(counter->val_batches, 1);            // 5 batches * 0.25
  trainer.validate(module, Loaders{.val = loader_with_ids(4, false)});
  EXPECT_EQ(counter->val_batches, 1 + 2);
}

TEST(Limits, AFractionBelowOneBatchIsRefusedAsInLightning) {
  kt::expect_error([] {
    TinyClassifier module;
    Trainer(quiet({.limit_train_batches = 0.1, .logger = false})).fit(module, Loaders{.train = make_loader(8, false, 0)});
  }, {"limit_train_batches = 0.1", "train loader's 5 batches is less than one batch", "at least 0.2"});
  kt::expect_error([] {
    TinyClassifier module;
    Trainer(quiet({.limit_test_batches = 0.4, .logger = false})).test(module, Loaders{.test = make_loader(20, false, 0)});
  }, {"limit_test_batches = 0.4", "test loader's 2 batches", "at least 0.5"});
  TinyClassifier module;
  Trainer trainer(quiet({.limit_val_batches = 0.0, .logger = false}));  // 0.0 turns validation off, as in Lightning
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(8, false, 0)});
  EXPECT_EQ(trainer.callback_metrics().count("val_loss"), 0u);
}

// ---- when validation runs

TEST(ValidationInterval, BatchesCountAcrossEpochsWithoutCheckValEveryNEpoch) {
  for (auto [every_n_epoch, want] : {std::pair{std::optional<int64_t>{}, 3}, {std::optional<int64_t>{1}, 2}}) {
    TinyClassifier module(0.0);
    auto counter = std::make_shared<Counter>();
    Trainer trainer(quiet({.max_epochs = 2, .val_check_interval = int64_t{3}, .check_val_every_n_epoch = every_n_epoch,
                           .num_sanity_val_steps = 0, .logger = false, .callbacks = {counter}}));
    trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(8, false, 0)});
    EXPECT_EQ(counter->validations, want) << (every_n_epoch ? "every epoch" : "across epochs");  // Lightning: 3 and 2
  }
  kt::expect_error([] {
    TinyClassifier module;
    Trainer(quiet({.val_check_interval = int64_t{7}, .logger = false}))
        .fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(8, false, 0)});
  }, {"val_check_interval (7) must be less than or equal to the number of training batches (5)",
      "check_val_every_n_epoch"});
}

class StopsAtBatchOne : public TinyClassifier {
 public:
  StepOutput training_step(const data::Batch& b, int64_t i) override {
    if (i == 1) trainer().should_stop = true;
    return TinyClassifier::training_step(b, i);
  }
};

TEST(ValidationInterval, AStopRequestValidatesOnceBeforeTheRunEnds) {
  StopsAtBatchOne module;
  auto counter = std::make_shared<Counter>();
  Trainer trainer(quiet({.max_epochs = 3, .num_sanity_val_steps = 0, .logger = false, .callbacks = {counter}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(8, false, 0)});
  EXPECT_EQ(counter->train_batches, 2);  // Lightning: 2 batches, one validation
  EXPECT_EQ(counter->validations, 1);
}

TEST(FastDevRun, OverridesValidationSchedulingAndMaxSteps) {
  TinyClassifier module;
  auto counter = std::make_shared<Counter>();
  Trainer trainer(quiet({.max_epochs = 5, .val_check_interval = int64_t{100}, .fast_dev_run = 2, .callbacks = {counter}}));
  EXPECT_EQ(trainer.config().max_steps, 2);
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(8, false, 0)});
  EXPECT_EQ(trainer.global_step(), 2);  // Lightning: global_step 2, max_steps 2, 2 validation batches
  EXPECT_EQ(counter->validations, 1);
  EXPECT_EQ(counter->val_batches, 2);
}

// A module with training_step only (TinyClassifier's layers, no validation_step).
class NoValidationStep : public TrainModule {
 public:
  NoValidationStep() : TrainModule("NoValidationStep"), fc(register_module("fc", std::make_shared<nn::Linear>(4, 3))) {}
  Tensor forward(const Tensor& x) override { return (*fc)(x); }
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    return nn::F::cross_entropy(forward(batch[0]), batch[1]);
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    return {{std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = 0.1})}};
  }
  std::shared_ptr<nn::Linear> fc;
};

struct AllValidationBatches : Callback {
  std::string name() const override { return "AllValidationBatches"; }
  void on_validation_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    ++batches;
  }
  int64_t batches = 0;  // the sanity check's included
};

int64_t count_of(const std::string& text, const std::string& part) {
  int64_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// Lightning warns "You passed in a `val_dataloader` but have no `validation_step`. Skipping val loop."
// Note [Steps a module does not define]: Kiln finds out on the first validation batch.
TEST(ValidationInterval, AValLoaderWithoutValidationStepIsSkippedWithAWarning) {
  const std::string warning = "you passed in a val_dataloader but have no validation_step; skipping the validation loop";
  NoValidationStep module;
  auto counter = std::make_shared<Counter>();
  auto all = std::make_shared<AllValidationBatches>();
  Trainer trainer(quiet({.max_epochs = 2, .logger = false, .callbacks = {counter, all}}));
  const Loaders loaders{.train = make_loader(10, false, 0), .val = make_loader(10, false, 0)};
  ::testing::internal::CaptureStderr();
  trainer.fit(module, loaders);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, warning), 1) << err;
  EXPECT_EQ(counter->train_batches, 8);
  EXPECT_EQ(counter->validations, 0);  // Lightning: none
  EXPECT_EQ(all->batches, 1);          // the sanity check's first batch, which found the default step
  EXPECT_EQ(trainer.num_val_batches(), 0);

  // Without a sanity check the first epoch's validation finds out; the second fit knows from the start.
  Trainer unchecked(quiet({.max_epochs = 2, .num_sanity_val_steps = 0, .logger = false, .callbacks = {counter, all}}));
  NoValidationStep fresh;
  ::testing::internal::CaptureStderr();
  unchecked.fit(fresh, loaders);
  unchecked.fit(fresh, loaders);
  err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, warning), 2) << err;  // once per fit, as Lightning warns
  EXPECT_EQ(counter->validations, 1);           // the probe's, in the first fit only
  EXPECT_EQ(all->batches, 2);

  // A module with a validation_step, or no val loader: no warning.
  TinyClassifier with_step(0.0);
  ::testing::internal::CaptureStderr();
  Trainer(quiet({.max_epochs = 1, .logger = false})).fit(with_step, loaders);
  Trainer(quiet({.max_epochs = 1, .logger = false})).fit(fresh, Loaders{.train = loaders.train});
  err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err.find("validation_step"), std::string::npos) << err;
}

// Lightning's configuration check (MisconfigurationException): validate() and test() need their
// step; predict() without predict_step runs forward, and needs that.
class NoStepsNoForward : public TrainModule {
 public:
  NoStepsNoForward() : TrainModule("NoStepsNoForward"), fc(register_module("fc", std::make_shared<nn::Linear>(4, 3))) {}
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    return nn::F::cross_entropy((*fc)(batch[0]), batch[1]);
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    return {{std::make_shared<optim::SGD>(parameters(), optim::SGDOptions{.lr = 0.1})}};
  }
  std::shared_ptr<nn::Linear> fc;
};

TEST(MissingSteps, ValidateTestAndPredictRaiseAsLightningDoes) {
  const auto loader = make_loader(10, false, 0);
  const Loaders loaders{.val = loader, .test = loader, .predict = loader};
  auto all = std::make_shared<AllValidationBatches>();
  Trainer trainer(quiet({.logger = false, .callbacks = {all}}));
  NoValidationStep module;
  kt::expect_error([&] { trainer.validate(module, loaders); },
                   {"No `validation_step()` method defined to run `Trainer.validate`.", "NoValidationStep"});
  EXPECT_EQ(all->batches, 0);  // raised at the first step, before its batch-end hooks
  kt::expect_error([&] { trainer.validate(module, loaders); }, {"No `validation_step()` method defined"});
  EXPECT_EQ(all->batches, 0);
  kt::expect_error([&] { trainer.test(module, loaders); },
                   {"No `test_step()` method defined to run `Trainer.test`.", "NoValidationStep"});
  EXPECT_EQ(trainer.stage(), TrainerStage::none);  // detached: the module can run again
  // predict_step's default is forward, as in Lightning: the predictions are the logits.
  const std::vector<Tensor> predictions = trainer.predict(module, loaders);
  ASSERT_EQ(predictions.size(), 4u);
  const data::Batch first = *loader->begin();
  EXPECT_TRUE(bitwise_equal(predictions[0], module.forward(first[0])));
  NoStepsNoForward bare;
  kt::expect_error([&] { trainer.predict(bare, loaders); },
                   {"`Trainer.predict` requires `forward` method to run.", "NoStepsNoForward"});
  // A module with the steps runs all three.
  TinyClassifier full(0.0);
  EXPECT_TRUE(trainer.validate(full, loaders).contains("val_loss"));
  EXPECT_TRUE(trainer.test(full, loaders).contains("test_loss"));
  EXPECT_EQ(trainer.predict(full, loaders).size(), 4u);
}

// ---- hook order around the DataModule, and the module's evaluation hooks

std::vector<std::string>* g_calls = nullptr;

class NotingData : public DataModule {
 public:
  void setup(const std::string& s) override { g_calls->push_back("dm.setup:" + s); }
  void teardown(const std::string& s) override { g_calls->push_back("dm.teardown:" + s); }
  std::shared_ptr<data::DataLoader> train_dataloader() override { return make_loader(8, false, 0); }
  std::shared_ptr<data::DataLoader> val_dataloader() override { return make_loader(20, false, 0); }
};

class NotingModule : public TinyClassifier {
 public:
  void setup(const std::string& s) override { g_calls->push_back("setup:" + s); }
  void teardown(const std::string& s) override { g_calls->push_back("teardown:" + s); }
  void on_validation_batch_start(const data::Batch&, int64_t i) override { note("val_batch_start", i); }
  void on_validation_batch_end(const StepOutput&, const data::Batch&, int64_t i) override { note("val_batch_end", i); }
  void on_test_batch_start(const data::Batch&, int64_t i) override { note("test_batch_start", i); }
  void on_test_batch_end(const StepOutput&, const data::Batch&, int64_t i) override { note("test_batch_end", i); }
  void on_predict_start() override { g_calls->push_back("predict_start"); }
  void on_predict_batch_start(const data::Batch&, int64_t i) override { note("predict_batch_start", i); }
  void on_predict_batch_end(const Tensor& prediction, const data::Batch&, int64_t i) override {
    note("predict_batch_end", prediction.size(0));
  }
  void on_predict_end() override { g_calls->push_back("predict_end"); }
  void note(const std::string& s, int64_t i) { g_calls->push_back(s + ":" + std::to_string(i)); }
};

struct NotingCallback : Callback {
  std::string name() const override { return "NotingCallback"; }
  void setup(Trainer&, TrainModule&, const std::string& s) override { g_calls->push_back("cb.setup:" + s); }
  void teardown(Trainer&, TrainModule&, const std::string& s) override { g_calls->push_back("cb.teardown:" + s); }
};

TEST(HookOrder, DataModuleFirstInSetupAndTeardownAndModuleEvaluationHooks) {
  std::vector<std::string> calls;
  g_calls = &calls;
  NotingModule module;
  NotingData data;
  Trainer trainer(quiet({.max_epochs = 1, .num_sanity_val_steps = 0, .logger = false,
                         .callbacks = {std::make_shared<NotingCallback>()}}));
  trainer.fit(module, data);
  const std::vector<std::string> fit_calls = calls;
  calls.clear();
  trainer.test(module, Loaders{.test = make_loader(20, false, 0)});
  const std::vector<std::string> test_calls = calls;
  calls.clear();
  trainer.predict(module, Loaders{.predict = make_loader(30, false, 0)});
  g_calls = nullptr;
  EXPECT_EQ(fit_calls, (std::vector<std::string>{"dm.setup:fit", "cb.setup:fit", "setup:fit", "val_batch_start:0",
                                                 "val_batch_end:0", "val_batch_start:1", "val_batch_end:1",
                                                 "dm.teardown:fit", "cb.teardown:fit", "teardown:fit"}));
  EXPECT_EQ(test_calls, (std::vector<std::string>{"cb.setup:test", "setup:test", "test_batch_start:0", "test_batch_end:0",
                                                  "test_batch_start:1", "test_batch_end:1", "cb.teardown:test",
                                                  "teardown:test"}));
  EXPECT_EQ(calls, (std::vector<std::string>{"cb.setup:predict", "setup:predict", "predict_start", "predict_batch_start:0",
                                             "predict_batch_end:30", "predict_batch_start:1", "predict_batch_end:10",
                                             "predict_end", "cb.teardown:predict", "teardown:predict"}));
}

// ---- deterministic runs

struct RunOutput {
  TensorDict weights;
  std::vector<std::pair<int64_t, std::map<std::string, double>>> rows;
};

RunOutput deterministic_run(int workers, std::shared_ptr<Callback> extra = nullptr) {
  seed_everything(42);
  TinyClassifier module(0.5);  // dropout draws from the default generator
  auto logger = std::make_shared<RecordingLogger>();
  TrainerConfig c = quiet({.max_epochs = 2, .log_every_n_steps = 1, .loggers = {logger}, .deterministic = true});
  if (extra) c.callbacks = {extra};
  Trainer trainer(c);
  trainer.fit(module, Loaders{.train = make_loader(8, true, workers, 5), .val = make_loader(20, false, workers)});
  return {module.state_dict(), logger->rows};
}

TEST(Deterministic, RunsWithDropoutAndShufflingWorkersAreBitwiseEqual) {
  const RunOutput first = deterministic_run(2);
  for (int workers : {2, 0}) {
    SCOPED_TRACE(std::to_string(workers) + " workers");
    const RunOutput again = deterministic_run(workers);
    for (const auto& [name, t] : first.weights) EXPECT_TRUE(bitwise_equal(t, again.weights.at(name))) << name;
    EXPECT_EQ(again.rows, first.rows);
  }
  ASSERT_GT(first.rows.size(), 10u);
}

struct ChangeThreads : Callback {
  explicit ChangeThreads(int to) : to(to) {}
  std::string name() const override { return "ChangeThreads"; }
  void on_train_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&, int64_t batch_idx) override {
    if (batch_idx == 1) set_num_threads(to);
  }
  int to;
};

TEST(Deterministic, AThreadCountChangeDuringFitIsRefused) {
  const int threads = get_num_threads();
  const int other = threads == 1 ? 2 : 1;
  kt::expect_error([&] { deterministic_run(0, std::make_shared<ChangeThreads>(other)); },
                   {"Trainer(deterministic = true)", "thread count changed from " + std::to_string(threads) + " to " +
                                                         std::to_string(other), "set_num_threads"});
  set_num_threads(threads);
  TinyClassifier module;
  Trainer relaxed(quiet({.max_epochs = 1, .logger = false, .callbacks = {std::make_shared<ChangeThreads>(other)}}));
  relaxed.fit(module, Loaders{.train = make_loader(8, false, 0)});  // not deterministic: allowed
  set_num_threads(threads);
}

TEST(Deterministic, CheckpointsRecordTheThreadCountAndAResumeWithAnotherOneWarns) {
  const int threads = get_num_threads();
  const int other = threads == 1 ? 2 : 1;
  const std::string path = fresh_dir("threads") + "/stop.ckpt";
  try {
    deterministic_run(0, std::make_shared<StopAfter>(3, path));
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(io::load(path).meta.at("num_threads"), threads);
  set_num_threads(other);
  seed_everything(42);
  TinyClassifier module(0.5);
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .deterministic = true}));
  ::testing::internal::CaptureStderr();
  trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5)}, path);
  const std::string err = ::testing::internal::GetCapturedStderr();
  set_num_threads(threads);
  EXPECT_NE(err.find("written by a run with " + std::to_string(threads) + " threads, this one has " +
                     std::to_string(other)), std::string::npos) << err;
}

}  // namespace
