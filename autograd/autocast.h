// Autocast (torch.autocast): a thread-local region in which listed ops cast their floating inputs
// before they run, so that matrix products and convolutions run in bf16/f16 while losses run in
// f32. AutocastGuard is the region; the hooks below are called at the top of each listed op
// (Note [Autocast hooks]). Defined in autograd/autocast.cpp.
#pragma once

#include <cstddef>
#include <optional>
#include <utility>
#include <vector>

#include "tensor/device.h"
#include "tensor/dtype.h"
#include "tensor/tensor.h"

namespace kiln {

// torch.autocast(device_type, dtype, enabled, cache_enabled) for a scope. dtype defaults to bf16
// on the CPU and f16 on CUDA; only bf16 and f16 are accepted (kiln::Error otherwise, where torch
// warns and disables). Nests: the destructor restores the previous state, and leaving the
// outermost guard (enabled or not) clears the weight cast cache. The state is per thread.
class AutocastGuard {
 public:
  explicit AutocastGuard(DeviceType device_type = DeviceType::cpu, std::optional<DType> dtype = std::nullopt,
                         bool enabled = true, bool cache_enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  DeviceType device_type_;
  bool prev_enabled_, prev_cache_enabled_;
  DType prev_dtype_;
};

bool is_autocast_enabled(DeviceType device_type);
DType autocast_dtype(DeviceType device_type);  // the dtype the device's region casts to (or would)
bool is_autocast_cache_enabled();
void clear_autocast_cache();
// How many weight casts the cache holds on this thread (Note [Autocast weight cache]); for tests.
size_t autocast_cache_size();

namespace autocast {

// Note [Autocast hooks]: an op on one of torch's CPU autocast lists opens with
//   if (autocast::active()) return autocast::run<autocast::Policy::lower_precision>(mm, a, b);
// run casts the floating Tensor arguments on an autocast-enabled device (f64 ones excepted, as
// torch's is_eligible) and calls the op again with autocast suspended, as torch's Autocast
// dispatch key does with itself excluded: the op and whatever it calls see plain inputs, so a
// composite never casts twice. The casts are differentiable .to(dtype) recorded before the op
// records, so gradients reach each input in its own dtype. With autocast off the hook costs one
// thread-local load and a branch. The lists (torch 2.15's AutocastCPU, restricted to Kiln's ops):
//   lower_precision: mm, bmm, matmul, addmm, linear, linear_relu, conv1d, conv2d,
//                    conv_transpose2d, scaled_dot_product_attention (and attention_weights)
//   fp32:            prod, cross_entropy (and cross_entropy_rows), nll_loss, mse_loss, l1_loss,
//                    smooth_l1_loss, binary_cross_entropy_with_logits, kl_div
//   promote:         cat, stack (the widest floating input: f32 if any, else the autocast dtype)
// Every other op runs in its inputs' dtypes.
enum class Policy { lower_precision, fp32, promote };

namespace detail {
extern constinit thread_local bool t_active;  // some device enabled, and not suspended
Tensor cast(Policy policy, const Tensor& t, DType promoted);
DType promote_type(const std::vector<const Tensor*>& tensors);

// Autocast off for the op's own body, back on after it.
class Suspend {
 public:
  Suspend();
  ~Suspend();
  Suspend(const Suspend&) = delete;
  Suspend& operator=(const Suspend&) = delete;

 private:
  bool previous_;
};

inline void collect(std::vector<const Tensor*>& out, const Tensor& t) { out.push_back(&t); }
inline void collect(std::vector<const Tensor*>& out, const std::vector<Tensor>& ts) {
  for (const Tensor& t : ts) out.push_back(&t);
}
template <class T>
void collect(std::vector<const Tensor*>&, const T&) {}

inline Tensor cast_arg(Policy p, const Tensor& t, DType promoted) { return cast(p, t, promoted); }
inline std::vector<Tensor> cast_arg(Policy p, const std::vector<Tensor>& ts, DType promoted) {
  std::vector<Tensor> out;
  out.reserve(ts.size());
  for (const Tensor& t : ts) out.push_back(cast(p, t, promoted));
  return out;
}
template <class T>
const T& cast_arg(Policy, const T& arg, DType) {
  return arg;
}
}  // namespace detail

inline bool active() { return detail::t_active; }

// Calls op(args...) with every floating Tensor argument (and each Tensor of a vector) cast per
// policy, with autocast suspended. Tensors inside argument structs are the caller's to cast
// (cast_fp32 / cast_lower below).
template <Policy policy, class R, class... Params, class... Args>
R run(R (*op)(Params...), const Args&... args) {
  DType promoted = DType::f32;
  if constexpr (policy == Policy::promote) {
    std::vector<const Tensor*> tensors;
    (detail::collect(tensors, args), ...);
    promoted = detail::promote_type(tensors);
  }
  detail::Suspend suspend;
  return op(detail::cast_arg(policy, args, promoted)...);
}

// One tensor cast as the fp32 / lower_precision policies would (for tensors held in structs).
inline Tensor cast_fp32(const Tensor& t) { return detail::cast(Policy::fp32, t, DType::f32); }
inline Tensor cast_lower(const Tensor& t) { return detail::cast(Policy::lower_precision, t, DType::f32); }

}  // namespace autocast
}  // namespace kiln
