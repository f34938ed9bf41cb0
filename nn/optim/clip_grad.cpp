// clip_grad_norm_ and clip_grad_value_ (see clip_grad.h). Per-gradient norms use Kiln's norm op
// (so any device works), rounded to the gradients' dtype as torch's are; the norm of those norms
// and the clip coefficient follow torch's arithmetic in that dtype (for 16-bit gradients: torch's
// ops on 0-d 16-bit tensors, each computing in float and rounding).
#include "nn/optim/clip_grad.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/ops/indexing.h"
#include "tensor/factories.h"

namespace kiln::optim {
namespace {

// The gradients of params that have one (handles sharing the .grad tensors).
std::vector<Tensor> present_grads(const std::vector<Tensor>& params, const char* op) {
  std::vector<Tensor> grads;
  for (size_t i = 0; i < params.size(); ++i) {
    KILN_CHECK(params[i].defined(), op, ": parameter ", i, " is an undefined tensor");
    const Tensor& g = params[i].grad();
    if (!g.defined()) continue;
    KILN_CHECK(g.is_floating(), op, ": the gradient of parameter ", i, " has dtype ", g.dtype(),
               "; expected a floating dtype");
    grads.push_back(g);
  }
  return grads;
}

// Rounds v to dtype's precision (the total norm is a tensor of the gradients' dtype in torch).
double round_to(double v, DType dtype) {
  return dtype == DType::f64 ? v : full({}, v, {.dtype = dtype}).item<double>();
}

}  // namespace

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite) {
  return clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite, nullptr);
}

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite,
                       const NormCombine& combine) {
  KILN_CHECK(norm_type > 0, "clip_grad_norm_: norm_type must be > 0 or inf, got ", norm_type);
  KILN_CHECK(!std::isnan(max_norm), "clip_grad_norm_: max_norm is nan");
  NoGradGuard no_grad;
  std::vector<Tensor> grads = present_grads(params, "clip_grad_norm_");
  if (grads.empty() && !combine) return zeros({});
  const DType dtype = grads.empty() ? DType::f32 : grads.front().dtype();
  for (const Tensor& g : grads)
    KILN_CHECK(g.dtype() == dtype, "clip_grad_norm_: gradients of dtypes ", dtype, " and ", g.dtype(),
               " cannot be clipped together; clip each dtype's parameters separately");

  const bool inf_norm = std::isinf(norm_type);
  const bool is_16bit = (dtype == DType::bf16 || dtype == DType::f16) && !combine;
  double total = 0;
  if (is_16bit) {
    // torch's vector_norm of the stacked 16-bit norms, which computes in float: the same op here.
    std::vector<Tensor> norms;
    for (const Tensor& g : grads)
      if (g.numel() > 0) norms.push_back(g.norm(norm_type));
    if (!norms.empty()) total = stack(norms).norm(norm_type).item<double>();
  } else {
    bool saw_nan = false;
    for (const Tensor& g : grads) {
      if (g.numel() == 0) continue;
      const double n = g.norm(norm_type).item<double>();
      saw_nan |= std::isnan(n);
      if (inf_norm) total = std::max(total, n);
      else total += norm_type == 2 ? n * n : std::pow(n, norm_type);
    }
    if (saw_nan) total = std::nan("");
    if (combine) total = combine(total, inf_norm);
    if (!inf_norm) total = norm_type == 2 ? std::sqrt(total) : std::pow(total, 1.0 / norm_type);
    total = round_to(total, dtype);
  }

  KILN_CHECK(!error_if_nonfinite || std::isfinite(total), "clip_grad_norm_: the total norm of order ", norm_type,
             " of the gradients is non-finite (", total, "), so they cannot be clipped; pass error_if_nonfinite = "
             "false to clip anyway (the gradients become nan)");

  // clip_coef = max_norm / (total + 1e-6), clamped to at most 1 (NaN stays NaN), in the grads' dtype.
  double coef;
  if (dtype == DType::f64) {
    coef = max_norm / (total + 1e-6);
    if (coef > 1.0) coef = 1.0;
  } else if (is_16bit) {
    // torch: `max_norm / (total + 1e-6)` is reciprocal(total + 1e-6) * max_norm, three ops on a 0-d
    // 16-bit tensor; add casts its scalar to the dtype, mul takes max_norm in float.
    const auto f = [](double v) { return static_cast<float>(v); };
    const float shifted = f(round_to(f(total) + f(round_to(f(1e-6), dtype)), dtype));
    const float reciprocal = f(round_to(1.0f / shifted, dtype));
    float c = f(round_to(reciprocal * f(max_norm), dtype));
    if (c > 1.0f) c = 1.0f;
    coef = c;
  } else {
    float c = static_cast<float>(max_norm) / (static_cast<float>(total) + static_cast<float>(1e-6));
    if (c > 1.0f) c = 1.0f;
    coef = c;
  }
  for (Tensor& g : grads) g.mul_(coef);
  return full({}, total, {.dtype = dtype});
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  KILN_CHECK(!std::isnan(clip_value), "clip_grad_value_: clip_value is nan");
  NoGradGuard no_grad;
  for (Tensor& g : present_grads(params, "clip_grad_value_")) g.copy_(g.clamp(-clip_value, clip_value));
}

}  // namespace kiln::optim
