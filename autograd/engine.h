// The backward engine: runs a recorded graph from its outputs back to the leaves.
#pragma once

#include "autograd/node.h"

namespace kiln::autograd {

// Accumulates d(sum of outputs[i] * grad_outputs[i]) / d(leaf) into the .grad of every leaf that
// requires grad. grad_outputs[i] may be undefined for a one-element output (ones). The graph's saved
// tensors are freed afterwards unless retain_graph.
void backward(const TensorList& outputs, const TensorList& grad_outputs = {}, bool retain_graph = false);

struct GradOptions {
  TensorList grad_outputs;    // as for backward(); empty = ones for one-element outputs
  bool retain_graph = false;
  bool allow_unused = false;  // an input the outputs do not depend on gets an undefined gradient
};

// The gradients of the outputs with respect to `inputs`, returned rather than accumulated: no .grad
// is touched. Only the part of the graph between outputs and inputs runs.
TensorList grad(const TensorList& outputs, const TensorList& inputs, const GradOptions& options = {});

// Calls hook(leaf) each time a backward has added into leaf.grad(), after this backward's whole
// contribution is in (torch's register_post_accumulate_grad_hook): DDP starts a bucket's
// all-reduce from it. `leaf` must be a leaf that requires grad. Hooks run on the thread running
// backward, in registration order; remove() on the handle stops the calls.
HookHandle register_post_accumulate_grad_hook(const Tensor& leaf, std::function<void(const Tensor&)> hook);

// Sums a gradient over the dimensions along which its input was broadcast to `shape`.
Tensor sum_to(const Tensor& grad, const Dims& shape);

}  // namespace kiln::autograd
