// Precision: how a run holds its numbers and runs backward and the optimizer step (Lightning's
// Precision plugins). The loops call only these hooks, in this order per step:
//   forward_context() around each *_step, backward(loss), before_optimizer_step(optimizer) before the
//   step hooks and gradient clipping (the grads as the user should see them), optimizer_step(optimizer).
// Here: "32-true" (this class), "64-true" and "bf16-true"/"16-true" (TruePrecision: the module and
// the batches' floating fields in that dtype), "bf16-mixed"/"16-mixed" (mixed_precision.h).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/data/dataset.h"
#include "nn/module.h"
#include "nn/optim/optimizer.h"
#include "tensor/state_dict.h"

namespace kiln {

class Accelerator;

// What forward_context() returns: holds a setting (autocast) for as long as it lives.
class PrecisionScope {
 public:
  virtual ~PrecisionScope() = default;
};

class Precision {
 public:
  Precision() : Precision("32-true", DType::f32) {}
  virtual ~Precision() = default;
  const std::string& name() const { return name_; }
  DType param_dtype() const { return param_dtype_; }  // the module's floating parameters after convert_module
  // The dtypes the accelerator must compute in for this precision (checked before a run starts).
  virtual std::vector<DType> compute_dtypes() const { return {param_dtype_}; }

  virtual void convert_module(nn::Module& module) const;
  virtual data::Batch convert_batch(const data::Batch& batch) const;  // floating fields to param_dtype
  virtual std::unique_ptr<PrecisionScope> forward_context() const { return nullptr; }
  virtual void backward(const Tensor& loss) { loss.backward(); }
  // Before on_before_optimizer_step and gradient clipping (a loss scaler unscales the grads here).
  virtual void before_optimizer_step(optim::Optimizer&) {}
  // Returns false when the step was skipped (a loss scaler found inf/NaN gradients).
  virtual bool optimizer_step(optim::Optimizer& optimizer) {
    optimizer.step();
    return true;
  }
  virtual Json state_dict() const { return Json::object(); }  // a loss scaler's state
  virtual void load_state_dict(const Json&) {}

 protected:
  Precision(std::string name, DType param_dtype) : name_(std::move(name)), param_dtype_(param_dtype) {}

 private:
  std::string name_;
  DType param_dtype_;
};

// "64-true", "bf16-true", "16-true": parameters, inputs and all math in one dtype (Lightning's
// DoublePrecision and HalfPrecision). The 16-bit ones halve parameter and activation memory.
class TruePrecision : public Precision {
 public:
  explicit TruePrecision(const std::string& name);  // "64-true", "bf16-true", "16-true"
};

// The precisions Trainer(precision = ...) takes, Lightning's spellings ("bf16" for "bf16-mixed",
// "32" for "32-true", ...) resolved to these names.
std::vector<std::string> precision_names();
std::string canonical_precision_name(const std::string& name);  // throws with the valid names

}  // namespace kiln
