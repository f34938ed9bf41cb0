// The concrete choices behind a TrainerConfig (STYLE L14): which accelerator, strategy and
// precision a run uses, resolved once by resolve_plan(), which also rejects invalid settings by
// listing the valid ones. CPU single-device with 32-true or 64-true is what exists today; the
// interfaces are where CUDA, mixed precision and the distributed strategies plug in.
#pragma once

#include <memory>
#include <string>

#include "io/data/dataset.h"
#include "nn/module.h"
#include "nn/optim/optimizer.h"
#include "train/config.h"

namespace kiln {

// How numbers are held and how backward/step run (Lightning's Precision plugin). A mixed-precision
// subclass will scale the loss in backward() and unscale/skip in optimizer_step().
class Precision {
 public:
  explicit Precision(std::string name, DType dtype) : name_(std::move(name)), dtype_(dtype) {}
  virtual ~Precision() = default;
  const std::string& name() const { return name_; }
  DType param_dtype() const { return dtype_; }

  virtual void convert_module(nn::Module& module) const;
  virtual data::Batch convert_batch(const data::Batch& batch) const;  // floating fields to param_dtype
  virtual void backward(const Tensor& loss) const { loss.backward(); }
  // Returns false when the step was skipped (a loss scaler found inf/NaN gradients).
  virtual bool optimizer_step(optim::Optimizer& optimizer) const {
    optimizer.step();
    return true;
  }
  virtual Json state_dict() const { return Json::object(); }  // a loss scaler's state
  virtual void load_state_dict(const Json&) {}

 private:
  std::string name_;
  DType dtype_;
};

// Where the model lives and how gradients are combined across processes (Lightning's Strategy).
class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const { return "single_device"; }
  virtual Device root_device() const { return Device::cpu(); }
  virtual void setup_module(nn::Module& module) const { module.to(root_device()); }
  virtual void reduce_gradients(nn::Module&) const {}  // DDP all-reduces here
  virtual int world_size() const { return 1; }
  virtual int global_rank() const { return 0; }
  bool is_global_zero() const { return global_rank() == 0; }
};

struct Plan {
  std::string accelerator;  // "cpu"
  std::unique_ptr<Strategy> strategy;
  std::unique_ptr<Precision> precision;
  int64_t max_epochs = 1000;
};

Plan resolve_plan(const TrainerConfig& config);

}  // namespace kiln
