// Resume from checkpoints written inside a batch's end or inside a validation, against the
// uninterrupted run: the rows the loggers received (metrics.csv included, after a SIGKILL right after
// a save), what callbacks saw in callback_metrics and progress_bar_metrics at every batch, and the
// weights. Note [Checkpoints inside a batch's end] (fit_loop.cpp), Note [No logged row is lost]
// (checkpointing.cpp).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "testing.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/loggers/csv_logger.h"
#include "train/seed.h"
#include "trainer_fixtures.h"

namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

using Rows = std::vector<std::pair<int64_t, std::map<std::string, double>>>;

// 5 training batches an epoch, validation (2 batches) after every second one: after global steps
// 2, 4, 7 and 9 of a two-epoch run. Every step is logged.
TrainerConfig schedule(const std::string& root, int64_t max_steps = -1) {
  TrainerConfig c =
      quiet({.max_epochs = 2, .max_steps = max_steps, .val_check_interval = int64_t{2}, .log_every_n_steps = 1});
  c.default_root_dir = root;
  return c;
}
Loaders loaders() { return {.train = make_loader(8, true, 0, 5), .val = make_loader(20, false, 0)}; }

// What callbacks see at each batch start: the step and the metrics they could act on.
struct Seen {
  int64_t step;
  std::map<std::string, double> callback_metrics, progress_bar_metrics;
  bool operator==(const Seen&) const = default;
};
struct RecordSeen : Callback {
  std::string name() const override { return "RecordSeen"; }
  void on_train_batch_start(Trainer& t, TrainModule&, const data::Batch&, int64_t) override {
    seen.push_back({t.global_step(), t.callback_metrics(), t.progress_bar_metrics()});
  }
  std::vector<Seen> seen;
};

// A run stopped by an exception right after a checkpoint was written, as a process that dies there.
struct Stopped : std::runtime_error {
  Stopped() : std::runtime_error("stopped for the test") {}
};

// Dies in its own on_train_batch_end, which runs after every callback's (ModelCheckpoint's save
// included) and before the batch's step row is sent.
class DiesAfterSave : public TinyClassifier {
 public:
  explicit DiesAfterSave(int64_t step, bool sigkill = false) : die_at(step), sigkill(sigkill) {}
  void on_train_batch_end(const StepOutput&, const data::Batch&, int64_t) override {
    if (trainer().global_step() != die_at) return;
    if (sigkill) std::raise(SIGKILL);
    throw Stopped();
  }
  int64_t die_at;
  bool sigkill;
};

// Writes a checkpoint inside the validation after global step `step` and stops there: at its first
// batch's end (results not logged yet), or at its end (results logged).
struct SaveInValidation : Callback {
  SaveInValidation(int64_t step, bool at_end, std::string path) : step(step), at_end(at_end), path(std::move(path)) {}
  std::string name() const override { return "SaveInValidation"; }
  void on_validation_batch_end(Trainer& t, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    if (!at_end) maybe_stop(t);
  }
  void on_validation_end(Trainer& t, TrainModule&) override {
    if (at_end) maybe_stop(t);
  }
  void maybe_stop(Trainer& t) {
    if (t.sanity_checking() || t.global_step() != step) return;
    t.save_checkpoint(path);
    throw Stopped();
  }
  int64_t step;
  bool at_end;
  std::string path;
};

struct RunResult {
  TensorDict weights;
  Rows rows;
  std::vector<Seen> seen;
  std::map<std::string, double> callback_metrics, progress_bar_metrics;
};

// One fit of DiesAfterSave(die_at) with a ModelCheckpoint saving last.ckpt at every step into
// root/ckpts, plus `extra` callbacks; resumed from `ckpt` when given.
RunResult fit(const std::string& root, int64_t die_at, const std::string& ckpt = "",
              std::vector<std::shared_ptr<Callback>> extra = {}, int64_t max_steps = -1) {
  seed_everything(42);
  DiesAfterSave module(die_at);
  auto logger = std::make_shared<RecordingLogger>();
  auto record = std::make_shared<RecordSeen>();
  TrainerConfig c = schedule(root, max_steps);
  c.enable_checkpointing = true;
  c.loggers = {logger};
  c.callbacks = {record, std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
                             .dirpath = root + "/ckpts", .save_top_k = 0, .save_last = true,
                             .every_n_train_steps = 1})};
  for (auto& cb : extra) c.callbacks.push_back(cb);
  Trainer trainer(c);
  try {
    trainer.fit(module, loaders(), ckpt);
  } catch (const Stopped&) {
  }
  return {module.state_dict(), logger->rows, record->seen, trainer.callback_metrics(), trainer.progress_bar_metrics()};
}

template <class T>
std::vector<T> joined(std::vector<T> a, const std::vector<T>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The stopped run and its resumption, together, did what the uninterrupted run did.
void expect_same_as_uninterrupted(const RunResult& full, const RunResult& stopped, const RunResult& resumed) {
  for (const auto& [name, t] : full.weights) EXPECT_TRUE(bitwise_equal(t, resumed.weights.at(name))) << name;
  const Rows rows = joined(stopped.rows, resumed.rows);
  ASSERT_EQ(rows.size(), full.rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].first, full.rows[i].first) << "row " << i;
    EXPECT_EQ(rows[i].second, full.rows[i].second) << "row " << i;
  }
  const std::vector<Seen> seen = joined(stopped.seen, resumed.seen);
  ASSERT_EQ(seen.size(), full.seen.size());
  for (size_t i = 0; i < seen.size(); ++i)
    EXPECT_TRUE(seen[i] == full.seen[i]) << "batch start " << i << ", step " << seen[i].step;
  EXPECT_EQ(resumed.callback_metrics, full.callback_metrics);
  EXPECT_EQ(resumed.progress_bar_metrics, full.progress_bar_metrics);
}

