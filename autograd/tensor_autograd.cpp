// The autograd methods of Tensor (declared in tensor/tensor.h), with PyTorch's leaf semantics.
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/meta.h"

namespace kiln {

using autograd::AutogradMeta;
using autograd::find_meta;
using autograd::meta_of;

bool Tensor::requires_grad() const {
  const AutogradMeta* meta = find_meta(*this);
  return meta && (meta->requires_grad || meta->grad_fn);
}

Tensor& Tensor::requires_grad_(bool requires_grad) {
  KILN_CHECK(defined(), "requires_grad_: undefined tensor");
  AutogradMeta* meta = find_meta(*this);
  KILN_CHECK(!(meta && meta->grad_fn) || requires_grad, "requires_grad_: only leaf tensors can change requires_grad; "
             "this tensor was computed by '", meta->grad_fn->name(), "'. Use detach() to get a tensor outside the graph");
  KILN_CHECK(!requires_grad || is_floating(), "requires_grad_: only floating-point tensors can require gradients; got ",
             dtype());
  if (!meta && !requires_grad) return *this;
  meta_of(*this).requires_grad = requires_grad || (meta && meta->grad_fn);
  return *this;
}

bool Tensor::is_leaf() const {
  const AutogradMeta* meta = find_meta(*this);
  return !meta || !meta->grad_fn;
}

const Tensor& Tensor::grad() const {
  static const Tensor none;
  AutogradMeta* meta = find_meta(*this);
  if (!meta) return none;
  if (meta->grad_fn) {
    const Tensor* retained = meta->grad_fn->retained_grad(meta->output_nr);
    return retained ? *retained : none;
  }
  return meta->grad;
}

Tensor& Tensor::mutable_grad() {
  KILN_CHECK(defined(), "mutable_grad: undefined tensor");
  AutogradMeta& meta = meta_of(*this);
  if (meta.grad_fn) {
    Tensor* retained = meta.grad_fn->retained_grad(meta.output_nr);
    KILN_CHECK(retained, "mutable_grad: a non-leaf tensor has a .grad only after retain_grad()");
    return *retained;
  }
  return meta.grad;
}

const Ref<autograd::Node>& Tensor::grad_fn() const {
  static const Ref<autograd::Node> none;
  const AutogradMeta* meta = find_meta(*this);
  return meta ? meta->grad_fn : none;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  autograd::backward({*this}, {gradient}, retain_graph);
}

Tensor Tensor::detach() const {
  KILN_CHECK(defined(), "detach: undefined tensor");
  return detach_view();
}

Tensor& Tensor::detach_() {
  KILN_CHECK(defined(), "detach_: undefined tensor");
  if (AutogradMeta* meta = find_meta(*this)) {
    KILN_CHECK(!meta->is_view, "detach_: cannot detach a view in place; use detach()");
    meta->grad_fn = Ref<autograd::Node>();
    meta->requires_grad = false;
  }
  return *this;
}

void Tensor::retain_grad() const {
  KILN_CHECK(requires_grad(), "retain_grad: the tensor (shape ", shape(), ") does not require grad");
  const AutogradMeta& meta = meta_of(*this);
  if (!meta.grad_fn) return;  // leaves keep their .grad anyway
  if (!meta.grad_fn->retained_grad(meta.output_nr)) meta.grad_fn->retained_grads.emplace_back(meta.output_nr, Tensor());
}

bool Tensor::retains_grad() const {
  const AutogradMeta* meta = find_meta(*this);
  return meta && meta->grad_fn && meta->grad_fn->retained_grad(meta->output_nr);
}

autograd::HookHandle Tensor::register_hook(std::function<Tensor(const Tensor&)> hook) const {
  KILN_CHECK(requires_grad(), "register_hook: cannot register a hook on a tensor (shape ", shape(),
             ") that does not require grad");
  static std::atomic<uint64_t> next_id{1};
  AutogradMeta& meta = meta_of(*this);
  auto& list = meta.grad_fn ? meta.grad_fn->hooks : meta.hooks;
  if (!list) list = std::make_shared<autograd::HookList>();
  const uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  list->entries.push_back({id, meta.grad_fn ? meta.output_nr : 0, std::move(hook)});
  return autograd::HookHandle(list, id);
}

namespace autograd {

HookHandle register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor&)> hook) {
  KILN_CHECK(leaf.defined(), "register_post_accumulate_grad_hook: undefined tensor");
  KILN_CHECK(leaf.requires_grad(), "register_post_accumulate_grad_hook: the tensor (shape ", leaf.shape(),
             ") does not require grad");
  KILN_CHECK(leaf.is_leaf(), "register_post_accumulate_grad_hook: only leaf tensors accumulate a .grad; this one ",
             "(shape ", leaf.shape(), ") was computed by '", leaf.grad_fn()->name(), "'. Use register_hook for a non-leaf");
  static std::atomic<uint64_t> next_id{1};
  AutogradMeta& meta = meta_of(leaf);
  if (!meta.post_accumulate_hooks) meta.post_accumulate_hooks = std::make_shared<HookList>();
  const uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  meta.post_accumulate_hooks->entries.push_back({id, 0, [hook = std::move(hook)](const Tensor& t) {
                                                   hook(t);
                                                   return Tensor();
                                                 }});
  return HookHandle(meta.post_accumulate_hooks, id);
}

}  // namespace autograd
}  // namespace kiln
