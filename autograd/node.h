// The tape's vocabulary: a Node is the backward of one recorded op (or the accumulator of a leaf),
// an Edge says where a gradient flows next, a SavedTensor is a tensor kept for backward together
// with the version it had. The engine (engine.cpp) walks Nodes; op definitions create them through
// record() (record.h). Backward formulas always run with grad mode off: there is no double backward.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/small_vector.h"
#include "tensor/tensor.h"

namespace kiln::autograd {

class Node;
class AccumulateGrad;
using TensorList = std::vector<Tensor>;

// Where the gradient for one input of an op goes: input `input_nr` of `node`. Empty when that input
// does not require grad.
struct Edge {
  Ref<Node> node;
  uint32_t input_nr = 0;
  bool valid() const { return static_cast<bool>(node); }
};

// What a gradient for one input must look like; the engine sum-reduces broadcast gradients to
// this shape and casts them to this dtype before passing them on (Note [One check of every gradient]).
struct InputMeta {
  Dims shape;
  DType dtype = DType::f32;
  Device device;
};

// A gradient hook: gets the gradient, returns a replacement or an undefined tensor to keep it.
using TensorHook = std::function<Tensor(const Tensor&)>;

// Hooks of one tensor. Shared so that a HookHandle can remove a hook without keeping the graph alive.
struct HookList {
  struct Entry {
    uint64_t id;
    uint32_t output_nr;  // for hooks on a node: which output's gradient
    TensorHook fn;
  };
  std::vector<Entry> entries;
  Tensor run(uint32_t output_nr, Tensor grad) const;
};

// Returned by Tensor::register_hook. remove() unregisters; dropping the handle keeps the hook.
class HookHandle {
 public:
  HookHandle() = default;
  HookHandle(std::weak_ptr<HookList> list, uint64_t id) : list_(std::move(list)), id_(id) {}
  void remove();

 private:
  std::weak_ptr<HookList> list_;
  uint64_t id_ = 0;
};

class Node : public RefCounted {
 public:
  Node() = default;
  virtual ~Node();  // iterative: a long chain of nodes is torn down without deep recursion
  static void* operator new(size_t bytes);  // recycled per thread (tensor/object_pool.h)
  static void operator delete(void* p, size_t bytes);

  // grads: one per output of the forward op (this node's inputs), which apply may move from.
  // Returns one gradient per edge in next_edges (undefined where the input needs none).
  virtual TensorList apply(std::span<Tensor> grads) = 0;
  virtual std::string name() const = 0;
  // Frees what backward needed; called after backward unless retain_graph.
  virtual void release_saved() {}

  uint32_t num_outputs() const { return num_outputs_; }
  // The leaf accumulator this node is, or null (the engine asks for every node it runs, so this is
  // a flag rather than a dynamic_cast).
  AccumulateGrad* as_accumulator();
  uint64_t sequence_nr() const { return sequence_nr_; }
  bool needs_input_grad(size_t i) const { return i < next_edges.size() && next_edges[i].valid(); }

  SmallVector<Edge, 2> next_edges;       // one per input of the forward op
  SmallVector<InputMeta, 2> input_meta;  // shape/dtype/device of each such input
  std::shared_ptr<HookList> hooks;       // hooks registered on this node's output tensors
  // The .grad of output tensors that asked retain_grad(), by output_nr. Kept here rather than in
  // the tensor so the engine needs no pointer back to tensors that may have died.
  std::vector<std::pair<uint32_t, Tensor>> retained_grads;
  Tensor* retained_grad(uint32_t output_nr);

 protected:
  uint32_t num_outputs_ = 1;
  bool is_accumulator_ = false;

 private:
  friend void attach(Node&, std::span<const Tensor>, std::span<Tensor>);
  // Note [Sequence numbers order the tape]: taken from one global counter once a node's edges
  // exist, so every edge points from a newer node to an older one. Running nodes newest first is
  // then a topological order, which is all the engine needs.
  uint64_t sequence_nr_ = 0;
};

uint64_t next_sequence_nr();

// The sink of a leaf tensor that requires grad: adds incoming gradients to its .grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(Ref<TensorImpl> leaf);
  ~AccumulateGrad() override;
  TensorList apply(std::span<Tensor> grads) override;
  std::string name() const override { return "AccumulateGrad"; }
  TensorImpl* leaf() const { return leaf_.get(); }
  // The sequence number of the first node recorded with an edge here (set by attach; 0 when none,
  // as for a leaf that is itself an output): every later consumer is newer, which lets the engine
  // run this node as soon as its last gradient can have arrived (Note [Leaves accumulate early]).
  uint64_t first_consumer_seq = 0;

 private:
  Ref<TensorImpl> leaf_;
};

inline AccumulateGrad* Node::as_accumulator() {
  return is_accumulator_ ? static_cast<AccumulateGrad*>(this) : nullptr;
}

// Note [Saved tensor versioning]: a tensor saved for backward remembers the version of its storage
// at save time. If an in-place op changes the storage before backward, unpacking it fails with an
// error naming the op that saved it, instead of silently using the new values (PyTorch's rule).
// A SavedTensor holds a detached handle, so saving an op's own output creates no reference cycle.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  // The saved tensor, or an error when it was modified in place since (the engine adds the op's name).
  const Tensor& get() const;
  bool defined() const { return data_.defined(); }

 private:
  Tensor data_;
  uint32_t version_ = 0;
};

}  // namespace kiln::autograd
