// CheckpointIO: how checkpoint files are written, read and removed (Lightning's CheckpointIO
// plugins). The Strategy saves through one; Trainer(plugins = {...}) may give its own. Every
// implementation keeps Kiln's guarantee: a file appears complete or not at all (io::save writes
// under a temporary name and renames it in place), and a removal queued after a save happens only
// once that save is in place.
#pragma once

#include <memory>
#include <string>

#include "tensor/state_dict.h"

namespace kiln {
namespace io {
class AsyncSaver;
}

class CheckpointIO {
 public:
  virtual ~CheckpointIO() = default;
  virtual void save_checkpoint(const State& checkpoint, const std::string& path) = 0;
  virtual State load_checkpoint(const std::string& path) = 0;
  // Deletes `path` once every save started before this call is in place (a missing file is fine).
  virtual void remove_checkpoint(const std::string& path) = 0;
  // Returns once every save is in place; rethrows the error of a failed background write once.
  virtual void wait() {}
};

// Kiln's native format, written synchronously (Lightning's TorchCheckpointIO).
class NativeCheckpointIO : public CheckpointIO {
 public:
  void save_checkpoint(const State& checkpoint, const std::string& path) override;
  State load_checkpoint(const std::string& path) override;
  void remove_checkpoint(const std::string& path) override;
};

// Writes on a background thread so training goes on meanwhile (Lightning's AsyncCheckpointIO,
// Trainer(async_checkpointing = true)); see Note [Async checkpoints] in train/checkpointing.cpp.
class AsyncCheckpointIO : public CheckpointIO {
 public:
  AsyncCheckpointIO();
  ~AsyncCheckpointIO() override;
  void save_checkpoint(const State& checkpoint, const std::string& path) override;
  State load_checkpoint(const std::string& path) override;
  void remove_checkpoint(const std::string& path) override;
  void wait() override;

 private:
  std::unique_ptr<io::AsyncSaver> saver_;
};

}  // namespace kiln
