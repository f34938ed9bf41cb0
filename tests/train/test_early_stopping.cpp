// EarlyStopping against Lightning 2.x's documented behaviour: patience counts checks without an
// improvement larger than min_delta (in the direction of the mode), thresholds and non-finite
// values stop at once, state round trips; then in real fits: the epoch it stops at, min_epochs,
// strict and non-strict missing metrics, and where the check runs.
#include <gtest/gtest.h>
#include <unistd.h>

#include "testing.h"
#include "train/callbacks/early_stopping.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::test_trainer;
using callbacks::EarlyStopping;
using callbacks::EarlyStoppingOptions;

namespace {

// Feeds values one check at a time; returns the index of the check that stopped, or -1.
int64_t first_stop(EarlyStopping& es, const std::vector<double>& values) {
  for (size_t i = 0; i < values.size(); ++i)
    if (es.evaluate(values[i]).first) return int64_t(i);
  return -1;
}

TEST(EarlyStopping, PatienceCountsChecksWithoutImprovement) {
  EarlyStopping es({.monitor = "val_loss", .patience = 2});
  EXPECT_EQ(first_stop(es, {5, 4, 4.5, 4.2, 3}), 3);  // 4.5 and 4.2 do not beat 4
  EXPECT_EQ(es.wait_count(), 2);
  EXPECT_EQ(es.best_score(), 4.0);

  EarlyStopping reset({.monitor = "val_loss", .patience = 2});
  EXPECT_EQ(first_stop(reset, {5, 6, 4, 6, 3, 7, 8}), 6);  // an improvement resets the count
  EXPECT_EQ(reset.best_score(), 3.0);

  EarlyStopping equal({.monitor = "val_loss", .patience = 3});
  EXPECT_EQ(first_stop(equal, {1, 1, 1, 1}), 3);  // equal is not better
}

TEST(EarlyStopping, MinDeltaIsAppliedInTheDirectionOfTheMode) {
  // min: an improvement must go below best - 0.5.
  EarlyStopping min_mode({.monitor = "val_loss", .min_delta = 0.5, .patience = 1});
  EXPECT_EQ(min_mode.min_delta(), -0.5);
  EXPECT_FALSE(min_mode.evaluate(5.0).first);
  EXPECT_TRUE(min_mode.evaluate(4.6).first);  // better by 0.4 only
  EarlyStopping min_ok({.monitor = "val_loss", .min_delta = 0.5, .patience = 1});
  min_ok.evaluate(5.0);
  EXPECT_FALSE(min_ok.evaluate(4.4).first);
  EXPECT_EQ(min_ok.best_score(), 4.4);

  // max: an improvement must go above best + 0.5.
  EarlyStopping max_mode({.monitor = "acc", .min_delta = 0.5, .patience = 1, .mode = "max"});
  EXPECT_EQ(max_mode.min_delta(), 0.5);
  max_mode.evaluate(1.0);
  EXPECT_TRUE(max_mode.evaluate(1.4).first);
  EarlyStopping max_ok({.monitor = "acc", .min_delta = 0.5, .patience = 1, .mode = "max"});
  max_ok.evaluate(1.0);
  EXPECT_FALSE(max_ok.evaluate(1.6).first);

  // A negative min_delta (Lightning multiplies, it does not take the magnitude) tolerates a worse value.
  EarlyStopping lenient({.monitor = "val_loss", .min_delta = -0.5, .patience = 1});
  lenient.evaluate(5.0);
  EXPECT_FALSE(lenient.evaluate(5.3).first);
  EXPECT_EQ(lenient.best_score(), 5.3);
}

TEST(EarlyStopping, ThresholdsStopAtOnce) {
  EarlyStopping good({.monitor = "val_loss", .patience = 10, .stopping_threshold = 0.1});
  EXPECT_FALSE(good.evaluate(0.1).first);  // not strictly below
  const auto [stop, reason] = good.evaluate(0.05);
  EXPECT_TRUE(stop);
  EXPECT_EQ(reason, "Stopping threshold reached: val_loss = 0.05 < 0.1. Signaling Trainer to stop.");

  EarlyStopping diverge({.monitor = "val_loss", .patience = 10, .divergence_threshold = 10});
  EXPECT_FALSE(diverge.evaluate(10).first);
  EXPECT_TRUE(diverge.evaluate(10.5).first);

  EarlyStopping max_diverge({.monitor = "acc", .patience = 10, .mode = "max", .divergence_threshold = 0.2});
  EXPECT_FALSE(max_diverge.evaluate(0.5).first);
  EXPECT_TRUE(max_diverge.evaluate(0.1).first);
}

TEST(EarlyStopping, NonFiniteValuesStopWhenChecked) {
  EarlyStopping es({.monitor = "val_loss"});
  es.evaluate(0.25);
  const auto [stop, reason] = es.evaluate(kt::kNaN);
  EXPECT_TRUE(stop);
  EXPECT_EQ(reason, "Monitored metric val_loss = nan is not finite. Previous best value was 0.250. "
                    "Signaling Trainer to stop.");
  EXPECT_TRUE(es.evaluate(kt::kInf).first);

  // Without check_finite a NaN is just not an improvement.
  EarlyStopping lax({.monitor = "val_loss", .patience = 2, .check_finite = false});
  EXPECT_FALSE(lax.evaluate(kt::kNaN).first);
  EXPECT_EQ(lax.wait_count(), 1);
}

TEST(EarlyStopping, ReasonsReadAsLightnings) {
  EarlyStopping es({.monitor = "val_loss", .patience = 1});
  EXPECT_EQ(es.evaluate(2.0).second, "Metric val_loss improved. New best score: 2.000");
  EXPECT_EQ(es.evaluate(1.5).second, "Metric val_loss improved by 0.500 >= min_delta = 0.0. New best score: 1.500");
  EXPECT_EQ(es.evaluate(1.7).second,
            "Monitored metric val_loss did not improve in the last 1 records. Best score: 1.500. Signaling Trainer to stop.");
}

TEST(EarlyStopping, StateRoundTrip) {
  EarlyStopping first({.monitor = "val_loss", .patience = 3});
  first.evaluate(2.0);
  first.evaluate(2.5);
  const Json saved = Json::parse(first.state_dict().dump());
  EXPECT_EQ(saved, Json({{"wait_count", 1}, {"stopped_epoch", 0}, {"best_score", 2.0}, {"patience", 3}}));

  EarlyStopping resumed({.monitor = "val_loss", .patience = 3});
  resumed.load_state_dict(saved);
  EXPECT_EQ(resumed.wait_count(), 1);
  EXPECT_EQ(resumed.best_score(), 2.0);
  EXPECT_EQ(first_stop(resumed, {2.1, 2.2}), 1);  // continues the count: 2 more checks make 3

  // A fresh callback saves its infinite best score as a string JSON can hold.
  EarlyStopping fresh({.monitor = "acc", .mode = "max"});
  EXPECT_EQ(fresh.state_dict()["best_score"], "-inf");
  resumed.load_state_dict(fresh.state_dict());
  EXPECT_EQ(resumed.best_score(), -kt::kInf);

  kt::expect_error([&] { resumed.load_state_dict({{"wait_count", 1}}); }, {"EarlyStopping.load_state_dict", "patience"});
  kt::expect_error([&] { resumed.load_state_dict({{"wait_count", "x"}, {"stopped_epoch", 0}, {"best_score", 1}, {"patience", 3}}); },
                   {"must be integers"});
  EXPECT_EQ(fresh.state_key(), "EarlyStopping{'monitor': 'acc', 'mode': 'max'}");
}

TEST(EarlyStopping, RefusesInvalidSettings) {
  kt::expect_error([] { EarlyStopping({}); }, {"EarlyStopping", "monitor is required"});
  kt::expect_error([] { EarlyStopping({.monitor = "x", .mode = "mean"}); }, {"'min' or 'max'", "mean"});
  kt::expect_error([] { EarlyStopping({.monitor = "x", .patience = -1}); }, {"patience=-1"});
}

// ---- in a fit

class Scripted : public TinyClassifier {
 public:
  explicit Scripted(std::vector<double> scores) : TinyClassifier(0.0), scores_(std::move(scores)) {}
  StepOutput validation_step(const data::Batch&, int64_t) override {
    const auto epoch = static_cast<size_t>(trainer().current_epoch());
    log("val_loss", scores_.at(std::min(epoch, scores_.size() - 1)));
    return {};
  }
  void on_train_epoch_start() override { ++epochs_started; }
  int epochs_started = 0;

