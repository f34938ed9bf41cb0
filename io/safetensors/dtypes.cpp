// The safetensors dtype table and the conversions of the dtypes Kiln lacks (see dtypes.h).
#include "io/safetensors/dtypes.h"

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "io/checkpoint/validate.h"

namespace kiln::io {
namespace {

enum class Kind : uint8_t { native, integer, fp8, none };

struct Row {
  SafetensorsDType dtype;
  std::string_view name;
  int bits;
  Kind kind;
  DType kiln;  // meaningful for Kind::native only
};

using S = SafetensorsDType;
constexpr std::array<Row, kNumSafetensorsDTypes> kRows = {{
    {S::BOOL, "BOOL", 8, Kind::native, DType::boolean},   {S::F4, "F4", 4, Kind::none, DType::u8},
    {S::F6_E2M3, "F6_E2M3", 6, Kind::none, DType::u8},    {S::F6_E3M2, "F6_E3M2", 6, Kind::none, DType::u8},
    {S::U8, "U8", 8, Kind::native, DType::u8},            {S::I8, "I8", 8, Kind::integer, DType::u8},
    {S::F8_E5M2, "F8_E5M2", 8, Kind::fp8, DType::u8},     {S::F8_E4M3, "F8_E4M3", 8, Kind::fp8, DType::u8},
    {S::F8_E8M0, "F8_E8M0", 8, Kind::fp8, DType::u8},     {S::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8, Kind::fp8, DType::u8},
    {S::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8, Kind::fp8, DType::u8}, {S::I16, "I16", 16, Kind::integer, DType::u8},
    {S::U16, "U16", 16, Kind::integer, DType::u8},        {S::F16, "F16", 16, Kind::native, DType::f16},
    {S::BF16, "BF16", 16, Kind::native, DType::bf16},     {S::I32, "I32", 32, Kind::native, DType::i32},
    {S::U32, "U32", 32, Kind::integer, DType::u8},        {S::F32, "F32", 32, Kind::native, DType::f32},
    {S::C64, "C64", 64, Kind::none, DType::u8},           {S::F64, "F64", 64, Kind::native, DType::f64},
    {S::I64, "I64", 64, Kind::native, DType::i64},        {S::U64, "U64", 64, Kind::integer, DType::u8},
}};

const Row& row(SafetensorsDType d) {
  const Row& r = kRows[static_cast<size_t>(d)];
  KILN_ASSERT(r.dtype == d, "safetensors dtype table out of order at ", static_cast<int>(d));
  return r;
}

template <class From>
From load(const uint8_t* src, int64_t i) {
  From v;
  std::memcpy(&v, src + i * static_cast<int64_t>(sizeof(From)), sizeof(From));
  return v;
}

template <class From, class To>
void convert_integers(const uint8_t* src, int64_t n, To* dst, SafetensorsDType from, const std::string& where) {
  for (int64_t i = 0; i < n; ++i) {
    const From v = load<From>(src, i);
    if constexpr (std::numeric_limits<From>::max() > std::numeric_limits<To>::max()) {
      if (v > static_cast<From>(std::numeric_limits<To>::max()))
        kiln::detail::throw_error(where, ": element ", i, " of the ", safetensors_dtype_name(from), " tensor is ",
                            static_cast<uint64_t>(v), ", more than ", dtype_v<To>, " holds (",
                            std::numeric_limits<To>::max(), ")",
                            std::is_same_v<To, int32_t> ? "; convert integers to int64" : "");
    }
    dst[i] = static_cast<To>(v);
  }
}

template <class To>
void convert_integers_to(SafetensorsDType from, const uint8_t* src, int64_t n, To* dst, const std::string& where) {
  switch (from) {
    case S::I8: return convert_integers<int8_t>(src, n, dst, from, where);
    case S::I16: return convert_integers<int16_t>(src, n, dst, from, where);
    case S::U16: return convert_integers<uint16_t>(src, n, dst, from, where);
    case S::U32: return convert_integers<uint32_t>(src, n, dst, from, where);
    case S::U64: return convert_integers<uint64_t>(src, n, dst, from, where);
    default: KILN_ASSERT(false, "not an integer conversion: ", safetensors_dtype_name(from));
  }
}

}  // namespace

std::string_view safetensors_dtype_name(SafetensorsDType dtype) { return row(dtype).name; }

std::optional<SafetensorsDType> safetensors_dtype_from_name(std::string_view name) {
  for (const Row& r : kRows)
    if (r.name == name) return r.dtype;
  return std::nullopt;
}

int safetensors_dtype_bits(SafetensorsDType dtype) { return row(dtype).bits; }

std::optional<DType> kiln_dtype(SafetensorsDType dtype) {
  const Row& r = row(dtype);
  return r.kind == Kind::native ? std::optional<DType>(r.kiln) : std::nullopt;
}

SafetensorsDType safetensors_dtype(DType dtype) {
  for (const Row& r : kRows)
    if (r.kind == Kind::native && r.kiln == dtype) return r.dtype;
  KILN_ASSERT(false, "no safetensors dtype for ", dtype);
  __builtin_unreachable();
}

double decode_fp8(SafetensorsDType format, uint8_t byte) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (format == S::F8_E8M0) return byte == 0xff ? nan : std::ldexp(1.0, byte - 127);
  // sign, e exponent bits with a bias, m mantissa bits; subnormals when the exponent field is 0.
  int e_bits = 4, m_bits = 3, bias = 7;
  switch (format) {
    case S::F8_E4M3: break;
    case S::F8_E4M3FNUZ: bias = 8; break;
    case S::F8_E5M2: e_bits = 5, m_bits = 2, bias = 15; break;
    case S::F8_E5M2FNUZ: e_bits = 5, m_bits = 2, bias = 16; break;
    default: KILN_ASSERT(false, "not an 8-bit float: ", safetensors_dtype_name(format));
  }
  const bool negative = byte & 0x80;
  const int exponent = (byte >> m_bits) & ((1 << e_bits) - 1);
  const int mantissa = byte & ((1 << m_bits) - 1);
  const int max_exponent = (1 << e_bits) - 1;
  if (format == S::F8_E4M3FNUZ || format == S::F8_E5M2FNUZ) {
    if (byte == 0x80) return nan;  // the one NaN; there is no negative zero and no infinity
  } else if (format == S::F8_E4M3) {
    if (exponent == max_exponent && mantissa == (1 << m_bits) - 1) return nan;  // S.1111.111; no infinity
  } else if (exponent == max_exponent) {  // E5M2 is IEEE-like: infinities and NaNs
    return mantissa == 0 ? (negative ? -HUGE_VAL : HUGE_VAL) : nan;
  }
  const double magnitude = exponent == 0 ? std::ldexp(mantissa, 1 - bias - m_bits)
                                         : std::ldexp(mantissa + (1 << m_bits), exponent - bias - m_bits);
  return negative ? -magnitude : magnitude;
}

