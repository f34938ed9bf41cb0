// Shared pieces of the tests that train over several processes: a test starts its peers as copies
// of this test binary running the same test (the Trainer's own launch), each trains on its share,
// and the result is compared with one process trained on the whole batch.
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include "nn/optim/adam.h"
#include "train/hardware/ddp_strategy.h"
#include "train/trainer_fixtures.h"

namespace kiln::test_ddp {

inline bool started_by_a_peer() { return std::getenv("RANK") != nullptr; }

inline std::string current_test() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(info->test_suite_name()) + "." + info->name();
}

// A test that trains over several processes. Its copies run this test only (started without a
// filter, they would run every test of the binary), and the env:// variables the launch leaves in
// this process (PeerProcesses sets rank 0's own) are cleared afterwards, so that the next test
// starts as a plain program again.
struct LaunchingTest {
  LaunchingTest() : plain_program_(!started_by_a_peer()) {
    if (plain_program_) ::setenv("KILN_DDP_TEST", current_test().c_str(), 1);
  }
  // Waits for the copies: their failures fail this test.
  ~LaunchingTest() {
    if (!plain_program_) return;
    try {
      DDPStrategy::wait_for_peers();
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
    for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                             "MASTER_PORT", "KILN_DDP_TEST"})
      ::unsetenv(name);
  }
  // In a copy started for another test: nothing to do there.
  static bool skip_here() {
    const char* only = std::getenv("KILN_DDP_TEST");
    return started_by_a_peer() && only && current_test() != only;
  }

 private:
  bool plain_program_;
};

// A classifier without dropout (each process would draw its own masks) that logs its loss averaged
// over the processes; SGD with momentum, or AdamW.
class SyncedClassifier : public test_trainer::TinyClassifier {
 public:
  explicit SyncedClassifier(bool adamw = false) : TinyClassifier(/*dropout=*/0.0), adamw_(adamw) {}
  StepOutput training_step(const data::Batch& batch, int64_t) override {
    Tensor loss = nn::F::cross_entropy(forward(batch[0]), batch[1]);
    log("train_loss", loss, {.on_step = true, .on_epoch = true, .sync_dist = true});
    return loss;
  }
  std::vector<OptimizerConfig> configure_optimizers() override {
    if (!adamw_) return TinyClassifier::configure_optimizers();
    return {{std::make_shared<optim::AdamW>(parameters(), optim::AdamOptions{.lr = 0.05})}};
  }

 private:
  bool adamw_;
};

struct TrainedRun {
  std::vector<Tensor> params;
  double epoch_loss = 0;
  int world_size = 1;
  int rank = 0;
};

// Fits a SyncedClassifier on 40 samples (shuffled with seed 5) in batches of batch_size per process.
inline TrainedRun train(TrainerConfig config, int64_t batch_size, bool adamw = false, const std::string& resume = "") {
  SyncedClassifier model(adamw);
  Trainer trainer(test_trainer::quiet(std::move(config)));
  trainer.fit(model, {.train = test_trainer::make_loader(batch_size, /*shuffle=*/true, /*workers=*/0, /*seed=*/5)},
              resume);
  TrainedRun run{.epoch_loss = trainer.callback_metrics().at("train_loss_epoch"),
                 .world_size = trainer.world_size(),
                 .rank = trainer.global_rank()};
  for (const Tensor& p : model.parameters()) run.params.push_back(p.detach().clone());
  return run;
}

// Equal up to the order of the reductions across processes.
inline void expect_same_params(const TrainedRun& got, const TrainedRun& want, double rtol = 1e-6) {
  ASSERT_EQ(got.params.size(), want.params.size());
  for (size_t i = 0; i < got.params.size(); ++i)
    kiln::testing::expect_close(got.params[i], kiln::testing::values(want.params[i]), rtol, 1e-7,
                                "parameter " + std::to_string(i));
}

}  // namespace kiln::test_ddp