 private:
  std::vector<double> scores_;
};

TrainerConfig quiet_unlogged(TrainerConfig c) {
  c.logger = false;
  return quiet(std::move(c));
}

Loaders loaders() { return {.train = make_loader(20, false, 0), .val = make_loader(40, false, 0)}; }

TEST(EarlyStoppingFit, StopsAfterPatienceValidationsWithoutImprovement) {
  auto es = std::make_shared<EarlyStopping>(EarlyStoppingOptions{.monitor = "val_loss", .patience = 2});
  Scripted module({5, 4, 4.5, 4.2, 3, 2, 1});
  Trainer trainer(quiet_unlogged({.max_epochs = 10, .callbacks = {es}}));
  trainer.fit(module, loaders());
  EXPECT_EQ(module.epochs_started, 4);  // epochs 0..3; the check after epoch 3 stops
  EXPECT_EQ(es->stopped_epoch(), 3);
  EXPECT_EQ(trainer.current_epoch(), 4);
  EXPECT_EQ(es->best_score(), 4.0);
}

TEST(EarlyStoppingFit, MinEpochsKeepsTrainingAfterAStop) {
  auto es = std::make_shared<EarlyStopping>(EarlyStoppingOptions{.monitor = "val_loss", .patience = 1});
  Scripted module({1, 2, 2, 2, 2, 2});
  Trainer trainer(quiet_unlogged({.max_epochs = 10, .min_epochs = 4, .callbacks = {es}}));
  trainer.fit(module, loaders());
  EXPECT_EQ(module.epochs_started, 4);
}

TEST(EarlyStoppingFit, ChecksAfterEachValidationWhenValidatingMidEpoch) {
  // Two validations per epoch (val_check_interval = 1 batch): patience counts validations, not epochs.
  auto es = std::make_shared<EarlyStopping>(EarlyStoppingOptions{.monitor = "val_loss", .patience = 3});
  Scripted module({1, 1, 1});
  Trainer trainer(quiet_unlogged({.max_epochs = 10, .val_check_interval = int64_t{1}, .callbacks = {es}}));
  trainer.fit(module, loaders());
  EXPECT_EQ(module.epochs_started, 2);  // validations 1 (best), 2, 3 (epoch 1), 4 stops, all within two epochs
  EXPECT_EQ(es->stopped_epoch(), 1);
}

TEST(EarlyStoppingFit, AMissingMetricIsAnErrorWhenStrict) {
  auto strict = std::make_shared<EarlyStopping>(EarlyStoppingOptions{.monitor = "val_acc"});
  Scripted module({1});
  Trainer trainer(quiet_unlogged({.max_epochs = 3, .callbacks = {strict}}));
  kt::expect_error([&] { trainer.fit(module, loaders()); },
                   {"EarlyStopping: conditioned on metric `val_acc` which is not available", "`val_loss`"});

  auto lax = std::make_shared<EarlyStopping>(EarlyStoppingOptions{.monitor = "val_acc", .strict = false});
  Scripted again({1});
  Trainer lax_trainer(quiet_unlogged({.max_epochs = 3, .callbacks = {lax}}));
  lax_trainer.fit(again, loaders());
  EXPECT_EQ(again.epochs_started, 3);
  EXPECT_EQ(lax->wait_count(), 0);
}

TEST(EarlyStoppingFit, DoesNotCheckDuringSanityCheckOrValidate) {
  auto es = std::make_shared<EarlyStopping>(EarlyStoppingOptions{.monitor = "val_loss", .patience = 1,
                                                                 .stopping_threshold = 100});
  Scripted module({1});
  Trainer trainer(quiet_unlogged({.max_epochs = 2, .callbacks = {es}}));
  trainer.validate(module, loaders());  // a value below the threshold, but not in a fit
  EXPECT_FALSE(trainer.should_stop);
  trainer.fit(module, loaders());  // the sanity check logs 1 too; the first real check stops
  EXPECT_EQ(module.epochs_started, 1);
}

}  // namespace
