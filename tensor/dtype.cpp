// DType names, sizes and torch.promote_types.
#include "tensor/dtype.h"

namespace kiln {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::i64: return "int64";
    case DType::i32: return "int32";
    case DType::u8: return "uint8";
    case DType::boolean: return "bool";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  // Rows and columns in enum order: f32 f64 f16 bf16 i64 i32 u8 bool (torch's table restricted to ours).
  using enum DType;
  static constexpr DType table[kNumDTypes][kNumDTypes] = {
      /* f32  */ {f32, f64, f32, f32, f32, f32, f32, f32},
      /* f64  */ {f64, f64, f64, f64, f64, f64, f64, f64},
      /* f16  */ {f32, f64, f16, f32, f16, f16, f16, f16},
      /* bf16 */ {f32, f64, f32, bf16, bf16, bf16, bf16, bf16},
      /* i64  */ {f32, f64, f16, bf16, i64, i64, i64, i64},
      /* i32  */ {f32, f64, f16, bf16, i64, i32, i32, i32},
      /* u8   */ {f32, f64, f16, bf16, i64, i32, u8, u8},
      /* bool */ {f32, f64, f16, bf16, i64, i32, u8, boolean},
  };
  return table[static_cast<int>(a)][static_cast<int>(b)];
}

}  // namespace kiln
