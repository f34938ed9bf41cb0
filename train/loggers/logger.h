// Logger: the interface the Trainer logs through (Lightning's Logger). A logger owns one run folder
// (root/name/version_N), takes hyperparameters once and metrics at each logging step, buffers
// what it receives and writes it out on save() and finalize(). CSVLogger and TensorBoardLogger
// implement it; the Trainer may hold several at once and calls each in turn.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>

#include "tensor/state_dict.h"  // defines: Json

namespace kiln {

// A logger's version: unset (the next free version_N under root/name), a number N (version_N),
// or a folder name used as is. Same three cases as Lightning's `version` argument.
using LoggerVersion = std::variant<std::monostate, int64_t, std::string>;

class Logger {
 public:
  virtual ~Logger() = default;

  // The experiment name ("lightning_logs" by default) and version ("0" for version_0, or the
  // folder name given by the user): what a progress bar shows as v_num.
  virtual std::string name() const = 0;
  virtual std::string version() const = 0;
  // The run folder: root/name/version_N. It is created by the first write, not before, so that
  // loggers built side by side agree on the same free version.
  virtual std::string log_dir() const = 0;

  // A JSON object of hyperparameters; merged into what was logged before.
  virtual void log_hyperparams(const Json& params) = 0;
  virtual void log_metrics(const std::map<std::string, double>& metrics, int64_t step) = 0;
  // Writes out everything buffered so far.
  virtual void save() = 0;
  // The run is over; status is "success", "failed" or "interrupted" as the Trainer reports it.
  // Everything buffered is written out.
  virtual void finalize(const std::string& status) { save(); }
};

}  // namespace kiln
