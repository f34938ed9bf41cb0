// TensorBoardLogger: scalars and hyperparameters to a TensorBoard event file
// (root/name/version_N/events.out.tfevents.<time>.<host>.<pid>.<n>) plus hparams.yaml, as
// Lightning's TensorBoardLogger writes them: one scalar summary (simple_value) per metric with
// step and wall time, and the hparams plugin's experiment / session-start summaries at step 0
// (with "hp_metric" = -1 logged unless default_hp_metric is off). The session-end summary, with
// the real status, is written by finalize(). Events are buffered and written out on save().
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "train/loggers/event_file.h"
#include "train/loggers/log_files.h"
#include "train/loggers/logger.h"

namespace kiln {

struct TensorBoardLoggerOptions {
  std::string root_dir = ".";
  std::string name = "lightning_logs";  // empty: versions directly under root_dir
  LoggerVersion version = {};           // unset: the next free version_N
  std::string prefix;                   // put before each metric name, joined by '-'
  bool default_hp_metric = true;        // log_hyperparams also logs hp_metric = -1 at step 0
};

class TensorBoardLogger : public Logger {
 public:
  explicit TensorBoardLogger(TensorBoardLoggerOptions options = {});
  ~TensorBoardLogger() override;  // flushes; never throws (a failure goes to stderr)

  std::string name() const override { return options_.name; }
  std::string version() const override { return run_.version; }
  std::string log_dir() const override { return run_.path; }
  // The event file (the latest, if finalize() closed one and logging went on); empty until the
  // first write creates it.
  std::string event_file_path() const { return event_file_path_; }

  // Nested objects are flattened with '/' ("optimizer/lr"); arrays and null become their JSON
  // text; numbers, strings and bools keep their type.
  void log_hyperparams(const Json& params) override;
  // As above, with the metrics the hparams dashboard should show for this run, logged at step 0.
  void log_hyperparams(const Json& params, const std::map<std::string, double>& metrics);
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override;
  void save() override;
  // "success" and "failed" map to the hparams session statuses SUCCESS and FAILURE; anything else
  // ("interrupted") to UNKNOWN. The event file is closed: a later log starts a new one.
  void finalize(const std::string& status) override;

 private:
  tfevents::EventFileWriter& events();

  TensorBoardLoggerOptions options_;
  RunFolder run_;
  std::unique_ptr<tfevents::EventFileWriter> events_;
  std::string event_file_path_;
  Json hparams_ = Json::object();
  bool hparams_logged_ = false;    // a session was started, so finalize() ends it
  bool hparams_dirty_ = false;     // changed since hparams.yaml was last written
  bool hparams_written_ = false;   // hparams.yaml ("{}" when none) is written by the first save
};

// The flat name -> value list the hparams plugin takes (see log_hyperparams).
std::vector<std::pair<std::string, tfevents::HParamValue>> flatten_hparams(const Json& params);

}  // namespace kiln
