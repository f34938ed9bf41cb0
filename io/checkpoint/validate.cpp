// Field validation for checkpoint headers (see validate.h). Every check reports the value it saw.
#include "io/checkpoint/validate.h"

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

namespace {

// Builds the DOM from SAX events, checking nesting and duplicate keys as it goes.
// Note [Linear JSON parsing]: nlohmann's callback parser rescans the enclosing object for
// discarded values at every object end, which is quadratic in the number of tensors (36 s for a
// 50,000-tensor safetensors header); this builder does one map insertion per key instead.
class CheckedDomBuilder {
 public:
  CheckedDomBuilder(Json& root, const std::string& where) : root_(root), where_(where) {}

  bool null() { return put(Json(nullptr)); }
  bool boolean(bool v) { return put(Json(v)); }
  bool number_integer(Json::number_integer_t v) { return put(Json(v)); }
  bool number_unsigned(Json::number_unsigned_t v) { return put(Json(v)); }
  bool number_float(Json::number_float_t v, const Json::string_t&) { return put(Json(v)); }
  bool string(Json::string_t& v) { return put(Json(std::move(v))); }
  bool binary(Json::binary_t& v) { return put(Json::binary(std::move(v))); }
  bool start_object(std::size_t) { return open(Json::object()); }
  bool start_array(std::size_t) { return open(Json::array()); }
  bool end_object() { return close(); }
  bool end_array() { return close(); }
  bool key(Json::string_t& k) {
    auto [it, inserted] = open_.back()->get_ref<Json::object_t&>().emplace(k, nullptr);
    KILN_CHECK(inserted, where_, ": JSON header has the key ", shown(k), " twice in one object");
    slot_ = &it->second;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const Json::exception& e) {
    kiln::detail::throw_error(where_, ": JSON header is not valid JSON (", e.what(), ")");
  }

 private:
  // Where the next value goes: the root, the end of the open array, or the slot of the last key.
  Json* place(Json&& v) {
    if (open_.empty()) return &(root_ = std::move(v));
    Json* top = open_.back();
    if (top->is_array()) {
      top->push_back(std::move(v));
      return &top->back();
    }
    return &(*slot_ = std::move(v));
  }
  bool put(Json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(Json&& container) {
    KILN_CHECK(static_cast<int>(open_.size()) < format::kMaxJsonDepth, where_, ": JSON header nests deeper than ",
               format::kMaxJsonDepth, " levels");
    open_.push_back(place(std::move(container)));  // stable: the parent grows only after this closes
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }

  Json& root_;
  const std::string& where_;
  std::vector<Json*> open_;
  Json* slot_ = nullptr;
};

}  // namespace

Json parse_json(const char* data, size_t size, const std::string& where) {
  Json root;
  CheckedDomBuilder builder(root, where);
  try {
    Json::sax_parse(data, data + size, &builder);
  } catch (const Json::exception& e) {
    kiln::detail::throw_error(where, ": JSON header is not valid JSON (", e.what(), ")");
  }
  return root;
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
