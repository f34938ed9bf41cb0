// CSVLogger: metrics to root/name/version_N/metrics.csv and hyperparameters to hparams.yaml, with
// Lightning's semantics: the columns are the sorted union of every key logged so far ("step"
// included); rows are buffered and appended on save() (and every flush_logs_every_n_steps steps);
// when a new key appears the file is rewritten under the wider header, older rows left blank in
// the new column. A metrics.csv already in the run folder is replaced, as Lightning does.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "train/loggers/log_files.h"
#include "train/loggers/logger.h"

namespace kiln {

struct CSVLoggerOptions {
  std::string root_dir = ".";
  std::string name = "lightning_logs";  // empty: versions directly under root_dir
  LoggerVersion version = {};           // unset: the next free version_N
  std::string prefix;                   // put before each metric name, joined by '-'
  int64_t flush_logs_every_n_steps = 100;
};

class CSVLogger : public Logger {
 public:
  explicit CSVLogger(CSVLoggerOptions options = {});
  ~CSVLogger() override;  // saves what is buffered; never throws (a failure goes to stderr)

  std::string name() const override { return options_.name; }
  std::string version() const override { return run_.version; }
  std::string log_dir() const override { return run_.path; }
  std::string metrics_file_path() const;
  std::string hparams_file_path() const;

  void log_hyperparams(const Json& params) override;
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step) override;
  void save() override;
  void finalize(const std::string& status) override;

 private:
  using Row = std::map<std::string, std::string>;  // column -> formatted cell
  void start_run();
  void rewrite_under_header(const std::vector<std::string>& new_columns);

  CSVLoggerOptions options_;
  RunFolder run_;
  bool started_ = false;            // the run folder exists and any stale metrics.csv is gone
  bool file_written_ = false;       // metrics.csv holds our header
  std::vector<std::string> columns_;  // sorted; what the file's header says once written
  std::vector<Row> pending_;
  Json hparams_ = Json::object();
  bool hparams_dirty_ = false;      // changed since hparams.yaml was last written
  bool hparams_written_ = false;    // hparams.yaml ("{}" when none) is written by the first save
};

// CSV as Python's csv module writes it (QUOTE_MINIMAL, "\r\n" line ends), and a reader for it.
std::string csv_quote(const std::string& field);
std::vector<std::vector<std::string>> parse_csv(const std::string& text);
// A metric cell: Python's repr of the value, with a trailing ".0" dropped so that counters
// logged as numbers (epoch) read as the integers Lightning writes.
std::string csv_number(double value);

}  // namespace kiln
