// Atomic file replacement: write under a temporary name in the final folder, fsync, rename over
// the final name, fsync the folder. A reader of the final name sees the previous complete file or
// the new complete one, never a partial one, even across a crash or a power loss.
// Every syscall goes through FileOps, which tests replace to inject ENOSPC or to model a crash.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace kiln::io {

// The write path's syscalls. Each returns what the POSIX call returns, with errno set on failure.
class FileOps {
 public:
  virtual ~FileOps() = default;
  virtual int open(const std::string& path, int flags, int mode);
  virtual ssize_t pwrite(int fd, const void* data, size_t nbytes, uint64_t offset);
  virtual int fsync(int fd);
  virtual int close(int fd);
  virtual int rename(const std::string& from, const std::string& to);
  virtual int unlink(const std::string& path);
  virtual int fsync_dir(const std::string& dir);  // open the folder, fsync it, close it
};

// The FileOps in use (the plain POSIX one unless a test installed another).
FileOps& file_ops();

// Installs `ops` for the whole process until destroyed. Tests only; not thread-safe to swap while
// another thread writes.
class ScopedFileOps {
 public:
  explicit ScopedFileOps(FileOps& ops);
  ~ScopedFileOps();
  ScopedFileOps(const ScopedFileOps&) = delete;
  ScopedFileOps& operator=(const ScopedFileOps&) = delete;

 private:
  FileOps* previous_;
};

class AtomicFile {
 public:
  // Creates the temporary file. `durable` = fsync the file before the rename and the folder after
  // it; `op` names the caller in errors ("save").
  AtomicFile(std::string path, bool durable, const char* op);
  ~AtomicFile();  // when not committed: closes and removes the temporary file
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Writes all of `data` at `offset` (retrying short writes), or throws naming the offset and errno.
  void write_at(uint64_t offset, const void* data, size_t nbytes);
  // fsync, rename over the final path, fsync the folder. After it returns the new file is in place.
  void commit();

  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

 private:
  void discard() noexcept;
  std::string path_, temp_;
  bool durable_;
  const char* op_;
  int fd_ = -1;
  bool committed_ = false;
};

// The folder part of a path ("." when there is none).
std::string parent_dir(const std::string& path);
// Temporary names for `path` are "<path>.tmp-<pid>-<n>".
std::string temp_prefix(const std::string& path);
// Removes temporary files for `path` left by processes that no longer run; returns how many.
int remove_stale_temporaries(const std::string& path);

}  // namespace kiln::io
