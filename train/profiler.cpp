// Profiler reports and the Chrome trace (see profiler.h). The table's layout is Lightning's
// SimpleProfiler's, tabs included, so that its output reads the same.
#include "train/profiler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "tensor/dispatch.h"
#include "tensor/error.h"
#include "tensor/state_dict.h"

namespace kiln {
namespace {

// Python's f"{x:.5}": five significant digits, and a fixed-point result keeps one digit after the point.
std::string python_5(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.5g", x);
  std::string s = buf;
  if (std::isfinite(x) && s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

std::string pad(const std::string& s, size_t width) { return s.size() >= width ? s : s + std::string(width - s.size(), ' '); }

// The length of s once tabs are expanded to multiples of 8 columns, counting from each newline.
size_t expanded_length(const std::string& s) {
  size_t length = 0, column = 0;
  for (char c : s) {
    const size_t add = c == '\t' ? 8 - column % 8 : 1;
    length += add;
    column = c == '\n' ? 0 : column + add;
  }
  return length;
}

}  // namespace

void Profiler::setup(const std::string& stage, const std::string& log_dir) {
  stage_ = stage;
  if (dirpath_.empty()) dirpath_ = log_dir;
}

std::string Profiler::file_path(const std::string& extension) const {
  std::string name = stage_;
  if (!filename_.empty()) name += (name.empty() ? "" : "-") + filename_;
  return (std::filesystem::path(dirpath_) / (name + extension)).string();
}

void Profiler::describe() {
  const std::string report = summary();
  if (report.empty()) return;
  if (filename_.empty() || dirpath_.empty()) {
    std::cout << report << std::flush;
    return;
  }
  std::filesystem::create_directories(dirpath_);
  const std::string path = file_path(".txt");
  std::ofstream out(path, std::ios::app);
  KILN_CHECK(out.good(), "profiler: cannot write ", path);
  out << report;
}

SimpleProfiler::SimpleProfiler(SimpleProfilerOptions options)
    : Profiler(options.dirpath, options.filename), options_(std::move(options)), start_us_(detail::now_micros()) {
  KILN_CHECK(options_.trace_batches >= 0 && options_.trace_from_batch >= 0, "SimpleProfiler: trace_batches (",
             options_.trace_batches, ") and trace_from_batch (", options_.trace_from_batch, ") must be >= 0");
}

void SimpleProfiler::start(const std::string& action) {
  const bool fresh = running_.emplace(action, detail::now_micros()).second;
  KILN_CHECK(fresh, "SimpleProfiler: attempted to start ", action, " which has already started");
}

void SimpleProfiler::stop(const std::string& action) {
  const double end = detail::now_micros();
  auto it = running_.find(action);
  KILN_CHECK(it != running_.end(), "SimpleProfiler: attempting to stop recording an action (", action,
             ") which was never started");
  const double start = it->second;
  running_.erase(it);
  auto [slot, fresh] = durations_.try_emplace(action);
  if (fresh) order_.push_back(action);
  slot->second.push_back((end - start) * 1e-6);
  if (tracing_) actions_.push_back({action, start, end - start});
}

void SimpleProfiler::on_train_batch_start(int64_t n) {
  if (options_.trace_batches > 0 && n == options_.trace_from_batch) {
    op_trace::start();
    tracing_ = true;
  }
}

void SimpleProfiler::on_train_batch_end(int64_t n) {
  if (tracing_ && n + 1 >= options_.trace_from_batch + options_.trace_batches) {
    ops_ = op_trace::stop();
    tracing_ = false;
  }
}

// Lightning's SimpleProfiler.summary(), extended or not.
std::string SimpleProfiler::summary() const {
  if (durations_.empty()) return "";
  const std::string sep = "\n";
  std::string out = stage_.empty() ? "" : stage_;
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::toupper(c); });
  out += (out.empty() ? "" : " ") + std::string("Profiler Report") + sep;
  size_t max_key = 0;
  for (const auto& name : order_) max_key = std::max(max_key, name.size());
  const auto row = [&](const std::vector<std::string>& cells) {
    std::string r = sep + "|  " + pad(cells[0], max_key) + "\t|";
    for (size_t i = 1; i < cells.size(); ++i) r += "  " + pad(cells[i], 15) + "\t|";
    return r;
  };
  struct Line {
    std::string action;
    double mean, total, percent;
    size_t calls;
  };
  const double total_duration = (detail::now_micros() - start_us_) * 1e-6;
  std::vector<Line> lines;
  size_t total_calls = 0;
  for (const auto& name : order_) {
    const std::vector<double>& d = durations_.at(name);
    double sum = 0;
    for (double v : d) sum += v;
    lines.push_back({name, sum / static_cast<double>(d.size()), sum, 100.0 * sum / total_duration, d.size()});
    total_calls += d.size();
  }
  // Python's sort is stable: ties keep the order actions were first recorded in.
  const bool extended = options_.extended;
  std::stable_sort(lines.begin(), lines.end(), [&](const Line& a, const Line& b) {
    return extended ? a.percent > b.percent : a.mean > b.mean;
  });
  const std::string header = extended ? row({"Action", "Mean duration (s)", "Num calls", "Total time (s)", "Percentage %"})
                                      : row({"Action", "Mean duration (s)", "Total time (s)"});
  const std::string sep_line = sep + std::string(expanded_length(header), '-');
  out += sep_line + header + sep_line;
  if (extended) {
    out += row({"Total", "-", std::to_string(total_calls), python_5(total_duration), "100 %"}) + sep_line;
    for (const Line& l : lines)
      out += row({l.action, python_5(l.mean), std::to_string(l.calls), python_5(l.total), python_5(l.percent)});
  } else {
    for (const Line& l : lines) out += row({l.action, python_5(l.mean), python_5(l.total)});
  }
  return out + sep_line + sep;
}

void SimpleProfiler::describe() {
  if (tracing_) on_train_batch_end(options_.trace_from_batch + options_.trace_batches);  // fit ended inside the window
  Profiler::describe();
  if (!ops_.empty() || !actions_.empty()) write_trace();
}

void SimpleProfiler::teardown() {
  if (!tracing_) return;
  op_trace::stop();
  tracing_ = false;
  actions_.clear();
}

// Chrome's trace-event format: complete ("X") events with microsecond timestamps, one row per
// thread; ops carry their device and argument shapes, actions sit on the Trainer's thread.
void SimpleProfiler::write_trace() {
  double origin = ops_.empty() ? actions_.front().start_us : ops_.front().start_us;
  for (const auto& e : ops_) origin = std::min(origin, e.start_us);
  for (const auto& a : actions_) origin = std::min(origin, a.start_us);
  Json events = Json::array();
  const uint64_t loop_thread = op_trace::this_thread_id();
  for (const auto& a : actions_)
    events.push_back({{"name", a.name}, {"cat", "action"}, {"ph", "X"}, {"ts", a.start_us - origin},
                      {"dur", a.dur_us}, {"pid", 0}, {"tid", loop_thread}});
  for (const auto& e : ops_)
    events.push_back({{"name", std::string(e.op)}, {"cat", "op"}, {"ph", "X"}, {"ts", e.start_us - origin},
                      {"dur", e.dur_us}, {"pid", 0}, {"tid", e.thread}, {"args", {{"inputs", e.args}}}});
  const Json trace = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  std::filesystem::create_directories(dirpath_.empty() ? "." : dirpath_);
  std::string name = stage_ + "-" + (filename_.empty() ? "profile" : filename_) + ".trace.json";
  trace_path_ = (std::filesystem::path(dirpath_.empty() ? "." : dirpath_) / name).string();
  std::ofstream out(trace_path_);
  KILN_CHECK(out.good(), "SimpleProfiler: cannot write ", trace_path_);
  out << trace.dump() << '\n';
  ops_.clear();
  actions_.clear();
}

}  // namespace kiln
