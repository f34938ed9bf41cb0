// Gradient clipping, as torch.nn.utils.clip_grad_norm_ / clip_grad_value_: both change the .grad
// of the given parameters in place (parameters without a .grad are skipped) and record no autograd.
#pragma once

#include <functional>
#include <limits>
#include <vector>

#include "tensor/tensor.h"

namespace kiln::optim {

inline constexpr double kInfNorm = std::numeric_limits<double>::infinity();

// Scales all gradients by min(1, max_norm / (total_norm + 1e-6)), where total_norm is the
// norm_type-norm of the per-gradient norms (norm_type > 0, or kInfNorm for the largest |g|).
// Returns the total norm as a 0-d tensor of the gradients' dtype (0 when no parameter has a
// gradient). A non-finite total norm turns the gradients into NaN (as torch), or throws when
// error_if_nonfinite.
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);

// The same over gradients spread across processes (ZeRO): `combine(partial, inf_norm)` turns this
// process's sum of per-gradient norm^norm_type (its largest norm, for the inf-norm; NaN when one is
// NaN) into the value over all processes. 16-bit gradients take the f32 arithmetic here.
using NormCombine = std::function<double(double partial, bool inf_norm)>;
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type, bool error_if_nonfinite,
                       const NormCombine& combine);

// Clamps every gradient element into [-clip_value, clip_value] (NaN stays NaN).
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

}  // namespace kiln::optim
