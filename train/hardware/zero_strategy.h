// ZeroStrategy: DDP with the optimizer state (stage 1) and also the gradients (stage 2) sharded
// across processes (dist::ZeroShards), Lightning's DeepSpeed stages 1 and 2 without DeepSpeed. Each
// process steps only the parameters it owns and then receives the others from their owners, so the
// optimizer state (Adam's two moments: twice the parameters) takes about 1/N of the memory per
// process. Checkpoints hold the whole optimizer state, gathered on rank 0 (Lightning's "full" state
// dict), so a run resumes at any number of processes.
#pragma once

#include <memory>

#include "train/hardware/ddp_strategy.h"

namespace kiln {
namespace dist {
class ZeroShards;
}

class ZeroStrategy : public DDPStrategy {
 public:
  ZeroStrategy(int stage, std::shared_ptr<Accelerator> accelerator, std::shared_ptr<Precision> precision,
               std::shared_ptr<CheckpointIO> checkpoint_io, DDPOptions options);
  ~ZeroStrategy() override;
  std::string name() const override { return stage_ == 1 ? "zero1" : "zero2"; }
  int stage() const { return stage_; }

  void setup_module(nn::Module& module) override;
  void set_gradient_sync(bool sync) override;
  void reduce_gradients(nn::Module& module) override;
  bool optimizer_step(optim::Optimizer& optimizer) override;
  void clip_grad_norm(const std::vector<Tensor>& params, double max_norm) override;
  State optimizer_state(const optim::Optimizer& optimizer) override;
  void load_optimizer_state(optim::Optimizer& optimizer, const State& state) override;

  // The shards, after setup_module (for tests and memory reports).
  const dist::ZeroShards& shards() const;

 private:
  bool averages_gradients_in_backward() const override { return stage_ == 1; }

  int stage_;
  bool sync_ = true;  // stage 2: whether this window's last backward has run
  std::unique_ptr<dist::ZeroShards> shards_;
};

}  // namespace kiln
