// The optimizer updates' op definitions: checks, then the kernel on contiguous memory (a strided
// parameter is updated in a contiguous copy and written back), then the parameter's version bump.
#include "nn/optim/fused_update.h"

#include <initializer_list>

namespace kiln::optim {
namespace {

// Runs update(param', grad') with contiguous param' and grad', after checking that the gradient
// and every defined state buffer match the parameter; `op` names the optimizer in errors.
template <class Update>
void run_update(const char* op, const Tensor& param, const Tensor& grad, std::initializer_list<Tensor> states,
                Update&& update) {
  KILN_CHECK(param.is_floating(), op, ": parameters of dtype ", param.dtype(),
             " are not supported (float32, float64, float16, bfloat16)");
  KILN_CHECK(param.shape() == grad.shape() && param.dtype() == grad.dtype() && param.device() == grad.device(), op,
             ": parameter ", param.shape(), " ", param.dtype(), " on ", param.device(), " and gradient ", grad.shape(),
             " ", grad.dtype(), " on ", grad.device(), " differ");
  for (const Tensor& s : states)
    KILN_CHECK(!s.defined() || (s.shape() == param.shape() && s.dtype() == param.dtype() &&
                                s.device() == param.device() && s.is_contiguous()),
               op, ": a state buffer ", s.shape(), " ", s.dtype(), " on ", s.device(),
               " does not match its parameter ", param.shape(), " ", param.dtype(), " on ", param.device());
  const Tensor g = grad.contiguous();
  const bool direct = param.is_contiguous();
  const Tensor work = direct ? param : param.contiguous();
  update(work, g);
  if (direct) {
    param.bump_version();
  } else {
    Tensor target = param;
    target.copy_(work);
  }
}

}  // namespace

void sgd_update(const Tensor& param, const Tensor& grad, const Tensor& momentum_buffer, const SgdUpdate& h) {
  run_update("SGD", param, grad, {momentum_buffer}, [&](const Tensor& p, const Tensor& g) {
    dispatch<Op::sgd_update>(p.device(), p, g, momentum_buffer, h);
  });
}

void adam_update(const Tensor& param, const Tensor& grad, const Tensor& exp_avg, const Tensor& exp_avg_sq,
                 const Tensor& max_exp_avg_sq, const AdamUpdate& h) {
  run_update("Adam", param, grad, {exp_avg, exp_avg_sq, max_exp_avg_sq}, [&](const Tensor& p, const Tensor& g) {
    dispatch<Op::adam_update>(p.device(), p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, h);
  });
}

void rmsprop_update(const Tensor& param, const Tensor& grad, const Tensor& square_avg, const Tensor& grad_avg,
                    const Tensor& momentum_buffer, const RmspropUpdate& h) {
  run_update("RMSprop", param, grad, {square_avg, grad_avg, momentum_buffer}, [&](const Tensor& p, const Tensor& g) {
    dispatch<Op::rmsprop_update>(p.device(), p, g, square_avg, grad_avg, momentum_buffer, h);
  });
}

void adagrad_update(const Tensor& param, const Tensor& grad, const Tensor& state_sum, const AdagradUpdate& h) {
  run_update("Adagrad", param, grad, {state_sum}, [&](const Tensor& p, const Tensor& g) {
    dispatch<Op::adagrad_update>(p.device(), p, g, state_sum, h);
  });
}

}  // namespace kiln::optim
