// nn::Module: registration, traversal, state_dict, moves and printing (see module.h).
#include "nn/module.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <unordered_set>
#include <utility>

#include "autograd/grad_mode.h"
#include "tensor/error.h"

namespace kiln::nn {

namespace {

std::string joined(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", \"" : "\"") + names[i] + "\"";
  return out;
}

std::string torch_size(const Dims& d) {
  std::ostringstream os;
  os << "torch.Size([";
  for (int i = 0; i < d.size(); ++i) os << (i ? ", " : "") << d[i];
  os << "])";
  return os.str();
}

// Indents every line but the first, as torch's _addindent does for nested reprs.
std::string indent_tail(const std::string& text, int spaces) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += std::string(static_cast<size_t>(spaces), ' ');
  }
  return out;
}

// Points `dst`'s body at `src`'s data, so every handle on dst sees the moved tensor (torch's
// `param.data = fn(param.data)`): autograd state (requires_grad, .grad, hooks) stays with dst.
void rebind(const Tensor& dst, const Tensor& src) {
  TensorImpl* d = dst.impl();
  const TensorImpl* s = src.impl();
  d->storage = s->storage;
  d->offset = s->offset;
  d->shape = s->shape;
  d->strides = s->strides;
  d->dtype = s->dtype;
  d->refresh();
  dst.bump_version();
}

}  // namespace

Tensor Module::forward(const Tensor&) {
  detail::throw_error(type_name_, ": this module has no forward(const Tensor&); call its own forward overload");
}

void Module::check_new_name(const std::string& name, const char* what) const {
  KILN_CHECK(!name.empty(), type_name_, ": ", what, " name can't be empty");
  KILN_CHECK(name.find('.') == std::string::npos, type_name_, ": ", what, " name can't contain \".\", got \"", name,
             "\"");
  auto taken = [&](const auto& list) {
    for (const auto& entry : list)
      if (entry.first == name) return true;
    return false;
  };
  bool clash = taken(children_);
  for (const Slot& s : parameters_) clash = clash || s.name == name;
  for (const Slot& s : buffers_) clash = clash || s.name == name;
  KILN_CHECK(!clash, type_name_, ": attribute \"", name, "\" already exists (", what, " names must be unique)");
}

Tensor Module::register_parameter(const std::string& name, Tensor value, bool requires_grad) {
  check_new_name(name, "parameter");
  KILN_CHECK(value.defined(), type_name_, ": parameter \"", name, "\" is undefined; leave it unregistered instead");
  KILN_CHECK(value.is_leaf(), type_name_, ": parameter \"", name, "\" must be a leaf tensor (detach() it first)");
  KILN_CHECK(!requires_grad || value.is_floating(), type_name_, ": parameter \"", name, "\" has dtype ",
             value.dtype(), "; only floating tensors can require grad");
  value.requires_grad_(requires_grad);
  parameters_.push_back({name, value, true});
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value, bool persistent) {
  check_new_name(name, "buffer");
  KILN_CHECK(value.defined(), type_name_, ": buffer \"", name, "\" is undefined");
  buffers_.push_back({name, value, persistent});
  return value;
}

void Module::add_child(const std::string& name, ModulePtr module) {
  check_new_name(name, "module");
  KILN_CHECK(module != nullptr, type_name_, ": submodule \"", name, "\" is null");
  KILN_CHECK(module.get() != this, type_name_, ": a module can't be its own submodule (\"", name, "\")");
  children_.emplace_back(name, std::move(module));
}

ModulePtr Module::replace_child(const std::string& name, ModulePtr module) {
  KILN_CHECK(module != nullptr, type_name_, ": replacement for submodule \"", name, "\" is null");
  KILN_CHECK(module.get() != this, type_name_, ": a module can't be its own submodule (\"", name, "\")");
  for (auto& [child_name, child] : children_)
    if (child_name == name) return std::exchange(child, std::move(module));
  std::string names;
  for (const auto& entry : children_) names += (names.empty() ? "" : ", ") + entry.first;
  detail::throw_error(type_name_, ": no submodule \"", name, "\" to replace (submodules: ",
                      names.empty() ? "none" : names, ")");
}

// ---- traversal

void Module::visit_modules(const std::string& prefix, const std::function<void(const std::string&, Module&)>& fn) {
  std::unordered_set<const Module*> seen;
  // Depth first with an explicit stack, children in registration order, each module once.
  std::vector<std::pair<std::string, Module*>> stack{{prefix, this}};
  while (!stack.empty()) {
    auto [name, m] = std::move(stack.back());
    stack.pop_back();
    if (!seen.insert(m).second) continue;
    fn(name, *m);
    for (auto it = m->children_.rbegin(); it != m->children_.rend(); ++it)
      stack.emplace_back(joined(name, it->first), it->second.get());
  }
}

