// DType basics, f16/bf16 rounding against exhaustive and hand-computed references, the promotion
// lattice, and conversions between every pair of dtypes.
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;
using kiln::testing::at;

namespace {

// Reference f32 -> f16 rounding, computed in double: the nearest f16 value, ties to even mantissa.
double nearest_half(double v) {
  if (std::isnan(v)) return v;
  const double max_half = 65504.0;
  if (std::abs(v) >= 65520.0) return std::copysign(INFINITY, v);
  const double a = std::abs(v);
  // Spacing of f16 values around a: 2^(e-10) for normals, 2^-24 for subnormals.
  const int e = a < std::ldexp(1.0, -14) ? -14 : std::ilogb(a);
  const double ulp = std::ldexp(1.0, e - 10);
  const double q = a / ulp;
  double r = std::nearbyint(q);  // default rounding mode: ties to even
  const double out = std::min(r * ulp, max_half);
  return std::copysign(out, v);
}

}  // namespace

TEST(DType, SizesAndNames) {
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::boolean), 1u);
  EXPECT_EQ(dtype_name(DType::i64), "int64");
  EXPECT_EQ(dtype_name(DType::boolean), "bool");
}

TEST(DType, HalfRoundTripsEveryBitPattern) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const Half h = Half::from_bits(static_cast<uint16_t>(bits));
    const float f = h;
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(Half(f))));
      continue;
    }
    ASSERT_EQ(Half(f).bits, bits) << "f16 bits " << bits << " -> " << f;
  }
}

