// Optimizer base: param-group bookkeeping, zero_grad, and state_dict / load_state_dict in
// PyTorch's layout (see optimizer.h). The optimizers' update math is elsewhere.
#include "nn/optim/optimizer.h"

#include <algorithm>
#include <charconv>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "tensor/factories.h"

namespace kiln::optim {
namespace {

// Reading and writing one hyperparameter of a group as JSON, by torch's key name.
struct HyperField {
  const char* key;
  Json (*get)(const ParamGroup&);
  void (*set)(ParamGroup&, const Json&);
};

template <auto Member>
HyperField number_field(const char* key) {
  return {key, [](const ParamGroup& g) { return Json(g.*Member); },
          [](ParamGroup& g, const Json& j) { g.*Member = j.get<std::remove_cvref_t<decltype(g.*Member)>>(); }};
}

const std::vector<HyperField>& hyper_fields() {
  static const std::vector<HyperField> fields = {
      number_field<&ParamGroup::lr>("lr"),
      number_field<&ParamGroup::weight_decay>("weight_decay"),
      number_field<&ParamGroup::momentum>("momentum"),
      number_field<&ParamGroup::dampening>("dampening"),
      number_field<&ParamGroup::nesterov>("nesterov"),
      {"betas", [](const ParamGroup& g) { return Json::array({g.betas.first, g.betas.second}); },
       [](ParamGroup& g, const Json& j) {
         KILN_CHECK(j.is_array() && j.size() == 2, "load_state_dict: 'betas' must be a pair, got ", j.dump());
         g.betas = {j[0].get<double>(), j[1].get<double>()};
       }},
      number_field<&ParamGroup::eps>("eps"),
      number_field<&ParamGroup::amsgrad>("amsgrad"),
      number_field<&ParamGroup::alpha>("alpha"),
      number_field<&ParamGroup::centered>("centered"),
      number_field<&ParamGroup::lr_decay>("lr_decay"),
      number_field<&ParamGroup::initial_accumulator_value>("initial_accumulator_value"),
      number_field<&ParamGroup::maximize>("maximize"),
  };
  return fields;
}

const HyperField& hyper_field(std::string_view key) {
  for (const HyperField& f : hyper_fields())
    if (key == f.key) return f;
  KILN_ASSERT(false, "unknown hyperparameter key '", key, "'");
  return hyper_fields().front();
}

bool same_shape(const Tensor& a, const Tensor& b) { return a.shape() == b.shape(); }

// Parses "state.<index>.<name>" into its parts; false if the name has another form.
bool parse_state_name(const std::string& full, size_t& index, std::string& name) {
  constexpr std::string_view prefix = "state.";
  if (full.rfind(prefix, 0) != 0) return false;
  const size_t dot = full.find('.', prefix.size());
  if (dot == std::string::npos || dot + 1 == full.size()) return false;
  const char* begin = full.data() + prefix.size();
  const char* end = full.data() + dot;
  auto [ptr, ec] = std::from_chars(begin, end, index);
  if (ec != std::errc() || ptr != end) return false;
  name = full.substr(dot + 1);
  return true;
}

}  // namespace

Optimizer::Optimizer(std::string name, std::vector<std::string> hyper_keys)
    : name_(std::move(name)), hyper_keys_(std::move(hyper_keys)) {
  for (const std::string& key : hyper_keys_) hyper_field(key);  // every key must be known
}

bool Optimizer::has_hyper(std::string_view key) const {
  return std::find(hyper_keys_.begin(), hyper_keys_.end(), key) != hyper_keys_.end();
}

void Optimizer::add_param_group(ParamGroup group) {
  KILN_CHECK(!group.params.empty(), name_, ": param group ", groups_.size(), " has no parameters");
  check_group(group);
  std::unordered_set<const TensorImpl*> seen;
  for (const ParamGroup& g : groups_)
    for (const Tensor& p : g.params) seen.insert(p.impl());
  for (size_t i = 0; i < group.params.size(); ++i) {
    const Tensor& p = group.params[i];
    KILN_CHECK(p.defined(), name_, ": parameter ", i, " of group ", groups_.size(), " is an undefined tensor");
    KILN_CHECK(p.is_floating(), name_, ": parameter ", i, " of group ", groups_.size(), " has dtype ", p.dtype(),
               "; only floating-point parameters are supported");
    KILN_CHECK(p.is_leaf(), name_, ": parameter ", i, " of group ", groups_.size(),
               " is not a leaf tensor (it was computed by an op); optimize the tensor it came from, or detach() it");
    KILN_CHECK(seen.insert(p.impl()).second, name_, ": parameter ", i, " of group ", groups_.size(),
               " (shape ", p.shape(), ") appears more than once across the param groups");
  }
  groups_.push_back(std::move(group));
}

void Optimizer::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (ParamGroup& g : groups_) {
    for (Tensor& p : g.params) {
      if (!p.grad().defined()) continue;
      Tensor& grad = p.mutable_grad();
      if (set_to_none) {
        grad = Tensor();
      } else {
        if (!grad.is_leaf()) grad = grad.detach();
        grad.zero_();
      }
    }
  }
}

