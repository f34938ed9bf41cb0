// strategy = "zero1" / "zero2": DDP with the optimizer state (and for zero2 the gradients) split
// among the processes. Two processes on half batches equal one process on the whole batch (SGD
// with momentum and AdamW, with clipping by the global norm), each process keeps the state of the
// parameters it owns only, and a checkpoint holds the whole state, so one process resumes it.
#include <filesystem>

#include "distributed/zero.h"
#include "testing.h"
#include "train/callbacks/model_checkpoint.h"
#include "distributed/ddp_fixtures.h"
#include "train/hardware/zero_strategy.h"

namespace kiln {
namespace {

namespace kt = kiln::testing;
using test_ddp::expect_same_params;
using test_ddp::LaunchingTest;
using test_ddp::started_by_a_peer;
using test_ddp::train;
using test_ddp::TrainedRun;

TEST(ZeroOwners, LargestFirstToTheLightestRank) {
  // 32 -> rank 0; 24 -> 1; 8 -> 1 (24 < 32); 3 -> tie at 32, the lower rank.
  EXPECT_EQ(dist::assign_owners({32, 8, 24, 3}, 2), (std::vector<int>{0, 1, 1, 0}));
  EXPECT_EQ(dist::assign_owners({5, 5, 5}, 3), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(dist::assign_owners({7}, 4), (std::vector<int>{0}));
  kt::expect_error([] { dist::assign_owners({1}, 0); }, {"world_size must be at least 1"});
}

class ZeroTrainer : public ::testing::TestWithParam<std::string> {};

// N processes on batches of 8 / N equal one process on batches of 8.
void expect_sharded_run_equals_one_process(const std::string& strategy, int processes) {
  for (bool adamw : {false, true}) {
    SCOPED_TRACE(adamw ? "AdamW" : "SGD with momentum");
    // 5 steps an epoch, 20 in all; clipping at 0.5 bites (the first gradients' norm is above 1).
    const TrainerConfig base{.max_epochs = 4, .gradient_clip_val = 0.5, .logger = false};
    TrainerConfig sharded = base;
    sharded.devices = processes;
    sharded.strategy = strategy;
    const TrainedRun single = train(base, 8, adamw);
    const TrainedRun zero = train(sharded, 8 / processes, adamw);
    EXPECT_EQ(zero.world_size, processes);
    expect_same_params(zero, single);
  }
}

TEST_P(ZeroTrainer, TwoProcessesOnHalfBatchesEqualOneOnTheWholeBatch) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  expect_sharded_run_equals_one_process(GetParam(), 2);
}

// Four processes own one parameter each (fc1.weight, fc2.weight, fc1.bias, fc2.bias by size).
TEST(ZeroTrainerFourProcesses, Stage2OnQuarterBatchesEqualsOneOnTheWholeBatch) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  expect_sharded_run_equals_one_process("zero2", 4);
}

// A module that records, after fit, how much optimizer state its process holds.
struct StateCount {
  int64_t owned_numel = 0;   // elements of the parameters this process owns
  int64_t state_numel = 0;   // elements of the optimizer state this process holds
  int64_t params_with_state = 0;
};

StateCount count_state(const Trainer& trainer, const nn::Module& module) {
  StateCount out;
  const auto& strategy = dynamic_cast<const ZeroStrategy&>(trainer.strategy());
  out.owned_numel = strategy.shards().owned_numel();
  const optim::Optimizer& optimizer = *trainer.optimizer_configs().front().optimizer;
  for (const Tensor& p : module.parameters()) {
    const TensorDict* state = optimizer.state_of(p);
    if (!state || state->empty()) continue;
    ++out.params_with_state;
    EXPECT_TRUE(strategy.shards().owns(p)) << "state for a parameter owned by another process";
    for (const auto& [name, t] : *state) out.state_numel += t.numel();
  }
  return out;
}

TEST_P(ZeroTrainer, EachProcessHoldsTheStateOfItsOwnParametersOnly) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  test_ddp::SyncedClassifier model(/*adamw=*/true);
  Trainer trainer(test_trainer::quiet({.max_epochs = 1, .devices = 2, .strategy = GetParam(), .logger = false}));
  trainer.fit(model, {.train = test_trainer::make_loader(4, true, 0, 5)});
  const StateCount count = count_state(trainer, model);
  // fc1 (32 + 8) and fc2 (24 + 3) over two processes: 35 and 32 elements; AdamW keeps two moments
  // per element and a step per parameter.
  EXPECT_EQ(count.owned_numel, trainer.global_rank() == 0 ? 35 : 32);
  EXPECT_EQ(count.state_numel, 2 * count.owned_numel + count.params_with_state);
  EXPECT_EQ(count.params_with_state, 2);
}

TEST_P(ZeroTrainer, ACheckpointHoldsTheWholeStateAndOneProcessResumesIt) {
  if (LaunchingTest::skip_here()) GTEST_SKIP() << "a copy started for another test";
  LaunchingTest launching;
  // The copy writes nothing (rank 0 writes checkpoints) but must name the same folder.
  const bool copy = started_by_a_peer();  // before the launch sets this process's RANK too
  const std::string shared_dir =
      copy ? std::getenv("KILN_ZERO_DIR") : test_trainer::fresh_dir("zero_resume_" + GetParam());
  if (!copy) ::setenv("KILN_ZERO_DIR", shared_dir.c_str(), 1);
  // Two epochs over two processes, saving the last checkpoint.
  {
    test_ddp::SyncedClassifier model(/*adamw=*/true);
    auto checkpoint = std::make_shared<ModelCheckpoint>(
        callbacks::ModelCheckpointOptions{.dirpath = shared_dir, .save_last = true});
    TrainerConfig config = test_trainer::quiet({.max_epochs = 2, .devices = 2, .strategy = GetParam(),
                                                .logger = false, .callbacks = {checkpoint}});
    config.enable_checkpointing = true;
    Trainer trainer(config);
    trainer.fit(model, {.train = test_trainer::make_loader(4, true, 0, 5)});
  }
  if (copy) return;
  DDPStrategy::wait_for_peers();
  ::unsetenv("KILN_ZERO_DIR");
  // The checkpoint's AdamW state is the one process's after the same two epochs.
  const TrainedRun resumed = train({.max_epochs = 4, .logger = false}, 8, /*adamw=*/true, shared_dir + "/last.ckpt");
  const TrainedRun uninterrupted = train({.max_epochs = 4, .logger = false}, 8, /*adamw=*/true);
  expect_same_params(resumed, uninterrupted);
  if (!std::getenv("KILN_KEEP")) std::filesystem::remove_all(shared_dir);
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroTrainer, ::testing::Values("zero1", "zero2"));

}  // namespace
}  // namespace kiln
