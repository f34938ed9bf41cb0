// FileBytes: the read-only bytes a checkpoint reader works on, either a private memory mapping of
// a file or memory the caller lends (fuzzing, tests). Zero-copy tensors hold a shared_ptr to it, so
// a mapping lives as long as any tensor over it. Writes to such a tensor stay private to the
// process (MAP_PRIVATE); the file never changes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kiln::io {

class FileBytes {
 public:
  // Maps the whole file. `op` names the caller in errors ("load").
  static std::shared_ptr<const FileBytes> map(const std::string& path, const char* op);
  // Borrows bytes that must outlive every reader and tensor made from them.
  static std::shared_ptr<const FileBytes> borrow(const void* data, size_t size, std::string label);

  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& label() const { return label_; }  // the path, or what the lender named it
  // Tells the kernel a range will be read once, front to back (readahead). No-op for borrowed bytes.
  void advise_sequential(size_t offset, size_t length) const;
  // Copies bytes [offset, offset + length) to dst (Note [Copying out of a mapping]).
  void copy_out(size_t offset, void* dst, size_t length) const;

 private:
  FileBytes() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::string label_;
};

}  // namespace kiln::io
