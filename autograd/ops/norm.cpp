// Normalisation op definitions: batch_norm, layer_norm, rms_norm and group_norm, each a forward
// (output plus the statistics backward needs) that records one node, and the explicit backward
// that node calls. Checks, torch's defaults, and the 2-d/3-d views the kernels take. Kernels:
// kernels/cpu/norm.cpp.
#include <initializer_list>
#include <limits>

#include "autograd/ops/layer_node.h"
#include "autograd/ops/nn_ops.h"
#include "tensor/dispatch.h"

namespace kiln {
namespace {

DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Note [Mixed-precision norms]: torch's CPU norms take a bf16/f16 input with f32 weight, bias and
// running statistics (what autocast hands them: a low-precision activation and f32 parameters),
// compute in f32 and return the input's dtype. Kiln runs the f32 op on x.to(f32) and casts the
// output back; both casts are differentiable, so the gradients come out as torch's: the input's
// in its dtype, the parameters' in f32.
bool low_input_f32_params(const Tensor& x, std::initializer_list<const Tensor*> params) {
  if (!x.defined() || (x.dtype() != DType::bf16 && x.dtype() != DType::f16)) return false;
  bool any = false;
  for (const Tensor* t : params) {
    if (!t->defined()) continue;
    if (t->dtype() != DType::f32) return false;
    any = true;
  }
  return any;
}

NormOutput in_input_dtype(NormOutput r, DType dtype) {
  r.output = r.output.to(dtype);
  return r;
}

void check_input(const Tensor& x, int min_dims, const char* op) {
  KILN_CHECK(x.defined(), op, ": got an undefined input");
  KILN_CHECK(x.is_floating(), op, ": expected a floating input, got ", x.dtype());
  KILN_CHECK(x.dim() >= min_dims, op, ": expected an input with at least ", min_dims, " dims, got shape ", x.shape());
}

// An optional per-feature tensor (weight, bias, running statistics): undefined, or of `shape`,
// x's dtype and device. Returned contiguous.
Tensor check_param(const Tensor& t, const Tensor& x, const Dims& shape, const char* what, const char* op) {
  if (!t.defined()) return t;
  KILN_CHECK(t.shape() == shape, op, ": expected ", what, " of shape ", shape, " for input of shape ", x.shape(),
             ", got ", t.shape());
  KILN_CHECK(t.dtype() == x.dtype(), op, ": ", what, " dtype ", t.dtype(), " differs from input dtype ", x.dtype());
  KILN_CHECK(t.device() == x.device(), op, ": ", what, " is on ", t.device(), ", the input on ", x.device());
  return t.contiguous();
}

void check_grad_out(const Tensor& grad_out, const Tensor& x, const char* op) {
  KILN_CHECK(grad_out.defined() && grad_out.shape() == x.shape(), op, ": expected grad_out of the input's shape ",
             x.shape(), ", got ", grad_out.defined() ? grad_out.shape() : Dims{});
  KILN_CHECK(grad_out.dtype() == x.dtype(), op, ": grad_out dtype ", grad_out.dtype(), " differs from input dtype ",
             x.dtype());
}

void check_stat(const Tensor& t, int64_t n, const Tensor& x, const char* what, const char* op) {
  KILN_CHECK(t.defined() && t.numel() == n && t.dtype() == stat_dtype(x.dtype()), op, ": expected ", what, " with ", n,
             " ", stat_dtype(x.dtype()), " values (as the forward saved it), got ",
             t.defined() ? t.shape() : Dims{});
}

// Product of the dims of x from `first` on.
int64_t numel_from(const Tensor& x, int first) {
  int64_t n = 1;
  for (int d = first; d < x.dim(); ++d) n *= x.size(d);
  return n;
}

struct Grads {
  Tensor x, weight, bias;
};
// Allocates the gradients the mask asks for; a weight gradient only where there is a weight.
Grads alloc_grads(const Tensor& x, const Dims& param_shape, bool has_weight, LayerGradMask mask) {
  Grads g;
  if (mask.input) g.x = make_tensor(x.shape(), x.dtype(), x.device());
  if (mask.weight && has_weight) g.weight = make_tensor(param_shape, x.dtype(), x.device());
  if (mask.bias) g.bias = make_tensor(param_shape, x.dtype(), x.device());
  return g;
}

// Checks that normalized_shape names the last dims of x.
int64_t normalized_numel(const Tensor& x, const Dims& normalized_shape, const char* op) {
  KILN_CHECK(!normalized_shape.empty() && normalized_shape.size() <= x.dim(), op, ": normalized_shape ",
             normalized_shape, " must name 1 to ", x.dim(), " trailing dims of input shape ", x.shape());
  const int first = x.dim() - normalized_shape.size();
  for (int d = 0; d < normalized_shape.size(); ++d)
    KILN_CHECK(x.size(first + d) == normalized_shape[d], op, ": normalized_shape ", normalized_shape,
               " does not match the trailing dims of input shape ", x.shape());
  return numel_from(x, first);
}

double default_rms_eps(DType t) {
  switch (t) {
    case DType::f64: return std::numeric_limits<double>::epsilon();
    case DType::f16: return 0.0009765625;  // 2^-10
    case DType::bf16: return 0.0078125;    // 2^-7
    default: return static_cast<double>(std::numeric_limits<float>::epsilon());
  }
}

}  // namespace

// ---- batch_norm

namespace {
NormOutput batch_norm_untracked(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                              const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps) {
  const char* op = "batch_norm";
  check_input(x, 2, op);
  const int64_t N = x.size(0), C = x.size(1), L = numel_from(x, 2);
  const Dims per_channel{C};
  const Tensor w = check_param(weight, x, per_channel, "weight", op);
  const Tensor b = check_param(bias, x, per_channel, "bias", op);
  check_param(running_mean, x, per_channel, "running_mean", op);
  check_param(running_var, x, per_channel, "running_var", op);
  KILN_CHECK(training || (running_mean.defined() && running_var.defined()), op,
             ": running_mean and running_var are required in eval mode (training=false)");
  KILN_CHECK(!training || N * L > 1, op, ": expected more than 1 value per channel when training, got input of shape ",
             x.shape());
  KILN_CHECK(eps >= 0, op, ": eps must be non-negative, got ", eps);
  // The kernel updates running statistics in place; a non-contiguous one goes through a copy.
  Tensor rm = running_mean.defined() ? running_mean.contiguous() : running_mean;
  Tensor rv = running_var.defined() ? running_var.contiguous() : running_var;
  NormOutput r{make_tensor(x.shape(), x.dtype(), x.device()), make_tensor(per_channel, stat_dtype(x.dtype()), x.device()),
               make_tensor(per_channel, stat_dtype(x.dtype()), x.device())};
  NormParams p{.eps = eps, .momentum = momentum, .groups = 1, .training = training};
  Tensor out3 = r.output.view({N, C, L});
  dispatch<Op::batch_norm>(x.device(), x.contiguous().view({N, C, L}), w, b, rm, rv, p, out3, r.mean, r.rstd);
  if (training && rm.defined() && !rm.is_same(running_mean)) Tensor(running_mean).copy_(rm);
  if (training && rv.defined() && !rv.is_same(running_var)) Tensor(running_var).copy_(rv);
  if (training && rm.defined()) running_mean.bump_version();  // changed in place: saved copies are stale
  if (training && rv.defined()) running_var.bump_version();
  return r;
}
}  // namespace

NormOutput batch_norm_forward(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                              const Tensor& weight, const Tensor& bias, bool training, double momentum, double eps) {
  if (low_input_f32_params(x, {&running_mean, &running_var, &weight, &bias}))
    return in_input_dtype(
        batch_norm_forward(x.to(DType::f32), running_mean, running_var, weight, bias, training, momentum, eps),
        x.dtype());
  NormOutput r;
  {
    NoGradGuard untracked;
    r = batch_norm_untracked(x, running_mean, running_var, weight, bias, training, momentum, eps);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("batch_norm", r.output, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), mean = r.mean, rstd = r.rstd, training](
                         const Tensor& g, Needs need) {
                       return detail::grad_list(
                           batch_norm_backward(g, sx.get(), sw.get(), mean, rstd, training, detail::mask_of(need)));
                     });
  return r;
}

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, double momentum, double eps) {
  return batch_norm_forward(x, running_mean, running_var, weight, bias, training, momentum, eps).output;
}

