// ProcessGroup: the collectives among the ranks of one job (torch.distributed's ProcessGroup),
// over Gloo for CPU tensors (process_group_gloo.cpp) and NCCL for CUDA tensors. Every rank calls
// the same collectives in the same order. Each call returns at once with a Work handle; the
// operations of one group run in that order on the group's own thread, so a bucket's all-reduce
// can run while backward goes on. A peer that died or stopped calling collectives turns into a
// kiln::Error on the other ranks after the group's timeout, never a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace kiln::dist {

class Store;
struct ClusterEnvironment;

enum class ReduceOp { sum, avg, max, min };
const char* to_string(ReduceOp op);

// A collective in flight. wait() blocks until it is done and rethrows its error (a kiln::Error
// naming the collective, the rank and the cause); the tensors it writes are valid after wait().
class Work {
 public:
  explicit Work(std::shared_future<void> done) : done_(std::move(done)) {}
  void wait() const { done_.get(); }
  bool is_completed() const { return done_.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }

 private:
  std::shared_future<void> done_;
};
using WorkPtr = std::shared_ptr<Work>;

// Tensors passed to a collective are contiguous, on the group's device, and of one dtype on every
// rank (checked on this rank; a mismatch between ranks that changes the byte count is caught by
// the backend as a size error). Results are written into the tensors' storage. The caller keeps
// nothing alive: the Work holds what it needs.
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;
  virtual std::string backend() const = 0;  // "gloo", "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::chrono::milliseconds timeout() const = 0;

  // In place, element by element over the ranks. avg divides the sum by size() (integer dtypes:
  // rounds toward zero, as torch). bool: sum and max are "or", min is "and". f16/bf16 accumulate
  // in f32 within each step of the backend's reduction and round once per step.
  virtual WorkPtr all_reduce(const Tensor& tensor, ReduceOp op = ReduceOp::sum) = 0;
  // `tensor` on rank `src` is copied into `tensor` on every other rank (same shape everywhere).
  virtual WorkPtr broadcast(const Tensor& tensor, int src = 0) = 0;
  // output = the ranks' inputs concatenated along dim 0 in rank order. counts[r] = rank r's
  // input.size(0) (uneven allowed; output.size(0) = their sum; trailing dims equal).
  virtual WorkPtr all_gather(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts) = 0;
  // input = size() pieces along dim 0 (piece r has counts[r] rows); rank r's output (counts[r]
  // rows) gets piece r reduced over the ranks.
  virtual WorkPtr reduce_scatter(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts,
                                 ReduceOp op = ReduceOp::sum) = 0;
  virtual WorkPtr barrier() = 0;
  // Point to point; a send is matched by the recv on `src` with the same tag.
  virtual WorkPtr send(const Tensor& tensor, int dst, int tag = 0) = 0;
  virtual WorkPtr recv(const Tensor& tensor, int src, int tag = 0) = 0;

  // Conveniences that wait: equal counts (input.size(0) on every rank).
  Tensor all_gather(const Tensor& input);
  // Every rank's input.size(0) first (one small all-gather), then the gather: uneven sizes.
  Tensor all_gather_uneven(const Tensor& input);
  Tensor reduce_scatter(const Tensor& input, ReduceOp op = ReduceOp::sum);  // size() equal pieces
};

// Rank src's string on every rank (its length, then its bytes: two broadcasts).
std::string broadcast_string(ProcessGroup& group, const std::string& text, int src = 0);

struct ProcessGroupOptions {
  // For each collective, from its start. torch's default is 30 minutes; a fault test sets seconds.
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
  // The address this rank listens on for its peers. Empty: KILN_SOCKET_IFNAME (or
  // GLOO_SOCKET_IFNAME) names an interface; else the local address that routes to the store.
  std::string host;
  // Each collective first checks that every rank called the same one with the same dtype and
  // sizes (Note [Collective agreement] in process_group_gloo.cpp): a mismatch is a kiln::Error on
  // every rank rather than an abort inside Gloo or a short result. One small all-gather each.
  // Off: a mismatch is still an error, but only after the timeout (Note [Tags]).
  bool check_agreement = true;
};

// A Gloo group of `size` ranks meeting through `store` (each rank publishes its address there).
std::shared_ptr<ProcessGroup> make_gloo_group(std::shared_ptr<Store> store, int rank, int size,
                                              const ProcessGroupOptions& options = {});

// The job's default group from where the launcher put this process: the TcpStore at
// env.master_addr:master_port (served by global rank 0, or by kiln-run when KILN_AGENT_STORE=1,
// under the prefix of KILN_RESTART_COUNT), then a group of `backend` ("gloo"; "nccl" with CUDA).
std::shared_ptr<ProcessGroup> init_process_group(const ClusterEnvironment& env, const std::string& backend = "gloo",
                                                 const ProcessGroupOptions& options = {});

}  // namespace kiln::dist
