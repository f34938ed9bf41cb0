// Trainer settings checked by their effect: max_time and a time-based val_check_interval in
// Lightning's forms, reload_dataloaders_every_n_epochs, deterministic = "warn", inference_mode,
// benchmark, and the profiler (Lightning's SimpleProfiler table, and the Chrome trace of ops).
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "testing.h"
#include "autograd/grad_mode.h"
#include "tensor/op_trace.h"
#include "train/profiler.h"
#include "tensor/parallel.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

// ---- time spans

TEST(Duration, ParsesLightningsForms) {
  EXPECT_EQ(Duration("01:02:03:04").seconds(), 93784.0);  // Lightning's own example
  EXPECT_EQ(Duration(std::map<std::string, double>{{"hours", 2}, {"minutes", 30}}).seconds(), 9000.0);
  EXPECT_EQ(Duration(std::chrono::milliseconds(1500)).seconds(), 1.5);
  EXPECT_EQ(Duration("00:00:00:00").seconds(), 0.0);
  for (const char* bad : {"1:2:3", "00:00:xx:00", "", "00:00:00:01:00", "00:-1:00:00", "00:00:00:1.5"})
    kt::expect_error([&] { Duration d(bad); }, {"not of the form DD:HH:MM:SS"});
  kt::expect_error([&] { Duration d(std::map<std::string, double>{{"years", 1}}); }, {"'years'", "timedelta"});
}

class Sleepy : public TinyClassifier {
 public:
  explicit Sleepy(int ms) : TinyClassifier(0.0), ms_(ms) {}
  StepOutput training_step(const data::Batch& batch, int64_t idx) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
    return TinyClassifier::training_step(batch, idx);
  }

 private:
  int ms_;
};

TEST(MaxTime, StopsFitOnceTheTimeIsSpent) {
  // Each batch takes at least 30 ms, so 0.3 s allows at most 10 of the 500 batches asked for.
  Sleepy module(30);
  Trainer trainer(quiet({.max_epochs = 100, .max_time = std::chrono::milliseconds(300), .logger = false}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
  EXPECT_GE(trainer.global_step(), 1);
  EXPECT_LE(trainer.global_step(), 10);
  EXPECT_GE(trainer.elapsed_seconds(), 0.3);
  kt::expect_error([] { Trainer t(quiet({.max_time = "00:00:00:00"})); }, {"max_time must be positive"});
}

struct CountValidations : Callback {
  std::string name() const override { return "CountValidations"; }
  void on_validation_end(Trainer& t, TrainModule&) override { validations += !t.sanity_checking(); }
  void on_train_epoch_end(Trainer& t, TrainModule&) override { batches_per_epoch.push_back(t.num_training_batches()); }
  int validations = 0;
  std::vector<int64_t> batches_per_epoch;
};

TEST(ValCheckInterval, ATimeSpanValidatesWhenThatMuchTimeHasPassed) {
  const auto validations_with = [](ValCheckInterval every) {
    TinyClassifier module(0.0);
    auto counter = std::make_shared<CountValidations>();
    Trainer trainer(quiet({.max_epochs = 2, .val_check_interval = every, .num_sanity_val_steps = 0, .logger = false,
                           .callbacks = {counter}}));
    trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(20, false, 0)});
    return counter->validations;
  };
  EXPECT_EQ(validations_with("00:00:00:00"), 10);  // after every batch of 2 epochs x 5
  EXPECT_EQ(validations_with("01:00:00:00"), 0);   // wall-clock mode does not add epoch-end validations (Lightning)
  EXPECT_EQ(validations_with(1.0), 2);
}

// ---- reload_dataloaders_every_n_epochs

// The k-th loader (from 0) holds k + 1 batches of 8, so a run shows which loader each epoch read.
class GrowingData : public DataModule {
 public:
  std::shared_ptr<data::DataLoader> train_dataloader() override { return make_loader(8, false, 0, 1, 8 * ++train_calls); }
  std::shared_ptr<data::DataLoader> val_dataloader() override { return make_loader(8, false, 0, 1, 8 * ++val_calls); }
  int train_calls = 0, val_calls = 0;
};

