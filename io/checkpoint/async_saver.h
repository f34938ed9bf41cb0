// AsyncSaver: save() snapshots the state's tensors (contiguous CPU copies, so training may go on
// changing them) and writes the checkpoint on a background thread. One save is in flight at a time.
// Errors of a background save surface in the next wait() or save().
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <thread>

#include "io/checkpoint/writer.h"

namespace kiln::io {

class AsyncSaver {
 public:
  explicit AsyncSaver(SaveOptions options = {}) : options_(options) {}
  // Waits for the save in flight. An error nobody collected with wait() is printed to stderr
  // (a destructor cannot throw).
  ~AsyncSaver();
  AsyncSaver(const AsyncSaver&) = delete;
  AsyncSaver& operator=(const AsyncSaver&) = delete;

  // Waits for the previous save (rethrowing its error), snapshots `state`, starts writing `path`.
  // `on_saved`, if given, runs on the background thread once the file is complete and in place.
  void save(const std::string& path, const State& state, std::function<void()> on_saved = {});
  // Blocks until the save in flight (if any) is done; rethrows its error once.
  void wait();
  bool in_flight() const { return worker_.joinable(); }

 private:
  SaveOptions options_;
  std::thread worker_;
  std::exception_ptr error_;
};

}  // namespace kiln::io