DType converted_dtype(SafetensorsDType from, const SafetensorsConvert& convert, const std::string& where) {
  const Row& r = row(from);
  switch (r.kind) {
    case Kind::native: return r.kiln;
    case Kind::integer:
      KILN_CHECK(convert.integers, where, " is ", r.name, ", which Kiln has no dtype for; load it with "
                 "SafetensorsConvert{.integers = DType::i64} (or DType::i32; `kiln ckpt convert --integers int64`)");
      KILN_CHECK(*convert.integers == DType::i32 || *convert.integers == DType::i64, where,
                 ": SafetensorsConvert::integers must be int32 or int64, got ", *convert.integers);
      return *convert.integers;
    case Kind::fp8:
      KILN_CHECK(convert.floats, where, " is ", r.name, ", which Kiln has no dtype for; load it with "
                 "SafetensorsConvert{.floats = DType::f32} (or f64, bf16, f16; `kiln ckpt convert --floats float32`)");
      KILN_CHECK(is_floating(*convert.floats), where, ": SafetensorsConvert::floats must be a floating dtype, got ",
                 *convert.floats);
      return *convert.floats;
    case Kind::none: break;
  }
  kiln::detail::throw_error(where, " is ", r.name, ", which Kiln has no dtype for and cannot convert (`kiln ckpt "
                            "inspect` and `verify` read such files; loading needs one of Kiln's dtypes or a "
                            "convertible one)");
}

void convert_elements(SafetensorsDType from, const uint8_t* src, int64_t n, DType to, void* dst,
                      const std::string& where) {
  const Row& r = row(from);
  KILN_ASSERT(r.kind == Kind::integer || r.kind == Kind::fp8, "no conversion from ", r.name);
  if (r.kind == Kind::integer) {
    if (to == DType::i32) return convert_integers_to(from, src, n, static_cast<int32_t*>(dst), where);
    KILN_ASSERT(to == DType::i64, "integer conversion to ", to);
    return convert_integers_to(from, src, n, static_cast<int64_t*>(dst), where);
  }
  double table[256];  // every value of the format, decoded once
  for (int b = 0; b < 256; ++b) table[b] = decode_fp8(from, static_cast<uint8_t>(b));
  visit_floating(to, "convert_elements", [&]<class T>() {
    T* out = static_cast<T*>(dst);
    for (int64_t i = 0; i < n; ++i) {
      const double exact = table[src[i]];
      out[i] = static_cast<T>(static_cast<compute_t<T>>(exact));
      const double back = static_cast<double>(static_cast<compute_t<T>>(out[i]));
      KILN_CHECK(back == exact || (std::isnan(back) && std::isnan(exact)), where, ": element ", i, " of the ",
                 r.name, " tensor is ", exact, ", which ", to, " cannot hold exactly (convert floats to float32)");
    }
  });
}

}  // namespace kiln::io
