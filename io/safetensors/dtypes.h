// Every dtype of the safetensors format (the spec's list, as the `safetensors` 0.8 package reads it),
// their sizes in bits, and the conversions that turn the ones Kiln has no tensor type for into one
// it has. Kiln's DType stays closed (tensor/dtype.h): a file's I16 or F8_E4M3 tensor loads only as
// int32/int64 or a float type, and only when the caller asks (SafetensorsConvert).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tensor/dtype.h"

namespace kiln::io {

enum class SafetensorsDType : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64
};
inline constexpr int kNumSafetensorsDTypes = 22;

std::string_view safetensors_dtype_name(SafetensorsDType dtype);  // "F8_E4M3", as the header spells it
std::optional<SafetensorsDType> safetensors_dtype_from_name(std::string_view name);
int safetensors_dtype_bits(SafetensorsDType dtype);                 // 4 for F4, 6 for F6_*, 8 for U8, ...
std::optional<DType> kiln_dtype(SafetensorsDType dtype);            // the Kiln dtype with the same bytes
SafetensorsDType safetensors_dtype(DType dtype);                    // every Kiln dtype has one

// What to turn a tensor of a dtype Kiln lacks into, per call. Unset: such a tensor is refused
// with an error that names it and this option. Conversions are exact or fail: an integer that
// does not fit the target, or a float that the target cannot hold exactly, is an error naming it.
struct SafetensorsConvert {
  std::optional<DType> integers;  // I8 I16 U16 U32 U64 -> int32 or int64
  std::optional<DType> floats;    // F8_E4M3 F8_E5M2 F8_E8M0 F8_E4M3FNUZ F8_E5M2FNUZ -> float32/64, bfloat16, float16
};

// The Kiln dtype a tensor of `from` loads as under `convert`; a kiln::Error naming `where` (the
// file and tensor) when Kiln has no such dtype and `convert` says nothing, or cannot convert it.
DType converted_dtype(SafetensorsDType from, const SafetensorsConvert& convert, const std::string& where);

// Converts n elements of `from` (little-endian bytes at src) into dst, an array of n `to`s.
void convert_elements(SafetensorsDType from, const uint8_t* src, int64_t n, DType to, void* dst,
                      const std::string& where);

// The exact value of one 8-bit float (OCP FP8 and the FNUZ variants; E8M0 is a power of two).
double decode_fp8(SafetensorsDType format, uint8_t byte);

}  // namespace kiln::io
