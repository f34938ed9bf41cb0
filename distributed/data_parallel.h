// DataParallel: the gradient synchronisation of DDP (torch's DistributedDataParallel reducer) for
// one module over one process group. At construction every rank checks that its parameters and
// buffers have rank 0's names, shapes and dtypes (a mismatch is a kiln::Error naming the first
// differing tensor and both shapes), then takes rank 0's values. During backward, each
// parameter's gradient, once accumulated, marks it ready; a bucket (bucket_cap_mb of gradients,
// in reverse registration order, as they become ready in backward) starts its all-reduce as soon
// as all its parameters are ready, so communication overlaps the rest of backward.
// finish_gradient_sync() waits for the buckets and writes the ranks' average into each .grad.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "distributed/process_group.h"
#include "nn/module.h"

namespace kiln::dist {

struct DataParallelOptions {
  double bucket_cap_mb = 25.0;   // torch's default; the first bucket is not special-cased
  bool broadcast_buffers = true;  // rank 0's buffers (batch-norm statistics) before each forward
  // false: the model check, rank 0's values and the buffer broadcasts only; gradients stay local
  // and no bucket memory is held (ZeRO-2 reduces them its own way).
  bool average_gradients = true;
};

// What the last synchronisation did, for benchmarks and tests.
struct DataParallelStats {
  int64_t buckets = 0;               // all-reduces launched in the last backward
  int64_t bytes = 0;                 // gradient bytes all-reduced
  double backward_overlap_ms = 0.0;  // all-reduce time that ran before backward ended
  double exposed_ms = 0.0;           // time finish_gradient_sync() waited
  // The all-reduces' busy time on the group's thread, before and after backward ended (each one
  // from its launch, or from the end of the one before it, to when it was seen done: at a later
  // gradient hook, or in finish_gradient_sync(), whose call marks the end of backward):
  // backward_overlap_ms / allreduce_ms is the fraction hidden behind backward.
  double allreduce_ms = 0.0;
};

class DataParallel {
 public:
  DataParallel(nn::Module& module, std::shared_ptr<ProcessGroup> group, DataParallelOptions options = {});
  ~DataParallel();  // removes its gradient hooks
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Called before each forward: rank 0's buffers to every rank (when broadcast_buffers).
  void before_forward();
  // While false, backward only accumulates .grad locally (torch's no_sync(), for gradient
  // accumulation); the backward after it is set true again synchronises the accumulated sum.
  void set_require_sync(bool sync) { require_sync_ = sync; }
  bool require_sync() const { return require_sync_; }
  // Waits for every bucket (launching any whose parameters got no gradient, with zeros: unused
  // parameters) and leaves each .grad equal to the ranks' mean. A no-op after a backward without
  // sync. Every rank must call it after the same backward.
  void finish_gradient_sync();

  ProcessGroup& group() const { return *group_; }
  const DataParallelStats& stats() const { return stats_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::shared_ptr<ProcessGroup> group_;
  bool require_sync_ = true;
  DataParallelStats stats_;
};

}  // namespace kiln::dist
