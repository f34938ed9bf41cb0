// FileBytes over mmap(2). An empty file maps to no bytes (mmap rejects length 0).
#include "io/checkpoint/file_bytes.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "tensor/error.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels refuse it and the pages are touched instead
#endif

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

// Note [Copying out of a mapping]
// A memcpy straight from a cold mapping outruns readahead: it faults the pages in 64 KiB
// fault-around steps and waits on I/O at many of them (256 MiB: ~4,100 minor and 32 major faults,
// 0.21 s), while a first pass that only reads (a checksum, or this populate) lets each fault map
// whole readahead folios (~540 faults, 0.10 s). That is why io::load with verify = false was slower
// than with checksums. So the range is populated in bounded chunks, then copied while it is hot.
void FileBytes::copy_out(size_t offset, void* dst, size_t length) const {
  constexpr size_t kChunk = size_t{64} << 20;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  auto* out = static_cast<uint8_t*>(dst);
  for (size_t done = 0; done < length;) {
    const size_t n = std::min(kChunk, length - done);
    const uint8_t* src = data_ + offset + done;
    if (mapped_) {
      const auto start = reinterpret_cast<uintptr_t>(src) / page * page;
      const size_t span = n + (reinterpret_cast<uintptr_t>(src) - start);
      if (::madvise(reinterpret_cast<void*>(start), span, MADV_POPULATE_READ) != 0) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < n; i += page) sink = sink + src[i];
      }
    }
    std::memcpy(out + done, src, n);
    done += n;
  }
}

}  // namespace kiln::io
