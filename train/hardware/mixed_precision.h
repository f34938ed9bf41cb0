// "bf16-mixed" and "16-mixed" (Lightning's MixedPrecision): f32 parameters and optimizer state
// (master weights), each step's forward under autocast in the low dtype, gradients back in f32.
// 16-mixed scales the loss with a GradScaler (f16's range underflows small gradients); bf16 has
// f32's range and needs none. The scaler's state goes into checkpoints.
#pragma once

#include <optional>

#include "nn/amp/grad_scaler.h"
#include "train/hardware/precision.h"

namespace kiln {

class MixedPrecision : public Precision {
 public:
  // name: "bf16-mixed" or "16-mixed"; device_type: where autocast applies. A scaler may be given
  // for 16-mixed (its options: growth interval and so on); bf16-mixed takes none.
  MixedPrecision(const std::string& name, DeviceType device_type,
                 std::optional<amp::GradScalerOptions> scaler = std::nullopt);

  DType autocast_dtype() const { return low_; }
  std::vector<DType> compute_dtypes() const override { return {DType::f32, low_}; }
  const amp::GradScaler* scaler() const { return scaler_ ? &*scaler_ : nullptr; }

  std::unique_ptr<PrecisionScope> forward_context() const override;
  void backward(const Tensor& loss) override;
  void before_optimizer_step(optim::Optimizer& optimizer) override;
  bool optimizer_step(optim::Optimizer& optimizer) override;
  Json state_dict() const override;
  void load_state_dict(const Json& state) override;

 private:
  DeviceType device_type_;
  DType low_;
  std::optional<amp::GradScaler> scaler_;
};

}  // namespace kiln
