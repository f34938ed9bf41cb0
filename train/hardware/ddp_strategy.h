// DDPStrategy: data-parallel training over processes (Lightning's DDPStrategy). Each process holds
// the whole model and trains on its share of every batch (a DistributedSampler, set up by the
// Trainer); gradients are averaged across processes during backward (dist::DataParallel), so every
// process takes the same optimizer step. Started as a plain program it starts its peers itself
// (dist::PeerProcesses); under kiln-run, srun or mpirun it joins the job they started.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "distributed/cluster_environment.h"
#include "train/hardware/strategy.h"

namespace kiln {
namespace dist {
class DataParallel;
class PeerProcesses;
class ProcessGroup;
}  // namespace dist

struct DDPOptions {
  int num_processes = 1;  // per node: Trainer(devices = ...)
  int num_nodes = 1;
  std::string process_group_backend;  // empty: gloo on the CPU, nccl on CUDA
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};  // of each collective (torch's default)
  double bucket_cap_mb = 25.0;
  bool broadcast_buffers = true;
  // Check before every collective that all processes called the same one with the same sizes (one
  // extra small exchange each; dist::ProcessGroupOptions::check_agreement). Off, as torch without
  // TORCH_DISTRIBUTED_DEBUG: the Trainer's own collectives agree by construction, DDP checks the
  // model once, and a mismatch (a metric logged with sync_dist on some processes only) is still an
  // error, after the timeout instead of at once.
  bool check_collectives = false;
};

class DDPStrategy : public Strategy {
 public:
  DDPStrategy(std::shared_ptr<Accelerator> accelerator, std::shared_ptr<Precision> precision,
              std::shared_ptr<CheckpointIO> checkpoint_io, DDPOptions options);
  ~DDPStrategy() override;
  std::string name() const override { return "ddp"; }

  void setup_environment() override;
  void setup_module(nn::Module& module) override;
  void teardown() override;

  StepOutput training_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx) override;
  void set_gradient_sync(bool sync) override;
  void reduce_gradients(nn::Module& module) override;

  int world_size() const override { return env_.world_size; }
  int global_rank() const override { return env_.rank; }
  int local_rank() const override { return env_.local_rank; }
  void barrier(const std::string& name = "") override;
  Tensor reduce(const Tensor& t, const std::string& op = "mean") override;
  Tensor broadcast(const Tensor& t, int src = 0) override;
  bool reduce_boolean_decision(bool decision, bool all = true) override;
  std::string broadcast_string(const std::string& s, int src = 0) override;

  // Ends this process's job (Note [One job per process]): with the copies this program started (a
  // plain program with devices = N), waits until they have exited, and throws a kiln::Error naming
  // one that failed. The next DDP Trainer starts or joins a new job.
  static void wait_for_peers();
  // The job's process group, after setup_environment().
  dist::ProcessGroup& process_group() const;
  const DDPOptions& options() const { return options_; }

 protected:
  // Whether DDP's reducer averages the gradients during backward (ZeRO-2 reduces them itself).
  virtual bool averages_gradients_in_backward() const { return true; }

  DDPOptions options_;
  dist::ClusterEnvironment env_;
  bool launched_here_ = false;  // no launcher set this process up: setup_environment() starts the peers
  std::shared_ptr<dist::ProcessGroup> group_;
  std::unique_ptr<dist::DataParallel> data_parallel_;
  nn::Module* wrapped_ = nullptr;  // the module data_parallel_ synchronises
};

}  // namespace kiln
