// BatchNorm1d/2d, LayerNorm, RMSNorm and GroupNorm (see norm.h).
#include "nn/layers/norm.h"

#include "autograd/grad_mode.h"
#include "nn/functional.h"
#include "nn/init.h"
#include "tensor/factories.h"

namespace kiln::nn {

BatchNorm::BatchNorm(const char* type_name, int64_t features, BatchNormOptions opts, int min_dims, int max_dims)
    : Module(type_name), num_features(features), options(opts), min_dims_(min_dims), max_dims_(max_dims) {
  KILN_CHECK(features > 0, type_name, ": num_features must be positive, got ", features);
  KILN_CHECK(opts.momentum >= 0 && opts.momentum <= 1, type_name, ": momentum must be in [0, 1], got ", opts.momentum);
  if (opts.affine) {
    weight = register_parameter("weight", empty({features}));
    if (opts.bias) bias = register_parameter("bias", empty({features}));
  }
  if (opts.track_running_stats) {
    running_mean = register_buffer("running_mean", zeros({features}));
    running_var = register_buffer("running_var", ones({features}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, {.dtype = DType::i64}));
  }
  reset_parameters();
}

void BatchNorm::reset_running_stats() {
  if (!options.track_running_stats) return;
  init::zeros_(running_mean);
  init::ones_(running_var);
  NoGradGuard no_grad;
  num_batches_tracked.zero_();
}

void BatchNorm::reset_parameters() {
  reset_running_stats();
  if (!options.affine) return;
  init::ones_(weight);
  if (bias.defined()) init::zeros_(bias);
}

Tensor BatchNorm::forward(const Tensor& x) {
  KILN_CHECK(
      x.dim() >= min_dims_ && x.dim() <= max_dims_, type_name(), ": expected ",
      min_dims_ == max_dims_ ? detail::concat(min_dims_, "D") : detail::concat(min_dims_, "D or ", max_dims_, "D"),
      " input (got ", x.dim(), "D input of shape ", x.shape(), ")");
  if (is_training() && options.track_running_stats) {
    NoGradGuard no_grad;
    num_batches_tracked.add_(Scalar(int64_t{1}));
  }
  // Batch statistics when training, or when there are no running statistics to use.
  const bool use_batch_stats = is_training() || !options.track_running_stats;
  const bool pass_running = !is_training() || options.track_running_stats;
  return F::batch_norm(x, pass_running ? running_mean : Tensor(), pass_running ? running_var : Tensor(), weight, bias,
                       use_batch_stats, options.momentum, options.eps);
}

std::string BatchNorm::extra_repr() const {
  return detail::concat(num_features, ", eps=", float_text(options.eps), ", momentum=", float_text(options.momentum),
                        ", affine=", bool_text(options.affine), ", bias=", bool_text(options.bias),
                        ", track_running_stats=", bool_text(options.track_running_stats));
}

BatchNorm1d::BatchNorm1d(int64_t features, BatchNormOptions opts) : BatchNorm("BatchNorm1d", features, opts, 2, 3) {}
BatchNorm2d::BatchNorm2d(int64_t features, BatchNormOptions opts) : BatchNorm("BatchNorm2d", features, opts, 4, 4) {}

LayerNorm::LayerNorm(const Dims& shape, LayerNormOptions opts)
    : Module("LayerNorm"), normalized_shape(shape), options(opts) {
  KILN_CHECK(!shape.empty(), "LayerNorm: normalized_shape must have at least one dim");
  if (opts.elementwise_affine) {
    weight = register_parameter("weight", ones(shape));
    if (opts.bias) bias = register_parameter("bias", zeros(shape));
  }
}

Tensor LayerNorm::forward(const Tensor& x) { return F::layer_norm(x, normalized_shape, weight, bias, options.eps); }

std::string LayerNorm::extra_repr() const {
  return tuple_text(normalized_shape) + ", eps=" + float_text(options.eps) +
         ", elementwise_affine=" + bool_text(options.elementwise_affine) + ", bias=" + bool_text(options.bias);
}

RMSNorm::RMSNorm(const Dims& shape, RMSNormOptions opts) : Module("RMSNorm"), normalized_shape(shape), options(opts) {
  KILN_CHECK(!shape.empty(), "RMSNorm: normalized_shape must have at least one dim");
  if (opts.elementwise_affine) weight = register_parameter("weight", ones(shape));
}

Tensor RMSNorm::forward(const Tensor& x) { return F::rms_norm(x, normalized_shape, weight, options.eps); }

std::string RMSNorm::extra_repr() const {
  return tuple_text(normalized_shape) + ", eps=" + (options.eps ? float_text(*options.eps) : "None") +
         ", elementwise_affine=" + bool_text(options.elementwise_affine);
}

GroupNorm::GroupNorm(int64_t groups, int64_t channels, GroupNormOptions opts)
    : Module("GroupNorm"), num_groups(groups), num_channels(channels), options(opts) {
  KILN_CHECK(groups > 0 && channels % groups == 0, "GroupNorm: num_channels (", channels,
             ") must be divisible by num_groups (", groups, ")");
  if (opts.affine) {
    weight = register_parameter("weight", ones({channels}));
    if (opts.bias) bias = register_parameter("bias", zeros({channels}));
  }
}

Tensor GroupNorm::forward(const Tensor& x) { return F::group_norm(x, num_groups, weight, bias, options.eps); }

std::string GroupNorm::extra_repr() const {
  return detail::concat(num_groups, ", ", num_channels, ", eps=", float_text(options.eps),
                        ", affine=", bool_text(options.affine), ", bias=", bool_text(options.bias));
}

}  // namespace kiln::nn
