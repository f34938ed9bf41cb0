// The Trainer end to end on a tiny classifier: Lightning's hook order, config checks, logging
// semantics, gradient accumulation, validate/test results, and bit-exact resume from checkpoints
// taken mid-epoch, at epoch boundaries and between accumulation micro-batches, including a run
// stopped by SIGTERM and a SLURM requeue on SIGUSR1 (child processes of this test binary).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "testing.h"
#include "io/checkpoint/atomic_file.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/loggers/csv_logger.h"
#include "train/seed.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

// ---- hook order

std::vector<std::string>* g_calls = nullptr;

class HookModule : public TinyClassifier {
 public:
  HookModule() : TinyClassifier(0.0) {}
  void note(const std::string& s) { g_calls->push_back(s); }
  StepOutput training_step(const data::Batch& b, int64_t i) override { note("training_step"); return TinyClassifier::training_step(b, i); }
  StepOutput validation_step(const data::Batch& b, int64_t i) override {
    note("validation_step");
    return TinyClassifier::validation_step(b, i);
  }
  std::vector<OptimizerConfig> configure_optimizers() override { note("configure_optimizers"); return TinyClassifier::configure_optimizers(); }
  void setup(const std::string& s) override { note("setup:" + s); }
  void teardown(const std::string& s) override { note("teardown:" + s); }
  void on_fit_start() override { note("on_fit_start"); }
  void on_fit_end() override { note("on_fit_end"); }
  void on_train_start() override { note("on_train_start"); }
  void on_train_end() override { note("on_train_end"); }
  void on_train_epoch_start() override { note("on_train_epoch_start"); }
  void on_train_epoch_end() override { note("on_train_epoch_end"); }
  bool on_train_batch_start(const data::Batch&, int64_t) override { note("on_train_batch_start"); return true; }
  void on_train_batch_end(const StepOutput&, const data::Batch&, int64_t) override { note("on_train_batch_end"); }
  void on_before_zero_grad(optim::Optimizer&) override { note("on_before_zero_grad"); }
  void on_before_backward(const Tensor&) override { note("on_before_backward"); }
  void on_after_backward() override { note("on_after_backward"); }
  void on_before_optimizer_step(optim::Optimizer&) override { note("on_before_optimizer_step"); }
  void on_validation_start() override { note("on_validation_start"); }
  void on_validation_end() override { note("on_validation_end"); }
  void on_validation_epoch_start() override { note("on_validation_epoch_start"); }
  void on_validation_epoch_end() override { note("on_validation_epoch_end"); }
};

class HookCallback : public Callback {
 public:
  std::string name() const override { return "HookCallback"; }
  void note(const std::string& s) { g_calls->push_back("cb." + s); }
  void setup(Trainer&, TrainModule&, const std::string& s) override { note("setup:" + s); }
  void on_sanity_check_start(Trainer&, TrainModule&) override { note("on_sanity_check_start"); }
  void on_sanity_check_end(Trainer&, TrainModule&) override { note("on_sanity_check_end"); }
  void on_train_epoch_end(Trainer&, TrainModule&) override { note("on_train_epoch_end"); }
  void on_validation_end(Trainer&, TrainModule&) override { note("on_validation_end"); }
};

TEST(Trainer, HooksRunInLightningsOrder) {
  std::vector<std::string> calls;
  g_calls = &calls;
  HookModule module;
  Trainer trainer(quiet({.max_epochs = 1, .num_sanity_val_steps = 1, .limit_val_batches = int64_t{1},
                         .logger = false, .callbacks = {std::make_shared<HookCallback>()}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0, 1, 16), .val = make_loader(8, false, 0, 1, 16)});
  g_calls = nullptr;
  const std::vector<std::string> train_batch = {"on_train_batch_start", "training_step", "on_before_zero_grad",
                                                "on_before_backward", "on_after_backward", "on_before_optimizer_step",
                                                "on_train_batch_end"};
  const std::vector<std::string> validation = {"on_validation_start", "on_validation_epoch_start", "validation_step",
                                               "on_validation_epoch_end", "cb.on_validation_end", "on_validation_end"};
  std::vector<std::string> want = {"cb.setup:fit", "setup:fit", "configure_optimizers", "on_fit_start",
                                   "cb.on_sanity_check_start"};
  want.insert(want.end(), validation.begin(), validation.end());
  want.insert(want.end(), {"cb.on_sanity_check_end", "on_train_start", "on_train_epoch_start"});
  want.insert(want.end(), train_batch.begin(), train_batch.end());
  want.insert(want.end(), train_batch.begin(), train_batch.end());
  want.insert(want.end(), validation.begin(), validation.end());
  want.insert(want.end(), {"cb.on_train_epoch_end", "on_train_epoch_end", "on_train_end", "on_fit_end", "teardown:fit"});
  EXPECT_EQ(calls, want);
}

