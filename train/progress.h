// Loop progress counters (Lightning's ready / started / processed / completed), kept for the
// whole run (total) and for the current epoch or pass (current), and saved in checkpoints so that
// a resumed run continues at the next batch. See Note [Resuming from progress counters].
#pragma once

#include <cstdint>

#include "tensor/state_dict.h"

namespace kiln {

struct ProgressCounts {
  int64_t ready = 0;      // the item (batch, epoch) was fetched
  int64_t started = 0;    // its work began
  int64_t processed = 0;  // its work ended
  int64_t completed = 0;  // its end hooks ran

  Json to_json() const;
  static ProgressCounts from_json(const Json& j, const char* where);
};

struct Progress {
  ProgressCounts total;
  ProgressCounts current;

  void ready() { ++total.ready, ++current.ready; }
  void started() { ++total.started, ++current.started; }
  void processed() { ++total.processed, ++current.processed; }
  void completed() { ++total.completed, ++current.completed; }
  void reset_current() { current = {}; }
  // Note [Resuming from progress counters]: a checkpoint may be written between "processed" and
  // "completed" (from on_train_batch_end). On load, everything processed counts as completed, and
  // work resumes after the last processed item.
  void settle_after_load();

  Json state_dict() const;
  void load_state_dict(const Json& j, const char* where);
};

// Everything the fit loop needs to resume exactly.
struct FitProgress {
  Progress epochs;          // training epochs
  Progress train_batches;   // current: within the epoch
  int64_t optimizer_steps = 0;  // global_step
  int64_t batches_that_stepped = 0;  // the step of logged metrics (see Trainer::logging_step)
  int64_t micro_batches_in_window = 0;  // batches since the last optimizer step (accumulation)

  Json state_dict() const;
  void load_state_dict(const Json& j);
};

}  // namespace kiln
