// Scalar: a number passed to an op (a + 2.5, fill_(0), clamp(x, -1, 1)). It remembers whether it
// was a bool, an integer or a floating value, because type promotion depends on that.
#pragma once

#include <cstdint>
#include <ostream>
#include <type_traits>

#include "tensor/dtype.h"

namespace kiln {

class Scalar {
 public:
  enum class Kind : uint8_t { boolean, integer, floating };

  Scalar() : Scalar(int64_t{0}) {}
  template <class T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
  Scalar(T v) {  // NOLINT: implicit, as in torch
    if constexpr (std::is_same_v<T, bool>) { kind_ = Kind::boolean; i_ = v; d_ = v; }
    else if constexpr (std::is_integral_v<T>) { kind_ = Kind::integer; i_ = static_cast<int64_t>(v); d_ = static_cast<double>(v); }
    else { kind_ = Kind::floating; d_ = static_cast<double>(v); i_ = 0; }
  }
  Scalar(Half v) : Scalar(static_cast<float>(v)) {}       // NOLINT
  Scalar(BFloat16 v) : Scalar(static_cast<float>(v)) {}   // NOLINT

  Kind kind() const { return kind_; }
  bool is_floating() const { return kind_ == Kind::floating; }
  bool is_integral() const { return kind_ == Kind::integer; }
  bool is_bool() const { return kind_ == Kind::boolean; }
  double to_double() const { return d_; }
  int64_t to_int() const { return kind_ == Kind::floating ? static_cast<int64_t>(d_) : i_; }

  // The value as T (integers keep full 64-bit precision; floats round once).
  template <class T>
  T to() const {
    if constexpr (std::is_same_v<T, bool>) return kind_ == Kind::floating ? d_ != 0.0 : i_ != 0;
    else if constexpr (std::is_integral_v<T>) return kind_ == Kind::floating ? static_cast<T>(d_) : static_cast<T>(i_);
    else return static_cast<T>(static_cast<compute_t<T>>(kind_ == Kind::floating ? d_ : static_cast<double>(i_)));
  }

  // The dtype this scalar has when it stands alone as a tensor (torch.tensor(2.5) is float32).
  DType natural_dtype() const {
    return kind_ == Kind::floating ? DType::f32 : kind_ == Kind::integer ? DType::i64 : DType::boolean;
  }

 private:
  Kind kind_;
  double d_;
  int64_t i_;
};

inline std::ostream& operator<<(std::ostream& os, const Scalar& s) {
  if (s.is_floating()) return os << s.to_double();
  if (s.is_bool()) return os << (s.to<bool>() ? "True" : "False");
  return os << s.to_int();
}

}  // namespace kiln
