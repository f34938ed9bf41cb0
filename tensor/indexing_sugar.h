// The index types of Tensor::operator[], index and index_put_, named as LibTorch's torch::indexing:
//   using namespace kiln::indexing;
//   x[0]; x[-1]; x.index({Slice(1, None), 0}); x.index({"...", Slice(None, None, 2)});
//   x.index({None, mask}); x.index_put_({Slice(), idx}, 0.5);
// Included by tensor/tensor.h; the semantics are in Note [Indexing semantics] (autograd/ops/index_sugar.cpp).
#pragma once

#include <concepts>
#include <cstdint>
#include <optional>

#include "tensor/tensor.h"

namespace kiln::indexing {

// x.index({None}) inserts a dim of size 1 (Python's None / np.newaxis).
inline constexpr std::nullopt_t None = std::nullopt;

// x.index({Ellipsis}) or x.index({"..."}): as many full slices as the other indices leave dims.
struct EllipsisIndexType {};
inline constexpr EllipsisIndexType Ellipsis{};

// start:stop:step; an unset bound is the whole dim. The step must be positive (as in torch).
struct Slice {
  explicit Slice(std::optional<int64_t> start_ = std::nullopt, std::optional<int64_t> stop_ = std::nullopt,
                 std::optional<int64_t> step_ = std::nullopt)
      : start(start_), stop(stop_), step(step_) {}
  std::optional<int64_t> start, stop, step;
};

// One entry of an index list: an integer, a Slice, None, Ellipsis, a bool, or a tensor (int64 or
// int32 positions, or a bool mask). Converts implicitly from each, so lists read like Python's.
class TensorIndex {
 public:
  enum class Kind { none, ellipsis, integer, boolean, slice, tensor };

  TensorIndex(std::nullopt_t) : kind_(Kind::none) {}                  // NOLINT: implicit by design
  TensorIndex(EllipsisIndexType) : kind_(Kind::ellipsis) {}           // NOLINT
  TensorIndex(const char* ellipsis);                                  // NOLINT: "..." only
  template <std::integral I>
    requires(!std::same_as<I, bool>)
  TensorIndex(I i) : kind_(Kind::integer), integer_(static_cast<int64_t>(i)) {}  // NOLINT
  template <std::floating_point F>
  TensorIndex(F) = delete;  // x[1.5] is a mistake, not a bool
  TensorIndex(bool b) : kind_(Kind::boolean), boolean_(b) {}          // NOLINT
  TensorIndex(Slice s) : kind_(Kind::slice), slice_(s) {}             // NOLINT
  TensorIndex(Tensor t) : kind_(Kind::tensor), tensor_(std::move(t)) {}  // NOLINT

  Kind kind() const { return kind_; }
  int64_t integer() const { return integer_; }
  bool boolean() const { return boolean_; }
  const Slice& slice() const { return slice_; }
  const Tensor& tensor() const { return tensor_; }

 private:
  Kind kind_;
  int64_t integer_ = 0;
  bool boolean_ = false;
  Slice slice_;
  Tensor tensor_;
};

}  // namespace kiln::indexing
