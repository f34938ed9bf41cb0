// The backward engine (STYLE L6): the generic work happens here so that derivative formulas stay
// one line: it orders nodes, buffers and sums the gradients flowing into each, runs hooks, checks
// every gradient against its input (Note [One check of every gradient]), frees saved tensors, and
// in anomaly mode names the op whose backward produced NaN/Inf.
#include "autograd/engine.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>
#include <unordered_set>

#include "autograd/grad_mode.h"
#include "autograd/meta.h"
#include "autograd/ops/reduce.h"
#include "tensor/dispatch.h"
#include "tensor/factories.h"

namespace kiln::autograd {

Tensor sum_to(const Tensor& grad, const Dims& shape) {
  if (grad.shape() == shape) return grad;
  const int lead = grad.dim() - shape.size();
  KILN_ASSERT(lead >= 0, "sum_to: gradient of shape ", grad.shape(), " has fewer dims than ", shape);
  Dims reduce;
  for (int d = 0; d < grad.dim(); ++d) {
    const bool leading = d < lead;
    if (leading || (shape[d - lead] == 1 && grad.shape()[d] != 1)) reduce.push_back(d);
  }
  Tensor summed = reduce.empty() ? grad : grad.sum(reduce, /*keepdim=*/true);
  return summed.view(shape);
}

namespace {

// Note [One check of every gradient]: a backward formula may return a gradient in its broadcast
// shape or compute dtype; it is reduced and cast here, once, against what the input looked like.
Tensor validate(Tensor g, const InputMeta& meta, const Node& node, size_t i) {
  if (g.shape() != meta.shape) {
    KILN_ASSERT(g.numel() >= checked_numel(meta.shape, "backward"), "backward of '", node.name(), "' returned a gradient of shape ",
                g.shape(), " for input ", i, " of shape ", meta.shape);
    g = sum_to(g, meta.shape);
  }
  if (g.dtype() != meta.dtype) g = g.to(meta.dtype);
  KILN_ASSERT(g.device() == meta.device, "backward of '", node.name(), "' returned a gradient on ", g.device(),
              " for input ", i, " on ", meta.device);
  return g;
}

bool all_finite(const Tensor& g) {
  if (!is_floating(g.dtype()) || g.numel() == 0) return true;
  // inf * 0 and nan * 0 are both NaN, so one reduction finds either.
  return std::isfinite((g * 0).sum().to(DType::f64).item<double>());
}

Tensor root_gradient(const Tensor& out, const Tensor& given, size_t i) {
  if (!given.defined()) {
    KILN_CHECK(out.numel() == 1, "backward: grad can be implicitly created only for one-element outputs; output ", i,
               " has shape ", out.shape(), ", so pass a gradient of that shape");
    return ones_like(out);
  }
  KILN_CHECK(given.shape() == out.shape(), "backward: the gradient for output ", i, " has shape ", given.shape(),
             " but the output has shape ", out.shape());
  KILN_CHECK(given.device() == out.device(), "backward: the gradient for output ", i, " is on ", given.device(),
             " but the output is on ", out.device());
  return given.dtype() == out.dtype() ? given : given.to(out.dtype());
}

class GraphTask {
 public:
  GraphTask(bool keep_graph, bool accumulate) : keep_graph_(keep_graph), accumulate_(accumulate) {}
  ~GraphTask() { give_back(std::move(buffers_)); }
  GraphTask(const GraphTask&) = delete;
  GraphTask& operator=(const GraphTask&) = delete;

  void add_root(const Edge& edge, Tensor grad) { deliver(edge, std::move(grad)); }

  // grad() mode: remember where each requested input's gradient arrives.
  void capture(const Edge& edge, size_t slot) { captures_[edge.node.get()].push_back({edge.input_nr, slot}); }

