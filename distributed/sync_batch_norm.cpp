// SyncBatchNorm and convert_sync_batchnorm (sync_batch_norm.h).
#include "distributed/sync_batch_norm.h"

#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/ops/indexing.h"
#include "autograd/ops/nn_ops.h"
#include "autograd/record.h"
#include "tensor/factories.h"

namespace kiln::dist {

namespace {

// Statistics and arithmetic in f32 (f64 for f64 inputs), as batch_norm's own.
DType stat_dtype_of(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Note [Global batch statistics]: each rank sends (count, mean, M2) per channel, M2 being the sum
// of squared deviations from its own mean, and every rank combines the gathered rows in f64 with
// Chan's parallel formula: mean = sum(n_r mean_r) / n, M2 = sum(M2_r + n_r (mean_r - mean)^2). This
// is torch's approach (an all-gather of per-rank mean, variance and count, combined by Welford's
// update) rather than an all-reduce of sum and sum of squares, whose difference loses the
// variance to cancellation when a channel's mean is large next to its spread. One all-gather of
// 2C + 1 values per rank.
struct GlobalStats {
  Tensor mean, var;  // (C), biased variance, in f64
  double count = 0;
};

GlobalStats gather_stats(ProcessGroup& group, const Tensor& x3) {
  const int64_t C = x3.size(1);
  const auto local_count = static_cast<double>(x3.size(0) * x3.size(2));
  Tensor mean = local_count > 0 ? x3.mean({0, 2}) : zeros({C}, {.dtype = x3.dtype(), .device = x3.device()});
  Tensor centred = x3 - mean.view({1, C, 1});
  Tensor m2 = (centred * centred).sum({0, 2});
  Tensor row = cat({full({1}, local_count, {.dtype = DType::f64, .device = x3.device()}), mean.to(DType::f64),
                    m2.to(DType::f64)})
                   .view({1, 2 * C + 1});
  Tensor rows = empty({group.size(), 2 * C + 1}, {.dtype = DType::f64, .device = x3.device()});
  group.all_gather(row, rows, std::vector<int64_t>(static_cast<size_t>(group.size()), 1))->wait();
  Tensor counts = rows.narrow(1, 0, 1), means = rows.narrow(1, 1, C), m2s = rows.narrow(1, C + 1, C);
  GlobalStats s;
  s.count = counts.sum().item<double>();
  KILN_CHECK(s.count > 1, "SyncBatchNorm: expected more than 1 value per channel when training, got ", s.count,
             " over all ranks (this rank's input has shape ", x3.size(0), " x ", C, " x ", x3.size(2), ")");
  s.mean = (counts * means).sum({0}) / s.count;
  Tensor spread = means - s.mean.view({1, C});
  s.var = (m2s.sum({0}) + (counts * spread * spread).sum({0})) / s.count;
  return s;
}

// running = (1 - momentum) running + momentum batch, in f64 then stored in the buffer's dtype.
void update_running(Tensor running, const Tensor& batch, double momentum) {
  running.copy_(running.to(DType::f64) * (1.0 - momentum) + batch * momentum);
}

}  // namespace

SyncBatchNorm::SyncBatchNorm(int64_t num_features, std::shared_ptr<ProcessGroup> group, nn::BatchNormOptions options)
    : BatchNorm("SyncBatchNorm", num_features, options, 2, 5), group_(std::move(group)) {
  KILN_CHECK(group_ != nullptr, "SyncBatchNorm: the process group is null");
}

Tensor SyncBatchNorm::forward(const Tensor& x) {
  // torch's rule: synchronise only in training, with more than one rank. Otherwise this is
  // BatchNorm (running statistics in eval, this rank's batch without them).
  if (!is_training() || group_->size() == 1) return BatchNorm::forward(x);
  KILN_CHECK(x.dim() >= 2 && x.dim() <= 5, "SyncBatchNorm: expected 2D to 5D input (got ", x.dim(),
             "D input of shape ", x.shape(), ")");
  KILN_CHECK(x.size(1) == num_features, "SyncBatchNorm: expected ", num_features, " channels, got input of shape ",
             x.shape());
  const DType stat = stat_dtype_of(x.dtype());
  const int64_t N = x.size(0), C = x.size(1), L = N * C == 0 ? 0 : x.numel() / (N * C);
  Tensor y, mean, rstd;
  GlobalStats s;
  {
    NoGradGuard untracked;
    const Tensor xs = x.to(stat);
    s = gather_stats(*group_, xs.reshape({N, C, L}));
    if (options.track_running_stats) {
      num_batches_tracked.add_(Scalar(int64_t{1}));
      update_running(running_mean, s.mean, options.momentum);
      update_running(running_var, s.var * (s.count / (s.count - 1)), options.momentum);  // unbiased, as torch
    }
    // batch_norm in eval form normalises with the global statistics given as its running ones.
    const Tensor w = weight.defined() ? weight.to(stat) : weight, b = bias.defined() ? bias.to(stat) : bias;
    NormOutput r = batch_norm_forward(xs, s.mean.to(stat), s.var.to(stat), w, b, /*training=*/false, 0.0, options.eps);
    y = r.output.to(x.dtype());
    mean = r.mean;
    rstd = r.rstd;
  }
  if (!autograd::needs_grad(x, weight, bias)) return y;
  // With xhat = (x - mean) rstd and n the global count, per channel:
  //   dweight = sum(dy xhat), dbias = sum(dy) over this rank's batch;
  //   dx = weight rstd (dy - sum_all(dy) / n - xhat sum_all(dy xhat) / n), the sums over all ranks.
  autograd::record("sync_batch_norm", y, {x, weight, bias},
                   [sx = SavedTensor(x), sw = SavedTensor(weight), mean, rstd, group = group_, n = s.count](
                       const Tensor& g, Needs need) {
                     const Tensor& xin = sx.get();
                     const int64_t N = xin.size(0), C = xin.size(1), L = N * C == 0 ? 0 : xin.numel() / (N * C);
                     const DType stat = mean.dtype();
                     const Tensor g3 = g.to(stat).reshape({N, C, L});
                     const Tensor x3 = xin.to(stat).reshape({N, C, L});
                     const Tensor xhat = (x3 - mean.view({1, C, 1})) * rstd.view({1, C, 1});
                     const Tensor sum_dy = g3.sum({0, 2}), sum_dy_xhat = (g3 * xhat).sum({0, 2});
                     TensorList grads(3);
                     if (need[1]) grads[1] = sum_dy_xhat;
                     if (need[2]) grads[2] = sum_dy;
                     if (need[0]) {
                       Tensor totals = cat({sum_dy, sum_dy_xhat});
                       group->all_reduce(totals, ReduceOp::sum)->wait();
                       const Tensor mean_dy = totals.narrow(0, 0, C).view({1, C, 1}) / n;
                       const Tensor mean_dy_xhat = totals.narrow(0, C, C).view({1, C, 1}) / n;
                       Tensor scale = rstd;
                       if (sw.defined()) scale = scale * sw.get().to(stat);
                       grads[0] = (scale.view({1, C, 1}) * (g3 - mean_dy - xhat * mean_dy_xhat)).view(xin.shape());
                     }
                     return grads;
                   });
  return y;
}

void SyncBatchNorm::share_state_of(nn::BatchNorm& bn) {
  KILN_CHECK(bn.num_features == num_features && bn.options.affine == options.affine &&
                 bn.options.bias == options.bias && bn.options.track_running_stats == options.track_running_stats,
             "SyncBatchNorm: can't take the state of ", bn.type_name(), "(", bn.extra_repr(), ") into SyncBatchNorm(",
             extra_repr(), ")");
  auto take = [](Tensor& member, Tensor& slot, const Tensor& theirs) {
    slot = theirs;
    member = theirs;
  };
  if (weight.defined()) take(weight, parameter("weight"), bn.weight);
  if (bias.defined()) take(bias, parameter("bias"), bn.bias);
  if (running_mean.defined()) {
    take(running_mean, buffer("running_mean"), bn.running_mean);
    take(running_var, buffer("running_var"), bn.running_var);
    take(num_batches_tracked, buffer("num_batches_tracked"), bn.num_batches_tracked);
  }
  train(bn.is_training());
}

namespace {

struct Swap {
  nn::Module* parent;
  std::string name;
  std::shared_ptr<nn::BatchNorm> old;
};

// The BatchNorm1d/2d children below `m`, depth first; `path` names them in errors.
void find_batch_norms(nn::Module& m, const std::string& path, std::vector<Swap>& out) {
  for (const auto& [name, child] : m.named_children()) {
    const std::string child_path = path.empty() ? name : path + "." + name;
    const bool plain = child->type_name() == "BatchNorm1d" || child->type_name() == "BatchNorm2d";
    if (auto bn = std::dynamic_pointer_cast<nn::BatchNorm>(child); bn && plain) {
      // Held by the parent's list, the copy named_children() returned and `bn`: three.
      KILN_CHECK(bn.use_count() <= 3, "convert_sync_batchnorm: '", child_path, "' (", child->type_name(),
                 ") is also held outside its parent's list of children (a typed member, or a handle kept elsewhere), "
                 "so its parent's forward would still call the plain layer; construct dist::SyncBatchNorm there "
                 "instead, or hold the layer only through the module tree (Sequential, ModuleList, ModuleDict)");
      out.push_back({&m, name, bn});
    } else {
      find_batch_norms(*child, child_path, out);
    }
  }
}

}  // namespace

int convert_sync_batchnorm(nn::Module& module, std::shared_ptr<ProcessGroup> group) {
  KILN_CHECK(group != nullptr, "convert_sync_batchnorm: the process group is null");
  std::vector<Swap> swaps;
  find_batch_norms(module, "", swaps);  // all checked before any change
  for (Swap& s : swaps) {
    auto sync = std::make_shared<SyncBatchNorm>(s.old->num_features, group, s.old->options);
    sync->share_state_of(*s.old);
    s.parent->replace_child(s.name, sync);
  }
  return static_cast<int>(swaps.size());
}

}  // namespace kiln::dist
