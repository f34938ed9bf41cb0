// The Trainer over several processes (strategy = "ddp" on the CPU): started as a plain program it
// starts its peers (copies of this test binary running this same test), each trains on its share
// of every batch, and the result equals one process trained on the whole batch.
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "distributed/ddp_fixtures.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"
#include "testing.h"
#include "train/callbacks/early_stopping.h"
#include "train/callbacks/model_checkpoint.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using test_ddp::expect_same_params;
using test_ddp::LaunchingTest;
using test_ddp::started_by_a_peer;
using test_ddp::train;
using test_ddp::TrainedRun;

TEST(DDPTrainer, TwoProcessesOnHalfBatchesEqualOneOnTheWholeBatch) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  const TrainedRun single = train({.max_epochs = 2, .logger = false}, 8);
  const TrainedRun ddp = train({.max_epochs = 2, .devices = 2, .strategy = "ddp", .logger = false}, 4);
  EXPECT_EQ(ddp.world_size, 2);
  expect_same_params(ddp, single);
  // sync_dist: the epoch mean over both processes' batches is the one process's mean.
  EXPECT_NEAR(ddp.epoch_loss, single.epoch_loss, 1e-6);
}

TEST(DDPTrainer, AccumulationSynchronisesOncePerWindow) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  const TrainedRun single = train({.max_epochs = 1, .accumulate_grad_batches = 2, .logger = false}, 4);
  const TrainedRun ddp = train({.max_epochs = 1, .devices = 2, .strategy = "ddp", .accumulate_grad_batches = 2,
                         .logger = false}, 2);
  expect_same_params(ddp, single);
}

// Validation logs a value that only rank 0 sees below EarlyStopping's threshold (no sync_dist).
class RankZeroWantsToStop : public test_ddp::SyncedClassifier {
 public:
  StepOutput validation_step(const data::Batch& batch, int64_t i) override {
    log("rank_signal", trainer().global_rank() == 0 ? 0.0 : 1.0);
    return SyncedClassifier::validation_step(batch, i);
  }
};

// Mid-epoch (a validation every 2 batches), so the Trainer's own agreement at the epoch's end
// cannot be what stops rank 1: without EarlyStopping's, rank 1 would go on alone into the next
// batch's all-reduce and the test would time out.
TEST(DDPTrainer, EarlyStoppingOnOneProcessStopsThemAll) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  RankZeroWantsToStop model;
  auto stop = std::make_shared<EarlyStopping>(
      callbacks::EarlyStoppingOptions{.monitor = "rank_signal", .stopping_threshold = 0.5});
  Trainer trainer(test_trainer::quiet({.max_epochs = 5, .devices = 2, .strategy = "ddp",
                                       .val_check_interval = int64_t{2}, .num_sanity_val_steps = 0,
                                       .logger = false, .callbacks = {stop}}));
  trainer.fit(model, {.train = test_trainer::make_loader(4, true, 0, 5),
                      .val = test_trainer::make_loader(4, false, 0, 5)});
  EXPECT_EQ(trainer.global_step(), 2);  // both processes stopped after the first validation
}

TEST(DDPTrainer, AutoPicksDdpForSeveralProcessesWithoutStartingThemYet) {
  if (started_by_a_peer()) GTEST_SKIP() << "runs as a plain program only";
  Trainer trainer({.devices = 3, .logger = false});
  EXPECT_EQ(trainer.strategy().name(), "ddp");
  EXPECT_EQ(trainer.strategy().world_size(), 3);
  EXPECT_EQ(trainer.strategy().global_rank(), 0);
  EXPECT_TRUE(trainer.strategy().is_global_zero());
}

TEST(DDPTrainer, ALauncherWithAnotherWorldSizeIsRefused) {
  if (started_by_a_peer()) GTEST_SKIP() << "runs as a plain program only";
  LaunchingTest launching;
  ::setenv("RANK", "0", 1);
  ::setenv("WORLD_SIZE", "3", 1);
  kt::expect_error([] { Trainer t({.devices = 2, .strategy = "ddp", .logger = false}); },
                   {"devices=2", "asks for 2 processes", "WORLD_SIZE 3"});
}

TEST(DDPTrainer, SeveralNodesNeedALauncher) {
  if (started_by_a_peer()) GTEST_SKIP() << "runs as a plain program only";
  kt::expect_error([] { Trainer t({.devices = 1, .num_nodes = 2, .logger = false}); },
                   {"num_nodes=2", "kiln-run --nnodes"});
}

#ifdef KILN_RUN_PATH
namespace fs = std::filesystem;

