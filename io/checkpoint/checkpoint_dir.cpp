// CheckpointDir (see checkpoint_dir.h). Files are "step-<12 digits>.kiln"; "last" holds one name.
#include "io/checkpoint/checkpoint_dir.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "io/checkpoint/atomic_file.h"

namespace kiln::io {
namespace {

constexpr const char* kLast = "last";

// The step of a file name "step-000000000042.kiln", or -1 when the name has another form.
int64_t step_of(const std::string& name) {
  static constexpr std::string_view kPrefix = "step-", kSuffix = ".kiln";
  if (name.size() != kPrefix.size() + 12 + kSuffix.size() || name.compare(0, kPrefix.size(), kPrefix) != 0 ||
      name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
    return -1;
  int64_t step = 0;
  for (size_t i = kPrefix.size(); i < kPrefix.size() + 12; ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

CheckpointDir::CheckpointDir(std::string root, CheckpointDirOptions options)
    : root_(std::move(root)), options_(options), saver_(options.save) {
  KILN_CHECK(options_.keep_last >= 1, "CheckpointDir: keep_last must be >= 1, got ", options_.keep_last);
  if (::mkdir(root_.c_str(), 0755) != 0)
    KILN_CHECK(errno == EEXIST, "CheckpointDir: cannot create '", root_, "': ", std::strerror(errno));
}

std::string CheckpointDir::path_for(int64_t step) const {
  KILN_CHECK(step >= 0 && step < 1000000000000, "CheckpointDir: step must be in [0, 10^12), got ", step);
  char name[32];
  std::snprintf(name, sizeof name, "step-%012lld.kiln", static_cast<long long>(step));
  return root_ + "/" + name;
}

std::string CheckpointDir::save(int64_t step, const State& state) {
  saver_.wait();  // a save in flight would race with this one over "last"
  const std::string path = path_for(step);
  io::save(path, state, options_.save);
  publish(path);
  return path;
}

void CheckpointDir::save_async(int64_t step, const State& state) {
  const std::string path = path_for(step);
  saver_.save(path, state, [this, path] { publish(path); });
}

void CheckpointDir::publish(const std::string& path) {
  const std::string content = base_name(path) + "\n";
  {
    AtomicFile last(root_ + "/" + kLast, options_.save.fsync, "CheckpointDir");
    last.write_at(0, content.data(), content.size());
    last.commit();
  }
  remove_stale_temporaries(root_ + "/" + kLast);
  // Retention: the newest keep_last, plus whatever "last" names (it is the newest, by construction,
  // unless a caller saved an older step after a newer one).
  std::vector<std::string> files = list();
  const std::string keep = base_name(path);
  const size_t n = files.size();
  for (size_t i = 0; i + static_cast<size_t>(options_.keep_last) < n; ++i) {
    if (base_name(files[i]) == keep) continue;
    file_ops().unlink(files[i]);
  }
  for (const auto& f : files) remove_stale_temporaries(f);
}

std::vector<std::string> CheckpointDir::list() const {
  std::vector<std::pair<int64_t, std::string>> found;
  if (DIR* d = ::opendir(root_.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const int64_t step = step_of(e->d_name);
      if (step >= 0) found.emplace_back(step, e->d_name);
    }
    ::closedir(d);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, name] : found) out.push_back(root_ + "/" + name);
  return out;
}

std::optional<std::string> CheckpointDir::last() const {
  std::ifstream in(root_ + "/" + kLast);
  if (!in) return std::nullopt;
  std::string name;
  std::getline(in, name);
  KILN_CHECK(step_of(name) >= 0, "CheckpointDir: '", root_, "/last' holds '", name.substr(0, 64),
             "', not a checkpoint file name");
  const std::string path = root_ + "/" + name;
  struct stat st {};
  KILN_CHECK(::stat(path.c_str(), &st) == 0, "CheckpointDir: '", root_, "/last' names '", name,
             "', which does not exist");
  return path;
}

State CheckpointDir::load_last(const LoadOptions& options) const {
  const auto path = last();
  KILN_CHECK(path, "CheckpointDir: '", root_, "' has no checkpoint yet (no 'last' file)");
  return load(*path, options);
}

}  // namespace kiln::io