TEST(Trainer, InvalidSettingsAreRefusedAtConstruction) {
  kt::expect_error([] { Trainer t({.precision = "16-mix"}); }, {"Precision '16-mix' is invalid", "32-true, bf16-mixed"});
  kt::expect_error([] { Trainer t({.accumulate_grad_batches = 0}); }, {"accumulate_grad_batches", ">= 1"});
  kt::expect_error([] { Trainer t({.gradient_clip_algorithm = "l3"}); }, {"gradient_clip_algorithm 'l3'", "norm, value"});
  kt::expect_error([] { Trainer t({.val_check_interval = 1.5}); }, {"val_check_interval", "(0, 1]"});
  kt::expect_error([] { Trainer t({.limit_train_batches = -0.5}); }, {"limit_train_batches", "[0, 1]"});
  kt::expect_error([] { Trainer t({.strategy = "deepspeed"}); }, {"strategy='deepspeed'", "single_device, ddp"});
  kt::expect_error([] { Trainer t({.max_epochs = 2, .min_epochs = 5}); }, {"min_epochs (5)", "max_epochs (2)"});
  kt::expect_error([] { Trainer t({.devices = 2, .strategy = "single_device"}); }, {"devices=2"});
}

// Logs each batch's size: epoch values are size-weighted means unless reduce_fx says otherwise.
class BatchSizeLogger : public TinyClassifier {
 public:
  StepOutput training_step(const data::Batch& b, int64_t i) override {
    const double n = static_cast<double>(b[0].size(0));
    log("bs_mean", n, {.on_step = false, .on_epoch = true});
    log("bs_sum", n, {.on_step = false, .on_epoch = true, .reduce_fx = "sum"});
    log("bs_max", n, {.on_step = false, .on_epoch = true, .reduce_fx = "max"});
    log("bs_step", n);
    return TinyClassifier::training_step(b, i);
  }
};

TEST(Trainer, EpochMetricsAreBatchSizeWeightedAndStepsLogEveryN) {
  BatchSizeLogger module;
  auto logger = std::make_shared<RecordingLogger>();
  Trainer trainer(quiet({.max_epochs = 1, .log_every_n_steps = 2, .loggers = {logger}}));
  trainer.fit(module, Loaders{.train = make_loader(8, false, 0, 1, 20)});  // batches of 8, 8, 4
  const auto& m = trainer.callback_metrics();
  EXPECT_DOUBLE_EQ(m.at("bs_mean"), (8 * 8 + 8 * 8 + 4 * 4) / 20.0);
  EXPECT_DOUBLE_EQ(m.at("bs_sum"), 20.0);
  EXPECT_DOUBLE_EQ(m.at("bs_max"), 8.0);
  EXPECT_DOUBLE_EQ(m.at("bs_step"), 4.0);  // the last step's value
  EXPECT_TRUE(m.count("train_loss_epoch") && m.count("train_loss_step"));
  // Step rows after optimizer steps 2 (logged as step 1); the epoch row at the last step (2).
  ASSERT_EQ(logger->rows.size(), 2u);
  EXPECT_EQ(logger->rows[0].first, 1);
  EXPECT_DOUBLE_EQ(logger->rows[0].second.at("bs_step"), 8.0);
  EXPECT_EQ(logger->rows[1].first, 2);
  EXPECT_DOUBLE_EQ(logger->rows[1].second.at("bs_mean"), 7.2);
  EXPECT_EQ(logger->rows[1].second.at("epoch"), 0.0);
  EXPECT_EQ(logger->status, "success");
  EXPECT_EQ(logger->hparams.at("dropout"), 0.2);
  EXPECT_EQ(trainer.global_step(), 3);
}

