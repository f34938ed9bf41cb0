// ZeRO stages 1 and 2 on top of DDP's processes and parameter broadcast. Stage 1 averages the
// gradients as DDP does (all-reduce during backward), then each process steps what it owns. Stage 2
// accumulates locally and averages each gradient into its owner only, at the window's end.
#include "train/hardware/zero_strategy.h"

#include <limits>

#include "distributed/data_parallel.h"
#include "distributed/zero.h"
#include "nn/optim/optimizer.h"
#include "tensor/error.h"
#include "train/hardware/mixed_precision.h"

namespace kiln {

ZeroStrategy::ZeroStrategy(int stage, std::shared_ptr<Accelerator> accelerator, std::shared_ptr<Precision> precision,
                           std::shared_ptr<CheckpointIO> checkpoint_io, DDPOptions options)
    : DDPStrategy(std::move(accelerator), std::move(precision), std::move(checkpoint_io), std::move(options)),
      stage_(stage) {
  KILN_CHECK(stage == 1 || stage == 2, "ZeroStrategy: stage must be 1 or 2, got ", stage,
             " (stage 3, the parameters sharded too, is strategy = 'fsdp')");
}

ZeroStrategy::~ZeroStrategy() = default;

const dist::ZeroShards& ZeroStrategy::shards() const {
  KILN_CHECK(shards_, "ZeroStrategy: no shards before the module is set up (fit, validate, test or predict)");
  return *shards_;
}

void ZeroStrategy::setup_module(nn::Module& module) {
  const bool same = wrapped_ == &module && shards_;
  DDPStrategy::setup_module(module);
  if (same) return;
  std::vector<Tensor> trainable;
  for (const Tensor& p : module.parameters())
    if (p.requires_grad()) trainable.push_back(p);
  shards_ = std::make_unique<dist::ZeroShards>(std::move(trainable), group_);
}

// Note [Stage 2's one reduction]
// Stage 2 has DDP's reducer check the model and share rank 0's values, but never average (no
// buckets, no hooks: averages_gradients_in_backward): every backward of a window only accumulates
// locally, and reduce_gradients() reduce-scatters the window's sum once, straight into each owner,
// after which the other processes drop those gradients. That trades DDP's overlap with backward
// for half the traffic of an all-reduce and no bucket copies of the gradients.
void ZeroStrategy::set_gradient_sync(bool sync) {
  if (stage_ == 1) return DDPStrategy::set_gradient_sync(sync);
  sync_ = sync;
}

void ZeroStrategy::reduce_gradients(nn::Module& module) {
  if (stage_ == 1) return DDPStrategy::reduce_gradients(module);
  if (!sync_) return;
  const bool overflow = shards_->reduce_scatter_gradients();
  // A loss scaler must skip the step on every process when any shard overflowed: each process's
  // unscale sees only its own gradients, so the overflow is made visible to all of them.
  const auto* mixed = dynamic_cast<const MixedPrecision*>(&precision());
  if (overflow && mixed && mixed->scaler())
    for (const auto& p : module.parameters())
      if (p.grad().defined() && p.grad().numel() > 0) {
        p.grad().reshape({-1}).narrow(0, 0, 1).fill_(std::numeric_limits<double>::infinity());
        break;
      }
}

bool ZeroStrategy::optimizer_step(optim::Optimizer& optimizer) {
  if (stage_ == 1) shards_->drop_unowned_gradients();
  const bool stepped = DDPStrategy::optimizer_step(optimizer);
  // Every process skips or steps alike (the same overflow decision), so all of them gather or none.
  if (stepped) shards_->gather_parameters();
  return stepped;
}

void ZeroStrategy::clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  if (stage_ == 1) return DDPStrategy::clip_grad_norm(params, max_norm);
  for (const Tensor& p : params) (void)shards_->owns(p);  // a parameter outside the module is refused
  shards_->clip_grad_norm(max_norm, 2.0);
}

State ZeroStrategy::optimizer_state(const optim::Optimizer& optimizer) { return shards_->consolidate(optimizer); }

void ZeroStrategy::load_optimizer_state(optim::Optimizer& optimizer, const State& state) {
  optimizer.load_state_dict(state);
  shards_->drop_unowned_state(optimizer);
}

}  // namespace kiln