LayerGrads batch_norm_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& mean,
                               const Tensor& rstd, bool training, LayerGradMask mask) {
  const char* op = "batch_norm_backward";
  detail::refuse_recording(op, grad_out, x, weight);
  check_input(x, 2, op);
  check_grad_out(grad_out, x, op);
  const int64_t N = x.size(0), C = x.size(1), L = numel_from(x, 2);
  const Tensor w = check_param(weight, x, {C}, "weight", op);
  check_stat(mean, C, x, "mean", op);
  check_stat(rstd, C, x, "rstd", op);
  Grads g = alloc_grads(x, {C}, w.defined(), mask);
  Tensor gx3 = g.x.defined() ? g.x.view({N, C, L}) : Tensor();
  NormParams p{.training = training};
  dispatch<Op::batch_norm_backward>(x.device(), grad_out.contiguous().view({N, C, L}), x.contiguous().view({N, C, L}),
                                    w, mean.contiguous(), rstd.contiguous(), p, gx3, g.weight, g.bias);
  return {g.x, g.weight, g.bias};
}

// ---- layer_norm and rms_norm: x as (R, D) rows, D the product of normalized_shape.

namespace {
NormOutput layer_norm_untracked(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, const Tensor& bias,
                              double eps) {
  const char* op = "layer_norm";
  check_input(x, 1, op);
  const int64_t D = normalized_numel(x, normalized_shape, op), R = D ? x.numel() / D : 0;
  const Tensor w = check_param(weight, x, normalized_shape, "weight", op);
  const Tensor b = check_param(bias, x, normalized_shape, "bias", op);
  NormOutput r{make_tensor(x.shape(), x.dtype(), x.device()), make_tensor({R}, stat_dtype(x.dtype()), x.device()),
               make_tensor({R}, stat_dtype(x.dtype()), x.device())};
  Tensor out2 = r.output.view({R, D});
  dispatch<Op::layer_norm>(x.device(), x.contiguous().view({R, D}), w, b, NormParams{.eps = eps}, out2, r.mean, r.rstd);
  return r;
}
}  // namespace