TEST(Trainer, AccumulatedMicroBatchesEqualOneBigBatch) {
  seed_everything(1);
  TinyClassifier big(0.0);
  Trainer(quiet({.max_epochs = 1, .logger = false})).fit(big, Loaders{.train = make_loader(8, false, 0)});
  TinyClassifier small(0.0);
  Trainer acc(quiet({.max_epochs = 1, .accumulate_grad_batches = 2, .logger = false}));
  acc.fit(small, Loaders{.train = make_loader(4, false, 0)});
  EXPECT_EQ(acc.global_step(), 5);
  for (const auto& [name, p] : big.named_parameters())
    EXPECT_TRUE(allclose(small.parameter(name), p, 1e-5, 1e-6)) << name;
}

TEST(Trainer, ValidateAndTestReturnEpochMetrics) {
  TinyClassifier module(0.0);
  Trainer trainer(quiet({.logger = false}));
  auto loader = make_loader(10, false, 0);
  auto val = trainer.validate(module, Loaders{.val = loader});
  auto test = trainer.test(module, Loaders{.test = loader});
  ASSERT_TRUE(val.count("val_loss") && val.count("val_acc"));
  ASSERT_TRUE(test.count("test_loss"));
  // Independent: the mean loss over all 40 samples equals the size-weighted mean of batch means.
  NoGradGuard no_grad;
  module.eval();
  auto ds = make_dataset();
  const double full = nn::F::cross_entropy(module.forward(ds->tensors()[0]), ds->tensors()[1]).item<double>();
  EXPECT_NEAR(test.at("test_loss"), full, 1e-6);
  EXPECT_DOUBLE_EQ(val.at("val_loss"), test.at("test_loss"));
}

// ---- bit-exact resume

struct StopAt : Callback {
  explicit StopAt(int64_t batches, std::string path) : stop_after(batches), path(std::move(path)) {}
  std::string name() const override { return "StopAt"; }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    if (++seen == stop_after) {
      t.save_checkpoint(path);
      throw std::runtime_error("stop for the test");
    }
  }
  int64_t stop_after;
  std::string path;
  int64_t seen = 0;
};

struct RunResult {
  TensorDict weights;
  std::vector<std::pair<int64_t, std::map<std::string, double>>> rows;
};

RunResult run(const TrainerConfig& base, int workers, std::shared_ptr<Callback> extra = nullptr,
              const std::string& ckpt = "") {
  seed_everything(42);
  TinyClassifier module;
  auto logger = std::make_shared<RecordingLogger>();
  TrainerConfig c = quiet(base);
  c.loggers = {logger};
  c.log_every_n_steps = 1;
  if (extra) c.callbacks = {extra};
  Trainer trainer(c);
  try {
    trainer.fit(module, Loaders{.train = make_loader(8, true, workers, 5), .val = make_loader(20, false, 0)}, ckpt);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()) != "stop for the test") throw;
  }
  return {module.state_dict(), logger->rows};
}

void expect_same_run_end(const RunResult& full, const RunResult& resumed) {
  for (const auto& [name, t] : full.weights) EXPECT_TRUE(bitwise_equal(t, resumed.weights.at(name))) << name;
  ASSERT_LE(resumed.rows.size(), full.rows.size());
  ASSERT_FALSE(resumed.rows.empty());
  const size_t offset = full.rows.size() - resumed.rows.size();
  for (size_t i = 0; i < resumed.rows.size(); ++i) {
    EXPECT_EQ(resumed.rows[i].first, full.rows[offset + i].first);
    EXPECT_EQ(resumed.rows[i].second, full.rows[offset + i].second) << "row " << i;
  }
}

TEST(Trainer, ResumeIsBitExactMidEpochAtEpochEndAndBetweenMicroBatches) {
  const std::string dir = fresh_dir("resume");
  for (int64_t accumulate : {1, 2}) {
    const TrainerConfig base{.max_epochs = 3, .accumulate_grad_batches = accumulate};
    const RunResult full = run(base, 2);
    for (int64_t stop : {3, 5, 7, 10}) {  // 5 batches per epoch: mid-epoch, epoch end, odd micro-batch
      SCOPED_TRACE("accumulate " + std::to_string(accumulate) + ", stop after batch " + std::to_string(stop));
      const std::string path = dir + "/stop.ckpt";
      run(base, 2, std::make_shared<StopAt>(stop, path));
      expect_same_run_end(full, run(base, 0, nullptr, path));  // resumed with another worker count
    }
  }
}

