// The built-in callbacks other than ModelCheckpoint and EarlyStopping: ModelSummary's table
// (checked character for character against Lightning 2.6.6's output for the same models),
// LearningRateMonitor's names and timing, the ProgressBar's output on a terminal and in a log,
// and default_callbacks' list and refusals.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include "nn/containers.h"
#include "nn/optim/adam.h"
#include "nn/optim/lr_scheduler.h"
#include "testing.h"
#include "train/callbacks/defaults.h"
#include "train/callbacks/early_stopping.h"
#include "train/callbacks/lr_monitor.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/callbacks/model_summary.h"
#include "train/callbacks/progress_bar_callback.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

Loaders two_batch_loaders() { return {.train = make_loader(20, false, 0), .val = make_loader(40, false, 0)}; }

// ---- ModelSummary. The expected tables are Lightning 2.6.6's ModelSummary(model, max_depth) for
// the same torch modules, with its FLOPs column (all 0 there) left out.

TEST(ModelSummary, TableOfATinyModelMatchesLightning) {
  TinyClassifier model(0.0);
  EXPECT_EQ(callbacks::summarize_module(model),
            "  | Name | Type    | Params | Mode \n"
            "-----------------------------------------\n"
            "0 | fc1  | Linear  | 40     | train\n"
            "1 | drop | Dropout | 0      | train\n"
            "2 | fc2  | Linear  | 27     | train\n"
            "-----------------------------------------\n"
            "67        Trainable params\n"
            "0         Non-trainable params\n"
            "67        Total params\n"
            "0.000     Total estimated model params size (MB)\n"
            "3         Modules in train mode\n"
            "0         Modules in eval mode");
}

// encoder = Sequential(Linear(100, 1000), ReLU (in eval mode), Linear(1000, 100)); head = Linear(100, 10)
// with a frozen weight.
std::shared_ptr<nn::Module> nested_model() {
  auto root = std::make_shared<nn::Module>("Nested");
  auto encoder = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(100, 1000), std::make_shared<nn::ReLU>(),
                                                  std::make_shared<nn::Linear>(1000, 100));
  root->register_module("encoder", encoder);
  root->register_module("head", std::make_shared<nn::Linear>(100, 10));
  root->parameter("head.weight").requires_grad_(false);
  encoder->children()[1]->eval();
  return root;
}

TEST(ModelSummary, CountsFrozenParametersAndEvalModulesAtEachDepth) {
  auto model = nested_model();
  const std::string totals =
      "201 K     Trainable params\n"
      "1.0 K     Non-trainable params\n"
      "202 K     Total params\n"
      "0.808     Total estimated model params size (MB)\n"
      "4         Modules in train mode\n"
      "1         Modules in eval mode";
  EXPECT_EQ(callbacks::summarize_module(*model, 1),
            "  | Name    | Type       | Params | Mode \n"
            "-----------------------------------------------\n"
            "0 | encoder | Sequential | 201 K  | train\n"
            "1 | head    | Linear     | 1.0 K  | train\n"
            "-----------------------------------------------\n" + totals);
  const std::string deep =
      "  | Name      | Type       | Params | Mode \n"
      "-------------------------------------------------\n"
      "0 | encoder   | Sequential | 201 K  | train\n"
      "1 | encoder.0 | Linear     | 101 K  | train\n"
      "2 | encoder.1 | ReLU       | 0      | eval \n"
      "3 | encoder.2 | Linear     | 100 K  | train\n"
      "4 | head      | Linear     | 1.0 K  | train\n"
      "-------------------------------------------------\n" + totals;
  EXPECT_EQ(callbacks::summarize_module(*model, 2), deep);
  EXPECT_EQ(callbacks::summarize_module(*model, -1), deep);
  EXPECT_EQ(callbacks::summarize_module(*model, 0), "");
  kt::expect_error([&] { callbacks::summarize_module(*model, -2); }, {"ModelSummary", "max_depth", "-2"});
}

TEST(ModelSummary, HumanReadableCountsMatchLightning) {
  const std::vector<std::pair<int64_t, std::string>> cases = {
      {0, "0  "},        {7, "7  "},         {123, "123  "},        {999, "999  "},
      {1000, "1.0 K"},   {1234, "1.2 K"},    {99999, "100.0 K"},    {100000, "100 K"},
      {201000, "201 K"}, {1234567, "1.2 M"}, {3500000000, "3.5 B"}, {12345678901234567, "12,345 T"}};
  for (const auto& [n, text] : cases) EXPECT_EQ(callbacks::human_readable_count(n), text) << n;
  kt::expect_error([] { callbacks::human_readable_count(-1); }, {"human_readable_count", "-1"});
}

