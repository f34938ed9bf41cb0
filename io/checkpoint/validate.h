// Checks shared by the native and the safetensors readers: a JSON parser with limits (nesting,
// duplicate keys, UTF-8), and field readers that turn a hostile value into a kiln::Error naming the
// file, the tensor and the field. Nothing here allocates in proportion to what a header claims.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "tensor/dims.h"
#include "tensor/dtype.h"
#include "tensor/error.h"
#include "tensor/state_dict.h"

namespace kiln::io::detail {

// A short, printable form of a name from a file: control and non-ASCII bytes as \xNN, at most
// 80 characters, in single quotes.
std::string shown(std::string_view name);

// Parses bytes as JSON, rejecting nesting deeper than format::kMaxJsonDepth, duplicate keys in any
// object, invalid UTF-8 and trailing garbage. `where` prefixes the error ("checkpoint 'f.kiln'").
Json parse_json(const char* data, size_t size, const std::string& where);

// "float32" -> DType::f32, ... (the names tensor/dtype.h prints).
std::optional<DType> dtype_from_name(std::string_view name);

// Field readers. `where` names the place ("checkpoint 'f': tensor 'w' (entry 2), field 'shape'").
uint64_t read_u64(const Json& v, const std::string& where);
std::string read_string(const Json& v, const std::string& where);
Dims read_shape(const Json& v, const std::string& where);   // rank, sign, integer-ness, overflow
void check_name(const std::string& name, const std::string& where);  // non-empty, no NUL, length

// Bytes of a contiguous tensor of this shape and dtype, overflow-checked.
uint64_t checked_nbytes(const Dims& shape, DType dtype, const std::string& where);

// Bool tensors must hold only 0 and 1 (anything else is undefined behaviour when read as bool).
void check_bool_bytes(const uint8_t* data, uint64_t nbytes, const std::string& where);

}  // namespace kiln::io::detail
