// safetensors dtypes Kiln has no tensor type for (io/safetensors/dtypes.h): every dtype of the spec
// opens with its size checked; integers and 8-bit floats convert on request, exactly, against
// values torch decoded (tests/fixtures/ckpt/make_foreign_dtypes.py) and the OCP FP8 spec's own
// table; without the option, or past a target's range, a kiln::Error names the tensor and the fix.
// Also: a 50,000-tensor header parses (Note [Linear JSON parsing]; its time is in bench_ckpt_io).
#include <cmath>
#include <cstring>

#include "ckpt_helpers.h"

namespace kt = kiln::testing;
namespace kc = kiln::testing::ckpt;
using namespace kiln;
using io::SafetensorsDType;

namespace {

std::string foreign(const std::string& file) { return kc::fixture_dir() + "/foreign/" + file; }

const Json& expected() {
  static const Json j = [] {
    std::ifstream in(foreign("expected.json"));
    EXPECT_TRUE(in) << "missing " << foreign("expected.json") << " (run make_foreign_dtypes.py)";
    return Json::parse(in);
  }();
  return j;
}

float f32_of_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// Raw bits of element i of a 32- or 16-bit float tensor.
uint32_t bits_at(const Tensor& t, int64_t i) {
  if (t.dtype() == DType::f32) {
    uint32_t b;
    std::memcpy(&b, t.data_ptr<float>() + i, 4);
    return b;
  }
  uint16_t b;
  std::memcpy(&b, static_cast<const uint8_t*>(t.data_ptr()) + 2 * i, 2);
  return b;
}

bool is_nan_bits(uint32_t b, DType d) {
  if (d == DType::f32) return std::isnan(f32_of_bits(b));
  if (d == DType::bf16) return std::isnan(f32_of_bits(b << 16));
  return (b & 0x7c00) == 0x7c00 && (b & 0x3ff) != 0;  // f16
}

std::vector<uint8_t> safetensors_bytes(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  return out;
}

}  // namespace

TEST(SafetensorsDtypes, EveryDtypeOfTheSpecOpensWithItsSize) {
  // Element sizes in bits, from the safetensors spec (independent of dtypes.cpp's table).
  const std::map<std::string, int> bits = {{"I8", 8},  {"I16", 16}, {"U16", 16}, {"U32", 32}, {"U64", 64},
                                           {"F8_E4M3", 8}, {"F8_E5M2", 8}, {"F8_E4M3FNUZ", 8},
                                           {"F8_E5M2FNUZ", 8}, {"F8_E8M0", 8}, {"C64", 64}, {"F4", 4},
                                           {"F6_E2M3", 6}, {"F6_E3M2", 6}};
  int seen = 0;
  for (const char* file : {"integers.safetensors", "floats.safetensors", "others.safetensors"}) {
    const auto reader = io::SafetensorsReader::open(foreign(file));
    for (const auto& r : reader.records()) {
      const Json& e = expected().at(r.name);
      EXPECT_EQ(e.at("file"), file) << r.name;
      EXPECT_EQ(io::safetensors_dtype_name(r.dtype), e.at("dtype").get<std::string>()) << r.name;
      EXPECT_EQ(r.shape.vec(), e.at("shape").get<std::vector<int64_t>>()) << r.name;
      int64_t numel = 1;
      for (int64_t s : r.shape) numel *= s;
      const int element_bits = bits.at(e.at("dtype").get<std::string>());
      EXPECT_EQ(r.end - r.begin, static_cast<uint64_t>(numel * element_bits / 8)) << r.name;
      ++seen;
    }
  }
  EXPECT_EQ(seen, static_cast<int>(expected().size()));
  // A sub-byte dtype must fill whole bytes: three F4 values are 12 bits.
  const auto bytes = safetensors_bytes(R"({"x":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2);
  kt::expect_error([&] { io::SafetensorsReader::from_memory(bytes.data(), bytes.size()); },
                   {"tensor 'x'", "F4 x [3] is 12 bits, not a whole number of bytes"});
}

TEST(SafetensorsDtypes, IntegersConvertExactlyOrSayWhichValueDoesNotFit) {
  const auto reader = io::SafetensorsReader::open(foreign("integers.safetensors"));
  for (const char* name : {"i8", "i16", "u16", "u32", "u64", "i8_empty"}) {
    const Tensor t = reader.get(name, false, {.integers = DType::i64});
    ASSERT_EQ(t.dtype(), DType::i64) << name;
    const auto want = expected().at(name).at("values");
    EXPECT_EQ(t.shape().vec(), expected().at(name).at("shape").get<std::vector<int64_t>>()) << name;
    ASSERT_EQ(t.numel(), static_cast<int64_t>(want.size())) << name;
    for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.data_ptr<int64_t>()[i], want[i].get<int64_t>()) << name << i;
  }
  for (const char* name : {"i8", "i16", "u16"}) {
    const Tensor t = reader.get(name, false, {.integers = DType::i32});
    ASSERT_EQ(t.dtype(), DType::i32);
    const auto want = expected().at(name).at("values");
    for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.data_ptr<int32_t>()[i], want[i].get<int64_t>()) << name << i;
  }
  kt::expect_error([&] { reader.get("u32", false, {.integers = DType::i32}); },
                   {"tensor 'u32'", "element 3", "U32", "2147483648", "more than int32", "convert integers to int64"});
  kt::expect_error([&] { reader.get("u64_big", false, {.integers = DType::i64}); },
                   {"tensor 'u64_big'", "element 1", "9223372036854775808", "more than int64"});
  kt::expect_error([&] { reader.get("i8", false, {.integers = DType::f32}); }, {"must be int32 or int64", "float32"});
  // A whole-file load converts what it can and stops at the value that does not fit.
  kt::expect_error([&] { reader.load({}, {.integers = DType::i64}); }, {"tensor 'u64_big'", "element 1"});
  const TensorDict some = reader.load({.names = {"u16", "i8"}}, {.integers = DType::i32});
  EXPECT_EQ(some.keys(), (std::vector<std::string>{"u16", "i8"}));
  EXPECT_EQ(some.at("u16").data_ptr<int32_t>()[2], 40000);
}

