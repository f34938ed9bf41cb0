// The optimizers' elementwise updates, one fused pass per parameter, as ops (Op::sgd_update, ...;
// kernels/cpu/optimizer_update.cpp). Each follows the order of operations of torch's single-tensor
// (foreach=False) implementation, rounding to the parameter's dtype where torch does, so results
// match it to a few ulps (bfloat16/float16: bit for bit with torch's vectorised loops, Note [16-bit
// updates] in kernels/cpu/optimizer_update.cpp). State buffers must be contiguous with the
// parameter's shape, dtype and device; the parameter and gradient may be strided. Callers hold a
// NoGradGuard.
#pragma once

#include "tensor/dispatch.h"

namespace kiln::optim {

// momentum_buffer: undefined when momentum == 0.
void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdUpdate& h);
// max_exp_avg_sq: undefined unless amsgrad.
void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                 const Tensor& max_exp_avg_sq, const AdamUpdate& h);
// grad_avg: undefined unless centered; momentum_buffer: undefined unless momentum > 0.
void rmsprop_update(const Tensor& param, const Tensor& grad, const Tensor& square_avg, const Tensor& grad_avg,
                    const Tensor& momentum_buffer, const RmspropUpdate& h);
void adagrad_update(const Tensor& param, const Tensor& grad, const Tensor& state_sum, const AdagradUpdate& h);

}  // namespace kiln::optim