TEST(ModelSummary, CallbackPrintsAtFitStart) {
  std::FILE* out = std::tmpfile();
  auto summary = std::make_shared<callbacks::ModelSummary>(callbacks::ModelSummaryOptions{.stream = out});
  TinyClassifier module(0.0);
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .callbacks = {summary}}));
  trainer.fit(module, two_batch_loaders());
  EXPECT_EQ(summary->summary(), callbacks::summarize_module(module));
  std::rewind(out);
  std::string text(4096, '\0');
  text.resize(std::fread(text.data(), 1, text.size(), out));
  std::fclose(out);
  EXPECT_EQ(text, summary->summary() + "\n");
}

// ---- LearningRateMonitor

TEST(LearningRateMonitor, NamesFollowLightning) {
  TinyClassifier a(0.0), b(0.0), c(0.0);
  auto sgd = std::make_shared<optim::SGD>(a.parameters(), optim::SGDOptions{.lr = 0.1, .momentum = 0.9});
  auto adam = std::make_shared<optim::Adam>(
      std::vector<optim::GroupSpec<optim::AdamOptions>>{{.params = b.fc1->parameters(), .options = {.lr = 0.01}},
                                                        {.params = b.fc2->parameters(), .options = {.lr = 0.02}}});
  auto sgd2 = std::make_shared<optim::SGD>(c.parameters(), optim::SGDOptions{.lr = 0.3});
  auto step = std::make_shared<optim::StepLR>(*sgd, optim::StepLROptions{.step_size = 1});
  const std::vector<OptimizerConfig> configs = {
      {adam, {}}, {sgd, {{.scheduler = step, .interval = "epoch"}}}, {sgd2, {}}};
  // Optimizers with a scheduler are named first, then the others; a second SGD is SGD-1.
  EXPECT_EQ(callbacks::LearningRateMonitor::names(configs),
            (std::vector<std::vector<std::string>>{{"lr-SGD"}, {"lr-Adam/pg1", "lr-Adam/pg2"}, {"lr-SGD-1"}}));

  callbacks::LearningRateMonitor monitor({.log_momentum = true, .log_weight_decay = true});
  // At "step", the epoch-interval scheduler's optimizer is left out; optimizers without one always log.
  EXPECT_EQ(monitor.extract_stats(configs, "step"),
            (callbacks::Metrics{{"lr-Adam/pg1", 0.01}, {"lr-Adam/pg1-momentum", 0.9}, {"lr-Adam/pg1-weight_decay", 0},
                                {"lr-Adam/pg2", 0.02}, {"lr-Adam/pg2-momentum", 0.9}, {"lr-Adam/pg2-weight_decay", 0},
                                {"lr-SGD-1", 0.3}, {"lr-SGD-1-momentum", 0}, {"lr-SGD-1-weight_decay", 0}}));
  const callbacks::Metrics epoch = monitor.extract_stats(configs, "epoch");
  EXPECT_EQ(epoch.at("lr-SGD"), 0.1);
  EXPECT_EQ(epoch.at("lr-SGD-momentum"), 0.9);
  EXPECT_EQ(monitor.extract_stats(configs, "any").size(), epoch.size());

  kt::expect_error([] { callbacks::LearningRateMonitor({.logging_interval = "batch"}); },
                   {"LearningRateMonitor", "'step', 'epoch' or unset", "batch"});
}

