// Serialisation of the loop progress counters.
#include "train/progress.h"

namespace kiln {

Json ProgressCounts::to_json() const {
  return {{"ready", ready}, {"started", started}, {"processed", processed}, {"completed", completed}};
}

ProgressCounts ProgressCounts::from_json(const Json& j, const char* where) {
  KILN_CHECK(j.is_object(), "checkpoint: loop progress '", where, "' is not an object");
  ProgressCounts c;
  for (auto [key, field] : {std::pair{"ready", &c.ready}, {"started", &c.started}, {"processed", &c.processed},
                            {"completed", &c.completed}}) {
    KILN_CHECK(j.contains(key) && j[key].is_number_integer() && j[key].get<int64_t>() >= 0, "checkpoint: loop progress '",
               where, "' lacks a valid '", key, "'");
    *field = j[key].get<int64_t>();
  }
  return c;
}

void Progress::settle_after_load() {
  for (ProgressCounts* c : {&total, &current}) c->ready = c->started = c->completed = c->processed;
}

Json Progress::state_dict() const { return {{"total", total.to_json()}, {"current", current.to_json()}}; }

void Progress::load_state_dict(const Json& j, const char* where) {
  KILN_CHECK(j.is_object() && j.contains("total") && j.contains("current"), "checkpoint: loop progress '", where,
             "' is malformed");
  total = ProgressCounts::from_json(j["total"], where);
  current = ProgressCounts::from_json(j["current"], where);
}

Json FitProgress::state_dict() const {
  return {{"epochs", epochs.state_dict()},
          {"train_batches", train_batches.state_dict()},
          {"optimizer_steps", optimizer_steps},
          {"batches_that_stepped", batches_that_stepped},
          {"micro_batches_in_window", micro_batches_in_window}};
}

void FitProgress::load_state_dict(const Json& j) {
  KILN_CHECK(j.is_object(), "checkpoint: 'loops.fit' is not an object");
  epochs.load_state_dict(j.at("epochs"), "epochs");
  train_batches.load_state_dict(j.at("train_batches"), "train_batches");
  optimizer_steps = j.at("optimizer_steps").get<int64_t>();
  // Checkpoints written before this counter existed: it equalled optimizer_steps then.
  batches_that_stepped = j.value("batches_that_stepped", optimizer_steps);
  micro_batches_in_window = j.at("micro_batches_in_window").get<int64_t>();
}

}  // namespace kiln
