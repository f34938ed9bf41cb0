// The native and asynchronous checkpoint writers.
#include "train/hardware/checkpoint_io.h"

#include <filesystem>

#include "io/checkpoint/async_saver.h"
#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"

namespace kiln {
namespace {

void make_parent_dirs(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
}

void remove_quietly(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace

void NativeCheckpointIO::save_checkpoint(const State& checkpoint, const std::string& path) {
  make_parent_dirs(path);
  io::save(path, checkpoint);
}

State NativeCheckpointIO::load_checkpoint(const std::string& path) { return io::load(path); }

void NativeCheckpointIO::remove_checkpoint(const std::string& path) { remove_quietly(path); }

AsyncCheckpointIO::AsyncCheckpointIO() : saver_(std::make_unique<io::AsyncSaver>()) {}
AsyncCheckpointIO::~AsyncCheckpointIO() = default;

void AsyncCheckpointIO::save_checkpoint(const State& checkpoint, const std::string& path) {
  make_parent_dirs(path);
  saver_->save(path, checkpoint);
}

State AsyncCheckpointIO::load_checkpoint(const std::string& path) {
  saver_->wait();  // the file may be the one in flight
  return io::load(path);
}

void AsyncCheckpointIO::remove_checkpoint(const std::string& path) {
  saver_->after_save([path] { remove_quietly(path); });
}

void AsyncCheckpointIO::wait() { saver_->wait(); }

}  // namespace kiln
