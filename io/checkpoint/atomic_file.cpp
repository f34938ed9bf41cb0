// AtomicFile and the POSIX FileOps (see atomic_file.h for the guarantees).
#include "io/checkpoint/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "tensor/error.h"

namespace kiln::io {
namespace {

FileOps& posix_ops() {
  static FileOps ops;
  return ops;
}
std::atomic<FileOps*> g_ops{nullptr};
std::atomic<uint64_t> g_temp_counter{0};

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

int FileOps::open(const std::string& path, int flags, int mode) { return ::open(path.c_str(), flags, mode); }
ssize_t FileOps::pwrite(int fd, const void* data, size_t nbytes, uint64_t offset) {
  return ::pwrite(fd, data, nbytes, static_cast<off_t>(offset));
}
int FileOps::fsync(int fd) { return ::fsync(fd); }
int FileOps::close(int fd) { return ::close(fd); }
int FileOps::rename(const std::string& from, const std::string& to) { return ::rename(from.c_str(), to.c_str()); }
int FileOps::unlink(const std::string& path) { return ::unlink(path.c_str()); }
int FileOps::fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  errno = err;
  return rc;
}

FileOps& file_ops() {
  FileOps* ops = g_ops.load(std::memory_order_acquire);
  return ops ? *ops : posix_ops();
}

ScopedFileOps::ScopedFileOps(FileOps& ops) : previous_(g_ops.exchange(&ops)) {}
ScopedFileOps::~ScopedFileOps() { g_ops.store(previous_); }

std::string parent_dir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string temp_prefix(const std::string& path) { return path + ".tmp-"; }

AtomicFile::AtomicFile(std::string path, bool durable, const char* op)
    : path_(std::move(path)), durable_(durable), op_(op) {
  KILN_CHECK(!path_.empty() && path_.back() != '/', op_, ": '", path_, "' is not a file path");
  temp_ = temp_prefix(path_) + std::to_string(::getpid()) + "-" + std::to_string(g_temp_counter.fetch_add(1));
  fd_ = file_ops().open(temp_, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  KILN_CHECK(fd_ >= 0, op_, ": cannot create '", temp_, "' (the temporary file for '", path_,
             "'): ", std::strerror(errno));
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) file_ops().close(fd_);
  fd_ = -1;
  file_ops().unlink(temp_);
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t nbytes) {
  KILN_ASSERT(fd_ >= 0 && !committed_, "write_at on a closed AtomicFile");
  const auto* p = static_cast<const char*>(data);
  while (nbytes > 0) {
    const ssize_t n = file_ops().pwrite(fd_, p, nbytes, offset);
    if (n < 0 && errno == EINTR) continue;
    KILN_CHECK(n > 0, op_, ": writing '", path_, "' failed at byte ", offset, ": ",
               n == 0 ? "no progress" : std::strerror(errno), " (the previous file, if any, is unchanged)");
    p += n;
    offset += static_cast<uint64_t>(n);
    nbytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  KILN_ASSERT(fd_ >= 0 && !committed_, "commit on a closed AtomicFile");
  if (durable_)
    KILN_CHECK(file_ops().fsync(fd_) == 0, op_, ": fsync of '", temp_, "' failed: ", std::strerror(errno),
               " (the previous file, if any, is unchanged)");
  const int close_rc = file_ops().close(fd_);
  fd_ = -1;
  KILN_CHECK(close_rc == 0, op_, ": closing '", temp_, "' failed: ", std::strerror(errno));
  KILN_CHECK(file_ops().rename(temp_, path_) == 0, op_, ": renaming '", temp_, "' to '", path_,
             "' failed: ", std::strerror(errno));
  committed_ = true;
  if (durable_)
    KILN_CHECK(file_ops().fsync_dir(parent_dir(path_)) == 0, op_, ": fsync of the folder '", parent_dir(path_),
               "' failed: ", std::strerror(errno), " ('", path_, "' is written but may not survive a power loss)");
}

int remove_stale_temporaries(const std::string& path) {
  const std::string dir = parent_dir(path);
  const std::string prefix = base_name(temp_prefix(path));
  DIR* d = ::opendir(dir.c_str());
  if (!d) return 0;
  int removed = 0;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    // A live writer (this process or another) still owns its file; kill(pid, 0) only probes.
    const bool owner_alive = pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 ||
                             errno != ESRCH;
    if (!owner_alive && file_ops().unlink(dir + "/" + name) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

}  // namespace kiln::io