TEST(ReloadDataloaders, EveryNEpochsAsksTheDataModuleAgain) {
  for (int64_t every : {0, 1, 2}) {
    SCOPED_TRACE("every " + std::to_string(every));
    TinyClassifier module(0.0);
    GrowingData data;
    auto counter = std::make_shared<CountValidations>();
    Trainer trainer(quiet({.max_epochs = 4, .reload_dataloaders_every_n_epochs = every, .logger = false,
                           .callbacks = {counter}}));
    trainer.fit(module, data);
    const std::vector<int64_t> expected = every == 0   ? std::vector<int64_t>{1, 1, 1, 1}
                                          : every == 1 ? std::vector<int64_t>{1, 2, 3, 4}
                                                       : std::vector<int64_t>{1, 1, 2, 2};
    EXPECT_EQ(counter->batches_per_epoch, expected);
    EXPECT_EQ(data.train_calls, expected.back());
    EXPECT_EQ(data.val_calls, expected.back());
  }
  kt::expect_error([] { Trainer t(quiet({.reload_dataloaders_every_n_epochs = -1})); }, {"must be >= 0"});
}

// ---- deterministic = "warn"

struct ChangeThreadsOnce : Callback {
  explicit ChangeThreadsOnce(int to) : to(to) {}
  std::string name() const override { return "ChangeThreadsOnce"; }
  void on_train_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&, int64_t i) override {
    if (i == 1) set_num_threads(to);
  }
  int to;
};

TEST(Deterministic, WarnReportsAThreadChangeOnceAndCarriesOn) {
  const int threads = get_num_threads();
  const int other = threads == 1 ? 2 : 1;
  TinyClassifier module;
  Trainer trainer(quiet({.max_epochs = 2, .logger = false, .callbacks = {std::make_shared<ChangeThreadsOnce>(other)},
                         .deterministic = "warn"}));
  ::testing::internal::CaptureStderr();
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
  const std::string err = ::testing::internal::GetCapturedStderr();
  set_num_threads(threads);
  EXPECT_EQ(trainer.global_step(), 10);
  const std::string warning = "deterministic = \"warn\"): the thread count changed from " + std::to_string(threads) +
                              " to " + std::to_string(other);
  ASSERT_NE(err.find(warning), std::string::npos) << err;
  EXPECT_EQ(err.find(warning, err.find(warning) + 1), std::string::npos) << "warned twice: " << err;
  kt::expect_error([] { Trainer t(quiet({.deterministic = "always"})); }, {"not one of: false, true, \"warn\""});
}

// ---- inference_mode

// Asks for gradients inside validation, as saliency code does: possible under no_grad only.
class GradInValidation : public TinyClassifier {
 public:
  GradInValidation() : TinyClassifier(0.0) {}
  StepOutput validation_step(const data::Batch& batch, int64_t) override {
    EnableGradGuard grad;
    Tensor x = batch[0].detach().requires_grad_();
    Tensor loss = nn::F::cross_entropy(forward(x), batch[1]);
    recorded.push_back(loss.requires_grad());
    if (loss.requires_grad()) {
      loss.backward();
      input_grad_norm = x.grad().abs().sum().item<double>();
    }
    return {};
  }
  std::vector<bool> recorded;
  double input_grad_norm = 0;
};

TEST(InferenceMode, TrueRecordsNothingEvenUnderEnableGradFalseIsNoGradOnly) {
  for (bool inference : {true, false}) {
    SCOPED_TRACE(inference ? "inference_mode" : "no_grad");
    GradInValidation module;
    Trainer trainer(quiet({.max_epochs = 1, .inference_mode = inference, .logger = false}));
    trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(20, false, 0)});
    trainer.validate(module, Loaders{.val = make_loader(20, false, 0)});
    ASSERT_EQ(module.recorded.size(), 6u);  // sanity 2 + fit 2 + validate 2
    for (bool r : module.recorded) EXPECT_EQ(r, !inference);
    EXPECT_EQ(module.input_grad_norm > 0, !inference);
    EXPECT_TRUE(autograd::is_grad_enabled());  // restored after every evaluation
    EXPECT_FALSE(autograd::is_inference_mode_enabled());
  }
}

