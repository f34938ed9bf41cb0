// Note [Mixed precision's step]
// Lightning's MixedPrecision runs, per optimizer step: backward of the scaled loss; unscale_ (so the
// on_before_optimizer_step hooks and gradient clipping see true gradients); scaler.step, which skips
// optimizer.step() when a gradient is inf or NaN; scaler.update. Kiln's Strategy calls
// before_optimizer_step and optimizer_step at exactly those points; a window without any gradient
// neither unscales nor steps, as in Lightning. A skipped step leaves every
// weight and optimizer state tensor untouched; the Trainer still counts the step (Lightning does).
#include "train/hardware/mixed_precision.h"

#include "autograd/autocast.h"
#include "tensor/error.h"

namespace kiln {
namespace {

class AutocastScope : public PrecisionScope {
 public:
  AutocastScope(DeviceType device_type, DType dtype) : guard_(device_type, dtype) {}

 private:
  AutocastGuard guard_;
};

// Lightning skips unscaling and the step when no batch of the window produced a loss.
bool has_gradients(const optim::Optimizer& optimizer) {
  for (const optim::ParamGroup& group : optimizer.param_groups())
    for (const Tensor& p : group.params)
      if (p.grad().defined()) return true;
  return false;
}

DType low_dtype(const std::string& name) {
  KILN_CHECK(name == "bf16-mixed" || name == "16-mixed", "MixedPrecision: '", name,
             "' is not one of: bf16-mixed, 16-mixed");
  return name == "bf16-mixed" ? DType::bf16 : DType::f16;
}

}  // namespace

MixedPrecision::MixedPrecision(const std::string& name, DeviceType device_type,
                               std::optional<amp::GradScalerOptions> scaler)
    : Precision(name, DType::f32), device_type_(device_type), low_(low_dtype(name)) {
  KILN_CHECK(!(scaler && low_ == DType::bf16), "MixedPrecision('bf16-mixed'): bf16 has f32's exponent range and takes "
             "no loss scaler");
  if (low_ == DType::f16) scaler_.emplace(scaler.value_or(amp::GradScalerOptions{}));
}

std::unique_ptr<PrecisionScope> MixedPrecision::forward_context() const {
  return std::make_unique<AutocastScope>(device_type_, low_);
}

void MixedPrecision::backward(const Tensor& loss) {
  if (scaler_) scaler_->scale(loss).backward();
  else loss.backward();
}

void MixedPrecision::before_optimizer_step(optim::Optimizer& optimizer) {
  if (scaler_ && has_gradients(optimizer)) scaler_->unscale_(optimizer);
}

bool MixedPrecision::optimizer_step(optim::Optimizer& optimizer) {
  if (!scaler_) return Precision::optimizer_step(optimizer);
  if (!has_gradients(optimizer)) return false;
  const bool stepped = scaler_->step(optimizer);
  scaler_->update();
  return stepped;
}

Json MixedPrecision::state_dict() const { return scaler_ ? Json{{"scaler", scaler_->state_dict()}} : Json::object(); }

void MixedPrecision::load_state_dict(const Json& state) {
  if (!scaler_) return;
  KILN_CHECK(state.contains("scaler"), "MixedPrecision('", name(), "'): the checkpoint holds no loss scaler state");
  scaler_->load_state_dict(state.at("scaler"));
}

}  // namespace kiln
