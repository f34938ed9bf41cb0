// DDP over processes: the job's processes (started here or by a launcher), the gradient
// synchronisation during backward, and the collectives the Trainer needs for metrics, decisions
// and its log folder.
#include "train/hardware/ddp_strategy.h"

#include "autograd/grad_mode.h"
#include "distributed/data_parallel.h"
#include "distributed/launcher.h"
#include "distributed/process_group.h"
#include "tensor/error.h"
#include "tensor/factories.h"
#include "train/train_module.h"

namespace kiln {
namespace {

dist::ReduceOp reduce_op(const std::string& op) {
  if (op == "mean") return dist::ReduceOp::avg;
  if (op == "sum") return dist::ReduceOp::sum;
  if (op == "max") return dist::ReduceOp::max;
  KILN_CHECK(op == "min", "DDPStrategy::reduce: op '", op, "' is not one of: mean, sum, max, min");
  return dist::ReduceOp::min;
}

// Note [One job per process]
// torch.distributed sets its default group up once per process, and Lightning's later Trainers
// reuse it. Kiln does the same: the copies a plain program starts run the whole program again, so
// each later Trainer of that program, in every process, must join the same processes rather than
// start more. The first DDP strategy to set up starts (or joins) the job; later ones of the same
// world size share its group (and its timeout). The copies are waited for at exit.
struct Job {
  std::unique_ptr<dist::PeerProcesses> peers;
  dist::ClusterEnvironment env;
  std::shared_ptr<dist::ProcessGroup> group;
};

Job& job() {
  static Job the_job;
  return the_job;
}

}  // namespace

DDPStrategy::DDPStrategy(std::shared_ptr<Accelerator> accelerator, std::shared_ptr<Precision> precision,
                         std::shared_ptr<CheckpointIO> checkpoint_io, DDPOptions options)
    : Strategy(accelerator, accelerator ? accelerator->parse_devices(1).front() : Device(DeviceType::cpu, 0),
               std::move(precision), std::move(checkpoint_io)),
      options_(std::move(options)) {
  KILN_CHECK(options_.num_processes >= 1 && options_.num_nodes >= 1, "DDPStrategy: num_processes (",
             options_.num_processes, ") and num_nodes (", options_.num_nodes, ") must be at least 1");
  KILN_CHECK(accelerator->device_type() == DeviceType::cpu, "DDPStrategy: the ", accelerator->name(),
             " accelerator is not supported by DDP yet (NCCL comes with the CUDA backend); use accelerator = 'cpu'");
  const std::string& backend = options_.process_group_backend;
  KILN_CHECK(backend.empty() || backend == "gloo", "DDPStrategy: process_group_backend '", backend,
             "' is not available on the CPU; use 'gloo' (or leave it empty)");
  const int expected = options_.num_processes * options_.num_nodes;
  if (std::optional<dist::ClusterEnvironment> env = dist::detect_cluster_environment()) {
    KILN_CHECK(env->world_size == expected, "Trainer(devices=", options_.num_processes, ", num_nodes=",
               options_.num_nodes, ") asks for ", expected, " processes, but the ", env->source,
               " environment that launched this one has WORLD_SIZE ", env->world_size,
               ": make devices x num_nodes match the launcher's processes (kiln-run --nproc-per-node x --nnodes)");
    env_ = *env;
  } else {
    KILN_CHECK(options_.num_nodes == 1, "Trainer(num_nodes=", options_.num_nodes, "): a job on several nodes is "
               "started by a launcher on each node (kiln-run --nnodes, srun or mpirun); this process was started "
               "as a plain program");
    env_.world_size = expected;
    env_.local_world_size = expected;
    launched_here_ = true;
  }
}

DDPStrategy::~DDPStrategy() = default;

void DDPStrategy::setup_environment() {
  if (group_) return;
  Job& j = job();
  if (!j.group) {
    if (launched_here_ && env_.world_size > 1) {
      j.peers = std::make_unique<dist::PeerProcesses>(env_.world_size);
      env_ = j.peers->environment();
    }
    j.group = dist::init_process_group(env_, "gloo",
                                       {.timeout = options_.timeout, .check_agreement = options_.check_collectives});
    j.env = env_;
  }
  KILN_CHECK(j.env.world_size == env_.world_size, "Trainer: this program already runs as ", j.env.world_size,
             " processes (an earlier Trainer started or joined them), and this Trainer asks for ", env_.world_size,
             "; every Trainer of a program uses the same devices x num_nodes");
  env_ = j.env;
  group_ = j.group;
}

dist::ProcessGroup& DDPStrategy::process_group() const {
  KILN_CHECK(group_, "DDPStrategy: no process group yet (the Trainer connects it at the start of fit, validate, "
             "test or predict)");
  return *group_;
}

void DDPStrategy::setup_module(nn::Module& module) {
  Strategy::setup_module(module);
  if (wrapped_ == &module && data_parallel_) return;
  data_parallel_.reset();  // its hooks come off the previous module first
  data_parallel_ = std::make_unique<dist::DataParallel>(
      module, group_, dist::DataParallelOptions{.bucket_cap_mb = options_.bucket_cap_mb,
                                                .broadcast_buffers = options_.broadcast_buffers,
                                                .average_gradients = averages_gradients_in_backward()});
  wrapped_ = &module;
}

void DDPStrategy::teardown() {
  Strategy::teardown();  // rank 0's checkpoint files are in place before anyone goes on
  if (group_) barrier("teardown");
}

StepOutput DDPStrategy::training_step(TrainModule& module, const data::Batch& batch, int64_t batch_idx) {
  if (data_parallel_) data_parallel_->before_forward();
  return Strategy::training_step(module, batch, batch_idx);
}

void DDPStrategy::set_gradient_sync(bool sync) {
  if (data_parallel_) data_parallel_->set_require_sync(sync);
}

void DDPStrategy::reduce_gradients(nn::Module&) {
  if (data_parallel_) data_parallel_->finish_gradient_sync();
}

void DDPStrategy::wait_for_peers() {
  Job& j = job();
  std::unique_ptr<dist::PeerProcesses> peers = std::move(j.peers);
  j = {};
  if (peers) peers->wait();
}

void DDPStrategy::barrier(const std::string&) { process_group().barrier()->wait(); }

Tensor DDPStrategy::reduce(const Tensor& t, const std::string& op) {
  const dist::ReduceOp how = reduce_op(op);
  autograd::NoGradGuard no_grad;
  Tensor out = t.detach().contiguous().clone();
  process_group().all_reduce(out, how)->wait();
  return out;
}

Tensor DDPStrategy::broadcast(const Tensor& t, int src) {
  autograd::NoGradGuard no_grad;
  Tensor out = t.detach().contiguous().clone();
  process_group().broadcast(out, src)->wait();
  return out;
}

bool DDPStrategy::reduce_boolean_decision(bool decision, bool all) {
  Tensor votes = full({1}, decision ? 1 : 0, {.dtype = DType::i64});
  process_group().all_reduce(votes, dist::ReduceOp::sum)->wait();
  const int64_t yes = votes.item<int64_t>();
  return all ? yes == world_size() : yes > 0;
}

std::string DDPStrategy::broadcast_string(const std::string& s, int src) {
  return dist::broadcast_string(process_group(), s, src);
}

}  // namespace kiln