NormOutput layer_norm_forward(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, const Tensor& bias,
                              double eps) {
  if (low_input_f32_params(x, {&weight, &bias}))
    return in_input_dtype(layer_norm_forward(x.to(DType::f32), normalized_shape, weight, bias, eps), x.dtype());
  NormOutput r;
  {
    NoGradGuard untracked;
    r = layer_norm_untracked(x, normalized_shape, weight, bias, eps);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("layer_norm", r.output, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), mean = r.mean, rstd = r.rstd, normalized_shape](
                         const Tensor& g, Needs need) {
                       return detail::grad_list(layer_norm_backward(g, sx.get(), normalized_shape, sw.get(), mean,
                                                                    rstd, detail::mask_of(need)));
                     });
  return r;
}

Tensor layer_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, const Tensor& bias, double eps) {
  return layer_norm_forward(x, normalized_shape, weight, bias, eps).output;
}

LayerGrads layer_norm_backward(const Tensor& grad_out, const Tensor& x, const Dims& normalized_shape,
                               const Tensor& weight, const Tensor& mean, const Tensor& rstd, LayerGradMask mask) {
  const char* op = "layer_norm_backward";
  detail::refuse_recording(op, grad_out, x, weight);
  check_input(x, 1, op);
  check_grad_out(grad_out, x, op);
  const int64_t D = normalized_numel(x, normalized_shape, op), R = D ? x.numel() / D : 0;
  const Tensor w = check_param(weight, x, normalized_shape, "weight", op);
  check_stat(mean, R, x, "mean", op);
  check_stat(rstd, R, x, "rstd", op);
  Grads g = alloc_grads(x, normalized_shape, w.defined(), mask);
  Tensor gx2 = g.x.defined() ? g.x.view({R, D}) : Tensor();
  dispatch<Op::layer_norm_backward>(x.device(), grad_out.contiguous().view({R, D}), x.contiguous().view({R, D}), w,
                                    mean.contiguous(), rstd.contiguous(), NormParams{}, gx2, g.weight, g.bias);
  return {g.x, g.weight, g.bias};
}

