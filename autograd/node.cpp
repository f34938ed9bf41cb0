// Node teardown, hooks, saved tensors and the leaf accumulator.
#include "autograd/node.h"

#include <atomic>

#include "autograd/grad_mode.h"
#include "autograd/meta.h"
#include "tensor/object_pool.h"

namespace kiln::autograd {

uint64_t next_sequence_nr() {
  static std::atomic<uint64_t> counter{1};
  return counter.fetch_add(1, std::memory_order_relaxed);
}

// Dropping the last tensor of a long graph (an RNN unrolled over 100k steps) would otherwise
// destroy node after node recursively and overflow the stack. The outermost destructor drains a
// worklist instead; nested ones only hand their edges to it.
Node::~Node() {
  thread_local std::vector<Ref<Node>>* worklist = nullptr;
  if (worklist) {
    for (Edge& e : next_edges)
      if (e.node) worklist->push_back(std::move(e.node));
    return;
  }
  std::vector<Ref<Node>> pending;
  for (Edge& e : next_edges)
    if (e.node) pending.push_back(std::move(e.node));
  worklist = &pending;
  while (!pending.empty()) {
    Ref<Node> n = std::move(pending.back());
    pending.pop_back();
    n.reset();  // may push its own edges onto `pending`
  }
  worklist = nullptr;
}

// Nodes differ in size by what their backward captures: one free list per 64 bytes, up to 512.
using NodePool = detail::SizeClassPool<Node, 64, 8>;
void* Node::operator new(size_t bytes) { return NodePool::allocate(bytes); }
void Node::operator delete(void* p, size_t bytes) { NodePool::release(p, bytes); }

Tensor* Node::retained_grad(uint32_t output_nr) {
  for (auto& [nr, grad] : retained_grads)
    if (nr == output_nr) return &grad;
  return nullptr;
}

Tensor HookList::run(uint32_t output_nr, Tensor grad) const {
  for (const Entry& e : entries) {
    if (e.output_nr != output_nr || !grad.defined()) continue;
    Tensor replaced = e.fn(grad);
    if (replaced.defined()) {
      KILN_CHECK(replaced.shape() == grad.shape(), "gradient hook: returned a gradient of shape ", replaced.shape(),
                 " for a gradient of shape ", grad.shape());
      grad = std::move(replaced);
    }
  }
  return grad;
}

void HookHandle::remove() {
  if (auto list = list_.lock()) std::erase_if(list->entries, [&](const HookList::Entry& e) { return e.id == id_; });
  list_.reset();
}

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  data_ = t.detach();
  version_ = t.version();
}

const Tensor& SavedTensor::get() const {
  KILN_CHECK(!data_.defined() || data_.version() == version_,
             "one of the tensors needed for gradient computation has been modified by an in-place operation: "
             "the saved ", data_.dtype(), " tensor of shape ", data_.shape(), " is at version ", data_.version(),
             "; expected version ", version_, ". Compute it out of place (or clone() it) before the in-place op");
  return data_;
}

AccumulateGrad::AccumulateGrad(Ref<TensorImpl> leaf) : leaf_(std::move(leaf)) { is_accumulator_ = true; }

AccumulateGrad::~AccumulateGrad() {
  if (leaf_ && leaf_->autograd && leaf_->autograd->grad_accumulator == this) leaf_->autograd->grad_accumulator = nullptr;
}

// A first gradient is stolen when nothing else refers to it (saves a copy per parameter per step),
// otherwise copied, because later accumulation adds in place and must not write into a tensor that
// another node or the user still reads.
TensorList AccumulateGrad::apply(std::span<Tensor> grads) {
  Tensor leaf{leaf_};
  AutogradMeta& meta = meta_of(leaf);
  Tensor g = std::move(grads[0]);
  if (meta.hooks) g = meta.hooks->run(0, std::move(g));
  if (!g.defined()) return {};
  NoGradGuard no_grad;
  if (!meta.grad.defined()) {
    const bool sole_owner = g.impl()->use_count() == 1 && g.storage().use_count() == 1 && g.is_contiguous() &&
                            g.storage_offset() == 0;
    meta.grad = sole_owner ? std::move(g) : g.clone();
  } else {
    meta.grad.add_(g);
  }
  if (meta.post_accumulate_hooks) {
    // A copy, because a hook may remove itself (or add another) while it runs.
    const std::vector<HookList::Entry> hooks = meta.post_accumulate_hooks->entries;
    for (const HookList::Entry& e : hooks) e.fn(leaf);
  }
  return {};
}

}  // namespace kiln::autograd
