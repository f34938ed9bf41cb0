// nn::Module: the base of every layer and model. It owns named parameters, buffers and submodules
// (STYLE L12), and derives from them what PyTorch's nn.Module does: dotted names, state_dict,
// train/eval, device and dtype moves, zero_grad and printing. Layers live in nn/layers/,
// containers in nn/containers.h.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "tensor/state_dict.h"
#include "tensor/tensor.h"

namespace kiln::nn {

class Module;
using ModulePtr = std::shared_ptr<Module>;
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using NamedModules = std::vector<std::pair<std::string, ModulePtr>>;

// What load_state_dict(strict = false) tolerated: torch's _IncompatibleKeys.
struct LoadResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module : public std::enable_shared_from_this<Module> {
 public:
  explicit Module(std::string type_name = "Module") : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // The one-tensor forward that Sequential chains. Modules with other signatures (losses taking
  // two tensors, attention taking three) add their own overloads and leave this one refusing.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // ---- registration. Names must be non-empty, free of '.', and unique within this module.
  // Parameters become leaves that require grad; the returned handle shares the registered body.
  Tensor register_parameter(const std::string& name, Tensor value, bool requires_grad = true);
  // A non-persistent buffer moves with to() but is left out of state_dict (torch's persistent=False).
  Tensor register_buffer(const std::string& name, Tensor value, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

  // ---- traversal, in registration order, depth first, each tensor and module once (as torch).
  std::vector<Tensor> parameters(bool recurse = true) const;
  NamedTensors named_parameters(bool recurse = true) const;
  std::vector<Tensor> buffers(bool recurse = true) const;
  NamedTensors named_buffers(bool recurse = true) const;
  std::vector<ModulePtr> children() const;
  NamedModules named_children() const { return children_; }
  std::vector<ModulePtr> modules();                        // this module first, then descendants
  NamedModules named_modules(const std::string& prefix = "");  // this module is named ""
  // A parameter, buffer or submodule of this module by (dotted) name, or an error naming the
  // names that exist.
  Tensor& parameter(const std::string& name);
  Tensor& buffer(const std::string& name);
  ModulePtr submodule(const std::string& dotted_name) const;
  // Puts `module` in the place of the child `name` (same position, so state_dict order holds), as
  // torch's setattr of a submodule; returns the old child. A parent that also keeps the old child
  // in a typed member still calls that one: callers check (convert_sync_batchnorm does).
  ModulePtr replace_child(const std::string& name, ModulePtr module);

  // ---- modes and moves
  virtual void train(bool on = true);  // this module and all below
  void eval() { train(false); }
  bool is_training() const { return training_; }
  // In place on every parameter and buffer, keeping each tensor's identity (so optimizers and
  // layer members still see it) and requires_grad, like torch's module.to. A dtype move touches
  // floating tensors only: integer buffers such as num_batches_tracked keep their dtype.
  Module& to(Device device);
  Module& to(DType dtype);
  Module& to(Device device, DType dtype);
  void zero_grad(bool set_to_none = true);
  // Calls fn on every submodule (children first, recursively) and then on this one, like torch.
  Module& apply(const std::function<void(Module&)>& fn);

  // ---- saved state: parameters then persistent buffers of each module, this module before its
  // children, named as torch names them ("0.weight", "bn.running_mean"). Tensors are detached
  // handles on the live data.
  TensorDict state_dict(const std::string& prefix = "") const;
  // Copies values into the existing tensors (converting dtype and device). Shape mismatches are
  // always errors; missing and unexpected keys are errors when strict. All problems are reported
  // in one message, as torch does.
  LoadResult load_state_dict(const TensorDict& state, bool strict = true);

  // ---- printing like print(model) in torch
  const std::string& type_name() const { return type_name_; }
  virtual std::string extra_repr() const { return ""; }
  virtual std::string str() const;

 protected:
  void add_child(const std::string& name, ModulePtr module);
  bool training_ = true;

 private:
  struct Slot {
    std::string name;
    Tensor value;
    bool persistent = true;
  };
  void check_new_name(const std::string& name, const char* what) const;
  void visit_modules(const std::string& prefix, const std::function<void(const std::string&, Module&)>& fn);
  void collect_state(TensorDict& out, const std::string& prefix) const;
  NamedTensors named_slots(std::vector<Slot> Module::*slots, bool recurse) const;
  void move_tensors(const std::function<Tensor(const Tensor&)>& convert);

  std::string type_name_;
  std::vector<Slot> parameters_;
  std::vector<Slot> buffers_;
  NamedModules children_;
};

std::ostream& operator<<(std::ostream& os, const Module& m);

// Values as Python prints them, for extra_repr: True/False, (3, 3) / (3,), 1e-05 / 0.1 / 1.0.
std::string bool_text(bool b);
std::string tuple_text(const Dims& d);
std::string float_text(double v);

}  // namespace kiln::nn