// ---- save_checkpoint after fit, and resumes driven by ModelCheckpoint's own files

TEST(Trainer, SaveCheckpointAfterFitResumesALongerFitAndLoadsForValidation) {
  const std::string dir = fresh_dir("after_fit");
  EXPECT_THROW(Trainer(quiet({})).save_checkpoint(dir + "/nothing.ckpt"), Error);  // no module run yet
  for (int64_t accumulate : {1, 2}) {
    SCOPED_TRACE("accumulate " + std::to_string(accumulate));
    const RunResult full = run({.max_epochs = 3, .accumulate_grad_batches = accumulate}, 2);
    const std::string path = dir + "/after_fit.ckpt";
    std::map<std::string, double> fitted_metrics;
    {
      seed_everything(42);
      TinyClassifier module;
      Trainer trainer(quiet({.max_epochs = 2, .accumulate_grad_batches = accumulate, .logger = false}));
      const Loaders loaders{.train = make_loader(8, true, 2, 5), .val = make_loader(20, false, 0)};
      trainer.fit(module, loaders);
      trainer.save_checkpoint(path);
      fitted_metrics = trainer.validate(module, loaders);
      trainer.save_checkpoint(path);  // validate with the fitted module keeps the fit's state
    }
    const State saved = io::load(path);
    EXPECT_EQ(saved.meta["epoch"], 2);
    EXPECT_EQ(saved.meta["optimizer_states"].size(), 1u);
    // One more epoch from the saved state ends where the uninterrupted three-epoch run ended.
    expect_same_run_end(full, run({.max_epochs = 3, .accumulate_grad_batches = accumulate}, 0, nullptr, path));
    TinyClassifier fresh(0.2, 0.1);
    EXPECT_EQ(Trainer(quiet({.logger = false})).validate(fresh, Loaders{.val = make_loader(20, false, 0)}, path),
              fitted_metrics);
  }
}

struct ThrowAtBatchStart : Callback {
  explicit ThrowAtBatchStart(int64_t batch) : at(batch) {}
  std::string name() const override { return "ThrowAtBatchStart"; }
  void on_train_batch_start(Trainer&, TrainModule&, const data::Batch&, int64_t) override {
    if (++seen == at) throw std::runtime_error("stop for the test");
  }
  int64_t at, seen = 0;
};

// A fit with a ModelCheckpoint saving every step into `dir`, stopped before batch `stop_before`.
RunResult run_saving_every_step(const std::string& dir, int64_t accumulate, int64_t stop_before, const std::string& ckpt) {
  seed_everything(42);
  TinyClassifier module;
  auto logger = std::make_shared<RecordingLogger>();
  TrainerConfig c = quiet({.max_epochs = 3, .accumulate_grad_batches = accumulate, .log_every_n_steps = 1});
  c.enable_checkpointing = true;
  c.loggers = {logger};
  c.callbacks = {std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
      .dirpath = dir, .save_top_k = -1, .save_last = true, .every_n_train_steps = 1})};
  if (stop_before > 0) c.callbacks.push_back(std::make_shared<ThrowAtBatchStart>(stop_before));
  try {
    Trainer(c).fit(module, Loaders{.train = make_loader(8, true, 2, 5)}, ckpt);
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()) != "stop for the test") throw;
  }
  return {module.state_dict(), logger->rows};
}