TEST(InferenceMode, GuardNestsWithGradModeGuards) {
  {
    InferenceModeGuard inference;
    EXPECT_FALSE(autograd::is_grad_enabled());
    {
      EnableGradGuard grad;
      EXPECT_FALSE(autograd::is_grad_enabled());
      EXPECT_FALSE((ones({2}).requires_grad_() * 2.0).requires_grad());
    }
    InferenceModeGuard off(false);
    EXPECT_TRUE(autograd::is_inference_mode_enabled());
  }
  EXPECT_TRUE(autograd::is_grad_enabled());
  EXPECT_TRUE((ones({2}).requires_grad_() * 2.0).requires_grad());
}

// ---- benchmark

TEST(Benchmark, TrueSaysWhatItMeansOnTheCpu) {
  for (std::optional<bool> benchmark : {std::optional<bool>{}, std::optional<bool>{true}}) {
    TinyClassifier module;
    Trainer trainer(quiet({.max_epochs = 1, .logger = false, .benchmark = benchmark}));
    ::testing::internal::CaptureStderr();
    trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.find("nothing to benchmark on the CPU") != std::string::npos, benchmark.value_or(false)) << err;
  }
}

// ---- profiler

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The cells of the table row for `action`, trimmed.
std::vector<std::string> row_of(const std::string& report, const std::string& action) {
  for (const std::string& line : lines_of(report)) {
    if (line.rfind("|  " + action + " ", 0) != 0 && line.rfind("|  " + action + "\t", 0) != 0) continue;
    std::vector<std::string> cells;
    std::istringstream in(line.substr(1));
    for (std::string cell; std::getline(in, cell, '|');) {
      const size_t b = cell.find_first_not_of(" \t"), e = cell.find_last_not_of(" \t");
      cells.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
    }
    return cells;
  }
  return {};
}