NamedModules Module::named_modules(const std::string& prefix) {
  NamedModules out;
  visit_modules(prefix, [&](const std::string& name, Module& m) {
    // A module not owned by a shared_ptr (a layer on the stack) is handed out without ownership.
    ModulePtr owned = m.weak_from_this().lock();
    out.emplace_back(name, owned ? owned : ModulePtr(ModulePtr(), &m));
  });
  return out;
}

std::vector<ModulePtr> Module::modules() {
  std::vector<ModulePtr> out;
  for (auto& [name, m] : named_modules()) out.push_back(m);
  return out;
}

std::vector<ModulePtr> Module::children() const {
  std::vector<ModulePtr> out;
  for (const auto& [name, m] : children_) out.push_back(m);
  return out;
}

// Parameters or buffers (`slots`) of this module and, when recurse, of its descendants, each tensor
// once (a shared parameter is listed under its first name, as in torch).
NamedTensors Module::named_slots(std::vector<Slot> Module::*slots, bool recurse) const {
  NamedTensors out;
  std::unordered_set<const TensorImpl*> seen;
  auto visit = [&](const Module& m, const std::string& prefix) {
    for (const Slot& s : m.*slots)
      if (seen.insert(s.value.impl()).second) out.emplace_back(joined(prefix, s.name), s.value);
  };
  if (!recurse) {
    visit(*this, "");
    return out;
  }
  const_cast<Module*>(this)->visit_modules("", [&](const std::string& prefix, Module& m) { visit(m, prefix); });
  return out;
}

NamedTensors Module::named_parameters(bool recurse) const { return named_slots(&Module::parameters_, recurse); }
NamedTensors Module::named_buffers(bool recurse) const { return named_slots(&Module::buffers_, recurse); }

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<Tensor> Module::buffers(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_buffers(recurse)) out.push_back(t);
  return out;
}

ModulePtr Module::submodule(const std::string& dotted_name) const {
  const Module* m = this;
  ModulePtr found;
  std::string rest = dotted_name;
  while (true) {
    const size_t dot = rest.find('.');
    const std::string head = rest.substr(0, dot);
    found = nullptr;
    std::vector<std::string> names;
    for (const auto& [name, child] : m->children_) {
      names.push_back(name);
      if (name == head) found = child;
    }
    KILN_CHECK(found, type_name_, ": no submodule \"", dotted_name, "\" (", m->type_name_, " has children [",
               quoted_list(names), "])");
    if (dot == std::string::npos) return found;
    m = found.get();
    rest = rest.substr(dot + 1);
  }
}

Tensor& Module::parameter(const std::string& name) {
  const size_t dot = name.rfind('.');
  Module& owner = dot == std::string::npos ? *this : *submodule(name.substr(0, dot));
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  std::vector<std::string> names;
  for (Slot& s : owner.parameters_) {
    if (s.name == leaf) return s.value;
    names.push_back(s.name);
  }
  detail::throw_error(type_name_, ": no parameter \"", name, "\" (", owner.type_name_, " has [", quoted_list(names),
                      "])");
}

Tensor& Module::buffer(const std::string& name) {
  const size_t dot = name.rfind('.');
  Module& owner = dot == std::string::npos ? *this : *submodule(name.substr(0, dot));
  const std::string leaf = dot == std::string::npos ? name : name.substr(dot + 1);
  std::vector<std::string> names;
  for (Slot& s : owner.buffers_) {
    if (s.name == leaf) return s.value;
    names.push_back(s.name);
  }
  detail::throw_error(type_name_, ": no buffer \"", name, "\" (", owner.type_name_, " has [", quoted_list(names), "])");
}

// ---- modes and moves

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::move_tensors(const std::function<Tensor(const Tensor&)>& convert) {
  NoGradGuard no_grad;
  visit_modules("", [&](const std::string&, Module& m) {
    for (Slot& s : m.parameters_) {
      rebind(s.value, convert(s.value.detach()));
      if (s.value.grad().defined()) s.value.mutable_grad() = convert(s.value.grad());
    }
    for (Slot& s : m.buffers_) rebind(s.value, convert(s.value.detach()));
  });
}

Module& Module::to(Device device) {
  move_tensors([&](const Tensor& t) { return t.device() == device ? t : t.to(device); });
  return *this;
}

Module& Module::to(DType dtype) {
  KILN_CHECK(is_floating(dtype), type_name_, ".to: expected a floating dtype, got ", dtype);
  move_tensors([&](const Tensor& t) { return !t.is_floating() || t.dtype() == dtype ? t : t.to(dtype); });
  return *this;
}

