// The autograd state of one tensor body (TensorImpl::autograd): whether a leaf requires grad, its
// accumulated .grad, the node that produced a non-leaf, and its hooks. Absent (null) on tensors
// that never took part in autograd, so plain tensors pay one pointer.
#pragma once

#include <memory>

#include "autograd/node.h"

namespace kiln::autograd {

struct AutogradMeta {
  bool requires_grad = false;  // set by the user on leaves; non-leaves require grad through grad_fn
  bool is_view = false;        // an op output that shares its input's storage (in-place checks)
  Tensor grad;
  Ref<Node> grad_fn;           // null for leaves
  uint32_t output_nr = 0;      // which output of grad_fn this tensor is
  // The leaf's AccumulateGrad while one exists (unowned: the node owns the leaf, and clears this
  // pointer when it dies), so that every use of a leaf in a graph meets in one node.
  AccumulateGrad* grad_accumulator = nullptr;
  std::shared_ptr<HookList> hooks;  // a leaf's hooks (a non-leaf's live on its grad_fn)
  // Called with the leaf once its .grad is updated (register_post_accumulate_grad_hook); the
  // entries' return values are ignored.
  std::shared_ptr<HookList> post_accumulate_hooks;

  static void* operator new(size_t bytes);  // recycled per thread (tensor/object_pool.h)
  static void operator delete(void* p, size_t bytes);
};

// The tensor's meta, created on first use.
AutogradMeta& meta_of(const Tensor& t);
inline AutogradMeta* find_meta(const Tensor& t) { return t.defined() ? t.impl()->autograd.get() : nullptr; }

// Where a gradient for `t` must go: its grad_fn for a non-leaf, its accumulator for a leaf that
// requires grad, nothing otherwise.
Edge gradient_edge(const Tensor& t);

// The tensor's metadata for checking gradients against it.
inline InputMeta input_meta_of(const Tensor& t) { return {t.shape(), t.dtype(), t.device()}; }

}  // namespace kiln::autograd
