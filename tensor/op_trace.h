// Op tracing: while a trace is on, every kernel call that goes through dispatch is recorded (op,
// device, input shapes and dtypes, start and duration on the steady clock, thread), for the
// Chrome trace of a training step that train/profiler.cpp writes. It rides on dispatch's
// KILN_DEBUG branch (tensor/dispatch.h), so a run without a trace pays nothing new.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::op_trace {

struct Event {
  std::string_view op;  // op_name(), static storage
  std::string args;     // the device, then each tensor argument as [shape]:dtype
  double start_us = 0;  // detail::now_micros() (tensor/dispatch.h)
  double dur_us = 0;
  uint64_t thread = 0;  // a small number per thread, 1 for the first thread seen
};

// Starts recording (from every thread). Not nested: a second start() is an error.
void start();
// Stops recording and returns what was recorded, in the order calls ended.
std::vector<Event> stop();
bool active();
// The id this thread's events carry (numbered from 1 in the order threads first ask).
uint64_t this_thread_id();

}  // namespace kiln::op_trace
