// AsyncSaver: save() snapshots the state's tensors (contiguous CPU copies, so training may go on
// changing them) and writes the checkpoint on a background thread. One save is in flight at a time.
// Errors of a background save surface in the next wait() or save(). Work that must follow a save
// (deleting the file it replaces) is queued with after_save(), so a crash never finds the old file
// gone before the new one is in place.
#pragma once

#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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
  // Runs `fn` once the save in flight is complete and in place (on its thread), or now when none
  // is in flight. Dropped when that save failed: what it would have replaced stays.
  void after_save(std::function<void()> fn);
  // Blocks until the save in flight (if any) is done; rethrows its error once.
  void wait();
  bool in_flight() const { return worker_.joinable(); }

 private:
  void run(const std::string& path, const State& snapshot, const std::function<void()>& on_saved);

  SaveOptions options_;
  std::thread worker_;
  std::exception_ptr error_;
  std::mutex mutex_;                          // guards the three below, shared with the worker
  std::vector<std::function<void()>> after_;  // queued by after_save() while a save is in flight
  bool writing_ = false;                      // a save is in flight and its follow-ups not yet run
  bool failed_ = false;                       // the last save failed
};

}  // namespace kiln::io
