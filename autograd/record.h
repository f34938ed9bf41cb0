// How an op definition records itself on the tape (STYLE L2): after computing its outputs, an op
// whose inputs need grad calls record() with its name, outputs, inputs and a backward lambda that
// captures only what backward needs (SavedTensor for tensors, plain values for shapes).
//
//   Tensor mul(const Tensor& a, const Tensor& b) {
//     Tensor out = ...forward...;
//     if (autograd::needs_grad(a, b))
//       autograd::record("mul", out, {a, b}, [sa = SavedTensor(a), sb = SavedTensor(b)](const Tensor& g, Needs need) {
//         return TensorList{need[0] ? g * sb.get() : Tensor(), need[1] ? g * sa.get() : Tensor()};
//       });
//     return out;
//   }
//
// The lambda returns one gradient per input (a TensorList, or a Tensor for one input), undefined
// where need[i] is false. It never reduces broadcasting or casts: the engine does both (engine.cpp).
// A single-output lambda takes `const Tensor& g` and is not called when no gradient reached the
// output; a multi-output lambda takes `const TensorList& grads`, where outputs that received no
// gradient are undefined.
#pragma once

#include <initializer_list>
#include <iterator>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>

#include "autograd/grad_mode.h"
#include "autograd/meta.h"
#include "autograd/node.h"

namespace kiln::autograd {

// Which inputs of the op need a gradient.
struct Needs {
  uint64_t bits = 0;
  bool operator[](size_t i) const { return i < 64 && ((bits >> i) & 1); }
};

inline bool requires_grad_of(const Tensor& t) { return t.defined() && t.requires_grad(); }

// True when grad mode is on and any input requires grad: only then does an op record.
template <class... Ts>
bool needs_grad(const Ts&... inputs) {
  return is_grad_enabled() && (requires_grad_of(inputs) || ...);
}
inline bool needs_grad(std::span<const Tensor> inputs) {
  if (!is_grad_enabled()) return false;
  for (const Tensor& t : inputs)
    if (requires_grad_of(t)) return true;
  return false;
}

// Connects `node` to its inputs (edges, input metadata) and makes it the grad_fn of `outputs`.
// Also used by in-place ops: listing `self` among both inputs and outputs rebases its history.
void attach(Node& node, std::span<const Tensor> inputs, std::span<Tensor> outputs);

// Marks an op output that shares storage with its input (views): in-place changes to it while
// autograd is on are refused, because Kiln does not rebase a view's base graph.
void mark_view(const Tensor& view);

// Refuses an in-place op on a tensor when autograd cannot account for it (PyTorch's rules: a leaf
// that requires grad, or a view of a tensor in the graph).
void check_inplace(const Tensor& self, const char* op);

template <class F>
class LambdaNode final : public Node {
 public:
  LambdaNode(const char* op, uint32_t num_outputs, F fn) : op_(op), fn_(std::in_place, std::move(fn)) {
    num_outputs_ = num_outputs;
  }

  TensorList apply(std::span<Tensor> grads) override {
    KILN_CHECK(fn_.has_value(), "backward through '", op_, "' a second time: its saved tensors were freed "
               "after the first backward; pass retain_graph = true to the first backward to keep them");
    Needs needs;
    for (size_t i = 0; i < next_edges.size() && i < 64; ++i)
      if (next_edges[i].valid()) needs.bits |= uint64_t{1} << i;
    if constexpr (std::is_invocable_v<F&, const Tensor&, Needs>) {
      if (!grads[0].defined()) return TensorList(next_edges.size());
      return as_list((*fn_)(grads[0], needs));
    } else {
      const TensorList list(std::make_move_iterator(grads.begin()), std::make_move_iterator(grads.end()));
      return as_list((*fn_)(list, needs));
    }
  }
  std::string name() const override { return op_; }
  void release_saved() override { fn_.reset(); }

 private:
  static TensorList as_list(Tensor&& t) { return TensorList{std::move(t)}; }
  static TensorList as_list(TensorList&& l) { return std::move(l); }

  const char* op_;
  std::optional<F> fn_;
};

// Records a one-output op.
template <class F>
void record(const char* op, Tensor& output, std::initializer_list<Tensor> inputs, F fn) {
  Ref<Node> node(new LambdaNode<F>(op, 1, std::move(fn)));
  attach(*node, std::span<const Tensor>(inputs.begin(), inputs.size()), std::span<Tensor>(&output, 1));
}
template <class F>
void record(const char* op, Tensor& output, std::span<const Tensor> inputs, F fn) {
  Ref<Node> node(new LambdaNode<F>(op, 1, std::move(fn)));
  attach(*node, inputs, std::span<Tensor>(&output, 1));
}
// Records an op with several differentiable outputs (split, chunk, ...).
template <class F>
void record(const char* op, std::span<Tensor> outputs, std::span<const Tensor> inputs, F fn) {
  Ref<Node> node(new LambdaNode<F>(op, static_cast<uint32_t>(outputs.size()), std::move(fn)));
  attach(*node, inputs, outputs);
}
template <class F>
void record(const char* op, std::span<Tensor> outputs, std::initializer_list<Tensor> inputs, F fn) {
  record(op, outputs, std::span<const Tensor>(inputs.begin(), inputs.size()), std::move(fn));
}

}  // namespace kiln::autograd

namespace kiln {
using autograd::Needs;
using autograd::SavedTensor;
using autograd::TensorList;
}  // namespace kiln
