// Containers of modules, as in torch.nn: Sequential (chains one-tensor forwards), ModuleList (an
// indexed list) and ModuleDict (a keyed map). They add no parameters of their own; their children
// are named "0", "1", ... (or by key), which gives state_dict keys such as "0.weight".
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nn/module.h"

namespace kiln::nn {

// Sequential fuses two pairs of adjacent children, by their exact types: a Linear followed by a
// ReLU runs as F::linear_relu, and a ReLU followed by a MaxPool2d as F::max_pool2d_relu, each one
// op with the pair's values and gradients, bit for bit (Note [Pooling before ReLU] in
// containers.cpp). The children and their state_dict keys stay as written. nn::LinearReLU and
// nn::MaxPool2dReLU (nn/layers/fused.h) are the same ops as layers, for code that wants the fusion
// named rather than found.
class Sequential : public Module {
 public:
  Sequential() : Module("Sequential") {}
  Sequential(std::initializer_list<ModulePtr> modules);       // named "0", "1", ...
  // std::make_shared<Sequential>(std::make_shared<Linear>(4, 8), std::make_shared<ReLU>(), ...)
  template <class... Ms>
  explicit Sequential(std::shared_ptr<Ms>... modules) : Sequential({ModulePtr(std::move(modules))...}) {}
  explicit Sequential(const NamedModules& named_modules);      // torch's Sequential(OrderedDict(...))

  Tensor forward(const Tensor& x) override;                    // x through each module in order, fusing as above
  Sequential& push_back(ModulePtr module);                     // torch's append
  ModulePtr operator[](int64_t index) const;                   // negative counts from the end
  size_t size() const { return named_children().size(); }
};

class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  ModuleList(std::initializer_list<ModulePtr> modules);

  ModuleList& push_back(ModulePtr module);
  ModulePtr operator[](int64_t index) const;
  // The module at `index` as its concrete type, or an error naming the type it has.
  template <class M>
  std::shared_ptr<M> at(int64_t index) const {
    auto m = std::dynamic_pointer_cast<M>((*this)[index]);
    KILN_CHECK(m, "ModuleList: element ", index, " is a ", (*this)[index]->type_name(), ", not the requested type");
    return m;
  }
  size_t size() const { return named_children().size(); }
  // Like torch, repeated consecutive entries print once as "(0-2): 3 x Linear(...)".
  std::string str() const override;
};

class ModuleDict : public Module {
 public:
  ModuleDict() : Module("ModuleDict") {}
  explicit ModuleDict(const NamedModules& named_modules);

  ModuleDict& insert(const std::string& key, ModulePtr module);
  ModulePtr operator[](const std::string& key) const;
  bool contains(const std::string& key) const;
  std::vector<std::string> keys() const;
  size_t size() const { return named_children().size(); }
};

}  // namespace kiln::nn
