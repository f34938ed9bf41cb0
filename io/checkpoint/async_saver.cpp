// AsyncSaver (see async_saver.h). A thread per save: saves are seconds apart, so a pool buys nothing.
#include "io/checkpoint/async_saver.h"

#include <cstdio>

#include "io/checkpoint/tensor_bytes.h"

namespace kiln::io {

AsyncSaver::~AsyncSaver() {
  if (worker_.joinable()) worker_.join();
  if (error_) {
    try {
      std::rethrow_exception(error_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "kiln: AsyncSaver: a background save failed and nobody waited for it: %s\n", e.what());
    }
  }
}

void AsyncSaver::wait() {
  if (worker_.joinable()) worker_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void AsyncSaver::save(const std::string& path, const State& state, std::function<void()> on_saved) {
  wait();
  State snapshot;
  snapshot.meta = state.meta;
  for (const auto& [name, tensor] : state.tensors) snapshot.tensors.insert(name, detail::contiguous_copy(tensor, name));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    writing_ = true;
    failed_ = false;
  }
  worker_ = std::thread([this, path, snapshot = std::move(snapshot), on_saved = std::move(on_saved)] {
    run(path, snapshot, on_saved);
  });
}

// The worker: the file, then on_saved, then whatever after_save() queued meanwhile, in order. The
// queue is drained under the lock that after_save() takes, so nothing queued is left behind.
void AsyncSaver::run(const std::string& path, const State& snapshot, const std::function<void()>& on_saved) {
  try {
    io::save(path, snapshot, options_);
    if (on_saved) on_saved();
  } catch (...) {
    error_ = std::current_exception();
    std::lock_guard<std::mutex> lock(mutex_);
    after_.clear();
    writing_ = false;
    failed_ = true;
    return;
  }
  for (;;) {
    std::function<void()> next;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (after_.empty()) {
        writing_ = false;
        return;
      }
      next = std::move(after_.front());
      after_.erase(after_.begin());
    }
    try {
      next();
    } catch (...) {
      if (!error_) error_ = std::current_exception();
    }
  }
}

void AsyncSaver::after_save(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (writing_) {
      after_.push_back(std::move(fn));
      return;
    }
    if (failed_) return;
  }
  fn();
}

}  // namespace kiln::io