TEST(Profiler, SimplePrintsLightningsTableOfActionsAtTheEndOfFit) {
  TinyClassifier module(0.0);
  Trainer trainer(quiet({.max_epochs = 2, .accumulate_grad_batches = 2, .logger = false,
                         .callbacks = {std::make_shared<CountValidations>()}, .profiler = "simple"}));
  ::testing::internal::CaptureStdout();
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0), .val = make_loader(20, false, 0)});
  const std::string out = ::testing::internal::GetCapturedStdout();
  const std::vector<std::string> lines = lines_of(out);
  ASSERT_GE(lines.size(), 8u) << out;
  EXPECT_EQ(lines[0], "FIT Profiler Report");
  EXPECT_EQ(lines[1], "");
  // Lightning's separator is as long as the header with its tabs expanded (and the newline before it).
  const std::string longest = "[Callback]CountValidations.on_validation_batch_start";
  EXPECT_EQ(lines[3], "|  Action" + std::string(longest.size() - 6, ' ') + "\t|  Mean duration (s)\t|  Num calls      \t|  "
                      "Total time (s) \t|  Percentage %   \t|");
  size_t column = 0;
  for (char c : lines[3]) column = c == '\t' ? (column / 8 + 1) * 8 : column + 1;
  EXPECT_EQ(lines[2], std::string(column + 1, '-'));  // + the newline before the header, as in Lightning
  EXPECT_EQ(lines[4], lines[2]);
  // Calls: 2 epochs of 5 batches, 3 optimizer steps per epoch (2 + 2 + the epoch's last batch).
  const std::vector<std::pair<std::string, std::string>> calls = {
      {"run_training_epoch", "2"},
      {"run_training_batch", "10"},
      {"[_TrainingEpochLoop].train_dataloader_next", "10"},
      {"[Strategy]single_device.batch_to_device", "16"},  // 10 train, 2 sanity, 2 x 2 validation
      {"[Strategy]single_device.training_step", "10"},
      {"[Strategy]single_device.backward", "10"},
      {"[TrainModule]TinyClassifier.optimizer_step", "6"},
      {"[Strategy]single_device.validation_step", "6"}};
  for (const auto& [action, n] : calls) {
    SCOPED_TRACE(action);
    const std::vector<std::string> row = row_of(out, action);
    ASSERT_EQ(row.size(), 5u) << out;
    EXPECT_EQ(row[2], n);
    EXPECT_NEAR(std::stod(row[3]), std::stod(row[1]) * std::stod(n), 2e-4 * std::stod(row[3]) + 1e-9);
  }
  const std::vector<std::string> total = row_of(out, "Total");
  ASSERT_EQ(total.size(), 5u);
  EXPECT_EQ(total[1], "-");
  EXPECT_EQ(total[4], "100 %");
  // Rows run by falling percentage.
  double previous = 101;
  for (size_t i = 7; i + 1 < lines.size(); ++i) {
    const std::vector<std::string> cells = row_of(lines[i], lines[i].substr(3, lines[i].find('\t') - 3));
    if (cells.size() != 5) continue;
    const double percent = std::stod(cells[4]);
    EXPECT_LE(percent, previous) << lines[i];
    previous = percent;
  }
  // Each callback hook is its own action, as Lightning's "[Callback]<state_key>.<hook>": 10 train
  // batches, 2 epochs, 3 validations (the sanity check and one per epoch) of 2 batches each.
  const std::vector<std::pair<std::string, std::string>> hooks = {{"on_train_batch_end", "10"},
                                                                  {"on_train_epoch_end", "2"},
                                                                  {"on_validation_end", "3"},
                                                                  {"on_validation_batch_end", "6"}};
  for (const auto& [hook, n] : hooks) {
    const std::vector<std::string> row = row_of(out, "[Callback]CountValidations." + hook);
    ASSERT_EQ(row.size(), 5u) << hook << "\n" << out;
    EXPECT_EQ(row[2], n) << hook;
  }
  EXPECT_TRUE(row_of(out, "[Callback]CountValidations").empty()) << "no row for all of a callback's hooks together";
  kt::expect_error([] { Trainer t(quiet({.profiler = "advanced"})); }, {"profiler 'advanced'", "simple"});
}

TEST(Profiler, AFilenameWritesEachStagesReportUnderDirpath) {
  const std::string dir = fresh_dir("profiler_file");
  auto profiler = std::make_shared<SimpleProfiler>(SimpleProfilerOptions{.dirpath = dir, .filename = "perf"});
  TinyClassifier module(0.0);
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .profiler = profiler}));
  ::testing::internal::CaptureStdout();
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
  trainer.validate(module, Loaders{.val = make_loader(20, false, 0)});
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "");
  std::ifstream fit(dir + "/fit-perf.txt"), validate(dir + "/validate-perf.txt");
  std::stringstream fit_text, validate_text;
  fit_text << fit.rdbuf();
  validate_text << validate.rdbuf();
  EXPECT_EQ(fit_text.str().rfind("FIT Profiler Report\n", 0), 0u) << fit_text.str();
  EXPECT_EQ(validate_text.str().rfind("VALIDATE Profiler Report\n", 0), 0u) << validate_text.str();
  EXPECT_EQ(row_of(validate_text.str(), "[Strategy]single_device.validation_step").at(2), "2");
  EXPECT_EQ(profiler->recorded_durations().at("run_training_batch").size(), 5u);
}

Json read_json(const std::string& path) {
  std::ifstream in(path);
  return Json::parse(in);
}

std::vector<std::string> traced_ops(const Json& trace) {
  std::vector<std::string> ops;
  for (const Json& e : trace.at("traceEvents"))
    if (e.at("cat") == "op") ops.push_back(e.at("name"));
  return ops;
}

