// ZeRO stages 1 and 2 (Rajbhandari et al., 2020) for the parameters of one module over a process
// group: each parameter is owned by one rank, which alone keeps its optimizer state and steps it;
// every rank then receives the updated parameters from their owners. Stage 2 also shards the
// gradients: they are averaged straight into their owners (a reduce-scatter) and dropped elsewhere.
// Whole parameters are owned (as torch's ZeroRedundancyOptimizer partitions), so any optimizer
// works unchanged: it skips parameters without a gradient and never makes state for them.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "distributed/process_group.h"
#include "tensor/state_dict.h"

namespace kiln::optim {
class Optimizer;
}

namespace kiln::dist {

// Owners for parameters of these sizes: largest first, each to the rank holding the fewest
// elements so far (ties: the lower rank). The same on every rank.
std::vector<int> assign_owners(const std::vector<int64_t>& numels, int world_size);

class ZeroShards {
 public:
  // `params`: the module's trainable parameters, in the same order on every rank.
  ZeroShards(std::vector<Tensor> params, std::shared_ptr<ProcessGroup> group);

  int owner(size_t i) const { return owners_[i]; }
  bool owns(const Tensor& param) const;
  // Elements of the parameters this rank owns (what its optimizer state scales with).
  int64_t owned_numel() const;

  // Stage 1, before the step: gradients (already averaged everywhere) of parameters owned
  // elsewhere are dropped, so the optimizer skips them.
  void drop_unowned_gradients();
  // Stage 2: each owned gradient becomes the ranks' mean (a reduce-scatter over a flat buffer laid
  // out by owner); the others are dropped. A parameter without a gradient on a rank counts as zeros
  // there. Returns whether any rank's owned gradients hold a non-finite value.
  bool reduce_scatter_gradients();
  // The global `norm_type`-norm of the sharded gradients (each rank's owned ones), as
  // optim::clip_grad_norm_ would compute over all of them, and the clipping it implies applied to
  // the owned gradients. Returns the total norm.
  double clip_grad_norm(double max_norm, double norm_type);
  // After the step: every parameter from its owner (an all-gather per dtype).
  void gather_parameters();

  // The optimizer's full state (torch's layout) on rank 0, from every owner's part; other ranks get
  // an empty State. Collective: every rank calls it.
  State consolidate(const optim::Optimizer& optimizer) const;
  // After a full state was loaded on every rank: drops what this rank does not own.
  void drop_unowned_state(optim::Optimizer& optimizer) const;

 private:
  std::vector<Tensor> params_;
  std::vector<int> owners_;
  std::unordered_map<const TensorImpl*, int> owner_of_;  // the same, by parameter (owns() per step)
  std::shared_ptr<ProcessGroup> group_;
};

}  // namespace kiln::dist
