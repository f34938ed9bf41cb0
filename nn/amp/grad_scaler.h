// kiln::amp::GradScaler: dynamic loss scaling for f16 mixed precision, with torch.amp.GradScaler's
// contract (scale, unscale_, step, update, state_dict). The Trainer's mixed-precision plugin calls
// it; a user's own loop may too. It changes .grad tensors and the scale, never the forward.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>

#include "nn/optim/optimizer.h"
#include "tensor/state_dict.h"
#include "tensor/tensor.h"

namespace kiln::amp {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;  // false: every method is a pass-through (scale(loss) returns loss, step() just steps)
};

// One iteration: scale(loss).backward(); [unscale_(opt); clip]; step(opt) for each optimizer;
// update(). Every optimizer goes READY -> UNSCALED (unscale_) -> STEPPED (step) and back to READY
// at update(); calls out of that order are a kiln::Error, as torch raises.
class GradScaler {
 public:
  // Checks: init_scale finite (in f32) and > 0, growth_factor finite and > 1, 0 < backoff_factor < 1,
  // growth_interval >= 1. Checked when disabled too.
  explicit GradScaler(GradScalerOptions options = {});

  // loss * scale, in loss's dtype and recorded by autograd, so backward scales every gradient.
  Tensor scale(const Tensor& loss) const;
  // Divides every .grad of `optimizer`'s parameters by the scale, in place (grads of parameters
  // without one are skipped), and records whether any of them holds inf or NaN. Once per optimizer
  // per iteration; a second call before update(), or a call after step(), is a kiln::Error.
  // f16/bf16 gradients are unscaled in f32 as torch's kernel does (torch.amp refuses f16 ones;
  // Kiln's optimizers hold f32/f64 parameters today, so 16-bit gradients come only from a group
  // given 16-bit parameters directly).
  void unscale_(optim::Optimizer& optimizer);
  // unscale_ if not done yet for this optimizer, then optimizer.step() unless its grads held inf or
  // NaN. Returns true when it stepped. A second step() of one optimizer before update() is an error.
  bool step(optim::Optimizer& optimizer);
  // After every step() of the iteration: an inf/NaN seen by any optimizer multiplies the scale by
  // backoff_factor and resets the growth tracker; else the tracker counts, and at growth_interval
  // the scale grows by growth_factor (unless that overflows f32) and the tracker resets. new_scale
  // sets the scale instead (finite, > 0). Forgets the per-optimizer records. Without any unscale_ or
  // step() since the last update(), and without new_scale, it is an error (as torch).
  void update(std::optional<double> new_scale = {});

  double get_scale() const;  // 1.0 when disabled (as torch)
  bool is_enabled() const { return options_.enabled; }
  int64_t growth_tracker() const;  // consecutive unskipped iterations since the last change; 0 when disabled
  const GradScalerOptions& options() const { return options_; }
  // Whether this iteration's unscale_ of `optimizer` found inf/NaN; nullopt before it (torch's
  // _found_inf_per_device). For logging skipped steps and for tests.
  std::optional<bool> found_inf(const optim::Optimizer& optimizer) const;

  // Torch's keys: scale, growth_factor, backoff_factor, growth_interval, _growth_tracker. An empty
  // object when disabled (as torch).
  Json state_dict() const;
  // Restores those keys (a disabled scaler ignores the state, as torch). A missing key, a value of
  // the wrong type or out of range, or an empty state is a kiln::Error, and leaves the scaler as it was.
  void load_state_dict(const Json& state);

 private:
  enum class Stage { ready, unscaled, stepped };
  struct Record {
    Stage stage = Stage::ready;
    bool found_inf = false;
    int64_t grads_checked = 0;  // torch refuses to step an optimizer whose parameters had no .grad
  };

  GradScalerOptions options_;
  float scale_;  // Note [GradScaler arithmetic in f32]
  int64_t growth_tracker_ = 0;
  std::unordered_map<const optim::Optimizer*, Record> records_;  // torch's per-optimizer states, by identity
};

}  // namespace kiln::amp
