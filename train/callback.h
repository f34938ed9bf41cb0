// Callback: the extension point of the Trainer (Lightning's Callback surface). Every hook is a
// typed virtual no-op, called directly by the loops in Lightning's order (see trainer.h). A
// callback with state (ModelCheckpoint's best score, EarlyStopping's patience count) saves it
// through state_dict(), under state_key() in the checkpoint.
#pragma once

#include <cstdint>
#include <string>

#include "io/data/dataset.h"
#include "tensor/state_dict.h"
#include "train/step_output.h"

namespace kiln {

class Trainer;
class TrainModule;
namespace optim {
class Optimizer;
}

class Callback {
 public:
  virtual ~Callback() = default;

  // Identifies the callback's state in a checkpoint; override when two instances can coexist.
  virtual std::string state_key() const { return name(); }
  virtual std::string name() const = 0;

  virtual void setup(Trainer&, TrainModule&, const std::string& stage) {}
  virtual void teardown(Trainer&, TrainModule&, const std::string& stage) {}
  virtual void on_fit_start(Trainer&, TrainModule&) {}
  virtual void on_fit_end(Trainer&, TrainModule&) {}
  virtual void on_sanity_check_start(Trainer&, TrainModule&) {}
  virtual void on_sanity_check_end(Trainer&, TrainModule&) {}
  virtual void on_train_start(Trainer&, TrainModule&) {}
  virtual void on_train_end(Trainer&, TrainModule&) {}
  virtual void on_train_epoch_start(Trainer&, TrainModule&) {}
  virtual void on_train_epoch_end(Trainer&, TrainModule&) {}
  virtual void on_train_batch_start(Trainer&, TrainModule&, const data::Batch&, int64_t batch_idx) {}
  // outputs: what training_step returned, its loss detached and, under automatic optimization,
  // divided by accumulate_grad_batches (Lightning's ClosureResult); the module's hook sees the same.
  virtual void on_train_batch_end(Trainer&, TrainModule&, const StepOutput& outputs, const data::Batch&,
                                  int64_t batch_idx) {}
  virtual void on_before_zero_grad(Trainer&, TrainModule&, optim::Optimizer&) {}
  virtual void on_before_backward(Trainer&, TrainModule&, const Tensor& loss) {}
  virtual void on_after_backward(Trainer&, TrainModule&) {}
  virtual void on_before_optimizer_step(Trainer&, TrainModule&, optim::Optimizer&) {}
  virtual void on_validation_start(Trainer&, TrainModule&) {}
  virtual void on_validation_end(Trainer&, TrainModule&) {}
  virtual void on_validation_epoch_start(Trainer&, TrainModule&) {}
  virtual void on_validation_epoch_end(Trainer&, TrainModule&) {}
  virtual void on_validation_batch_start(Trainer&, TrainModule&, const data::Batch&, int64_t batch_idx) {}
  virtual void on_validation_batch_end(Trainer&, TrainModule&, const StepOutput& outputs, const data::Batch&,
                                       int64_t batch_idx) {}
  virtual void on_test_start(Trainer&, TrainModule&) {}
  virtual void on_test_end(Trainer&, TrainModule&) {}
  virtual void on_test_epoch_start(Trainer&, TrainModule&) {}
  virtual void on_test_epoch_end(Trainer&, TrainModule&) {}
  virtual void on_test_batch_start(Trainer&, TrainModule&, const data::Batch&, int64_t batch_idx) {}
  virtual void on_test_batch_end(Trainer&, TrainModule&, const StepOutput& outputs, const data::Batch&,
                                 int64_t batch_idx) {}
  virtual void on_predict_start(Trainer&, TrainModule&) {}
  virtual void on_predict_end(Trainer&, TrainModule&) {}
  virtual void on_predict_batch_start(Trainer&, TrainModule&, const data::Batch&, int64_t batch_idx) {}
  virtual void on_predict_batch_end(Trainer&, TrainModule&, const Tensor& prediction, const data::Batch&,
                                    int64_t batch_idx) {}
  virtual void on_exception(Trainer&, TrainModule&, const std::exception&) {}
  virtual void on_save_checkpoint(Trainer&, TrainModule&, State&) {}
  virtual void on_load_checkpoint(Trainer&, TrainModule&, const State&) {}

  virtual Json state_dict() const { return Json::object(); }
  virtual void load_state_dict(const Json&) {}
};

}  // namespace kiln