  // grad() mode: only nodes from which a captured node is reachable run.
  void prune(const std::vector<Node*>& roots) {
    std::vector<Node*> all;
    std::unordered_set<Node*> seen;
    std::vector<Node*> stack(roots.begin(), roots.end());
    while (!stack.empty()) {
      Node* n = stack.back();
      stack.pop_back();
      if (!seen.insert(n).second) continue;
      all.push_back(n);
      for (const Edge& e : n->next_edges)
        if (e.valid()) stack.push_back(e.node.get());
    }
    // Oldest first: a node's children are all older (Note [Sequence numbers order the tape]).
    std::sort(all.begin(), all.end(), [](Node* a, Node* b) { return a->sequence_nr() < b->sequence_nr(); });
    needed_.emplace();
    for (Node* n : all) {
      bool need = captures_.count(n) != 0;
      for (const Edge& e : n->next_edges) need = need || (e.valid() && needed_->count(e.node.get()));
      if (need) needed_->insert(n);
    }
  }

  void run(TensorList* captured) {
    while (!buffers_.ready.empty()) {
      std::pop_heap(buffers_.ready.begin(), buffers_.ready.end());
      const uint32_t index = buffers_.ready.back().second;
      buffers_.ready.pop_back();
      // Moved out: executing may add entries to the pending vector and move it.
      GradSlots grads = std::move(buffers_.pending[index].grads);
      execute(*buffers_.pending[index].node, std::move(grads), captured);
    }
  }

 private:
  using GradSlots = SmallVector<Tensor, 2>;
  // Note [Gradient buffers]: every node that a backward reaches gets one Pending entry, which holds
  // the node alive (even if its tensors die meanwhile) and sums the gradients arriving for each of
  // its outputs until it runs. Entries are found through a flat open-addressing table keyed by
  // the node's address, and nothing is erased during a backward, so an entry costs no allocation of
  // its own. A later gradient is added into the buffered one in place when nothing else refers to
  // that (owned_here), so a weight used by many ops costs no new tensor per use. The engine's
  // per-node cost is what bench_autograd's chain of adds measures.
  struct Pending {
    Ref<Node> node;
    GradSlots grads;
  };

  static size_t hash(const Node* node) {
    uint64_t h = reinterpret_cast<uintptr_t>(node);
    h ^= h >> 29;
    return static_cast<size_t>((h * 0x9E3779B97F4A7C15ull) >> 32);
  }

  // Note [Leaves accumulate early]: nodes run newest first (Note [Sequence numbers order the
  // tape]), keyed 2 * seq + 1. A leaf's AccumulateGrad has no sequence number of its own; keyed 0,
  // it would run after every other node, so each leaf's .grad (and its post-accumulate hooks, from
  // which DDP starts all-reducing) would wait for the whole backward. Keyed 2 * (its oldest
  // consumer's seq), it runs right after that consumer, the last node that can send it a gradient.
  // A stale first consumer (an accumulator kept alive by an older graph) only makes it run later.
  static uint64_t ready_key(Node& node) {
    if (AccumulateGrad* acc = node.as_accumulator()) return 2 * acc->first_consumer_seq;
    return 2 * node.sequence_nr() + 1;
  }

  // The index of node's Pending entry; a new entry is queued to run.
  uint32_t entry_of(const Edge& edge) {
    auto& [pending, table, ready] = buffers_;
    Node* node = edge.node.get();
    if (2 * (pending.size() + 1) > table.size()) rehash(std::max<size_t>(64, 2 * table.size()));
    const size_t mask = table.size() - 1;
    for (size_t i = hash(node) & mask;; i = (i + 1) & mask) {
      if (table[i] == 0) {
        const auto index = static_cast<uint32_t>(pending.size());
        table[i] = index + 1;
        pending.push_back({edge.node, GradSlots(node->num_outputs())});
        ready.push_back({ready_key(*node), index});
        std::push_heap(ready.begin(), ready.end());
        return index;
      }
      if (pending[table[i] - 1].node.get() == node) return table[i] - 1;
    }
  }

