// safetensors interop: reads and writes the Hugging Face format (8-byte little-endian header
// length, a JSON header, then the tensors' bytes back to back), byte-compatible with the
// `safetensors` package. The reader applies the native reader's validation (see
// io/checkpoint/validate.h); the format has no checksums, so corruption inside tensor data is
// not detectable here. Kiln's dtypes only: F64 F32 F16 BF16 I64 I32 U8 BOOL.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/checkpoint/file_bytes.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"
#include "tensor/state_dict.h"

namespace kiln::io {

inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;  // the reference implementation's cap

struct SafetensorsRecord {
  std::string name;
  DType dtype = DType::f32;
  Dims shape;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the byte buffer after the header
};

class SafetensorsReader {
 public:
  static SafetensorsReader open(const std::string& path);
  static SafetensorsReader from_memory(const void* data, size_t size, std::string label = "<memory>");

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafetensorsRecord>& records() const { return records_; }  // in file order
  const SafetensorsRecord* find(std::string_view name) const;
  std::vector<std::string> names() const;
  const std::string& path() const { return bytes_->label(); }
  uint64_t header_bytes() const { return header_bytes_; }

  // zero_copy views the mapping when the bytes are aligned for the dtype; otherwise copies.
  Tensor get(std::string_view name, bool zero_copy = false) const;
  TensorDict load(const LoadOptions& options = {}) const;  // LoadOptions::verify has nothing to check

 private:
  explicit SafetensorsReader(std::shared_ptr<const FileBytes> bytes);
  void parse();
  std::shared_ptr<const FileBytes> bytes_;
  uint64_t header_bytes_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsRecord> records_;
};

// Writes tensors in the dict's order, header padded with spaces to a multiple of 8 bytes (as the
// reference writer does), atomically (see io/checkpoint/atomic_file.h).
void save_safetensors(const std::string& path, const TensorDict& tensors,
                      const std::map<std::string, std::string>& metadata = {}, const SaveOptions& options = {});
TensorDict load_safetensors(const std::string& path, const LoadOptions& options = {});

// "F32" <-> DType::f32 and so on.
std::string_view safetensors_dtype_name(DType dtype);
std::optional<DType> dtype_from_safetensors_name(std::string_view name);

}  // namespace kiln::io
