// Factories: tensors made from nothing, from random streams, or from user memory.
#pragma once

#include <functional>
#include <optional>
#include <vector>

#include "tensor/generator.h"
#include "tensor/tensor.h"

namespace kiln {

struct TensorOptions {
  std::optional<DType> dtype;  // unset: float32, or what the values imply (arange, full, tensor)
  Device device = Device::cpu();
};

Tensor empty(const Dims& shape, TensorOptions opts = {});
Tensor zeros(const Dims& shape, TensorOptions opts = {});
Tensor ones(const Dims& shape, TensorOptions opts = {});
Tensor full(const Dims& shape, const Scalar& value, TensorOptions opts = {});  // dtype from value if unset
Tensor arange(const Scalar& end, TensorOptions opts = {});
Tensor arange(const Scalar& start, const Scalar& end, const Scalar& step = 1, TensorOptions opts = {});
Tensor linspace(double start, double end, int64_t steps, TensorOptions opts = {});
Tensor eye(int64_t n, std::optional<int64_t> m = std::nullopt, TensorOptions opts = {});

// Random factories draw from `gen`, or from the device's default generator.
Tensor rand(const Dims& shape, TensorOptions opts = {}, Generator* gen = nullptr);   // U[0, 1)
Tensor randn(const Dims& shape, TensorOptions opts = {}, Generator* gen = nullptr);  // N(0, 1)
Tensor randint(int64_t low, int64_t high, const Dims& shape, TensorOptions opts = {}, Generator* gen = nullptr);  // int64 by default
Tensor bernoulli(const Tensor& probs, Generator* gen = nullptr);  // 0/1 with probability probs[i], probs' dtype
Tensor bernoulli(const Dims& shape, double p, TensorOptions opts = {}, Generator* gen = nullptr);

// In-place random fills of an existing tensor.
Tensor& uniform_(Tensor& t, double lo = 0.0, double hi = 1.0, Generator* gen = nullptr);
Tensor& normal_(Tensor& t, double mean = 0.0, double stddev = 1.0, Generator* gen = nullptr);

// A tensor over memory the caller owns. The bytes must outlive the tensor and its views, unless a
// deleter is given: it runs when the last view dies. Strides default to contiguous.
Tensor from_blob(void* data, const Dims& shape, DType dtype, std::function<void(void*)> deleter = {},
                 std::optional<Dims> strides = std::nullopt, Device device = Device::cpu());

// A new tensor holding a copy of `values`, with `shape` (default: 1-d of values.size()).
template <class T>
Tensor tensor(const std::vector<T>& values, std::optional<Dims> shape = std::nullopt, TensorOptions opts = {});
Tensor tensor(std::initializer_list<double> values, TensorOptions opts = {});  // float32 by default

Tensor empty_like(const Tensor& t, TensorOptions opts = {});  // unset fields come from t
Tensor zeros_like(const Tensor& t, TensorOptions opts = {});
Tensor ones_like(const Tensor& t, TensorOptions opts = {});
Tensor full_like(const Tensor& t, const Scalar& value, TensorOptions opts = {});
Tensor rand_like(const Tensor& t, TensorOptions opts = {}, Generator* gen = nullptr);
Tensor randn_like(const Tensor& t, TensorOptions opts = {}, Generator* gen = nullptr);

}  // namespace kiln