std::set<std::string> ckpt_files(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

TEST(Trainer, ResumedAccumulationDoesNotSaveItsCheckpointStepAgain) {
  const std::string full_dir = fresh_dir("acc_full"), dir = fresh_dir("acc_resumed");
  // 5 batches per epoch, windows of 2: steps end at batches 2, 4 and (cut short) 5 of each epoch.
  const RunResult full = run_saving_every_step(full_dir, 2, 0, "");
  for (int64_t stop_before : {3, 5, 8}) {  // right after the saves of steps 1, 2 and 4
    SCOPED_TRACE("stopped before batch " + std::to_string(stop_before));
    fs::remove_all(dir);
    run_saving_every_step(dir, 2, stop_before, "");
    const RunResult resumed = run_saving_every_step(dir, 2, 0, dir + "/last.ckpt");
    expect_same_run_end(full, resumed);
    ASSERT_EQ(ckpt_files(dir), ckpt_files(full_dir));
    for (const std::string& name : ckpt_files(full_dir)) {
      const State a = io::load(full_dir + "/" + name), b = io::load(dir + "/" + name);
      EXPECT_EQ(a.meta["loops"], b.meta["loops"]) << name;
      EXPECT_EQ(a.meta["loaders"], b.meta["loaders"]) << name;
      ASSERT_EQ(a.tensors.size(), b.tensors.size()) << name;  // no accumulated_grads.* in either
      for (const auto& [key, t] : a.tensors) EXPECT_TRUE(bitwise_equal(t, b.tensors.at(key))) << name << " " << key;
    }
  }
}

// ckpt_path="last" in a new process whose logger starts a new version folder: the run's newest
// last.ckpt in any version folder, by modification time; none at all: a fresh start.
TEST(Trainer, LastFindsTheRunsNewestCheckpointAcrossVersionFolders) {
  const std::string dir = fresh_dir("last_versions");
  auto fit = [&](int64_t epochs, const std::string& ckpt) {
    seed_everything(42);
    TinyClassifier module;
    TrainerConfig c = quiet({.max_epochs = epochs, .default_root_dir = dir});
    c.enable_checkpointing = true;
    c.loggers = {std::make_shared<CSVLogger>(CSVLoggerOptions{.root_dir = dir})};
    c.callbacks = {std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{.save_last = true})};
    Trainer trainer(c);
    trainer.fit(module, Loaders{.train = make_loader(8, true, 2, 5)}, ckpt);
    return std::pair{module.state_dict(), trainer.log_dir()};
  };
  const auto [fresh_weights, first_dir] = fit(1, "last");  // nothing to find: starts fresh
  const auto [one_epoch, unused] = fit(1, "");
  for (const auto& [name, t] : one_epoch) EXPECT_TRUE(bitwise_equal(t, fresh_weights.at(name))) << name;
  const auto [full, unused2] = fit(3, "");
  const auto [two_epochs, newest_dir] = fit(2, "");
  // A stale copy in another version folder, older than the newest; and a version folder with no checkpoint.
  const std::string stale = dir + "/lightning_logs/version_9/checkpoints/last.ckpt";
  fs::create_directories(fs::path(stale).parent_path());
  fs::copy_file(first_dir + "/checkpoints/last.ckpt", stale);
  fs::last_write_time(stale, fs::last_write_time(newest_dir + "/checkpoints/last.ckpt") - std::chrono::hours(1));
  fs::create_directories(dir + "/lightning_logs/version_10");
  const auto [resumed, resumed_dir] = fit(3, "last");
  EXPECT_EQ(fs::path(resumed_dir).filename(), "version_11");
  for (const auto& [name, t] : full) EXPECT_TRUE(bitwise_equal(t, resumed.at(name))) << name;
}

// ---- signals (in child processes: exit() is the point)