  void rehash(size_t capacity) {
    auto& [pending, table, ready] = buffers_;
    table.assign(capacity, 0);
    for (uint32_t index = 0; index < pending.size(); ++index) {
      size_t i = hash(pending[index].node.get()) & (capacity - 1);
      while (table[i] != 0) i = (i + 1) & (capacity - 1);
      table[i] = index + 1;
    }
  }

  void deliver(const Edge& edge, Tensor grad) {
    if (needed_ && !needed_->count(edge.node.get())) return;
    Tensor& slot = buffers_.pending[entry_of(edge)].grads[edge.input_nr];
    if (!slot.defined()) slot = std::move(grad);
    else if (owned_here(slot)) add_into(slot, grad);
    else slot = slot + grad;
  }

  // slot += grad, straight to the kernel: both were checked against the same input (validate() or
  // root_gradient()), so they agree in shape, dtype and device, and slot is this engine's alone.
  static void add_into(Tensor& slot, const Tensor& grad) {
    KILN_ASSERT(slot.shape() == grad.shape() && slot.dtype() == grad.dtype() && slot.device() == grad.device());
    dispatch<Op::add>(slot.device(), slot, grad, slot);
  }

  // Not shared with another node's buffer, a hook or the user, and not an expanded view (whose
  // elements alias), so adding into it changes nothing anyone else reads.
  static bool owned_here(const Tensor& t) {
    return t.impl()->use_count() == 1 && t.storage().use_count() == 1 && t.is_contiguous();
  }

  void execute(Node& node, GradSlots grads, TensorList* captured) {
    if (node.hooks)
      for (uint32_t i = 0; i < grads.size(); ++i) grads[i] = node.hooks->run(i, std::move(grads[i]));
    for (auto& [nr, retained] : node.retained_grads)
      if (grads[nr].defined()) retained = retained.defined() ? retained + grads[nr] : grads[nr].clone();

    AccumulateGrad* acc = node.as_accumulator();
    if (auto c = captures_.empty() ? captures_.end() : captures_.find(&node); c != captures_.end()) {
      for (auto [nr, slot] : c->second) {
        Tensor g = grads[nr];
        if (acc) {
          AutogradMeta* meta = acc->leaf()->autograd.get();
          if (meta && meta->hooks) g = meta->hooks->run(0, std::move(g));
        }
        Tensor& out = (*captured)[slot];
        out = out.defined() && g.defined() ? out + g : g;
      }
    }
    if (acc && !accumulate_) return;
    if (needed_ && !acc) {
      bool any_child_needed = false;
      for (const Edge& e : node.next_edges) any_child_needed = any_child_needed || (e.valid() && needed_->count(e.node.get()));
      if (!any_child_needed) return;
    }

    TensorList inputs_grads;
    try {
      inputs_grads = node.apply(std::span<Tensor>(grads.data(), grads.size()));
    } catch (const Error& e) {
      throw Error(std::string("in the backward of '") + node.name() + "': " + e.what());
    }
    if (!keep_graph_) node.release_saved();
    if (acc) return;
    KILN_ASSERT(inputs_grads.size() == node.next_edges.size(), "backward of '", node.name(), "' returned ",
                inputs_grads.size(), " gradients for ", node.next_edges.size(), " inputs");
    for (size_t i = 0; i < inputs_grads.size(); ++i) {
      const Edge& edge = node.next_edges[i];
      if (!edge.valid() || !inputs_grads[i].defined()) continue;
      Tensor g = validate(std::move(inputs_grads[i]), node.input_meta[i], node, i);
      KILN_CHECK(!is_anomaly_enabled() || all_finite(g), "anomaly detected: the backward of '", node.name(),
                 "' produced NaN or Inf in the gradient of its input ", i, " (shape ", g.shape(), ")");
      deliver(edge, std::move(g));
    }
  }