Module& Module::to(Device device, DType dtype) {
  to(device);
  return to(dtype);
}

void Module::zero_grad(bool set_to_none) {
  NoGradGuard no_grad;
  for (Tensor& p : parameters()) {
    if (!p.grad().defined()) continue;
    if (set_to_none) p.mutable_grad() = Tensor();
    else p.mutable_grad().zero_();
  }
}

Module& Module::apply(const std::function<void(Module&)>& fn) {
  for (auto& [name, child] : children_) child->apply(fn);
  fn(*this);
  return *this;
}

// ---- state

void Module::collect_state(TensorDict& out, const std::string& prefix) const {
  for (const Slot& s : parameters_) out.insert(prefix + s.name, s.value.detach());
  for (const Slot& s : buffers_)
    if (s.persistent) out.insert(prefix + s.name, s.value.detach());
  for (const auto& [name, child] : children_) child->collect_state(out, prefix + name + ".");
}

TensorDict Module::state_dict(const std::string& prefix) const {
  TensorDict out;
  collect_state(out, prefix.empty() ? prefix : prefix + ".");
  return out;
}

LoadResult Module::load_state_dict(const TensorDict& state, bool strict) {
  const TensorDict own = state_dict();
  LoadResult result;
  std::vector<std::string> mismatches;
  for (const auto& [name, target] : own) {
    const Tensor* given = state.find(name);
    if (!given) {
      result.missing_keys.push_back(name);
      continue;
    }
    if (!(given->shape() == target.shape()))
      mismatches.push_back(
          detail::concat("size mismatch for ", name, ": copying a param with shape ", torch_size(given->shape()),
                         " from checkpoint, the shape in current model is ", torch_size(target.shape()), "."));
  }
  for (const auto& [name, t] : state)
    if (!own.contains(name)) result.unexpected_keys.push_back(name);

  std::string errors;
  if (strict && !result.missing_keys.empty())
    errors += "\n\tMissing key(s) in state_dict: " + quoted_list(result.missing_keys) + ". ";
  if (strict && !result.unexpected_keys.empty())
    errors += "\n\tUnexpected key(s) in state_dict: " + quoted_list(result.unexpected_keys) + ". ";
  for (const std::string& m : mismatches) errors += "\n\t" + m;
  KILN_CHECK(errors.empty(), "load_state_dict: Error(s) in loading state_dict for ", type_name_, ":", errors);

  NoGradGuard no_grad;  // copies into parameters are not part of any graph
  for (const auto& [name, target] : own)
    if (const Tensor* given = state.find(name)) Tensor(target).copy_(*given);
  return result;
}

// ---- printing

std::string Module::str() const {
  std::vector<std::string> lines;
  const std::string extra = extra_repr();
  size_t extra_lines = 0;
  if (!extra.empty()) {
    std::istringstream in(extra);
    for (std::string line; std::getline(in, line);) lines.push_back(line), ++extra_lines;
  }
  for (const auto& [name, child] : children_) lines.push_back("(" + name + "): " + indent_tail(child->str(), 2));
  std::string out = type_name_ + "(";
  if (extra_lines == 1 && children_.empty()) {
    out += lines[0];
  } else if (!lines.empty()) {
    out += "\n";
    for (const std::string& line : lines) out += "  " + line + "\n";
  }
  return out + ")";
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.str(); }

std::string bool_text(bool b) { return b ? "True" : "False"; }

std::string tuple_text(const Dims& d) {
  std::ostringstream os;
  os << '(';
  for (int i = 0; i < d.size(); ++i) os << (i ? ", " : "") << d[i];
  if (d.size() == 1) os << ',';
  os << ')';
  return os.str();
}

std::string float_text(double v) {
  if (!std::isfinite(v)) return std::isnan(v) ? "nan" : (v > 0 ? "inf" : "-inf");
  const double mag = std::abs(v);
  char buf[64];
  if (mag != 0 && (mag < 1e-4 || mag >= 1e16)) {
    // Shortest round-trip digits in exponent form; C's %e, like Python, prints two exponent digits.
    for (int digits = 0; digits < 17; ++digits) {
      std::snprintf(buf, sizeof buf, "%.*e", digits, v);
      if (std::strtod(buf, nullptr) == v) break;
    }
    return buf;
  }
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string text = buf;
  // Trailing zeros go, but one digit stays after the point ("1.0", "0.1").
  while (text.size() > 2 && text.back() == '0' && text[text.size() - 2] != '.') text.pop_back();
  return text;
}

}  // namespace kiln::nn