int run_child(const std::string& mode, const std::string& dir, const std::vector<std::string>& extra_env = {}) {
  fs::create_directories(dir);
  const pid_t pid = fork();
  if (pid == 0) {
    const int err = open((dir + "/child_stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, STDERR_FILENO);  // what the child tells its user, for the tests to read
    setenv("KILN_TRAINER_CHILD", mode.c_str(), 1);
    setenv("KILN_TRAINER_DIR", dir.c_str(), 1);
    for (const auto& kv : extra_env) putenv(const_cast<char*>(kv.c_str()));
    const std::string filter = mode == "kill" ? "--gtest_filter=TrainerChild.FitWithCheckpointEveryStep"
                                              : "--gtest_filter=TrainerChild.FitUntilSignal";
    execl("/proc/self/exe", "test_trainer", filter.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

class SlowRename : public io::FileOps {
 public:
  int rename(const std::string& from, const std::string& to) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return io::FileOps::rename(from, to);
  }
};

struct RaiseAt : Callback {
  RaiseAt(int64_t batches, int sig) : at(batches), sig(sig) {}
  std::string name() const override { return "RaiseAt"; }
  void on_train_batch_end(Trainer&, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    if (++seen == at) std::raise(sig);
  }
  int64_t at, seen = 0;
  int sig;
};

// The child's side: a fit that signals itself after 7 batches.
TEST(TrainerChild, FitUntilSignal) {
  const char* mode = std::getenv("KILN_TRAINER_CHILD");
  if (!mode || std::string(mode) == "kill") GTEST_SKIP() << "runs only as a child of the signal tests";
  const int sig = std::string(mode) == "usr1" ? SIGUSR1 : std::string(mode) == "int" ? SIGINT : SIGTERM;
  seed_everything(42);
  TinyClassifier module;
  TrainerConfig c = quiet({.max_epochs = 3, .logger = false, .default_root_dir = std::getenv("KILN_TRAINER_DIR")});
  c.handle_signals = true;
  // Renames take 50 ms: exiting before the checkpoint's write is in place would leave none.
  SlowRename slow;
  std::optional<io::ScopedFileOps> slow_scope;
  if (std::string(mode) == "term_async") c.async_checkpointing = true, slow_scope.emplace(slow);
  c.callbacks = {std::make_shared<RaiseAt>(7, sig)};
  Trainer trainer(c);
  trainer.fit(module, Loaders{.train = make_loader(8, true, 2, 5), .val = make_loader(20, false, 0)});
  std::exit(trainer.interrupted() ? 42 : 0);
}

TEST(Trainer, SigtermSavesACheckpointExitsAndResumesExactly) {
  const RunResult full = run({.max_epochs = 3}, 2);
  for (const char* mode : {"term", "term_async"}) {  // async: the write is waited for before exit
    SCOPED_TRACE(mode);
    const std::string dir = fresh_dir(mode);
    EXPECT_EQ(run_child(mode, dir), 128 + SIGTERM);
    ASSERT_TRUE(fs::exists(dir + "/hpc_ckpt_1.ckpt"));
    const RunResult resumed = run({.max_epochs = 3, .default_root_dir = dir}, 2, nullptr, "last");
    for (const auto& [name, t] : full.weights) EXPECT_TRUE(bitwise_equal(t, resumed.weights.at(name))) << name;
  }
}

TEST(Trainer, SigusrOnSlurmRequeuesTheJob) {
  const std::string dir = fresh_dir("slurm");
  const std::string bin = dir + "/bin";
  fs::create_directories(bin);
  {
    std::ofstream fake(bin + "/scontrol");
    fake << "#!/bin/sh\necho \"$@\" > " << dir << "/scontrol_args\n";
  }
  fs::permissions(bin + "/scontrol", fs::perms::owner_all);
  const std::string path_env = "PATH=" + bin + ":" + std::getenv("PATH");
  EXPECT_EQ(run_child("usr1", dir, {"SLURM_JOB_ID=4242", path_env}), 0);
  std::ifstream args(dir + "/scontrol_args");
  std::string line;
  std::getline(args, line);
  EXPECT_EQ(line, "requeue 4242");
  EXPECT_TRUE(fs::exists(dir + "/hpc_ckpt_1.ckpt"));
}

TEST(Trainer, SigintStopsGracefully) {
  const std::string dir = fresh_dir("sigint");
  EXPECT_EQ(run_child("int", dir), 42);  // fit returned with interrupted() set
  std::ifstream err(dir + "/child_stderr.txt");
  const std::string said((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("kiln: detected SIGINT (Ctrl-C), attempting graceful shutdown"), std::string::npos) << said;
}

// ---- hard kills: a run SIGKILLed several times and restarted from its last checkpoint each time

// Appends the sample ids of each finished batch to a file, and kills the process at the start of
// the batch after step `die_at_step`, once that step's checkpoint was written (ModelCheckpoint
// saves at batch end, after the other callbacks, as in Lightning).
struct NoteSamplesThenMaybeDie : Callback {
  NoteSamplesThenMaybeDie(std::string log, int64_t die_at_step) : log(std::move(log)), die_at_step(die_at_step) {}
  std::string name() const override { return "NoteSamplesThenMaybeDie"; }
  void on_train_batch_start(Trainer& t, TrainModule&, const data::Batch&, int64_t) override {
    if (t.global_step() == die_at_step) std::raise(SIGKILL);
  }
  void on_train_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch& b, int64_t) override {
    std::ofstream out(log, std::ios::app);
    for (double id : kt::values(b[2])) out << t.current_epoch() << " " << id << "\n";
  }
  std::string log;
  int64_t die_at_step;
};

// Ids as a third field, so a run can report which samples it saw.
std::shared_ptr<data::DataLoader> loader_with_ids() {
  auto ds = make_dataset();
  Tensor ids = arange(40, {.dtype = DType::f32});
  auto with_ids = std::make_shared<data::TensorDataset>(std::vector<Tensor>{ds->tensors()[0], ds->tensors()[1], ids});
  return std::make_shared<data::DataLoader>(std::shared_ptr<const data::Dataset>(with_ids),
                                            data::DataLoaderOptions{.batch_size = 8, .shuffle = true, .seed = 5,
                                                                    .num_workers = 2});
}

TEST(TrainerChild, FitWithCheckpointEveryStep) {
  const char* mode = std::getenv("KILN_TRAINER_CHILD");
  if (!mode || std::string(mode) != "kill") GTEST_SKIP() << "runs only as a child of the kill test";
  const std::string dir = std::getenv("KILN_TRAINER_DIR");
  seed_everything(42);
  TinyClassifier module;
  auto ckpt = std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
      .dirpath = dir + "/ckpts", .save_top_k = 0, .save_last = true, .every_n_train_steps = 1});
  TrainerConfig c = quiet({.max_epochs = 3, .logger = false, .default_root_dir = dir});
  c.enable_checkpointing = true;
  c.callbacks = {ckpt, std::make_shared<NoteSamplesThenMaybeDie>(dir + "/seen.txt", std::stoll(std::getenv("KILN_DIE_AT")))};
  Trainer trainer(c);
  trainer.fit(module, Loaders{.train = loader_with_ids()}, fs::exists(dir + "/ckpts/last.ckpt") ? "last" : "");
  io::save(dir + "/final.ckpt", State{module.state_dict(), Json::object()});
  std::exit(0);
}

TEST(Trainer, HardKilledRunsRestartedFromLastCheckpointEndEqual) {
  const std::string dir = fresh_dir("kill");
  // Killed after steps 2, 5 (epoch boundary), 6 and 11, restarted each time; the fifth run finishes.
  for (int64_t die_at : {2, 5, 6, 11, -1}) {
    const int status = run_child("kill", dir, {"KILN_DIE_AT=" + std::to_string(die_at)});
    EXPECT_EQ(status, die_at < 0 ? 0 : -SIGKILL) << "die_at " << die_at;
  }
  // The same run without kills.
  seed_everything(42);
  TinyClassifier module;
  auto ckpt = std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
      .dirpath = dir + "/ref_ckpts", .save_top_k = 0, .save_last = true, .every_n_train_steps = 1});
  TrainerConfig c = quiet({.max_epochs = 3, .logger = false, .default_root_dir = dir + "/ref"});
  c.enable_checkpointing = true;
  c.callbacks = {ckpt};
  Trainer(c).fit(module, Loaders{.train = loader_with_ids()});
  const State killed = io::load(dir + "/final.ckpt");
  for (const auto& [name, t] : module.state_dict()) EXPECT_TRUE(bitwise_equal(t, killed.tensors.at(name))) << name;
  // Every sample exactly once per epoch across the killed runs.
  std::map<int, std::multiset<int>> seen;
  std::ifstream in(dir + "/seen.txt");
  for (int epoch, id; in >> epoch >> id;) seen[epoch].insert(id);
  ASSERT_EQ(seen.size(), 3u);
  for (const auto& [epoch, ids] : seen) {
    EXPECT_EQ(ids.size(), 40u) << "epoch " << epoch;
    EXPECT_EQ(std::set<int>(ids.begin(), ids.end()).size(), 40u) << "epoch " << epoch;
  }
}

}  // namespace