const TensorDict* Optimizer::state_of(const Tensor& param) const {
  auto it = state_.find(param.impl());
  return it == state_.end() ? nullptr : &it->second;
}

State Optimizer::state_dict() const {
  State out;
  out.meta["optimizer"] = name_;
  Json groups = Json::array();
  size_t index = 0;
  for (const ParamGroup& g : groups_) {
    Json jg = Json::object();
    for (const std::string& key : hyper_keys_) jg[key] = hyper_field(key).get(g);
    if (g.initial_lr) jg["initial_lr"] = *g.initial_lr;
    Json ids = Json::array();
    for (const Tensor& p : g.params) {
      if (const TensorDict* st = state_of(p))
        for (const auto& [name, t] : *st) out.tensors.insert("state." + std::to_string(index) + "." + name, t.clone());
      ids.push_back(index++);
    }
    jg["params"] = std::move(ids);
    groups.push_back(std::move(jg));
  }
  out.meta["param_groups"] = std::move(groups);
  return out;
}

void Optimizer::load_state_dict(const State& state) {
  const std::string op = name_ + ".load_state_dict";
  const Json& meta = state.meta;
  KILN_CHECK(meta.is_object() && meta.contains("optimizer") && meta.contains("param_groups"), op,
             ": not an optimizer state (expected meta keys 'optimizer' and 'param_groups')");
  KILN_CHECK(meta["optimizer"] == name_, op, ": the state was saved by ", meta["optimizer"].dump(), ", not ", name_);
  const Json& saved_groups = meta["param_groups"];
  KILN_CHECK(saved_groups.is_array() && saved_groups.size() == groups_.size(), op, ": the state has ",
             saved_groups.is_array() ? saved_groups.size() : 0, " param groups, this optimizer has ", groups_.size());

  // Hyperparameters, into copies of the groups; params are matched by position.
  std::vector<ParamGroup> groups = groups_;
  std::vector<const Tensor*> params;
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const Json& jg = saved_groups[gi];
    ParamGroup& g = groups[gi];
    KILN_CHECK(jg.is_object() && jg.contains("params") && jg["params"].is_array(), op, ": param group ", gi,
               " has no 'params' list");
    KILN_CHECK(jg["params"].size() == g.params.size(), op, ": param group ", gi, " has ", jg["params"].size(),
               " parameters in the state, ", g.params.size(), " in this optimizer");
    for (const std::string& key : hyper_keys_) {
      KILN_CHECK(jg.contains(key), op, ": param group ", gi, " lacks hyperparameter '", key, "'");
      try {
        hyper_field(key).set(g, jg[key]);
      } catch (const Json::exception& e) {
        detail::throw_error(op, ": param group ", gi, " has a bad '", key, "' (", jg[key].dump(), "): ", e.what());
      }
    }
    if (jg.contains("initial_lr")) g.initial_lr = jg["initial_lr"].get<double>();
    else g.initial_lr.reset();
    check_group(g);
    for (const Tensor& p : g.params) params.push_back(&p);
  }

  // Per-parameter state, copied into the parameters' dtype (step stays f32), checked by shape.
  std::vector<TensorDict> loaded(params.size());
  for (const auto& [full, t] : state.tensors) {
    size_t index = 0;
    std::string name;
    KILN_CHECK(parse_state_name(full, index, name), op, ": unexpected tensor '", full,
               "' (expected names like 'state.<index>.<name>')");
    KILN_CHECK(index < params.size(), op, ": tensor '", full, "' is for parameter ", index, ", but there are only ",
               params.size(), " parameters");
    const Tensor& p = *params[index];
    KILN_CHECK(t.defined(), op, ": tensor '", full, "' is undefined");
    Tensor copy;
    if (name == "step") {
      KILN_CHECK(t.numel() == 1, op, ": '", full, "' must hold one value, has shape ", t.shape());
      copy = zeros({}, {.dtype = DType::f32});
      copy.copy_(t.reshape({}));
    } else {
      KILN_CHECK(same_shape(t, p), op, ": '", full, "' has shape ", t.shape(), ", but parameter ", index, " has shape ",
                 p.shape());
      copy = empty(p.shape(), {.dtype = p.dtype(), .device = p.device()});
      copy.copy_(t);
    }
    loaded[index].insert(name, std::move(copy));
  }
  size_t index = 0;
  for (const ParamGroup& g : groups) {
    const std::vector<std::string> want = state_keys(g);
    for (size_t j = 0; j < g.params.size(); ++j, ++index) {
      const TensorDict& got = loaded[index];
      if (got.empty()) continue;  // not stepped yet
      for (const std::string& key : want)
        KILN_CHECK(got.contains(key), op, ": parameter ", index, " lacks state '", key, "' (", name_, " with these "
                   "hyperparameters keeps ", want.size(), " state tensors per parameter)");
      KILN_CHECK(got.size() == want.size(), op, ": parameter ", index, " has ", got.size(), " state tensors, expected ",
                 want.size(), " for ", name_, " with these hyperparameters");
    }
  }

  // Commit.
  std::unordered_map<const TensorImpl*, TensorDict> new_state;
  for (size_t i = 0; i < params.size(); ++i)
    if (!loaded[i].empty()) new_state.emplace(params[i]->impl(), std::move(loaded[i]));
  for (size_t gi = 0; gi < groups.size(); ++gi) groups[gi].params = groups_[gi].params;
  groups_ = std::move(groups);
  state_ = std::move(new_state);
}

