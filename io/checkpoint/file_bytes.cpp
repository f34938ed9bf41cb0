// FileBytes over mmap(2). An empty file maps to no bytes (mmap rejects length 0).
#include "io/checkpoint/file_bytes.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tensor/error.h"

namespace kiln::io {

std::shared_ptr<const FileBytes> FileBytes::map(const std::string& path, const char* op) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KILN_CHECK(fd >= 0, op, ": cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    kiln::detail::throw_error(op, ": cannot stat '", path, "': ", std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    kiln::detail::throw_error(op, ": '", path, "' is not a regular file");
  }
  std::shared_ptr<FileBytes> bytes(new FileBytes());
  bytes->label_ = path;
  bytes->size_ = static_cast<size_t>(st.st_size);
  if (bytes->size_ > 0) {
    // PROT_WRITE with MAP_PRIVATE: a zero-copy tensor may be written in place; the pages are then
    // copied for this process and the file is untouched.
    void* p = ::mmap(nullptr, bytes->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    KILN_CHECK(p != MAP_FAILED, op, ": cannot map '", path, "' (", bytes->size_, " bytes): ", std::strerror(err));
    bytes->data_ = static_cast<const uint8_t*>(p);
    bytes->mapped_ = true;
  } else {
    ::close(fd);
  }
  return bytes;
}

std::shared_ptr<const FileBytes> FileBytes::borrow(const void* data, size_t size, std::string label) {
  std::shared_ptr<FileBytes> bytes(new FileBytes());
  bytes->data_ = static_cast<const uint8_t*>(data);
  bytes->size_ = size;
  bytes->label_ = std::move(label);
  return bytes;
}

FileBytes::~FileBytes() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void FileBytes::advise_sequential(size_t offset, size_t length) const {
  if (!mapped_ || length == 0) return;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t start = offset / page * page;
  void* base = const_cast<uint8_t*>(data_) + start;
  ::madvise(base, length + (offset - start), MADV_SEQUENTIAL);
  ::madvise(base, length + (offset - start), MADV_WILLNEED);
}

}  // namespace kiln::io
