// Reading native checkpoint files: CheckpointReader validates the whole layout when it opens a
// file (every size, offset, alignment, dtype, shape and name) and checks each tensor's checksum
// when it is read. A malformed file gives a kiln::Error naming the file, tensor and field; the
// reader never reads out of bounds and never allocates more than the tensors that fit in the file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/checkpoint/file_bytes.h"
#include "tensor/state_dict.h"

namespace kiln::io {

struct LoadOptions {
  std::vector<std::string> names;  // load only these (all when empty); a missing name is an error
  bool zero_copy = false;          // tensors view the file's mapping instead of owning a copy
  bool verify = true;              // check each tensor's checksum before returning it
};

// One row of the tensor table. Offsets are relative to the data section.
struct TensorRecord {
  std::string name;
  DType dtype = DType::f32;
  Dims shape;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  uint32_t crc32c = 0;
};

class CheckpointReader {
 public:
  static CheckpointReader open(const std::string& path);
  // Over borrowed bytes (they must outlive the reader and every zero-copy tensor from it).
  static CheckpointReader from_memory(const void* data, size_t size, std::string label = "<memory>");

  uint32_t version() const { return version_; }
  const Json& meta() const { return meta_; }
  std::vector<std::string> names() const;
  const std::vector<TensorRecord>& records() const { return records_; }
  const TensorRecord* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const std::string& path() const { return bytes_->label(); }
  uint64_t file_size() const { return bytes_->size(); }
  uint32_t header_crc32c() const { return header_crc_; }

  // One tensor: a copy, or (zero_copy) a view of the mapping that keeps it alive.
  Tensor get(std::string_view name, bool zero_copy = false, bool verify = true) const;
  // Raw bytes of a tensor inside the file, after bounds were validated at open (no checksum check).
  const uint8_t* raw(const TensorRecord& r) const { return bytes_->data() + data_offset_ + r.offset; }
  // Checks every tensor's checksum; throws on the first mismatch.
  void verify_all() const;
  State load(const LoadOptions& options = {}) const;

 private:
  explicit CheckpointReader(std::shared_ptr<const FileBytes> bytes);
  void parse();
  void parse_table(const Json& tensors, const std::string& where);
  void check_data(const TensorRecord& r) const;

  std::shared_ptr<const FileBytes> bytes_;
  uint32_t version_ = 0;
  uint32_t header_crc_ = 0;
  uint64_t data_offset_ = 0, data_bytes_ = 0;
  Json meta_;
  std::vector<TensorRecord> records_;
  std::unordered_map<std::string, size_t> index_;
};

// Loads a checkpoint file (see LoadOptions).
State load(const std::string& path, const LoadOptions& options = {});

// What a path holds, told by content: "kiln", "safetensors", "kiln-sharded" (a folder with a
// sharded checkpoint's index) or "unknown". Never throws for a path that exists; throws when the
// path cannot be read at all.
std::string detect_format(const std::string& path);

}  // namespace kiln::io