TEST(LearningRateMonitor, LogsToTheLoggersAtStepsAndEpochs) {
  auto logger = std::make_shared<RecordingLogger>();
  auto monitor = std::make_shared<callbacks::LearningRateMonitor>(
      callbacks::LearningRateMonitorOptions{.logging_interval = "step"});
  TinyClassifier module(0.0);
  Trainer trainer(quiet({.max_epochs = 2, .log_every_n_steps = 1, .loggers = {logger}, .callbacks = {monitor}}));
  trainer.fit(module, two_batch_loaders());
  std::vector<int64_t> steps;
  for (const auto& [step, row] : logger->rows)
    if (row.count("lr-SGD")) {
      steps.push_back(step);
      EXPECT_EQ(row.at("lr-SGD"), 0.1);
    }
  EXPECT_EQ(steps, (std::vector<int64_t>{0, 1, 2, 3}));  // before each of the 4 steps
  EXPECT_EQ(monitor->history().at("lr-SGD").size(), 4u);

  // Unset interval and no scheduler: at each epoch start, and before steps that log (none here).
  auto quiet_logger = std::make_shared<RecordingLogger>();
  auto by_epoch = std::make_shared<callbacks::LearningRateMonitor>();
  TinyClassifier again(0.0);
  Trainer epochs(quiet({.max_epochs = 2, .loggers = {quiet_logger}, .callbacks = {by_epoch}}));
  epochs.fit(again, two_batch_loaders());
  EXPECT_EQ(by_epoch->history().at("lr-SGD").size(), 2u);

  TinyClassifier lonely(0.0);
  Trainer no_logger(quiet({.max_epochs = 1, .logger = false,
                           .callbacks = {std::make_shared<callbacks::LearningRateMonitor>()}}));
  kt::expect_error([&] { no_logger.fit(lonely, two_batch_loaders()); }, {"LearningRateMonitor", "no logger"});
}

// ---- ProgressBar

std::string read_all(std::FILE* f) {
  std::rewind(f);
  std::string text;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) text.append(buf, n);
  return text;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(text.substr(start, nl - start));
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

std::string run_with_bar(callbacks::ProgressBarOptions options, int64_t epochs = 2) {
  std::FILE* out = std::tmpfile();
  options.stream = out;
  auto bar = std::make_shared<callbacks::ProgressBar>(options);
  auto logger = std::make_shared<RecordingLogger>();
  TinyClassifier module(0.0);
  TrainerConfig config = quiet({.max_epochs = epochs, .loggers = {logger}, .callbacks = {bar}});
  config.enable_progress_bar = true;
  Trainer trainer(config);
  trainer.fit(module, two_batch_loaders());
  const std::string text = read_all(out);
  std::fclose(out);
  return text;
}

std::vector<std::string> line_heads(const std::string& text) {
  std::vector<std::string> heads;
  for (const std::string& line : split_lines(text)) heads.push_back(line.substr(0, line.find(" [")));
  return heads;
}

// Note [Progress in a log]: one line per epoch, with the validation metrics; no sanity check or
// validation lines of their own.
TEST(ProgressBar, OneLinePerEpochWhenNotATerminal) {
  const std::string text = run_with_bar({.interactive = false});
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(line_heads(text), (std::vector<std::string>{"Epoch 0: 2/2 (100%)", "Epoch 1: 2/2 (100%)"}));
  const std::vector<std::string> lines = split_lines(text);
  for (const std::string& line : lines) {
    // TinyClassifier logs val_loss and val_acc without prog_bar, so only training metrics show.
    EXPECT_NE(line.find("v_num=0, train_loss_epoch="), std::string::npos) << line;
    EXPECT_NE(line.find("train_loss_step="), std::string::npos) << line;
    EXPECT_NE(line.find("it/s"), std::string::npos) << line;
  }
  // leave=false reuses a terminal line; a log keeps every epoch's all the same.
  EXPECT_EQ(line_heads(run_with_bar({.leave = false, .interactive = false})), line_heads(text));
}

TEST(ProgressBar, LogRefreshRateAddsALineEveryNBatches) {
  EXPECT_EQ(line_heads(run_with_bar({.log_refresh_rate = 1, .interactive = false})),
            (std::vector<std::string>{"Epoch 0: 1/2 (50%)", "Epoch 0: 2/2 (100%)", "Epoch 1: 1/2 (50%)", "Epoch 1: 2/2 (100%)"}));
  EXPECT_EQ(line_heads(run_with_bar({.log_refresh_rate = 2, .interactive = false})),
            (std::vector<std::string>{"Epoch 0: 2/2 (100%)", "Epoch 1: 2/2 (100%)"}));
  kt::expect_error([] { callbacks::ProgressBar({.log_refresh_rate = -2}); }, {"ProgressBar", "log_refresh_rate", "-2"});
}

struct SaveAndStopAtBatch : Callback {
  SaveAndStopAtBatch(int64_t batch, std::string path) : batch(batch), path(std::move(path)) {}
  std::string name() const override { return "SaveAndStopAtBatch"; }
  void on_train_batch_end(Trainer& trainer, TrainModule&, const StepOutput&, const data::Batch&, int64_t batch_idx) override {
    if (batch_idx != batch) return;
    trainer.save_checkpoint(path);
    throw std::runtime_error("stop for the test");
  }
  int64_t batch;
  std::string path;
};

