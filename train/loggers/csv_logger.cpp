// CSVLogger: buffered rows, the sorted-union header and its rewrite, hparams.yaml.
#include "train/loggers/csv_logger.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "tensor/error.h"

namespace kiln {
namespace {

constexpr const char* kWho = "CSVLogger";

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in.good(), kWho, ": cannot read '", path, "': ", std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string csv_line(const std::vector<std::string>& fields) {
  std::string line;
  for (size_t i = 0; i < fields.size(); ++i) line.append(i ? "," : "").append(csv_quote(fields[i]));
  return line + "\r\n";
}

std::string csv_row(const std::vector<std::string>& columns, const std::map<std::string, std::string>& row) {
  std::vector<std::string> cells;
  cells.reserve(columns.size());
  for (const std::string& column : columns) {
    auto it = row.find(column);
    cells.push_back(it == row.end() ? "" : it->second);
  }
  return csv_line(cells);
}

void append_to_file(const std::string& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "ab");
  KILN_CHECK(f != nullptr, kWho, ": cannot open '", path, "' for appending: ", std::strerror(errno));
  const size_t written = std::fwrite(text.data(), 1, text.size(), f);
  const bool flushed = std::fflush(f) == 0;
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  KILN_CHECK(written == text.size() && flushed && closed, kWho, ": cannot write '", path, "': ",
             std::strerror(write_errno), " (", written, " of ", text.size(), " bytes written)");
}

}  // namespace

std::string csv_quote(const std::string& field) {
  if (field.find_first_of(",\"\r\n") == std::string::npos) return field;
  std::string out = "\"";
  for (char c : field) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::vector<std::vector<std::string>> parse_csv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, row_open = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') field += '"', ++i;
      else if (c == '"') quoted = false;
      else field += c;
      continue;
    }
    if (c == '"') {
      quoted = row_open = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      row_open = true;
    } else if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      row.push_back(std::move(field));
      field.clear();
      rows.push_back(std::move(row));
      row.clear();
      row_open = false;
    } else {
      field += c;
      row_open = true;
    }
  }
  KILN_CHECK(!quoted, "CSV: unterminated quoted field at the end of the text");
  if (row_open) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string csv_number(double value) {
  std::string text = python_float_repr(value);
  if (text.size() > 2 && text.compare(text.size() - 2, 2, ".0") == 0) text.resize(text.size() - 2);
  return text;
}

CSVLogger::CSVLogger(CSVLoggerOptions options) : options_(std::move(options)) {
  KILN_CHECK(options_.flush_logs_every_n_steps > 0, kWho, ": flush_logs_every_n_steps must be > 0, got ",
             options_.flush_logs_every_n_steps);
  run_ = resolve_run_folder(options_.root_dir, options_.name, options_.version);
}

CSVLogger::~CSVLogger() {
  if (!started_ && pending_.empty() && !hparams_dirty_) return;
  try {
    save();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
  }
}

std::string CSVLogger::metrics_file_path() const { return (std::filesystem::path(run_.path) / "metrics.csv").string(); }
std::string CSVLogger::hparams_file_path() const { return (std::filesystem::path(run_.path) / "hparams.yaml").string(); }

void CSVLogger::start_run() {
  if (started_) return;
  make_dirs(run_.path, kWho);
  std::error_code ec;
  if (std::filesystem::exists(metrics_file_path(), ec)) {
    std::fprintf(stderr, "kiln: CSVLogger: '%s' exists; the new metrics replace it\n", metrics_file_path().c_str());
    std::filesystem::remove(metrics_file_path(), ec);
    KILN_CHECK(!ec, kWho, ": cannot remove the old '", metrics_file_path(), "': ", ec.message());
  }
  started_ = true;
}

void CSVLogger::log_hyperparams(const Json& params) {
  KILN_CHECK(params.is_object(), kWho, ".log_hyperparams: expected a JSON object, got ", params.type_name());
  hparams_.update(params);
  hparams_dirty_ = true;
}

void CSVLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step) {
  Row row;
  for (const auto& [key, value] : metrics)
    row[options_.prefix.empty() ? key : options_.prefix + "-" + key] = csv_number(value);
  row["step"] = std::to_string(step);
  pending_.push_back(std::move(row));
  if ((step + 1) % options_.flush_logs_every_n_steps == 0) save();
}

void CSVLogger::rewrite_under_header(const std::vector<std::string>& new_columns) {
  const std::vector<std::vector<std::string>> old_rows = parse_csv(read_whole_file(metrics_file_path()));
  std::string text = csv_line(new_columns);
  for (size_t r = 1; r < old_rows.size(); ++r) {  // row 0 is the old header
    KILN_CHECK(old_rows[r].size() == columns_.size(), kWho, ": '", metrics_file_path(), "' row ", r, " has ",
               old_rows[r].size(), " cells under a header of ", columns_.size(), " (was it edited?)");
    Row row;
    for (size_t c = 0; c < columns_.size(); ++c) row[columns_[c]] = old_rows[r][c];
    text += csv_row(new_columns, row);
  }
  for (const Row& row : pending_) text += csv_row(new_columns, row);
  write_file_atomically(metrics_file_path(), text, kWho);
}

void CSVLogger::save() {
  start_run();
  if (hparams_dirty_ || !hparams_written_) {
    write_file_atomically(hparams_file_path(), hparams_to_yaml(hparams_), kWho);
    hparams_dirty_ = false;
    hparams_written_ = true;
  }
  if (pending_.empty()) return;

  std::set<std::string> all(columns_.begin(), columns_.end());
  for (const Row& row : pending_)
    for (const auto& cell : row) all.insert(cell.first);
  std::vector<std::string> columns(all.begin(), all.end());

  if (!file_written_) {
    std::string text = csv_line(columns);
    for (const Row& row : pending_) text += csv_row(columns, row);
    write_file_atomically(metrics_file_path(), text, kWho);
    file_written_ = true;
  } else if (columns != columns_) {
    rewrite_under_header(columns);
  } else {
    std::string text;
    for (const Row& row : pending_) text += csv_row(columns, row);
    append_to_file(metrics_file_path(), text);
  }
  // Only now, with the file matching: a failed write leaves the rows pending and the header as it was.
  columns_ = std::move(columns);
  pending_.clear();
}

void CSVLogger::finalize(const std::string& status) {
  if (!started_ && pending_.empty() && !hparams_dirty_) return;
  save();
}

}  // namespace kiln