TEST(SafetensorsDtypes, EightBitFloatsDecodeLikeTorch) {
  const auto floats = io::SafetensorsReader::open(foreign("floats.safetensors"));
  const auto others = io::SafetensorsReader::open(foreign("others.safetensors"));
  const std::pair<DType, const char*> targets[] = {{DType::f32, "f32"}, {DType::f16, "f16"}, {DType::bf16, "bf16"}};
  for (const char* name : {"f8_e4m3", "f8_e5m2", "f8_e4m3fnuz", "f8_e5m2fnuz", "f8_scalar", "e8m0"}) {
    const auto& reader = std::string(name) == "e8m0" ? others : floats;
    for (const auto& [dtype, key] : targets) {
      if (std::string(name) == "e8m0" && dtype == DType::f16) continue;  // below: f16 cannot hold 2^-127
      const Tensor t = reader.get(name, false, {.floats = dtype});
      ASSERT_EQ(t.dtype(), dtype);
      const auto want = expected().at(name).at(key).get<std::vector<uint32_t>>();
      ASSERT_EQ(t.numel(), static_cast<int64_t>(want.size())) << name;
      int nans = 0;
      for (int64_t i = 0; i < t.numel(); ++i) {
        if (is_nan_bits(want[i], dtype)) {  // NaN payloads may differ; NaN-ness may not
          EXPECT_TRUE(is_nan_bits(bits_at(t, i), dtype)) << name << " " << key << " byte " << i;
          ++nans;
        } else {
          EXPECT_EQ(bits_at(t, i), want[i]) << name << " " << key << " byte " << i;
        }
      }
      if (t.numel() == 256) {
        EXPECT_GE(nans, 1) << name;
      }
    }
  }
  EXPECT_EQ(floats.get("f8_scalar", false, {.floats = DType::f32}).dim(), 0);
  const Tensor f64 = floats.get("f8_e5m2", false, {.floats = DType::f64});
  EXPECT_EQ(f64.data_ptr<double>()[0x7b], 57344.0);
  kt::expect_error([&] { others.get("e8m0", false, {.floats = DType::f16}); },
                   {"tensor 'e8m0'", "element 0", "F8_E8M0", "float16 cannot hold exactly", "float32"});
}

