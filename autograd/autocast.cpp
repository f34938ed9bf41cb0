// Autocast's thread-local state (per device type: enabled and dtype; cache switch, nesting depth,
// the weight cast cache) and the casts the op hooks make (Note [Autocast hooks] in autocast.h).
#include "autograd/autocast.h"

#include <unordered_map>

#include "autograd/grad_mode.h"

namespace kiln {
namespace {

struct State {
  bool enabled[kNumDeviceTypes] = {false, false};
  DType dtype[kNumDeviceTypes] = {DType::bf16, DType::f16};  // torch's defaults
  bool cache_enabled = true;
  bool suspended = false;  // inside an op that autocast already cast for (detail::Suspend)
  int nesting = 0;         // live AutocastGuards, enabled or not
};
constinit thread_local State t_state;

// Note [Autocast weight cache]: a weight used by several ops in one forward is cast once. As
// torch's cached_cast, the cache holds the low-precision copy of an f32 leaf that requires grad,
// made while grad mode is on (a copy made under no_grad has no edge to the leaf, and would cut
// the gradient of a later use with grad on), and lives until the outermost guard exits. The key is
// the source's TensorImpl; the entry holds the source too, so that its address cannot be reused
// by another tensor while the entry lives.
struct CachedCast {
  Tensor source, cast;
};
thread_local std::unordered_map<const TensorImpl*, CachedCast> t_cache;

void refresh_active() {
  autocast::detail::t_active = !t_state.suspended && (t_state.enabled[0] || t_state.enabled[1]);
}

int index_of(DeviceType t) { return static_cast<int>(t); }

// torch's is_eligible: a defined floating tensor, not f64, on a device whose autocast is on.
bool eligible(const Tensor& t) {
  return t.defined() && t.is_floating() && t.dtype() != DType::f64 && t_state.enabled[index_of(t.device().type)];
}

Tensor cached_cast(const Tensor& t, DType to) {
  const bool cacheable = t_state.cache_enabled && t.dtype() == DType::f32 &&
                         to == t_state.dtype[index_of(t.device().type)] && t.requires_grad() && t.is_leaf() &&
                         autograd::is_grad_enabled();
  if (!cacheable) return t.to(to);
  auto it = t_cache.find(t.impl());
  if (it != t_cache.end()) return it->second.cast;
  Tensor cast = t.to(to);
  t_cache.emplace(t.impl(), CachedCast{t, cast});
  return cast;
}

}  // namespace

AutocastGuard::AutocastGuard(DeviceType device_type, std::optional<DType> dtype, bool enabled, bool cache_enabled)
    : device_type_(device_type) {
  const int d = index_of(device_type);
  const DType to = dtype.value_or(d == index_of(DeviceType::cpu) ? DType::bf16 : DType::f16);
  KILN_CHECK(to == DType::bf16 || to == DType::f16, "autocast: ", device_type_name(device_type),
             " autocast supports the dtypes bfloat16 and float16, got ", to);
  prev_enabled_ = t_state.enabled[d];
  prev_dtype_ = t_state.dtype[d];
  prev_cache_enabled_ = t_state.cache_enabled;
  t_state.enabled[d] = enabled;
  t_state.dtype[d] = to;
  t_state.cache_enabled = cache_enabled;
  ++t_state.nesting;
  refresh_active();
}

AutocastGuard::~AutocastGuard() {
  if (--t_state.nesting == 0) clear_autocast_cache();
  const int d = index_of(device_type_);
  t_state.enabled[d] = prev_enabled_;
  t_state.dtype[d] = prev_dtype_;
  t_state.cache_enabled = prev_cache_enabled_;
  refresh_active();
}

bool is_autocast_enabled(DeviceType device_type) { return t_state.enabled[index_of(device_type)]; }
DType autocast_dtype(DeviceType device_type) { return t_state.dtype[index_of(device_type)]; }
bool is_autocast_cache_enabled() { return t_state.cache_enabled; }
void clear_autocast_cache() { t_cache.clear(); }
size_t autocast_cache_size() { return t_cache.size(); }

namespace autocast::detail {

constinit thread_local bool t_active = false;

Suspend::Suspend() : previous_(t_state.suspended) {
  t_state.suspended = true;
  refresh_active();
}
Suspend::~Suspend() {
  t_state.suspended = previous_;
  refresh_active();
}

Tensor cast(Policy policy, const Tensor& t, DType promoted) {
  if (!eligible(t)) return t;
  const DType to = policy == Policy::lower_precision ? t_state.dtype[index_of(t.device().type)]
                   : policy == Policy::fp32          ? DType::f32
                                                     : promoted;
  return t.dtype() == to ? t : cached_cast(t, to);
}

// torch's promote policy: start from the autocast dtype; an f32 input makes it f32; f64 inputs
// are ignored (and not cast); another low-precision dtype is an error, as in torch.
DType promote_type(const std::vector<const Tensor*>& tensors) {
  DType out = DType::f32;
  bool first = true;
  for (const Tensor* t : tensors) {
    if (!eligible(*t)) continue;
    const DType low = t_state.dtype[index_of(t->device().type)];
    if (first) out = low, first = false;
    if (t->dtype() == DType::f32 || out == DType::f32) {
      out = DType::f32;
      continue;
    }
    KILN_CHECK(t->dtype() == low, "autocast: cannot promote ", t->dtype(), " with the autocast dtype ", low,
               " (inputs in two different low-precision dtypes); convert them to one dtype first");
  }
  return out;
}

}  // namespace autocast::detail
}  // namespace kiln
