// Sequential, ModuleList and ModuleDict (see containers.h).
#include "nn/containers.h"

#include <typeinfo>

#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/linear.h"
#include "nn/layers/pool.h"
#include "tensor/error.h"

namespace kiln::nn {

namespace {

ModulePtr child_at(const Module& m, int64_t index) {
  const NamedModules children = m.named_children();
  const auto n = static_cast<int64_t>(children.size());
  KILN_CHECK(index >= -n && index < n, m.type_name(), ": index ", index, " is out of range for ", n, " modules");
  return children[static_cast<size_t>(index < 0 ? index + n : index)].second;
}

// The printed form of one entry, as torch's _addindent leaves it (every line but the first shifted).
std::string indented(const std::string& text) {
  std::string out;
  for (char c : text) {
    out += c;
    if (c == '\n') out += "  ";
  }
  return out;
}

}  // namespace

Sequential::Sequential(std::initializer_list<ModulePtr> modules) : Module("Sequential") {
  for (const ModulePtr& m : modules) push_back(m);
}

Sequential::Sequential(const NamedModules& named_modules) : Module("Sequential") {
  for (const auto& [name, m] : named_modules) add_child(name, m);
}

// Note [Pooling before ReLU]: ReLU then MaxPool2d equals MaxPool2d then ReLU, values and gradients,
// up to the sign of a zero. ReLU is monotone, so max(relu(window)) = relu(max(window)), NaN
// included (both keep it); a positive maximum is the same element of the window, found first among
// the same ties; otherwise both orders give it a zero gradient (ReLU's mask is its output > 0).
// The zero's sign differs for a window like (-1, -0): the written order gives +0 (the first of two
// zeros), pool-then-relu -0. Pooling first runs ReLU on a quarter of the elements under a 2x2 pool
// and keeps the smaller tensor for backward (figures in bench/README.md, "Fusions"); the two run as
// one op, F::max_pool2d_relu (Note [Fused pooling and ReLU] in autograd/ops/pool.cpp), whose kernel
// also restores the written order's zero, so the result is that order's bit for bit. A Linear
// followed by a ReLU runs as F::linear_relu (Note [Fused linear and ReLU] in
// autograd/ops/linalg.cpp), with the same values and gradients. Only the exact layer types qualify:
// a subclass may compute something else. Each fused op is also a layer of its own (nn::LinearReLU,
// nn::MaxPool2dReLU), and the fusion changes no child, so state_dict keys stay those of the layers
// as written.
namespace {
bool pools_before_relu(const Module& first, const Module& second) {
  return typeid(first) == typeid(ReLU) && typeid(second) == typeid(MaxPool2d);
}
bool linear_then_relu(const Module& first, const Module& second) {
  return typeid(first) == typeid(Linear) && typeid(second) == typeid(ReLU);
}
}  // namespace

Tensor Sequential::forward(const Tensor& x) {
  const NamedModules children = named_children();
  Tensor y = x;
  for (size_t i = 0; i < children.size(); ++i) {
    Module& m = *children[i].second;
    Module* next = i + 1 < children.size() ? children[i + 1].second.get() : nullptr;
    if (next && pools_before_relu(m, *next)) {
      const auto& pool = static_cast<const MaxPool2d&>(*next);
      y = F::max_pool2d_relu(y, pool.kernel_size, pool.options);
      ++i;
    } else if (next && linear_then_relu(m, *next)) {
      const auto& linear = static_cast<const Linear&>(m);
      y = F::linear_relu(y, linear.weight, linear.bias);
      ++i;
    } else {
      y = m.forward(y);
    }
  }
  return y;
}

Sequential& Sequential::push_back(ModulePtr module) {
  add_child(std::to_string(size()), std::move(module));
  return *this;
}

ModulePtr Sequential::operator[](int64_t index) const { return child_at(*this, index); }

ModuleList::ModuleList(std::initializer_list<ModulePtr> modules) : Module("ModuleList") {
  for (const ModulePtr& m : modules) push_back(m);
}

ModuleList& ModuleList::push_back(ModulePtr module) {
  add_child(std::to_string(size()), std::move(module));
  return *this;
}

ModulePtr ModuleList::operator[](int64_t index) const { return child_at(*this, index); }

std::string ModuleList::str() const {
  const NamedModules children = named_children();
  if (children.empty()) return "ModuleList()";
  std::string out = "ModuleList(\n";
  size_t start = 0;
  while (start < children.size()) {
    const std::string text = children[start].second->str();
    size_t end = start + 1;
    while (end < children.size() && children[end].second->str() == text) ++end;
    if (end - start == 1)
      out += "  (" + std::to_string(start) + "): " + indented(text) + "\n";
    else
      out += "  (" + std::to_string(start) + "-" + std::to_string(end - 1) + "): " + std::to_string(end - start) +
             " x " + indented(text) + "\n";
    start = end;
  }
  return out + ")";
}

ModuleDict::ModuleDict(const NamedModules& named_modules) : Module("ModuleDict") {
  for (const auto& [name, m] : named_modules) insert(name, m);
}

ModuleDict& ModuleDict::insert(const std::string& key, ModulePtr module) {
  add_child(key, std::move(module));
  return *this;
}

ModulePtr ModuleDict::operator[](const std::string& key) const { return submodule(key); }

bool ModuleDict::contains(const std::string& key) const {
  for (const auto& [name, m] : named_children())
    if (name == key) return true;
  return false;
}

std::vector<std::string> ModuleDict::keys() const {
  std::vector<std::string> out;
  for (const auto& [name, m] : named_children()) out.push_back(name);
  return out;
}

}  // namespace kiln::nn
