// Grad mode and anomaly mode: thread-local switches that op definitions and the engine read.
// NoGradGuard turns recording off (optimizer updates, evaluation); EnableGradGuard turns it back on
// inside such a region; InferenceModeGuard turns it off so that EnableGradGuard cannot turn it
// back on; DetectAnomalyGuard makes backward name the op that produced a NaN/Inf.
#pragma once

namespace kiln::autograd {

bool is_grad_enabled();
void set_grad_enabled(bool enabled);
bool is_inference_mode_enabled();
void set_inference_mode(bool enabled);
bool is_anomaly_enabled();
void set_detect_anomaly(bool enabled);

// Sets grad mode for a scope and restores the previous mode on exit.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled) : previous_(is_grad_enabled()) { set_grad_enabled(enabled); }
  ~GradModeGuard() { set_grad_enabled(previous_); }
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool previous_;
};

struct NoGradGuard : GradModeGuard {
  NoGradGuard() : GradModeGuard(false) {}
};
struct EnableGradGuard : GradModeGuard {
  EnableGradGuard() : GradModeGuard(true) {}
};

// torch.inference_mode for a scope: is_grad_enabled() is false inside, whatever grad mode says, so
// no graph is recorded. Grad mode is also turned off, so an EnableGradGuard inside restores "off".
// Kiln has no inference-tensor kind: tensors made inside are ordinary tensors. enabled = false:
// the guard does nothing (the Trainer's inference_mode = false).
class InferenceModeGuard {
 public:
  explicit InferenceModeGuard(bool enabled = true)
      : enabled_(enabled), previous_(is_inference_mode_enabled()), grad_(enabled ? false : is_grad_enabled()) {
    if (enabled_) set_inference_mode(true);
  }
  ~InferenceModeGuard() {
    if (enabled_) set_inference_mode(previous_);
  }
  InferenceModeGuard(const InferenceModeGuard&) = delete;
  InferenceModeGuard& operator=(const InferenceModeGuard&) = delete;

 private:
  bool enabled_;
  bool previous_;
  GradModeGuard grad_;
};

class DetectAnomalyGuard {
 public:
  explicit DetectAnomalyGuard(bool enabled = true) : previous_(is_anomaly_enabled()) { set_detect_anomaly(enabled); }
  ~DetectAnomalyGuard() { set_detect_anomaly(previous_); }
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace kiln::autograd

namespace kiln {
using autograd::EnableGradGuard;
using autograd::InferenceModeGuard;
using autograd::NoGradGuard;
}  // namespace kiln
