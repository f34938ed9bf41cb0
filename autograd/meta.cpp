// Per-tensor autograd state and how op definitions connect nodes to it.
#include "autograd/meta.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "autograd/record.h"
#include "tensor/object_pool.h"

namespace kiln::autograd {

void* AutogradMeta::operator new(size_t bytes) { return detail::ObjectPool<AutogradMeta>::allocate(bytes); }
void AutogradMeta::operator delete(void* p, size_t bytes) { detail::ObjectPool<AutogradMeta>::release(p, bytes); }

void MetaDeleter::operator()(AutogradMeta* meta) const { delete meta; }

AutogradMeta& meta_of(const Tensor& t) {
  KILN_ASSERT(t.defined());
  auto& slot = t.impl()->autograd;
  if (!slot) slot.reset(new AutogradMeta);
  return *slot;
}

Edge gradient_edge(const Tensor& t) {
  AutogradMeta* meta = find_meta(t);
  if (!meta) return {};
  if (meta->grad_fn) return {meta->grad_fn, meta->output_nr};
  if (!meta->requires_grad) return {};
  if (!meta->grad_accumulator) {
    auto* acc = new AccumulateGrad(Ref<TensorImpl>(t.impl()));
    acc->input_meta.push_back(input_meta_of(t));
    meta->grad_accumulator = acc;
    return {Ref<Node>(acc), 0};
  }
  return {Ref<Node>(meta->grad_accumulator), 0};
}

void attach(Node& node, std::span<const Tensor> inputs, std::span<Tensor> outputs) {
  node.next_edges.reserve(inputs.size());
  node.input_meta.reserve(inputs.size());
  for (const Tensor& in : inputs) {
    if (!in.defined()) {
      node.next_edges.emplace_back();
      node.input_meta.emplace_back();
      continue;
    }
    node.next_edges.push_back(gradient_edge(in));
    node.input_meta.push_back(input_meta_of(in));
  }
  node.sequence_nr_ = next_sequence_nr();
  for (const Edge& e : node.next_edges)
    if (AccumulateGrad* acc = e.valid() ? e.node->as_accumulator() : nullptr; acc && acc->first_consumer_seq == 0)
      acc->first_consumer_seq = node.sequence_nr_;
  for (size_t i = 0; i < outputs.size(); ++i) {
    Tensor& out = outputs[i];
    if (!out.defined() || !is_floating(out.dtype())) continue;  // indices and masks carry no gradient
    AutogradMeta& meta = meta_of(out);
    meta.grad_fn = Ref<Node>(&node);
    meta.output_nr = static_cast<uint32_t>(i);
    meta.requires_grad = false;
  }
}

void mark_view(const Tensor& view) {
  if (AutogradMeta* meta = find_meta(view); meta && meta->grad_fn) meta->is_view = true;
}

void check_inplace(const Tensor& self, const char* op) {
  if (!is_grad_enabled()) return;
  const AutogradMeta* meta = find_meta(self);
  if (!meta) return;
  KILN_CHECK(!(meta->requires_grad && !meta->grad_fn), op, ": a leaf tensor that requires grad (shape ", self.shape(),
             ") is used in an in-place operation; wrap the update in NoGradGuard (as optimizers do) or work on a clone()");
  KILN_CHECK(!meta->is_view, op, ": in-place change of a view (shape ", self.shape(), ") of a tensor in the autograd "
             "graph is not supported; write the result out of place (e.g. with cat, where or index ops)");
}

}  // namespace kiln::autograd