TEST(DType, HalfRoundsToNearestEven) {
  // Ties: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> rounds to 1 (even mantissa).
  EXPECT_EQ(static_cast<float>(Half(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(static_cast<float>(Half(1.0f + 3 * std::ldexp(1.0f, -11))), 1.0f + 2 * std::ldexp(1.0f, -10));
  EXPECT_EQ(static_cast<float>(Half(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(static_cast<float>(Half(65520.0f))));
  EXPECT_EQ(static_cast<float>(Half(std::ldexp(1.0f, -25))), 0.0f);  // tie to even (0) at the bottom
  EXPECT_EQ(static_cast<float>(Half(std::ldexp(1.5f, -25))), std::ldexp(1.0f, -24));
  // Many random floats against the double-precision reference.
  Generator gen(7);
  Tensor r = randn({20000}, {.dtype = DType::f32}, &gen) * 3000.0;
  const float* p = r.data_ptr<float>();
  for (int i = 0; i < 20000; ++i) {
    const float v = p[i] * (i % 3 == 0 ? 1e-8f : i % 3 == 1 ? 1e-3f : 1.0f);
    ASSERT_EQ(static_cast<double>(static_cast<float>(Half(v))), nearest_half(v)) << "input " << v;
  }
}

TEST(DType, BFloat16RoundsToNearestEven) {
  for (uint32_t hi = 0; hi < 65536; hi += 7) {
    for (uint32_t lo : {0u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) {
      const uint32_t bits = (hi << 16) | lo;
      float f;
      std::memcpy(&f, &bits, 4);
      if (std::isnan(f)) { EXPECT_TRUE(std::isnan(static_cast<float>(BFloat16(f)))); continue; }
      // Reference: round the low 16 bits away, ties to the even upper half.
      uint32_t want = hi;
      if (lo > 0x8000u || (lo == 0x8000u && (hi & 1u))) ++want;
      ASSERT_EQ(BFloat16(f).bits, static_cast<uint16_t>(want)) << std::hex << bits;
    }
  }
}

TEST(DType, PromoteTypesMatchesTorch) {
  using enum DType;
  // torch.promote_types for each pair (spot checks across the lattice, as torch 2.x prints them).
  EXPECT_EQ(promote_types(i32, i64), i64);
  EXPECT_EQ(promote_types(u8, i32), i32);
  EXPECT_EQ(promote_types(boolean, u8), u8);
  EXPECT_EQ(promote_types(i64, f16), f16);
  EXPECT_EQ(promote_types(i64, bf16), bf16);
  EXPECT_EQ(promote_types(f16, bf16), f32);
  EXPECT_EQ(promote_types(f16, f32), f32);
  EXPECT_EQ(promote_types(bf16, f64), f64);
  EXPECT_EQ(promote_types(boolean, boolean), boolean);
  for (DType a : kt::kAllDTypes)
    for (DType b : kt::kAllDTypes) EXPECT_EQ(promote_types(a, b), promote_types(b, a));
}

TEST(DType, ConversionsBetweenEveryPair) {
  const std::vector<double> src = {0.0, 1.0, -1.0, 2.5, -2.5, 3.5, 100.0, 255.0, -7.75};
  for (DType from : kt::kAllDTypes) {
    Tensor a = tensor(src, std::nullopt, {.dtype = DType::f64}).to(from);
    for (DType to : kt::kAllDTypes) {
      Tensor b = a.to(to);
      ASSERT_EQ(b.dtype(), to);
      for (int64_t i = 0; i < a.numel(); ++i) {
        const double v = at(a, i);
        double want;
        if (to == DType::boolean) want = v != 0;
        else if (to == DType::u8) want = v < 0 ? std::fmod(256.0 + std::trunc(v), 256.0) : std::trunc(v);
        else if (is_floating(to)) want = to == DType::f16 ? nearest_half(v) : to == DType::bf16 ? static_cast<float>(BFloat16(static_cast<float>(v))) : v;
        else want = std::trunc(v);
        // Negative float -> uint8 is implementation-defined in torch; Kiln saturates at 0.
        if (to == DType::u8 && is_floating(from) && v < 0) want = 0;
        EXPECT_EQ(at(b, i), want) << dtype_name(from) << " -> " << dtype_name(to) << " of " << v;
      }
    }
  }
}

TEST(DType, FloatToIntegerIsDefinedForEveryInput) {
  Tensor a = tensor({NAN, INFINITY, -INFINITY, 1e30, -1e30, 3.9, -3.9}, {.dtype = DType::f64});
  Tensor b = a.to(DType::i32);
  kt::expect_close(b, {0, 2147483647, -2147483648.0, 2147483647, -2147483648.0, 3, -3}, 0, 0, "f64 -> i32");
  Tensor c = a.to(DType::u8);
  kt::expect_close(c, {0, 255, 0, 255, 0, 3, 0}, 0, 0, "f64 -> u8");
  Tensor d = a.to(DType::boolean);
  kt::expect_close(d, {1, 1, 1, 1, 1, 1, 1}, 0, 0, "f64 -> bool");
}

TEST(DType, ResultTypeFollowsTorchCategories) {
  const Tensor i64v = zeros({3}, {.dtype = DType::i64});
  const Tensor i32v = zeros({3}, {.dtype = DType::i32});
  const Tensor f16v = zeros({3}, {.dtype = DType::f16});
  const Tensor f64s = zeros({}, {.dtype = DType::f64});
  const Tensor i64s = zeros({}, {.dtype = DType::i64});
  EXPECT_EQ(result_type(i32v, i64s), DType::i32);   // a 0-d int does not widen an int tensor
  EXPECT_EQ(result_type(f16v, f64s), DType::f16);   // a 0-d float does not widen a float tensor
  EXPECT_EQ(result_type(i64v, f64s), DType::f64);   // ...but brings its category to an int tensor
  EXPECT_EQ(result_type(i64v, Scalar(2.5)), DType::f32);  // a Python float counts as the default dtype
  EXPECT_EQ(result_type(i32v, Scalar(7)), DType::i32);
  EXPECT_EQ(result_type(zeros({2}, {.dtype = DType::boolean}), Scalar(7)), DType::i64);
  EXPECT_EQ(result_type(f16v, Scalar(2.5)), DType::f16);
  EXPECT_EQ(result_type(i64s, f64s), DType::f64);
  EXPECT_EQ(result_type(zeros({2}, {.dtype = DType::u8}), zeros({}, {.dtype = DType::i32})), DType::u8);
}

namespace {
DType parse_dtype(const std::string& name) {
  for (DType t : kt::kAllDTypes)
    if (dtype_name(t) == name) return t;
  ADD_FAILURE() << "unknown dtype in fixture: " << name;
  return DType::f32;
}
std::vector<std::vector<std::string>> read_fixture(const std::string& file) {
  std::ifstream in(std::string(KILN_TEST_FIXTURES) + "/" + file);
  EXPECT_TRUE(in.good()) << "missing fixture " << file << " (regenerate with tests/fixtures/make_fixtures.py)";
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::vector<std::string> row;
    for (std::string f; fields >> f;) row.push_back(f);
    rows.push_back(row);
  }
  return rows;
}
}  // namespace

TEST(DType, PromoteTypesEqualsTorchFixture) {
  const auto rows = read_fixture("promote_types.txt");
  ASSERT_EQ(rows.size(), 64u);
  for (const auto& r : rows)
    EXPECT_EQ(promote_types(parse_dtype(r[0]), parse_dtype(r[1])), parse_dtype(r[2])) << r[0] << " " << r[1];
}

TEST(DType, ResultTypeEqualsTorchFixture) {
  const auto rows = read_fixture("result_types.txt");
  ASSERT_EQ(rows.size(), 88u);
  for (const auto& r : rows) {
    const Tensor a = zeros({2}, {.dtype = parse_dtype(r[1])});
    DType got;
    if (r[2] == "zero") got = result_type(a, zeros({}, {.dtype = parse_dtype(r[3])}));
    else if (r[2] == "number-float") got = result_type(a, Scalar(2.5));
    else if (r[2] == "number-int") got = result_type(a, Scalar(7));
    else got = result_type(a, Scalar(true));
    EXPECT_EQ(got, parse_dtype(r[4])) << r[1] << " with " << r[2] << " " << r[3];
  }
}