  bool keep_graph_;
  bool accumulate_;
  // The engine's containers, kept per thread from one backward to the next so that a training loop
  // reuses their capacity instead of growing them again every step.
  struct Buffers {
    std::vector<Pending> pending;
    std::vector<uint32_t> table;  // index + 1 into pending, or 0 where empty; at most half full
    // A max-heap of (ready_key, index into pending): the newest node runs first
    // (Note [Sequence numbers order the tape], Note [Leaves accumulate early]).
    std::vector<std::pair<uint64_t, uint32_t>> ready;
  };
  // A graph larger than this leaves its table to be freed rather than cleared by every later backward.
  static constexpr size_t kMaxKeptTable = size_t{1} << 14;
  static std::vector<Buffers>& spare() {
    thread_local std::vector<Buffers> buffers;  // several while backwards nest (from hooks)
    return buffers;
  }
  static Buffers take_buffers() {
    std::vector<Buffers>& buffers = spare();
    if (buffers.empty()) return {};
    Buffers b = std::move(buffers.back());
    buffers.pop_back();
    return b;
  }
  static void give_back(Buffers&& b) {
    b.pending.clear();  // releases the nodes this backward held
    b.ready.clear();
    if (b.table.size() > kMaxKeptTable) return;
    std::fill(b.table.begin(), b.table.end(), 0);
    spare().push_back(std::move(b));
  }

  Buffers buffers_ = take_buffers();
  std::unordered_map<Node*, std::vector<std::pair<uint32_t, size_t>>> captures_;
  std::optional<std::unordered_set<Node*>> needed_;
};

Edge root_edge(const Tensor& out, size_t i, const char* api) {
  KILN_CHECK(out.defined(), api, ": output ", i, " is undefined");
  Edge edge = gradient_edge(out);
  KILN_CHECK(edge.valid(), api, ": output ", i, " (shape ", out.shape(), ") does not require grad and has no grad_fn; "
             "did you compute it under NoGradGuard, or from tensors without requires_grad_()?");
  return edge;
}

}  // namespace

void backward(const TensorList& outputs, const TensorList& grad_outputs, bool retain_graph) {
  KILN_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), "backward: got ", grad_outputs.size(),
             " gradients for ", outputs.size(), " outputs");
  NoGradGuard no_grad;  // derivative formulas never record (no double backward)
  GraphTask task(retain_graph, /*accumulate=*/true);
  for (size_t i = 0; i < outputs.size(); ++i) {
    Edge edge = root_edge(outputs[i], i, "backward");
    task.add_root(edge, root_gradient(outputs[i], grad_outputs.empty() ? Tensor() : grad_outputs[i], i));
  }
  task.run(nullptr);
}

TensorList grad(const TensorList& outputs, const TensorList& inputs, const GradOptions& options) {
  const TensorList& grad_outputs = options.grad_outputs;
  KILN_CHECK(grad_outputs.empty() || grad_outputs.size() == outputs.size(), "grad: got ", grad_outputs.size(),
             " gradients for ", outputs.size(), " outputs");
  NoGradGuard no_grad;
  GraphTask task(options.retain_graph, /*accumulate=*/false);
  for (size_t i = 0; i < inputs.size(); ++i) {
    KILN_CHECK(inputs[i].defined() && inputs[i].requires_grad(), "grad: input ", i, " does not require grad");
    task.capture(gradient_edge(inputs[i]), i);
  }
  std::vector<Node*> roots;
  std::vector<Edge> root_edges;
  for (size_t i = 0; i < outputs.size(); ++i) {
    root_edges.push_back(root_edge(outputs[i], i, "grad"));
    roots.push_back(root_edges.back().node.get());
  }
  task.prune(roots);
  for (size_t i = 0; i < outputs.size(); ++i)
    task.add_root(root_edges[i], root_gradient(outputs[i], grad_outputs.empty() ? Tensor() : grad_outputs[i], i));
  TensorList result(inputs.size());
  task.run(&result);
  for (size_t i = 0; i < inputs.size(); ++i)
    KILN_CHECK(options.allow_unused || result[i].defined(), "grad: input ", i, " (shape ", inputs[i].shape(),
               ") was not used to compute the outputs; pass allow_unused = true if that is expected");
  return result;
}

}  // namespace kiln::autograd
