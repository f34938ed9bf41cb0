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
  worker_ = std::thread([this, path, snapshot = std::move(snapshot), on_saved = std::move(on_saved)] {
    try {
      io::save(path, snapshot, options_);
      if (on_saved) on_saved();
    } catch (...) {
      error_ = std::current_exception();
    }
  });
}

}  // namespace kiln::io