// Rank 1 of the job's first attempt dies (SIGKILL) at the end of global step `die_at`.
class DieAtStep : public Callback {
 public:
  explicit DieAtStep(int64_t die_at) : die_at_(die_at) {}
  std::string name() const override { return "DieAtStep"; }
  void on_train_batch_end(Trainer& trainer, TrainModule&, const StepOutput&, const data::Batch&, int64_t) override {
    const char* attempt = std::getenv("KILN_RESTART_COUNT");
    if (trainer.global_rank() == 1 && (!attempt || std::string(attempt) == "0") && trainer.global_step() == die_at_)
      std::raise(SIGKILL);
  }

 private:
  int64_t die_at_;
};

// What kiln-run starts (twice, as ranks 0 and 1): 3 epochs of 5 steps on 2 processes, a checkpoint
// after every step, resuming from the last one when there is one; rank 0 saves the final weights.
TEST(DDPTrainer, JobForKilnRun) {
  const char* dir = std::getenv("KILN_JOB_DIR");
  if (!dir) GTEST_SKIP() << "the program kiln-run starts in KilledRankIsReportedAndARestartEndsAsUninterrupted";
  const std::string ckpt_dir = std::string(dir) + "/checkpoints";
  test_ddp::SyncedClassifier model(/*adamw=*/true);
  auto checkpoint = std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
      .dirpath = ckpt_dir, .save_last = true, .every_n_train_steps = 1});
  TrainerConfig config = test_trainer::quiet({.max_epochs = 3, .devices = 2, .strategy = "ddp", .logger = false,
                                              .callbacks = {checkpoint, std::make_shared<DieAtStep>(
                                                                            std::stoll(std::getenv("KILN_JOB_DIE_AT")))}});
  config.enable_checkpointing = true;
  Trainer trainer(config);
  const std::string last = ckpt_dir + "/last.ckpt";
  trainer.fit(model, {.train = test_trainer::make_loader(4, true, 0, 5)}, fs::exists(last) ? last : "");
  if (!trainer.is_global_zero()) return;
  State weights;
  for (const auto& [name, p] : model.named_parameters()) weights.tensors.insert(name, p.detach().clone());
  io::save(std::string(dir) + "/final.kiln", weights);
}

// kiln-run --nproc-per-node 2 [--max-restarts R] on JobForKilnRun; its exit code, its output in
// `dir`/out.
int run_job(const fs::path& dir, int64_t die_at, int max_restarts) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ostringstream command;
  command << "KILN_JOB_DIR=" << dir << " KILN_JOB_DIE_AT=" << die_at << " " << KILN_RUN_PATH
          << " --nproc-per-node 2 --master-port 0 --max-restarts " << max_restarts << " "
          << fs::read_symlink("/proc/self/exe") << " --gtest_filter=DDPTrainer.JobForKilnRun > " << dir / "out"
          << " 2>&1";
  const int status = std::system(command.str().c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(DDPTrainer, KilledRankIsReportedAndARestartEndsAsUninterrupted) {
  if (started_by_a_peer() || std::getenv("KILN_JOB_DIR")) GTEST_SKIP() << "runs as a plain program only";
  const fs::path root = test_trainer::fresh_dir("ddp_restart");
  // Without restarts the job fails, naming the rank that died and how.
  EXPECT_EQ(run_job(root / "failed", 7, 0), 128 + SIGKILL);
  const std::string report = read_text(root / "failed" / "out");
  EXPECT_NE(report.find("kiln-run: rank 1"), std::string::npos) << report;
  EXPECT_NE(report.find("SIGKILL"), std::string::npos) << report;
  // With one restart both ranks resume from the last checkpoint, and the job ends where one that
  // never failed ends, bit for bit (bit-exact resume of the same two processes).
  ASSERT_EQ(run_job(root / "restarted", 7, 1), 0) << read_text(root / "restarted" / "out");
  ASSERT_EQ(run_job(root / "uninterrupted", -1, 0), 0) << read_text(root / "uninterrupted" / "out");
  const State restarted = io::load((root / "restarted" / "final.kiln").string());
  const State uninterrupted = io::load((root / "uninterrupted" / "final.kiln").string());
  ASSERT_EQ(restarted.tensors.size(), 4u);
  for (const auto& [name, t] : uninterrupted.tensors)
    EXPECT_TRUE(test_trainer::bitwise_equal(restarted.tensors.at(name), t)) << name;
  if (!std::getenv("KILN_KEEP")) fs::remove_all(root);
}
#endif

}  // namespace
}  // namespace kiln
