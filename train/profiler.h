// Profilers of a Trainer's runs (Lightning's profilers). The Trainer times named actions (the
// steps, backward, optimizer_step, data loading and transfer, each callback) through start()/stop()
// and calls describe() at the end of each fit/validate/test/predict. SimpleProfiler reports
// Lightning's table (mean, calls, total, percentage per action); asked to, it also writes a Chrome
// trace (chrome://tracing, Perfetto) of the ops and actions of chosen training batches.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor/op_trace.h"

namespace kiln {

class Profiler {
 public:
  virtual ~Profiler() = default;
  virtual void start(const std::string& action) = 0;
  virtual void stop(const std::string& action) = 0;
  virtual std::string summary() const = 0;
  // The Trainer calls setup at the start of each run with its stage ("fit", "validate", "test",
  // "predict") and log folder, which stands in for an unset dirpath (Lightning).
  virtual void setup(const std::string& stage, const std::string& log_dir);
  // Around each training batch; n counts the fit's batches from 0.
  virtual void on_train_batch_start(int64_t n) {}
  virtual void on_train_batch_end(int64_t n) {}
  // Appends summary() to <dirpath>/<stage>-<filename>.txt when a filename is set, else prints it on stdout.
  virtual void describe();
  // Ends what a run that failed left open (a trace window), without reporting, as Lightning does.
  virtual void teardown() {}

  const std::string& dirpath() const { return dirpath_; }
  const std::string& stage() const { return stage_; }

 protected:
  Profiler(std::string dirpath, std::string filename) : dirpath_(std::move(dirpath)), filename_(std::move(filename)) {}
  // <dirpath>/<stage>-<filename><extension> (Lightning's _prepare_filename, single process).
  std::string file_path(const std::string& extension) const;

  std::string dirpath_;
  std::string filename_;
  std::string stage_;
};

struct SimpleProfilerOptions {
  std::string dirpath;   // unset: the Trainer's log folder
  std::string filename;  // unset: the report is printed; else appended to <dirpath>/<stage>-<filename>.txt
  bool extended = true;  // the "Num calls" and "Percentage %" columns
  // > 0: a Chrome trace of the ops run (every dispatch) and the actions timed during training batches
  // [trace_from_batch, trace_from_batch + trace_batches) of a fit, counted from 0 over the fit,
  // written at the end of the fit to <dirpath>/<stage>-<filename or "profile">.trace.json.
  int64_t trace_batches = 0;
  int64_t trace_from_batch = 1;  // the first batch pays one-off costs (allocations, oneDNN primitives)
};

class SimpleProfiler : public Profiler {
 public:
  explicit SimpleProfiler(SimpleProfilerOptions options = {});
  ~SimpleProfiler() override { teardown(); }
  void start(const std::string& action) override;
  void stop(const std::string& action) override;
  std::string summary() const override;
  void on_train_batch_start(int64_t n) override;
  void on_train_batch_end(int64_t n) override;
  void describe() override;
  void teardown() override;

  // Seconds per call of each action recorded so far.
  const std::map<std::string, std::vector<double>>& recorded_durations() const { return durations_; }
  // The path of the last trace written, or empty.
  const std::string& trace_path() const { return trace_path_; }

 private:
  struct ActionEvent {
    std::string name;
    double start_us, dur_us;
  };
  void write_trace();

  SimpleProfilerOptions options_;
  double start_us_;  // the report's total runs from construction, as Lightning's does
  std::map<std::string, double> running_;  // action -> start (us)
  std::map<std::string, std::vector<double>> durations_;
  std::vector<std::string> order_;  // actions in the order first recorded
  bool tracing_ = false;
  std::vector<op_trace::Event> ops_;
  std::vector<ActionEvent> actions_;
  std::string trace_path_;
};

}  // namespace kiln
