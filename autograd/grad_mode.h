// Grad mode and anomaly mode: thread-local switches that op definitions and the engine read.
// NoGradGuard turns recording off (optimizer updates, evaluation); EnableGradGuard turns it back on
// inside such a region; DetectAnomalyGuard makes backward name the op that produced a NaN/Inf.
#pragma once

namespace kiln::autograd {

bool is_grad_enabled();
void set_grad_enabled(bool enabled);
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
using autograd::NoGradGuard;
}  // namespace kiln
