// SyncBatchNorm (torch.nn.SyncBatchNorm): batch normalisation whose training statistics cover the
// batch of every rank of a process group, with a backward that accounts for them, and
// convert_sync_batchnorm() to swap a model's BatchNorm1d/2d layers for it. Eval mode, and a group
// of one rank, run plain BatchNorm (bit for bit).
#pragma once

#include <memory>

#include "distributed/process_group.h"
#include "nn/layers/norm.h"

namespace kiln::dist {

// x (N, C, *) with 2 to 5 dims. Parameters and buffers are BatchNorm's, under BatchNorm's names.
// Every rank must run forward (and backward) of its SyncBatchNorm layers in the same order: each
// training forward is one all-gather, each backward that needs the input's gradient one
// all-reduce. The weight and bias gradients are this rank's own sums (DDP averages them).
class SyncBatchNorm : public nn::BatchNorm {
 public:
  SyncBatchNorm(int64_t num_features, std::shared_ptr<ProcessGroup> group, nn::BatchNormOptions options = {});
  Tensor forward(const Tensor& x) override;

  // Takes bn's tensors themselves (not copies) as this layer's parameters and buffers, and its
  // training mode, so that optimizers and hooks that hold them keep working.
  void share_state_of(nn::BatchNorm& bn);
  ProcessGroup& group() const { return *group_; }

 private:
  std::shared_ptr<ProcessGroup> group_;
};

// Replaces every BatchNorm1d/2d below `module` (not `module` itself) with a SyncBatchNorm over
// `group` that shares its tensors: state_dict keys and values stay the same. Returns how many were
// replaced. A BatchNorm that something besides its parent's list of children holds (a typed
// member, a handle kept by the caller) is refused before anything changes, because whoever holds it
// would go on calling the plain layer: build such a model with SyncBatchNorm directly.
int convert_sync_batchnorm(nn::Module& module, std::shared_ptr<ProcessGroup> group);

}  // namespace kiln::dist