TEST(Resume, FromInsideABatchsEndRunsItsStepRowAndDueValidationFirst) {
  const RunResult full = fit(fresh_dir("full_batch_end"), -1);
  ASSERT_EQ(full.rows.size(), 10u + 4u + 2u);  // a row per step, per validation, per epoch end
  // Steps 4 and 9 are followed by a validation, 5 ends epoch 0, 3 and 6 are plain.
  for (int64_t die_at : {3, 4, 5, 6, 9}) {
    SCOPED_TRACE("stopped after the save of step " + std::to_string(die_at));
    const std::string root = fresh_dir("batch_end_" + std::to_string(die_at));
    const RunResult stopped = fit(root, die_at);
    EXPECT_EQ(stopped.rows.back().first, die_at - 2);  // the last row sent is the step before's
    expect_same_as_uninterrupted(full, stopped, fit(root, -1, root + "/ckpts/last.ckpt"));
  }
}

// The uninterrupted run stops at max_steps but still ends its epoch (the validation due after step
// 4, the epoch's row); so does a run resumed from the checkpoint of that last step.
TEST(Resume, FromTheLastStepOfMaxStepsStillEndsTheEpoch) {
  const RunResult full = fit(fresh_dir("full_max_steps"), -1, "", {}, 4);
  ASSERT_EQ(full.rows.size(), 4u + 2u + 1u);
  const std::string root = fresh_dir("max_steps");
  const RunResult stopped = fit(root, 4, "", {}, 4);
  expect_same_as_uninterrupted(full, stopped, fit(root, -1, root + "/ckpts/last.ckpt", {}, 4));
}

TEST(Resume, FromInsideAValidationRunsItAgainUnlessItsResultsWereLogged) {
  const RunResult full = fit(fresh_dir("full_in_val"), -1);
  for (bool at_end : {false, true}) {
    for (int64_t step : {4, 7}) {
      SCOPED_TRACE(std::string(at_end ? "at the end of" : "inside") + " the validation after step " +
                   std::to_string(step));
      const std::string root = fresh_dir("in_val");
      const std::string path = root + "/in_val.ckpt";
      const RunResult stopped = fit(root, -1, "", {std::make_shared<SaveInValidation>(step, at_end, path)});
      EXPECT_EQ(stopped.rows.back().second.contains("val_loss"), at_end);
      expect_same_as_uninterrupted(full, stopped, fit(root, -1, path));
    }
  }
}

// ---- a process SIGKILLed right after a save, before its step's row reached metrics.csv

std::vector<std::map<std::string, std::string>> csv_rows(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const auto table = parse_csv(std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()));
  std::vector<std::map<std::string, std::string>> rows;
  for (size_t r = 1; r < table.size(); ++r) {
    std::map<std::string, std::string> row;
    for (size_t c = 0; c < table[r].size(); ++c)
      if (!table[r][c].empty()) row[table[0][c]] = table[r][c];
    rows.push_back(row);
  }
  return rows;
}

// A fit logging to a CSVLogger under root (default flush: every 100 steps) that SIGKILLs itself at
// die_at, or resumes from ckpt.
void csv_fit(const std::string& root, int64_t die_at, const std::string& ckpt) {
  seed_everything(42);
  DiesAfterSave module(die_at, true);
  TrainerConfig c = schedule(root);
  c.enable_checkpointing = true;
  c.loggers = {std::make_shared<CSVLogger>(CSVLoggerOptions{.root_dir = root})};
  c.callbacks = {std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
      .dirpath = root + "/ckpts", .save_top_k = 0, .save_last = true, .every_n_train_steps = 1})};
  Trainer(c).fit(module, loaders(), ckpt);
}

TEST(ResumeChild, CsvFitKilledAfterASave) {
  const char* root = std::getenv("KILN_RESUME_CHILD_ROOT");
  if (!root) GTEST_SKIP() << "runs only as a child of Resume.NoCsvRowIsLostWhenKilledRightAfterASave";
  csv_fit(root, std::stoll(std::getenv("KILN_RESUME_DIE_AT")), "");
  std::exit(0);
}

int run_killed_child(const std::string& root, int64_t die_at) {
  const pid_t pid = fork();
  if (pid == 0) {
    const int err = open((root + "/child_stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, STDERR_FILENO);
    setenv("KILN_RESUME_CHILD_ROOT", root.c_str(), 1);
    setenv("KILN_RESUME_DIE_AT", std::to_string(die_at).c_str(), 1);
    execl("/proc/self/exe", "test_resume", "--gtest_filter=ResumeChild.CsvFitKilledAfterASave",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? WTERMSIG(status) : -WEXITSTATUS(status);
}

TEST(Resume, NoCsvRowIsLostWhenKilledRightAfterASave) {
  const std::string full_root = fresh_dir("csv_full");
  csv_fit(full_root, -1, "");
  const auto full = csv_rows(full_root + "/lightning_logs/version_0/metrics.csv");
  ASSERT_EQ(full.size(), 16u);
  for (int64_t die_at : {4, 6}) {
    SCOPED_TRACE("killed after the save of step " + std::to_string(die_at));
    const std::string root = fresh_dir("csv_killed_" + std::to_string(die_at));
    ASSERT_EQ(run_killed_child(root, die_at), SIGKILL);
    csv_fit(root, -1, root + "/ckpts/last.ckpt");  // a new process would log into version_1 too
    const auto rows = joined(csv_rows(root + "/lightning_logs/version_0/metrics.csv"),
                             csv_rows(root + "/lightning_logs/version_1/metrics.csv"));
    EXPECT_EQ(rows, full);
  }
}

}  // namespace