// Values from the OCP 8-bit floating point specification (E4M3 and E5M2 tables) and, for the FNUZ
// variants and E8M0, from their definitions (bias 8 / 16, one NaN at 0x80; 2^(e - 127), NaN at 0xff).
TEST(SafetensorsDtypes, Fp8EdgesFollowTheSpecification) {
  using S = SafetensorsDType;
  const auto d = io::decode_fp8;
  EXPECT_EQ(d(S::F8_E4M3, 0x7e), 448.0);           // largest normal
  EXPECT_TRUE(std::isnan(d(S::F8_E4M3, 0x7f)));    // S.1111.111 is NaN, and there is no infinity
  EXPECT_TRUE(std::isnan(d(S::F8_E4M3, 0xff)));
  EXPECT_EQ(d(S::F8_E4M3, 0x78), 256.0);           // exponent field 15 is a normal binade
  EXPECT_EQ(d(S::F8_E4M3, 0x01), std::ldexp(1.0, -9));  // smallest subnormal
  EXPECT_EQ(d(S::F8_E4M3, 0x08), std::ldexp(1.0, -6));  // smallest normal
  EXPECT_TRUE(std::signbit(d(S::F8_E4M3, 0x80)) && d(S::F8_E4M3, 0x80) == 0.0);
  EXPECT_EQ(d(S::F8_E4M3, 0xba), -1.25);
  EXPECT_EQ(d(S::F8_E5M2, 0x7b), 57344.0);
  EXPECT_EQ(d(S::F8_E5M2, 0x7c), HUGE_VAL);
  EXPECT_EQ(d(S::F8_E5M2, 0xfc), -HUGE_VAL);
  for (int b : {0x7d, 0x7e, 0x7f, 0xfd, 0xfe, 0xff}) EXPECT_TRUE(std::isnan(d(S::F8_E5M2, static_cast<uint8_t>(b))));
  EXPECT_EQ(d(S::F8_E5M2, 0x01), std::ldexp(1.0, -16));
  EXPECT_EQ(d(S::F8_E5M2, 0x03), 3 * std::ldexp(1.0, -16));
  EXPECT_EQ(d(S::F8_E5M2, 0x3c), 1.0);
  EXPECT_TRUE(std::isnan(d(S::F8_E4M3FNUZ, 0x80)));
  EXPECT_EQ(d(S::F8_E4M3FNUZ, 0x7f), 240.0);
  EXPECT_EQ(d(S::F8_E4M3FNUZ, 0xff), -240.0);
  EXPECT_EQ(d(S::F8_E4M3FNUZ, 0x01), std::ldexp(1.0, -10));
  EXPECT_TRUE(std::isnan(d(S::F8_E5M2FNUZ, 0x80)));
  EXPECT_EQ(d(S::F8_E5M2FNUZ, 0x7f), 57344.0);
  EXPECT_EQ(d(S::F8_E5M2FNUZ, 0x01), std::ldexp(1.0, -17));
  EXPECT_EQ(d(S::F8_E8M0, 0x7f), 1.0);
  EXPECT_EQ(d(S::F8_E8M0, 0x00), std::ldexp(1.0, -127));
  EXPECT_EQ(d(S::F8_E8M0, 0xfe), std::ldexp(1.0, 127));
  EXPECT_TRUE(std::isnan(d(S::F8_E8M0, 0xff)));
}

TEST(SafetensorsDtypes, WithoutTheOptionTheErrorNamesTensorDtypeAndOption) {
  const auto ints = io::SafetensorsReader::open(foreign("integers.safetensors"));
  kt::expect_error([&] { ints.get("i16"); },
                   {"integers.safetensors", "tensor 'i16' is I16", "no dtype",
                    "SafetensorsConvert{.integers = DType::i64}"});
  kt::expect_error([&] { io::load_safetensors(foreign("integers.safetensors")); },
                   {"which Kiln has no dtype for", "SafetensorsConvert{.integers"});
  const auto floats = io::SafetensorsReader::open(foreign("floats.safetensors"));
  kt::expect_error([&] { floats.get("f8_e4m3", true, {.integers = DType::i64}); },
                   {"tensor 'f8_e4m3' is F8_E4M3", "SafetensorsConvert{.floats = DType::f32}"});
  kt::expect_error([&] { floats.get("f8_e5m2", false, {.floats = DType::i32}); },
                   {"must be a floating dtype", "int32"});
  const auto others = io::SafetensorsReader::open(foreign("others.safetensors"));
  for (const char* name : {"c64", "f4", "f6a", "f6b"})
    kt::expect_error([&] { others.get(name, false, {.integers = DType::i64, .floats = DType::f32}); },
                     {"tensor '" + std::string(name) + "' is ", "cannot convert"});
  others.verify_all();  // the layout is valid; only loading needs a Kiln dtype
}

TEST(SafetensorsDtypes, FiftyThousandTensorHeaderParses) {
  constexpr int kTensors = 50'000;
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  for (int i = 0; i < kTensors; ++i)
    header += ",\"layers." + std::to_string(i) + ".w\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[" +
              std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  header += "}";
  auto bytes = safetensors_bytes(header, 4 * kTensors);
  for (int i = 0; i < kTensors; ++i) {
    const int16_t v[2] = {static_cast<int16_t>(i % 30000), static_cast<int16_t>(-i % 30000)};
    std::memcpy(bytes.data() + 8 + header.size() + 4 * i, v, 4);
  }
  const auto reader = io::SafetensorsReader::from_memory(bytes.data(), bytes.size(), "50k");
  ASSERT_EQ(reader.records().size(), static_cast<size_t>(kTensors));
  EXPECT_EQ(reader.records()[12345].name, "layers.12345.w");  // file order
  EXPECT_EQ(reader.records()[12345].begin, 4u * 12345);
  const Tensor t = reader.get("layers.41234.w", false, {.integers = DType::i32});
  EXPECT_EQ(t.data_ptr<int32_t>()[0], 41234 % 30000);
  EXPECT_EQ(t.data_ptr<int32_t>()[1], -41234 % 30000);
  EXPECT_EQ(reader.load({}, {.integers = DType::i64}).size(), static_cast<size_t>(kTensors));
}
