// The losses of torch.nn.functional, as compositions of differentiable ops: each follows torch's
// formula (including how weights normalise a mean and how label smoothing mixes in), so values and
// gradients match torch's. A fused cross-entropy kernel would be a measured promotion of this one.
#include <cmath>

#include "autograd/autocast.h"
#include "autograd/ops/indexing.h"
#include "autograd/ops/reduce.h"
#include "nn/functional.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"

namespace kiln::nn::functional {

namespace {

Tensor reduce(const Tensor& loss, Reduction r, const char* op) {
  KILN_CHECK(r != Reduction::batchmean, op, ": reduction 'batchmean' is only valid for kl_div (use none, mean or sum)");
  if (r == Reduction::none) return loss;
  return r == Reduction::sum ? loss.sum() : loss.mean();
}

void check_same_shape(const Tensor& input, const Tensor& target, const char* op) {
  KILN_CHECK(input.shape() == target.shape(), op, ": input shape ", input.shape(), " and target shape ",
             target.shape(), " differ");
  KILN_CHECK(input.is_floating(), op, ": expected a floating input, got ", input.dtype());
}

int64_t class_dim_of(const Tensor& input, const char* op) {
  KILN_CHECK(input.dim() >= 1, op, ": input must have a class dimension, got a 0-d tensor");
  return input.dim() >= 2 ? 1 : 0;
}

// The shape a class-index target must have: input's without the class dim.
void check_index_target(const Tensor& input, const Tensor& target, int64_t class_dim, const char* op) {
  KILN_CHECK(target.dtype() == DType::i64 || target.dtype() == DType::i32, op,
             ": class-index targets must be int64 (or int32), got ", target.dtype());
  Dims expected = input.shape();
  expected.erase(static_cast<int>(class_dim));
  KILN_CHECK(target.shape() == expected, op, ": input ", input.shape(), " needs a target of shape ", expected,
             ", got ", target.shape());
}

// The per-class weight laid along the class dim of an input with `dims` dims: (C, 1, 1, ...).
Tensor weight_along_class_dim(const Tensor& weight, int64_t class_dim, int dims) {
  Dims shape = Dims::filled(dims - static_cast<int>(class_dim), 1);
  shape[0] = weight.numel();
  return weight.reshape(shape);
}

void check_class_weight(const Tensor& weight, int64_t classes, const char* op) {
  if (!weight.defined()) return;
  KILN_CHECK(weight.dim() == 1 && weight.size(0) == classes, op, ": weight must have shape [", classes,
             "] (one per class), got ", weight.shape());
}

}  // namespace

Tensor nll_loss(const Tensor& input, const Tensor& target, const NllLossArgs& args) {
  if (autocast::active()) {  // the class weights are cast too, as torch casts every floating argument
    const NllLossArgs cast_args{autocast::cast_fp32(args.weight), args.ignore_index, args.reduction};
    return autocast::run<autocast::Policy::fp32>(nll_loss, input, target, cast_args);
  }
  const char* op = "nll_loss";
  const int64_t class_dim = class_dim_of(input, op);
  const int64_t classes = input.size(class_dim);
  check_index_target(input, target, class_dim, op);
  check_class_weight(args.weight, classes, op);
  const Tensor index = target.to(DType::i64);
  const Tensor valid = index != args.ignore_index;
  const Tensor safe_index = where(valid, index, Scalar(int64_t{0}));
  if (safe_index.numel() > 0) {
    const int64_t lo = safe_index.amin().item<int64_t>(), hi = safe_index.amax().item<int64_t>();
    KILN_CHECK(lo >= 0 && hi < classes, op, ": target ", lo < 0 ? lo : hi, " is out of bounds for ", classes,
               " classes");
  }
  const Tensor picked = gather(input, class_dim, safe_index.unsqueeze(class_dim)).squeeze(class_dim);
  Tensor w = valid.to(input.dtype());
  if (args.weight.defined())
    w = w * index_select(args.weight.to(input.dtype()), 0, safe_index.reshape({-1})).view(index.shape());
  // where, not a product with w alone: an ignored target's gradient is then 0 even when the mean
  // divides by a zero total weight (every target ignored: the loss is 0/0 = nan, the gradient 0,
  // as torch's backward, which skips ignored targets).
  const Tensor loss = where(valid, -picked * w, 0.0);
  KILN_CHECK(args.reduction != Reduction::batchmean, op, ": reduction 'batchmean' is only valid for kl_div");
  if (args.reduction == Reduction::none) return loss;
  if (args.reduction == Reduction::sum) return loss.sum();
  return loss.sum() / w.sum();  // a weighted mean; 0/0 = nan when every target is ignored, as torch
}

Tensor cross_entropy(const Tensor& input, const Tensor& target, const CrossEntropyArgs& args) {
  if (autocast::active()) {
    CrossEntropyArgs cast_args = args;
    cast_args.weight = autocast::cast_fp32(args.weight);
    return autocast::run<autocast::Policy::fp32>(cross_entropy, input, target, cast_args);
  }
  const char* op = "cross_entropy";
  const int64_t class_dim = class_dim_of(input, op);
  const int64_t classes = input.size(class_dim);
  check_class_weight(args.weight, classes, op);
  KILN_CHECK(args.label_smoothing >= 0 && args.label_smoothing <= 1, op,
             ": label_smoothing must be between 0.0 and 1.0, got ", args.label_smoothing);
  KILN_CHECK(input.is_floating(), op, ": expected floating logits, got ", input.dtype());
  // Note [Fused cross-entropy] (autograd/ops/linalg.cpp): the common case in one kernel.
  const bool fused_case = input.dim() == 2 && !target.is_floating() && !args.weight.defined() &&
                          args.label_smoothing == 0 && (input.dtype() == DType::f32 || input.dtype() == DType::f64) &&
                          has_kernel<Op::cross_entropy>(input.device()) &&
                          has_kernel<Op::cross_entropy_backward>(input.device());
  if (fused_case) {  // cross_entropy_rows checks the target itself
    KILN_CHECK(args.reduction != Reduction::batchmean, op, ": reduction 'batchmean' is only valid for kl_div");
    const Tensor loss = cross_entropy_rows(input, target, args.ignore_index);
    if (args.reduction == Reduction::none) return loss;
    if (args.reduction == Reduction::sum) return loss.sum();
    // The mean over the targets not ignored: 0/0 = nan when all are, as torch.
    return loss.sum() / (target != args.ignore_index).sum().to(input.dtype());
  }
  const Tensor logp = log_softmax(input, class_dim);
  const double eps = args.label_smoothing;
  const Tensor class_weight =
      args.weight.defined() ? weight_along_class_dim(args.weight.to(input.dtype()), class_dim, input.dim()) : Tensor();

  if (target.is_floating()) {  // class probabilities
    KILN_CHECK(target.shape() == input.shape(), op, ": probability targets must have the input's shape ",
               input.shape(), ", got ", target.shape());
    KILN_CHECK(args.reduction != Reduction::batchmean, op, ": reduction 'batchmean' is only valid for kl_div");
    const Tensor probs = eps > 0 ? target * (1 - eps) + eps / static_cast<double>(classes) : target;
    Tensor terms = logp * probs;
    if (class_weight.defined()) terms = terms * class_weight;
    const Tensor loss = -terms.sum({class_dim});
    if (args.reduction == Reduction::none) return loss;
    if (args.reduction == Reduction::sum) return loss.sum();
    return loss.sum() / static_cast<double>(input.numel() / std::max<int64_t>(classes, 1));
  }

  const Tensor nll = nll_loss(logp, target, {.weight = args.weight, .ignore_index = args.ignore_index,
                                             .reduction = args.reduction});
  if (eps == 0) return nll;
  // torch's label smoothing: (1 - eps) * nll + eps / C * (the loss against a uniform target).
  const Tensor ignored = target.to(DType::i64) == args.ignore_index;
  Tensor smooth = class_weight.defined() ? -(logp * class_weight).sum({class_dim}) : -logp.sum({class_dim});
  smooth = masked_fill(smooth, ignored, 0.0);
  Tensor smooth_reduced;
  switch (args.reduction) {
    case Reduction::none: smooth_reduced = smooth; break;
    case Reduction::sum: smooth_reduced = smooth.sum(); break;
    default: {
      const Tensor kept = logical_not(ignored).to(input.dtype());
      if (!args.weight.defined()) {
        smooth_reduced = smooth.sum() / kept.sum();
      } else {
        const Tensor safe = where(ignored, Scalar(int64_t{0}), target.to(DType::i64));
        const Tensor w = index_select(args.weight.to(input.dtype()), 0, safe.reshape({-1})).view(safe.shape());
        smooth_reduced = smooth.sum() / (w * kept).sum();
      }
    }
  }
  return nll * (1 - eps) + smooth_reduced * (eps / static_cast<double>(classes));
}

Tensor mse_loss(const Tensor& input, const Tensor& target, const LossArgs& args) {
  if (autocast::active()) return autocast::run<autocast::Policy::fp32>(mse_loss, input, target, args);
  check_same_shape(input, target, "mse_loss");
  const Tensor diff = input - target;
  return reduce(diff * diff, args.reduction, "mse_loss");
}

Tensor l1_loss(const Tensor& input, const Tensor& target, const LossArgs& args) {
  if (autocast::active()) return autocast::run<autocast::Policy::fp32>(l1_loss, input, target, args);
  check_same_shape(input, target, "l1_loss");
  return reduce((input - target).abs(), args.reduction, "l1_loss");
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, const SmoothL1Args& args) {
  if (autocast::active()) return autocast::run<autocast::Policy::fp32>(smooth_l1_loss, input, target, args);
  const char* op = "smooth_l1_loss";
  check_same_shape(input, target, op);
  KILN_CHECK(args.beta >= 0, op, ": beta must be non-negative, got ", args.beta);
  const Tensor d = (input - target).abs();
  if (args.beta == 0) return reduce(d, args.reduction, op);
  // 0.5 d^2 / beta inside |d| < beta, d - 0.5 beta outside: continuous value and slope at beta.
  const Tensor loss = where(d < args.beta, d * d * (0.5 / args.beta), d - 0.5 * args.beta);
  return reduce(loss, args.reduction, op);
}

Tensor binary_cross_entropy_with_logits(const Tensor& input, const Tensor& target, const BceWithLogitsArgs& args) {
  if (autocast::active()) {
    const BceWithLogitsArgs cast_args{autocast::cast_fp32(args.weight), autocast::cast_fp32(args.pos_weight),
                                      args.reduction};
    return autocast::run<autocast::Policy::fp32>(binary_cross_entropy_with_logits, input, target, cast_args);
  }
  const char* op = "binary_cross_entropy_with_logits";
  check_same_shape(input, target, op);
  // log(1 + exp(-x)) written as log1p(exp(-|x|)) + relu(-x), which cannot overflow.
  const Tensor log_sigmoid_neg = (-input.abs()).exp().log1p() + (-input).relu();  // -log(sigmoid(x))
  Tensor loss;
  if (args.pos_weight.defined()) {
    KILN_CHECK(
        args.pos_weight.numel() == 1 || (args.pos_weight.dim() >= 1 && args.pos_weight.size(-1) == input.size(-1)), op,
        ": pos_weight of shape ", args.pos_weight.shape(), " does not match the class dim of input ", input.shape());
    const Tensor log_weight = (args.pos_weight.to(input.dtype()) - 1.0) * target + 1.0;
    loss = (1.0 - target) * input + log_weight * log_sigmoid_neg;
  } else {
    loss = (1.0 - target) * input + log_sigmoid_neg;
  }
  if (args.weight.defined()) loss = loss * args.weight.to(input.dtype());
  return reduce(loss, args.reduction, op);
}

Tensor kl_div(const Tensor& input, const Tensor& target, const KlDivArgs& args) {
  if (autocast::active()) return autocast::run<autocast::Policy::fp32>(kl_div, input, target, args);
  const char* op = "kl_div";
  check_same_shape(input, target, op);
  Tensor loss;
  if (args.log_target) {
    loss = target.exp() * (target - input);
  } else {
    // xlogy(t, t) - t * input: a zero target contributes 0, not 0 * log 0 = nan.
    const Tensor positive = target > 0.0;
    const Tensor t_log_t = where(positive, target * where(positive, target, 1.0).log(), 0.0);
    loss = t_log_t - target * input;
  }
  if (args.reduction == Reduction::batchmean)  // a 0-d input has no batch dim: torch gives the sum
    return input.dim() == 0 ? loss.sum() : loss.sum() / static_cast<double>(input.size(0));
  return reduce(loss, args.reduction, op);
}

}  // namespace kiln::nn::functional
