// The optimizers' elementwise updates, one fused pass per parameter over contiguous CPU memory
// (f32 or f64). Each follows the order of operations of torch's single-tensor (foreach=False)
// implementation, rounding to the parameter's dtype where torch does, so results match it to a
// few ulps. State buffers must be contiguous with the parameter's shape and dtype; the parameter
// and gradient may be strided. Callers hold a NoGradGuard.
#pragma once

#include "tensor/tensor.h"

namespace kiln::optim {

struct SgdUpdate {
  double lr, momentum, dampening, weight_decay;
  bool nesterov, maximize;
  bool first_step;  // the momentum buffer is set to the gradient instead of decayed (torch's clone)
};
// momentum_buffer: undefined when momentum == 0.
void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdUpdate& h);

struct AdamUpdate {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled_weight_decay, amsgrad, maximize;
  double step;  // already incremented
};
// max_exp_avg_sq: undefined unless amsgrad.
void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                 const Tensor& max_exp_avg_sq, const AdamUpdate& h);

struct RmspropUpdate {
  double lr, alpha, eps, weight_decay, momentum;
  bool centered, maximize;
};
// grad_avg: undefined unless centered; momentum_buffer: undefined unless momentum > 0.
void rmsprop_update(const Tensor& param, const Tensor& grad, const Tensor& square_avg, const Tensor& grad_avg,
                    const Tensor& momentum_buffer, const RmspropUpdate& h);

struct AdagradUpdate {
  double lr, lr_decay, eps, weight_decay;
  bool maximize;
  double step;  // already incremented
};
void adagrad_update(const Tensor& param, const Tensor& grad, const Tensor& state_sum, const AdagradUpdate& h);

}  // namespace kiln::optim
