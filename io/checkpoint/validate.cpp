// Field validation for checkpoint headers (see validate.h). Every check reports the value it saw.
#include "io/checkpoint/validate.h"

#include <set>
#include <vector>

#include "io/checkpoint/format.h"

namespace kiln::io::detail {

std::string shown(std::string_view name) {
  static constexpr size_t kMaxShown = 80;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < name.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (name.size() > kMaxShown) out += "...(" + std::to_string(name.size()) + " bytes)";
  return out + "'";
}

Json parse_json(const char* data, size_t size, const std::string& where) {
  // One entry per open container: the keys seen so far for an object, nullopt for an array.
  std::vector<std::optional<std::set<std::string>>> open;
  auto on_event = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        KILN_CHECK(static_cast<int>(open.size()) < format::kMaxJsonDepth, where, ": JSON header nests deeper than ",
                   format::kMaxJsonDepth, " levels");
        if (event == Json::parse_event_t::object_start) open.emplace_back(std::set<std::string>{});
        else open.emplace_back(std::nullopt);
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!open.empty() && open.back()) {
          const auto& key = parsed.get_ref<const std::string&>();
          KILN_CHECK(open.back()->insert(key).second, where, ": JSON header has the key ", shown(key),
                     " twice in one object");
        }
        break;
      case Json::parse_event_t::value:
        break;
    }
    return true;
  };
  try {
    return Json::parse(data, data + size, on_event);
  } catch (const Json::exception& e) {
    kiln::detail::throw_error(where, ": JSON header is not valid JSON (", e.what(), ")");
  }
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (dtype_name(static_cast<DType>(i)) == name) return static_cast<DType>(i);
  return std::nullopt;
}

uint64_t read_u64(const Json& v, const std::string& where) {
  KILN_CHECK(v.is_number_integer(), where, ": expected a non-negative integer, got ", shown(v.dump()));
  KILN_CHECK(v.is_number_unsigned() || v.get<int64_t>() >= 0, where, ": expected a non-negative integer, got ",
             v.get<int64_t>());
  return v.get<uint64_t>();
}

std::string read_string(const Json& v, const std::string& where) {
  KILN_CHECK(v.is_string(), where, ": expected a string, got ", shown(v.dump()));
  return v.get<std::string>();
}

Dims read_shape(const Json& v, const std::string& where) {
  KILN_CHECK(v.is_array(), where, ": expected an array of sizes, got ", shown(v.dump()));
  KILN_CHECK(v.size() <= static_cast<size_t>(kMaxDims), where, ": rank ", v.size(), " exceeds the limit of ",
             kMaxDims, " dims");
  Dims shape;
  int64_t product_of_nonzero = 1;  // bounds strides, which ignore zero sizes
  for (size_t i = 0; i < v.size(); ++i) {
    const Json& d = v[i];
    KILN_CHECK(d.is_number_integer(), where, ": size ", i, " is ", shown(d.dump()), ", not an integer");
    KILN_CHECK(!d.is_number_unsigned() || d.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX), where, ": size ",
               i, " is ", d.get<uint64_t>(), ", more than 2^63 - 1");
    const int64_t s = d.get<int64_t>();
    KILN_CHECK(s >= 0, where, ": size ", i, " is ", s, ", must be >= 0");
    KILN_CHECK(!__builtin_mul_overflow(product_of_nonzero, s == 0 ? 1 : s, &product_of_nonzero), where,
               ": the element count of shape ", v.dump(), " overflows 64 bits");
    shape.push_back(s);
  }
  return shape;
}

void check_name(const std::string& name, const std::string& where) {
  KILN_CHECK(!name.empty(), where, ": tensor name is empty");
  KILN_CHECK(name.find('\0') == std::string::npos, where, ": tensor name ", shown(name), " contains a NUL byte");
  KILN_CHECK(name.size() <= format::kMaxNameBytes, where, ": tensor name is ", name.size(), " bytes, more than ",
             format::kMaxNameBytes);
}

uint64_t checked_nbytes(const Dims& shape, DType dtype, const std::string& where) {
  uint64_t n = 1;
  for (int64_t s : shape)
    KILN_CHECK(!__builtin_mul_overflow(n, static_cast<uint64_t>(s), &n), where, ": shape ", shape, " overflows");
  KILN_CHECK(!__builtin_mul_overflow(n, dtype_size(dtype), &n), where, ": ", dtype, " x ", shape,
             " needs more than 2^64 bytes");
  return n;
}

void check_bool_bytes(const uint8_t* data, uint64_t nbytes, const std::string& where) {
  for (uint64_t i = 0; i < nbytes; ++i)
    KILN_CHECK(data[i] <= 1, where, ": byte ", i, " of a bool tensor is ", static_cast<int>(data[i]),
               " (must be 0 or 1)");
}

}  // namespace kiln::io::detail