namespace {
NormOutput rms_norm_untracked(const Tensor& x, const Dims& normalized_shape, const Tensor& weight,
                            std::optional<double> eps) {
  const char* op = "rms_norm";
  check_input(x, 1, op);
  const int64_t D = normalized_numel(x, normalized_shape, op), R = D ? x.numel() / D : 0;
  const Tensor w = check_param(weight, x, normalized_shape, "weight", op);
  NormOutput r{make_tensor(x.shape(), x.dtype(), x.device()), Tensor(),
               make_tensor({R}, stat_dtype(x.dtype()), x.device())};
  Tensor out2 = r.output.view({R, D});
  const NormParams p{.eps = eps.value_or(default_rms_eps(x.dtype()))};
  dispatch<Op::rms_norm>(x.device(), x.contiguous().view({R, D}), w, Tensor(), p, out2, r.mean, r.rstd);
  return r;
}
}  // namespace

NormOutput rms_norm_forward(const Tensor& x, const Dims& normalized_shape, const Tensor& weight,
                            std::optional<double> eps) {
  if (low_input_f32_params(x, {&weight}))
    return in_input_dtype(rms_norm_forward(x.to(DType::f32), normalized_shape, weight, eps), x.dtype());
  NormOutput r;
  {
    NoGradGuard untracked;
    r = rms_norm_untracked(x, normalized_shape, weight, eps);
  }
  if (autograd::needs_grad(x, weight))
    autograd::record("rms_norm", r.output, {x, weight},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), rstd = r.rstd, normalized_shape](const Tensor& g,
                                                                                                       Needs need) {
                       LayerGrads grads = rms_norm_backward(g, sx.get(), normalized_shape, sw.get(), rstd,
                                                            {need[0], need[1], false});
                       return TensorList{std::move(grads.input), std::move(grads.weight)};
                     });
  return r;
}

Tensor rms_norm(const Tensor& x, const Dims& normalized_shape, const Tensor& weight, std::optional<double> eps) {
  return rms_norm_forward(x, normalized_shape, weight, eps).output;
}

LayerGrads rms_norm_backward(const Tensor& grad_out, const Tensor& x, const Dims& normalized_shape,
                             const Tensor& weight, const Tensor& rstd, LayerGradMask mask) {
  const char* op = "rms_norm_backward";
  detail::refuse_recording(op, grad_out, x, weight);
  check_input(x, 1, op);
  check_grad_out(grad_out, x, op);
  const int64_t D = normalized_numel(x, normalized_shape, op), R = D ? x.numel() / D : 0;
  const Tensor w = check_param(weight, x, normalized_shape, "weight", op);
  check_stat(rstd, R, x, "rstd", op);
  mask.bias = false;
  Grads g = alloc_grads(x, normalized_shape, w.defined(), mask);
  Tensor gx2 = g.x.defined() ? g.x.view({R, D}) : Tensor();
  dispatch<Op::rms_norm_backward>(x.device(), grad_out.contiguous().view({R, D}), x.contiguous().view({R, D}), w,
                                  Tensor(), rstd.contiguous(), NormParams{}, gx2, g.weight, g.bias);
  return {g.x, g.weight, Tensor()};
}