Tensor checked_grad(const Tensor& param, std::string_view op) {
  const Tensor& grad = param.grad();
  if (!grad.defined()) return grad;
  KILN_CHECK(grad.shape() == param.shape(), op, ": a gradient has shape ", grad.shape(), ", its parameter ",
             param.shape());
  KILN_CHECK(grad.dtype() == param.dtype(), op, ": a gradient has dtype ", grad.dtype(), ", its parameter ",
             param.dtype());
  KILN_CHECK(param.device().is_cpu() && grad.device().is_cpu(), op, ": parameters on ", param.device(),
             " are not supported yet (the update kernels are CPU-only)");
  return grad;
}

Tensor state_buffer(TensorDict& state, const std::string& name, const Tensor& param, double fill) {
  if (const Tensor* t = state.find(name)) return *t;
  Tensor t = full(param.shape(), fill, {.dtype = param.dtype(), .device = param.device()});
  state.insert(name, t);
  return t;
}

Tensor step_tensor(double value) { return full({}, value, {.dtype = DType::f32}); }

double increment_step(TensorDict& state) {
  if (!state.contains("step")) state.insert("step", step_tensor());
  float* value = state.at("step").data_ptr<float>();
  *value += 1.0f;
  return *value;
}

}  // namespace kiln::optim
