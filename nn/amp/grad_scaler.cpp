// GradScaler (see grad_scaler.h). Everything is composed from device-agnostic Tensor ops (mul_,
// abs, amax, maximum, copy_), so it runs wherever the gradients live; the scale itself is a host
// float, read by one item() per optimizer per iteration (torch syncs once in step() too).
#include "nn/amp/grad_scaler.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"

namespace kiln::amp {

// Note [GradScaler arithmetic in f32]: torch holds the scale in a 0-d f32 tensor and updates it in
// place: backoff and growth multiply the f32 value by the f64 factor and round the product back to
// f32 (a growth that would overflow f32 is dropped), and unscale_ multiplies every gradient by the
// reciprocal taken in f64 and rounded to f32. With factors other than 2 and 0.5 a scale kept in
// f64 drifts from torch's within a few updates, so Kiln keeps a float and repeats that arithmetic,
// and the scale sequence matches torch's bit for bit (tests/fixtures/make_grad_scaler_fixtures.py).
// Products with 16-bit tensors run in f32, as torch's kernels do: an f16/bf16 value is widened,
// multiplied by the f32 number and rounded once. Kiln's `t * Scalar` would first round the number
// to t's dtype instead: 65536 is inf in f16, and 1/3000 keeps only 11 bits.

namespace {

bool is_16_bit(DType dtype) { return dtype == DType::f16 || dtype == DType::bf16; }

// The checks of the constructor and of load_state_dict; scale_key names the scale as the caller's
// input does ("init_scale" or "scale").
void check_settings(const char* where, const char* scale_key, double scale, double growth_factor,
                    double backoff_factor, int64_t growth_interval) {
  const float scale_f32 = static_cast<float>(scale);
  KILN_CHECK(std::isfinite(scale_f32) && scale_f32 > 0, where, ": ", scale_key,
             " must be finite and > 0 (as an f32 value, which the scale is held in), got ", scale);
  KILN_CHECK(std::isfinite(growth_factor) && growth_factor > 1, where, ": growth_factor must be finite and > 1, got ",
             growth_factor);
  KILN_CHECK(backoff_factor > 0 && backoff_factor < 1, where, ": backoff_factor must be in (0, 1), got ",
             backoff_factor);
  KILN_CHECK(growth_interval >= 1, where, ": growth_interval must be >= 1, got ", growth_interval);
}

// g *= inv_scale in place, with torch's arithmetic (Note [GradScaler arithmetic in f32]): in f32
// for f32 and 16-bit gradients, in f64 for f64 ones (the f32 reciprocal widened exactly).
void unscale_grad(Tensor& g, float inv_scale) {
  if (inv_scale == 1.0f) return;  // torch leaves the values untouched too
  if (is_16_bit(g.dtype())) g.copy_(g.to(DType::f32).mul_(inv_scale));
  else g.mul_(inv_scale);
}

// Note [Inf check after unscaling]: torch tests each gradient element before multiplying it by
// inv_scale; Kiln tests the unscaled values. The verdict is the same while the scale is >= 1 (a
// finite value times inv_scale <= 1 stays finite, and inf or NaN times a positive number stays
// non-finite); below 1 Kiln also catches a gradient that overflows as it is unscaled, which torch
// would pass to the optimizer. The test is abs().amax() per gradient (amax propagates NaN, as
// torch's does), widened to f64 so that no finite value of any dtype turns into inf, and combined
// across gradients by maximum (NaN wins): one item() for all of them. A sum is not used: finite
// values can add up to inf and skip a good step.
Tensor largest_magnitude(const Tensor& g) { return g.abs().amax().to(DType::f64); }

}  // namespace

GradScaler::GradScaler(GradScalerOptions options)
    : options_(options), scale_(static_cast<float>(options.init_scale)) {
  check_settings("GradScaler", "init_scale", options.init_scale, options.growth_factor, options.backoff_factor,
                 options.growth_interval);
}

Tensor GradScaler::scale(const Tensor& loss) const {
  if (!options_.enabled) return loss;
  KILN_CHECK(loss.defined(), "GradScaler::scale: the loss is an undefined tensor");
  KILN_CHECK(loss.is_floating(), "GradScaler::scale: the loss has dtype ", loss.dtype(),
             "; expected a floating dtype");
  if (is_16_bit(loss.dtype())) return (loss.to(DType::f32) * scale_).to(loss.dtype());
  return loss * scale_;
}

void GradScaler::unscale_(optim::Optimizer& optimizer) {
  if (!options_.enabled) return;
  Record& record = records_[&optimizer];
  KILN_CHECK(record.stage != Stage::unscaled,
             "GradScaler::unscale_: already called on this optimizer since the last update()");
  KILN_CHECK(record.stage != Stage::stepped,
             "GradScaler::unscale_: called after step(); unscale_ (optional) comes before step() in an iteration");
  NoGradGuard no_grad;
  const float inv_scale = static_cast<float>(1.0 / static_cast<double>(scale_));
  Tensor largest;  // 0-d f64: max |g| over every element unscaled so far; NaN once any is NaN
  int64_t checked = 0;
  for (const optim::ParamGroup& group : optimizer.param_groups()) {
    for (const Tensor& p : group.params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      unscale_grad(g, inv_scale);
      ++checked;
      if (g.numel() == 0) continue;
      largest = largest.defined() ? maximum(largest, largest_magnitude(g)) : largest_magnitude(g);
    }
  }
  record.found_inf = largest.defined() && !std::isfinite(largest.item<double>());
  record.grads_checked = checked;
  record.stage = Stage::unscaled;
}

bool GradScaler::step(optim::Optimizer& optimizer) {
  if (!options_.enabled) {
    optimizer.step();
    return true;
  }
  Record& record = records_[&optimizer];  // a reference into an unordered_map survives later inserts
  KILN_CHECK(record.stage != Stage::stepped,
             "GradScaler::step: step() has already been called on this optimizer since the last update()");
  if (record.stage == Stage::ready) unscale_(optimizer);
  KILN_CHECK(record.grads_checked > 0, "GradScaler::step: no parameter of this ", optimizer.name(),
             " optimizer has a .grad, so no inf/NaN check was recorded (call backward on scale(loss) first)");
  if (record.found_inf) {
    record.stage = Stage::stepped;
    return false;
  }
  optimizer.step();
  record.stage = Stage::stepped;
  return true;
}

void GradScaler::update(std::optional<double> new_scale) {
  if (!options_.enabled) return;
  if (new_scale) {
    const float s = static_cast<float>(*new_scale);  // torch fills its f32 scale tensor
    KILN_CHECK(std::isfinite(s) && s > 0,
               "GradScaler::update: new_scale must be finite and > 0 (as an f32 value), got ", *new_scale);
    scale_ = s;
  } else {
    bool checked = false, found_inf = false;
    for (const auto& [optimizer, record] : records_) {
      checked = checked || record.grads_checked > 0;
      found_inf = found_inf || record.found_inf;
    }
    KILN_CHECK(checked, "GradScaler::update: no inf/NaN checks were recorded since the last update(); call "
               "step(optimizer) for each optimizer of this iteration first (or pass new_scale)");
    // Note [GradScaler arithmetic in f32]: the product is formed in f64 and rounded to f32.
    if (found_inf) {
      scale_ = static_cast<float>(static_cast<double>(scale_) * options_.backoff_factor);
      growth_tracker_ = 0;
    } else if (growth_tracker_ + 1 == options_.growth_interval) {
      const float grown = static_cast<float>(static_cast<double>(scale_) * options_.growth_factor);
      if (std::isfinite(grown)) scale_ = grown;
      growth_tracker_ = 0;
    } else {
      ++growth_tracker_;
    }
  }
  records_.clear();
}

double GradScaler::get_scale() const { return options_.enabled ? static_cast<double>(scale_) : 1.0; }

int64_t GradScaler::growth_tracker() const { return options_.enabled ? growth_tracker_ : 0; }

std::optional<bool> GradScaler::found_inf(const optim::Optimizer& optimizer) const {
  auto it = records_.find(&optimizer);
  if (it == records_.end() || it->second.stage == Stage::ready) return std::nullopt;
  return it->second.found_inf;
}

Json GradScaler::state_dict() const {
  if (!options_.enabled) return Json::object();
  return Json{{"scale", static_cast<double>(scale_)},
              {"growth_factor", options_.growth_factor},
              {"backoff_factor", options_.backoff_factor},
              {"growth_interval", options_.growth_interval},
              {"_growth_tracker", growth_tracker_}};
}

void GradScaler::load_state_dict(const Json& state) {
  if (!options_.enabled) return;
  const char* where = "GradScaler::load_state_dict";
  KILN_CHECK(state.is_object(), where, ": expected a JSON object, got ", state.type_name());
  KILN_CHECK(!state.empty(), where, ": the state is empty, possibly because it was saved from a disabled GradScaler");
  auto entry = [&](const char* key, bool integer) -> const Json& {
    KILN_CHECK(state.contains(key), where, ": missing key '", key, "' (a GradScaler state holds scale, "
               "growth_factor, backoff_factor, growth_interval and _growth_tracker)");
    const Json& value = state.at(key);
    KILN_CHECK(integer ? value.is_number_integer() : value.is_number(), where, ": '", key, "' must be ",
               integer ? "an integer" : "a number", ", got ", value.dump());
    return value;
  };
  const double scale = entry("scale", false).get<double>();
  const double growth_factor = entry("growth_factor", false).get<double>();
  const double backoff_factor = entry("backoff_factor", false).get<double>();
  const int64_t growth_interval = entry("growth_interval", true).get<int64_t>();
  const int64_t tracker = entry("_growth_tracker", true).get<int64_t>();
  check_settings(where, "scale", scale, growth_factor, backoff_factor, growth_interval);
  KILN_CHECK(tracker >= 0 && tracker < growth_interval, where, ": _growth_tracker must be in [0, growth_interval = ",
             growth_interval, "), got ", tracker);

  options_.init_scale = scale;  // as torch: a scaler restored from a state starts from its scale
  options_.growth_factor = growth_factor;
  options_.backoff_factor = backoff_factor;
  options_.growth_interval = growth_interval;
  scale_ = static_cast<float>(scale);
  growth_tracker_ = tracker;
}

}  // namespace kiln::amp
