// DType: the element types a tensor can hold, their sizes and names, PyTorch's promotion lattice,
// and visit_dtype, which turns a runtime DType into a compile-time C++ type inside a kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string_view>

#include "tensor/error.h"
#include "tensor/half.h"

namespace kiln {

enum class DType : uint8_t { f32, f64, f16, bf16, i64, i32, u8, boolean };
inline constexpr int kNumDTypes = 8;

// Inline: every op computes its output's byte size, and every data_ptr() its offset.
inline size_t dtype_size(DType t) {
  constexpr size_t kSizes[kNumDTypes] = {4, 8, 2, 2, 8, 4, 1, 1};  // in the enum's order
  const auto code = static_cast<size_t>(t);
  KILN_ASSERT(code < kNumDTypes, "unknown dtype code ", code);
  return kSizes[code];
}
std::string_view dtype_name(DType t);  // "float32", "int64", "bool", ... as torch names them
std::ostream& operator<<(std::ostream& os, DType t);

inline bool is_floating(DType t) { return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16; }
inline bool is_integral(DType t, bool include_bool) {
  return t == DType::i64 || t == DType::i32 || t == DType::u8 || (include_bool && t == DType::boolean);
}

// torch.promote_types: the smallest type both a and b convert to without losing their category.
DType promote_types(DType a, DType b);

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<bool> { static constexpr DType value = DType::boolean; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

// The type arithmetic on T is done in: float for the 16-bit floats, T otherwise.
template <class T> struct compute_type { using type = T; };
template <> struct compute_type<Half> { using type = float; };
template <> struct compute_type<BFloat16> { using type = float; };
template <class T> using compute_t = typename compute_type<T>::type;

// Calls fn.template operator()<T>() with T the C++ type of t.
// Usage: visit_dtype(t, [&]<class T>() { ... });
template <class Fn>
decltype(auto) visit_dtype(DType t, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::f16: return fn.template operator()<Half>();
    case DType::bf16: return fn.template operator()<BFloat16>();
    case DType::i64: return fn.template operator()<int64_t>();
    case DType::i32: return fn.template operator()<int32_t>();
    case DType::u8: return fn.template operator()<uint8_t>();
    case DType::boolean: return fn.template operator()<bool>();
  }
  KILN_ASSERT(false, "unknown dtype code ", static_cast<int>(t));
  __builtin_unreachable();
}

// Like visit_dtype, restricted to the floating types; op names the caller in the error.
template <class Fn>
decltype(auto) visit_floating(DType t, std::string_view op, Fn&& fn) {
  switch (t) {
    case DType::f32: return fn.template operator()<float>();
    case DType::f64: return fn.template operator()<double>();
    case DType::f16: return fn.template operator()<Half>();
    case DType::bf16: return fn.template operator()<BFloat16>();
    default: detail::throw_error(op, ": expected a floating dtype, got ", t);
  }
}

}  // namespace kiln
