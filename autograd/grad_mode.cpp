// The thread-local grad and anomaly switches. Grad mode's flag is dispatch's (Note [Kernels never
// record] in tensor/dispatch.h), which turns it off around every kernel.
#include "autograd/grad_mode.h"

#include "tensor/dispatch.h"

namespace kiln::autograd {
namespace {
thread_local bool anomaly_enabled = false;
thread_local bool inference_mode = false;
}  // namespace

bool is_grad_enabled() { return detail::t_grad_enabled && !inference_mode; }
void set_grad_enabled(bool enabled) { detail::t_grad_enabled = enabled; }
bool is_inference_mode_enabled() { return inference_mode; }
void set_inference_mode(bool enabled) { inference_mode = enabled; }
bool is_anomaly_enabled() { return anomaly_enabled; }
void set_detect_anomaly(bool enabled) { anomaly_enabled = enabled; }

}  // namespace kiln::autograd
