// What the layer op definitions (conv.cpp, pool.cpp, norm.cpp) share to record their one node:
// the node's Needs as the LayerGradMask of an explicit backward, that backward's LayerGrads as the
// node's gradient list, and the refusal that keeps the explicit backwards off the tape. Internal.
#pragma once

#include <utility>

#include "autograd/ops/nn_ops.h"
#include "autograd/record.h"

namespace kiln::detail {

inline LayerGradMask mask_of(Needs need) { return {need[0], need[1], need[2]}; }

// One gradient per recorded input {x, weight, bias}.
inline TensorList grad_list(LayerGrads g) { return {std::move(g.input), std::move(g.weight), std::move(g.bias)}; }

// An explicit *_backward is a derivative, not a differentiable op (Kiln has no double backward):
// called on tensors that require grad with grad mode on, it would hand back a gradient whose graph
// silently stops there, so it refuses. The engine runs backwards with grad mode off.
template <class... Ts>
void refuse_recording(const char* op, const Ts&... inputs) {
  KILN_CHECK(!autograd::needs_grad(inputs...), op,
             ": is a derivative and records no gradient of its own (Kiln has no double backward); call it under "
             "NoGradGuard or on tensors that do not require grad, or call the forward op, which records");
}

}  // namespace kiln::detail
