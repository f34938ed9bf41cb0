// The raw view constructions behind Tensor's view methods: new metadata over the same storage,
// checked, with no autograd record. The Tensor methods (autograd/ops/views.cpp) call these and
// record the derivative; op definitions call them directly for views that must not be recorded
// (broadcasting an operand for a kernel, the pieces of a multi-output op).
#pragma once

#include <optional>

#include "tensor/tensor.h"

namespace kiln::detail {

Tensor make_view(const Tensor& base, const Dims& shape, const Dims& strides, int64_t offset);

// `shape` with its one -1 filled in so that it holds numel elements.
Dims infer_shape(const Dims& shape, int64_t numel, const char* op);
// x seen as `shape` (no -1) without a copy, when its strides allow one.
std::optional<Tensor> try_view(const Tensor& x, const Dims& shape);

Tensor view(const Tensor& x, const Dims& shape);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor permute(const Tensor& x, const Dims& order);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step);
Tensor select(const Tensor& x, int64_t dim, int64_t index);
Tensor expand(const Tensor& x, const Dims& shape);
Tensor squeeze(const Tensor& x);
Tensor squeeze(const Tensor& x, int64_t dim);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor as_strided(const Tensor& x, const Dims& shape, const Dims& strides, int64_t offset);

// The shapes flatten and unflatten produce (they are reshape and view of these).
Dims flattened_shape(const Tensor& x, int64_t start_dim, int64_t end_dim);
Dims unflattened_shape(const Tensor& x, int64_t dim, const Dims& sizes);

}  // namespace kiln::detail