// ---- group_norm: x as (N, C, L).

namespace {
NormOutput group_norm_untracked(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                              double eps) {
  const char* op = "group_norm";
  check_input(x, 2, op);
  const int64_t N = x.size(0), C = x.size(1), L = numel_from(x, 2);
  KILN_CHECK(num_groups > 0 && C % num_groups == 0, op, ": the number of channels (", C, ", input of shape ", x.shape(),
             ") must be divisible by num_groups (", num_groups, ")");
  const Tensor w = check_param(weight, x, {C}, "weight", op);
  const Tensor b = check_param(bias, x, {C}, "bias", op);
  NormOutput r{make_tensor(x.shape(), x.dtype(), x.device()),
               make_tensor({N, num_groups}, stat_dtype(x.dtype()), x.device()),
               make_tensor({N, num_groups}, stat_dtype(x.dtype()), x.device())};
  Tensor out3 = r.output.view({N, C, L});
  const NormParams p{.eps = eps, .groups = num_groups};
  dispatch<Op::group_norm>(x.device(), x.contiguous().view({N, C, L}), w, b, p, out3, r.mean, r.rstd);
  return r;
}
}  // namespace

NormOutput group_norm_forward(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                              double eps) {
  if (low_input_f32_params(x, {&weight, &bias}))
    return in_input_dtype(group_norm_forward(x.to(DType::f32), num_groups, weight, bias, eps), x.dtype());
  NormOutput r;
  {
    NoGradGuard untracked;
    r = group_norm_untracked(x, num_groups, weight, bias, eps);
  }
  if (autograd::needs_grad(x, weight, bias))
    autograd::record("group_norm", r.output, {x, weight, bias},
                     [sx = SavedTensor(x), sw = SavedTensor(weight), mean = r.mean, rstd = r.rstd, num_groups](
                         const Tensor& g, Needs need) {
                       return detail::grad_list(group_norm_backward(g, sx.get(), num_groups, sw.get(), mean, rstd,
                                                                    detail::mask_of(need)));
                     });
  return r;
}

Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias, double eps) {
  return group_norm_forward(x, num_groups, weight, bias, eps).output;
}

LayerGrads group_norm_backward(const Tensor& grad_out, const Tensor& x, int64_t num_groups, const Tensor& weight,
                               const Tensor& mean, const Tensor& rstd, LayerGradMask mask) {
  const char* op = "group_norm_backward";
  detail::refuse_recording(op, grad_out, x, weight);
  check_input(x, 2, op);
  check_grad_out(grad_out, x, op);
  const int64_t N = x.size(0), C = x.size(1), L = numel_from(x, 2);
  KILN_CHECK(num_groups > 0 && C % num_groups == 0, op, ": the number of channels (", C,
             ") must be divisible by num_groups (", num_groups, ")");
  const Tensor w = check_param(weight, x, {C}, "weight", op);
  check_stat(mean, N * num_groups, x, "mean", op);
  check_stat(rstd, N * num_groups, x, "rstd", op);
  Grads g = alloc_grads(x, {C}, w.defined(), mask);
  Tensor gx3 = g.x.defined() ? g.x.view({N, C, L}) : Tensor();
  const NormParams p{.groups = num_groups};
  dispatch<Op::group_norm_backward>(x.device(), grad_out.contiguous().view({N, C, L}), x.contiguous().view({N, C, L}),
                                    w, mean.contiguous(), rstd.contiguous(), p, gx3, g.weight, g.bias);
  return {g.x, g.weight, g.bias};
}

}  // namespace kiln
