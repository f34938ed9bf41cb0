// Joining, splitting, gathering and scattering, sorting, and the like. Defined in
// autograd/ops/indexing.cpp (autograd/ops/sorting.cpp for sort/topk/cumsum/tril/triu,
// autograd/ops/index_sugar.cpp for nonzero).
#pragma once

#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace kiln {

Tensor cat(const std::vector<Tensor>& xs, int64_t dim = 0);
Tensor stack(const std::vector<Tensor>& xs, int64_t dim = 0);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);  // views
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor scatter(const Tensor& x, int64_t dim, const Tensor& index, const Scalar& value);
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& index);
Tensor index_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src, const Scalar& alpha = 1);
// The positions of x's non-zero elements, (count, x.dim()) int64 in row-major order (torch.nonzero).
// Reads x on the host: the result's size depends on the values.
Tensor nonzero(const Tensor& x);
Tensor one_hot(const Tensor& indices, int64_t num_classes = -1);  // int64 result, torch's
// Rows of weight: (*indices.shape, D). The row at padding_idx (negative counts from the end) gets
// no gradient, as torch.nn.functional.embedding.
Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx = std::nullopt);
Tensor cumsum(const Tensor& x, int64_t dim);
TensorPair sort(const Tensor& x, int64_t dim = -1, bool descending = false, bool stable = false);
TensorPair topk(const Tensor& x, int64_t k, int64_t dim = -1, bool largest = true, bool sorted = true);
Tensor tril(const Tensor& x, int64_t diagonal = 0);
Tensor triu(const Tensor& x, int64_t diagonal = 0);

}  // namespace kiln
