// Broadcasting and type promotion for ops with several inputs, as NumPy and PyTorch define them.
#pragma once

#include <span>

#include "tensor/tensor.h"

namespace kiln {

// The broadcast shape of a and b; `op` names the caller in the error.
Dims broadcast_shapes(const Dims& a, const Dims& b, const char* op);

// torch.result_type: dimensioned tensors outrank 0-d tensors, which outrank plain numbers, and a
// lower rank only matters when it brings a higher category (bool < integer < floating).
DType result_type(const Tensor& a, const Tensor& b);
DType result_type(const Tensor& a, const Scalar& b);
DType result_type(DType tensor_dtype, const Scalar& b);  // as if a dimensioned tensor of that dtype

// A 0-d tensor holding s, of dtype `dtype`, on `device`.
Tensor scalar_tensor(const Scalar& s, DType dtype, Device device = Device::cpu());

// Checks that every defined tensor in `ts` is on one device, and returns it.
Device common_device(std::span<const Tensor> ts, const char* op);

// An in-place op may not write through a view where several elements share one address (an
// expanded dim): the result would depend on the order of writes.
void check_writable(const Tensor& t, const char* op);

}  // namespace kiln
