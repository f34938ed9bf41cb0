// CheckpointDir: a folder of step-numbered checkpoints with a "last" pointer and retention.
// "last" is a small file naming the newest complete checkpoint; it is replaced atomically and only
// after that checkpoint is durable, so a crash mid-save (sync or async) leaves it at the previous
// one. Retention keeps the newest `keep_last` files and never deletes the one "last" names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint/async_saver.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"

namespace kiln::io {

struct CheckpointDirOptions {
  int keep_last = 3;   // checkpoints kept by retention (>= 1), besides the one "last" names
  SaveOptions save;
};

class CheckpointDir {
 public:
  // Creates the folder if it does not exist (not its parents).
  explicit CheckpointDir(std::string root, CheckpointDirOptions options = {});

  // Saves step's checkpoint, points "last" at it, applies retention; returns its path.
  std::string save(int64_t step, const State& state);
  // The same on a background thread after snapshotting the state (see AsyncSaver).
  void save_async(int64_t step, const State& state);
  void wait() { saver_.wait(); }

  // The checkpoint "last" names, or nullopt when nothing was saved yet.
  std::optional<std::string> last() const;
  State load_last(const LoadOptions& options = {}) const;
  // Checkpoint files present, oldest step first.
  std::vector<std::string> list() const;
  std::string path_for(int64_t step) const;
  const std::string& root() const { return root_; }

 private:
  void publish(const std::string& path);  // move "last", then retention
  std::string root_;
  CheckpointDirOptions options_;
  AsyncSaver saver_;
};

}  // namespace kiln::io