TEST(Profiler, TracesTheOpsOfTheChosenBatchesAsChromeTraceEvents) {
  const auto traced_run = [](int64_t from, int64_t count) {
    const std::string dir = fresh_dir("profiler_trace_" + std::to_string(from) + "_" + std::to_string(count));
    auto profiler = std::make_shared<SimpleProfiler>(SimpleProfilerOptions{
        .dirpath = dir, .filename = "perf", .trace_batches = count, .trace_from_batch = from});
    TinyClassifier module(0.0);
    Trainer trainer(quiet({.max_epochs = 1, .logger = false, .profiler = profiler}));
    trainer.fit(module, Loaders{.train = make_loader(8, false, 0)});
    EXPECT_EQ(profiler->trace_path(), dir + "/fit-perf.trace.json");
    return read_json(profiler->trace_path());
  };
  const Json one = traced_run(1, 1);
  EXPECT_EQ(one.at("displayTimeUnit"), "ms");
  std::map<std::string, int> actions;
  double batch_start = 0, batch_end = 0;
  for (const Json& e : one.at("traceEvents")) {
    EXPECT_EQ(e.at("ph"), "X");
    EXPECT_GE(e.at("dur").get<double>(), 0.0);
    if (e.at("cat") != "action") continue;
    ++actions[e.at("name")];
    if (e.at("name") == "run_training_batch") {
      batch_start = e.at("ts");
      batch_end = batch_start + e.at("dur").get<double>();
    }
  }
  EXPECT_EQ(actions["run_training_batch"], 1);
  EXPECT_EQ(actions["[Strategy]single_device.training_step"], 1);
  EXPECT_EQ(actions["[Strategy]single_device.backward"], 1);
  EXPECT_EQ(actions["[TrainModule]TinyClassifier.optimizer_step"], 1);
  // The batch's forward, loss, backward and update ops, inside the batch's span.
  const std::vector<std::string> ops = traced_ops(one);
  for (const char* op : {"cross_entropy", "cross_entropy_backward", "sgd_update"})
    EXPECT_NE(std::find(ops.begin(), ops.end(), op), ops.end()) << op;
  bool saw_input = false;
  for (const Json& e : one.at("traceEvents")) {
    if (e.at("cat") != "op" || e.at("tid") != one.at("traceEvents")[0].at("tid")) continue;
    EXPECT_GE(e.at("ts").get<double>(), batch_start - 1.0);
    EXPECT_LE(e.at("ts").get<double>() + e.at("dur").get<double>(), batch_end + 1.0);
    // fc1's addmm: out (8, 8), bias, the batch's (8, 4) features, weight^T.
    saw_input = saw_input || (e.at("name") == "addmm" &&
                              e.at("args").at("inputs").get<std::string>().find("[8, 4]:float32") != std::string::npos);
  }
  EXPECT_TRUE(saw_input);
  // Two batches record the same ops twice over: the trace holds exactly the batches asked for.
  std::vector<std::string> twice = ops;
  twice.insert(twice.end(), ops.begin(), ops.end());
  EXPECT_EQ(traced_ops(traced_run(2, 2)), twice);
  EXPECT_FALSE(op_trace::active());
}

class FailsAtBatch : public TinyClassifier {
 public:
  StepOutput training_step(const data::Batch& batch, int64_t idx) override {
    KILN_CHECK(idx != 2, "failing for the test");
    return TinyClassifier::training_step(batch, idx);
  }
};

TEST(Profiler, AFailedFitLeavesNoTraceRunning) {
  auto profiler = std::make_shared<SimpleProfiler>(
      SimpleProfilerOptions{.dirpath = fresh_dir("profiler_fail"), .trace_batches = 3, .trace_from_batch = 1});
  FailsAtBatch module;
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .profiler = profiler}));
  kt::expect_error([&] { trainer.fit(module, Loaders{.train = make_loader(8, false, 0)}); }, {"failing for the test"});
  EXPECT_FALSE(op_trace::active());
  EXPECT_EQ(profiler->trace_path(), "");
}

}  // namespace