class SlowClassifier : public TinyClassifier {
 public:
  SlowClassifier() : TinyClassifier(0.0) {}
  StepOutput training_step(const data::Batch& batch, int64_t batch_idx) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return TinyClassifier::training_step(batch, batch_idx);
  }
};

// A run resumed after batch 3 of 10 counts from 4/10, and its rate from the batches it timed: at
// 20 ms or more a batch, at most 50 it/s (counting the restored batches too would show 200 or more).
TEST(ProgressBar, AResumedEpochCountsOnFromItsBatchAndTimesOnlyNewBatches) {
  const std::string path = fresh_dir("bar_resume") + "/mid.ckpt";
  const Loaders loaders{.train = make_loader(4, false, 0)};
  {
    TinyClassifier module(0.0);
    Trainer trainer(quiet({.max_epochs = 1, .logger = false, .callbacks = {std::make_shared<SaveAndStopAtBatch>(2, path)}}));
    EXPECT_THROW(trainer.fit(module, loaders), std::runtime_error);
  }
  std::FILE* out = std::tmpfile();
  auto bar = std::make_shared<callbacks::ProgressBar>(
      callbacks::ProgressBarOptions{.log_refresh_rate = 1, .stream = out, .interactive = false});
  SlowClassifier module;
  TrainerConfig config = quiet({.max_epochs = 1, .logger = false, .callbacks = {bar}});
  config.enable_progress_bar = true;
  Trainer(config).fit(module, loaders, path);
  const std::string text = read_all(out);
  std::fclose(out);
  const std::vector<std::string> heads = line_heads(text);
  ASSERT_EQ(heads.size(), 7u) << text;
  EXPECT_EQ(heads.front(), "Epoch 0: 4/10 (40%)");
  EXPECT_EQ(heads.back(), "Epoch 0: 10/10 (100%)");
  for (const std::string& line : split_lines(text)) {
    const size_t unit = line.find("it/s");
    ASSERT_NE(unit, std::string::npos) << line;
    const double rate = std::stod(line.substr(line.rfind(", ", unit) + 2, unit));
    EXPECT_GT(rate, 0) << line;
    EXPECT_LE(rate, 50.5) << line;
  }
}

// The test, validate and predict bars count to the known number of batches ("4/4", not "4it").
TEST(ProgressBar, EvaluationBarsShowTheirTotal) {
  std::FILE* out = std::tmpfile();
  auto bar = std::make_shared<callbacks::ProgressBar>(callbacks::ProgressBarOptions{.stream = out, .interactive = false});
  TinyClassifier module(0.0);
  TrainerConfig config = quiet({.logger = false, .callbacks = {bar}});
  config.enable_progress_bar = true;
  config.limit_test_batches = BatchLimit(int64_t{3});
  Trainer trainer(config);
  const Loaders loaders{.val = make_loader(10, false, 0), .test = make_loader(10, false, 0), .predict = make_loader(20, false, 0)};
  trainer.test(module, loaders);
  trainer.validate(module, loaders);
  trainer.predict(module, loaders);
  const std::string text = read_all(out);
  std::fclose(out);
  EXPECT_EQ(line_heads(text), (std::vector<std::string>{"Testing DataLoader 0: 3/3 (100%)", "Validation DataLoader 0: 4/4 (100%)",
                                                        "Predicting DataLoader 0: 2/2 (100%)"}));
}

TEST(ProgressBar, RedrawsOneLineOnATerminal) {
  const std::string text = run_with_bar({.interactive = true, .ncols = 120});  // room for every metric
  // One finished line per epoch; everything else is redrawn in place.
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  const std::vector<std::string> lines = split_lines(text);
  ASSERT_EQ(lines.size(), 2u);
  for (int e = 0; e < 2; ++e) {
    const std::string& line = lines[size_t(e)];
    const std::string epoch = "\rEpoch " + std::to_string(e) + ": ";
    const size_t val = line.find("\rValidation DataLoader 0: 100%|");
    ASSERT_NE(val, std::string::npos) << line;
    // After validation the epoch's bar comes back, complete, with its metrics.
    const size_t back = line.find(epoch + "100%|", val);
    ASSERT_NE(back, std::string::npos) << line;
    EXPECT_NE(line.find("2/2 [", back), std::string::npos);
    EXPECT_NE(line.find("v_num=0", back), std::string::npos);
  }
  EXPECT_NE(lines[0].find("\rSanity Checking DataLoader 0: "), std::string::npos);

  const std::string one_line = run_with_bar({.leave = false, .interactive = true, .ncols = 120});
  EXPECT_EQ(std::count(one_line.begin(), one_line.end(), '\n'), 1);  // Lightning's default leave=False
}

