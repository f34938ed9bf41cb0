// Matrix products (through oneDNN on CPU) and softmax. Defined in autograd/ops/linalg.cpp.
#pragma once

#include "tensor/tensor.h"

namespace kiln {

Tensor mm(const Tensor& a, const Tensor& b);    // (M,K) @ (K,N)
Tensor bmm(const Tensor& a, const Tensor& b);   // (B,M,K) @ (B,K,N)
Tensor matmul(const Tensor& a, const Tensor& b);  // torch.matmul: 1-d, 2-d and batched with broadcasting
Tensor addmm(const Tensor& bias, const Tensor& a, const Tensor& b, const Scalar& beta = 1, const Scalar& alpha = 1);
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});  // x @ weight^T + bias
Tensor linear_relu(const Tensor& x, const Tensor& weight, const Tensor& bias = {});  // relu(linear(x, weight, bias)), fused
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// -log_softmax(logits, 1)[r, target[r]] per row, 0 where target == ignore_index: logits (N,C) of
// f32/f64, target (N) int64/int32. The per-row cross-entropy, fused (Note [Fused cross-entropy]).
Tensor cross_entropy_rows(const Tensor& logits, const Tensor& target, int64_t ignore_index = -100);

}  // namespace kiln
