// safetensors interop: reads and writes the Hugging Face format (8-byte little-endian header
// length, a JSON header, then the tensors' bytes back to back), byte-compatible with the
// `safetensors` package. The reader applies the native reader's validation (see
// io/checkpoint/validate.h); the format has no checksums, so corruption inside tensor data is
// not detectable here. Every dtype of the format opens (io/safetensors/dtypes.h); those Kiln has
// no tensor type for (I8 ... U64, the 8-bit floats) load only through a SafetensorsConvert.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/checkpoint/file_bytes.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"
#include "io/safetensors/dtypes.h"
#include "tensor/state_dict.h"

namespace kiln::io {

inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;  // the reference implementation's cap

struct SafetensorsRecord {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::F32;  // as the file stores it
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

  // zero_copy views the mapping when the bytes are aligned for the dtype; otherwise copies. A
  // tensor of a dtype Kiln lacks is converted as `convert` says (always a copy), or refused.
  Tensor get(std::string_view name, bool zero_copy = false, const SafetensorsConvert& convert = {}) const;
  // safetensors has no checksums: LoadOptions::verify has nothing to check.
  TensorDict load(const LoadOptions& options = {}, const SafetensorsConvert& convert = {}) const;
  // What can be checked without checksums beyond the layout checked at open: bool bytes are 0 or 1.
  void verify_all() const;

 private:
  explicit SafetensorsReader(std::shared_ptr<const FileBytes> bytes);
  void parse();
  Tensor read(const SafetensorsRecord& r, bool zero_copy, const SafetensorsConvert& convert) const;
  std::shared_ptr<const FileBytes> bytes_;
  uint64_t header_bytes_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsRecord> records_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in records_
};

// Writes tensors in the dict's order, header padded with spaces to a multiple of 8 bytes (as the
// reference writer does), atomically (see io/checkpoint/atomic_file.h).
void save_safetensors(const std::string& path, const TensorDict& tensors,
                      const std::map<std::string, std::string>& metadata = {}, const SaveOptions& options = {});
TensorDict load_safetensors(const std::string& path, const LoadOptions& options = {},
                            const SafetensorsConvert& convert = {});

// "F32" <-> DType::f32 and so on, for Kiln's own dtypes (nullopt for "I8" and the other foreign ones).
std::string_view safetensors_dtype_name(DType dtype);
std::optional<DType> dtype_from_safetensors_name(std::string_view name);

}  // namespace kiln::io