TEST(ProgressBar, RefreshRateZeroPrintsNothing) {
  EXPECT_EQ(run_with_bar({.refresh_rate = 0, .interactive = false}), "");
  kt::expect_error([] { callbacks::ProgressBar({.refresh_rate = -1}); }, {"ProgressBar", "refresh_rate", "-1"});
}

TEST(ProgressBar, VersionShownAsLightningDoes) {
  auto numbered_logger = std::make_shared<RecordingLogger>();  // version "0"
  struct Named : RecordingLogger {
    std::string version() const override { return "my_experiment"; }
  };
  Trainer numbered(quiet({.loggers = {numbered_logger}}));
  ASSERT_FALSE(callbacks::ProgressBar::metrics_for(numbered).empty());
  EXPECT_EQ(callbacks::ProgressBar::metrics_for(numbered)[0].first, "v_num");
  EXPECT_EQ(std::get<int64_t>(callbacks::ProgressBar::metrics_for(numbered)[0].second), 0);
  Trainer text(quiet({.loggers = {std::make_shared<Named>()}}));
  EXPECT_EQ(std::get<std::string>(callbacks::ProgressBar::metrics_for(text)[0].second), "ment");
  Trainer none(quiet({.logger = false}));
  EXPECT_TRUE(callbacks::ProgressBar::metrics_for(none).empty());
}

// ---- default_callbacks

std::vector<std::string> names_of(const std::vector<std::shared_ptr<Callback>>& list) {
  std::vector<std::string> out;
  for (const auto& cb : list) out.push_back(cb->name());
  return out;
}

TEST(DefaultCallbacks, AddsWhatTheSettingsAskForWithCheckpointsLast) {
  EXPECT_EQ(names_of(default_callbacks({}, {})),
            (std::vector<std::string>{"ProgressBar", "ModelSummary", "ModelCheckpoint"}));
  auto mc = std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions{.monitor = "val_loss"});
  auto es = std::make_shared<callbacks::EarlyStopping>(callbacks::EarlyStoppingOptions{.monitor = "val_loss"});
  const auto list = default_callbacks({}, {mc, es});
  EXPECT_EQ(names_of(list), (std::vector<std::string>{"EarlyStopping", "ProgressBar", "ModelSummary", "ModelCheckpoint"}));
  EXPECT_EQ(list.back(), mc);  // the user's, not a second one

  const TrainerConfig bare{.enable_checkpointing = false, .enable_progress_bar = false, .enable_model_summary = false};
  EXPECT_TRUE(default_callbacks(bare, {}).empty());
  auto summary = std::make_shared<callbacks::ModelSummary>(callbacks::ModelSummaryOptions{.max_depth = 2});
  const auto with_summary = default_callbacks({.enable_checkpointing = false}, {summary});
  EXPECT_EQ(names_of(with_summary), (std::vector<std::string>{"ModelSummary", "ProgressBar"}));
  EXPECT_EQ(with_summary[0], summary);
}

TEST(DefaultCallbacks, RefusesWhatLightningRefuses) {
  auto mc = std::make_shared<callbacks::ModelCheckpoint>();
  kt::expect_error([&] { default_callbacks({.enable_checkpointing = false}, {mc}); },
                   {"enable_checkpointing=false", "ModelCheckpoint"});
  // Through the Trainer too.
  kt::expect_error([&] { Trainer({.enable_checkpointing = false, .callbacks = {mc}}); }, {"enable_checkpointing=false"});
  auto bar = std::make_shared<callbacks::ProgressBar>();
  kt::expect_error([&] { default_callbacks({.enable_progress_bar = false}, {bar}); }, {"enable_progress_bar=false"});
  kt::expect_error([&] { default_callbacks({}, {bar, std::make_shared<callbacks::ProgressBar>()}); },
                   {"2 ProgressBar callbacks", "only one"});
  kt::expect_error([&] { default_callbacks({}, {nullptr}); }, {"callbacks[0] is null"});
  auto twin = std::make_shared<callbacks::ModelCheckpoint>();
  kt::expect_error([&] { default_callbacks({}, {mc, twin}); }, {"more than one stateful callback", "state_key"});
  auto other = std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions{.monitor = "val_loss"});
  EXPECT_EQ(default_callbacks({}, {mc, other}).size(), 4u);
}

}  // namespace
