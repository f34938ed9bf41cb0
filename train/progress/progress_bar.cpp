// Progress bar text in tqdm's format (as Lightning configures it: bar_format
// "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]", no rate
// smoothing), and the writer that redraws it on a terminal or prints plain lines elsewhere.
#include "train/progress/progress_bar.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "tensor/error.h"
#include "train/loggers/log_files.h"  // defines: python_float_repr

namespace kiln {
namespace {

std::string printf_string(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// tqdm's format_num shortens "1.23e+05" to "1.23e+5" (one leading exponent zero dropped).
std::string short_exponent(std::string text) {
  const size_t e = text.find('e');
  if (e != std::string::npos && e + 2 < text.size() && text[e + 2] == '0' && e + 3 < text.size()) text.erase(e + 2, 1);
  return text;
}

// tqdm's format_num: 3 significant digits when that is shorter than the full text.
std::string tqdm_format_num(const std::string& three_digits, const std::string& full) {
  const std::string shortened = short_exponent(three_digits);
  return shortened.size() < full.size() ? shortened : full;
}

std::string trim_to_columns(const std::string& utf8, size_t columns) {
  size_t seen = 0;
  for (size_t i = 0; i < utf8.size(); ++i) {
    if ((static_cast<unsigned char>(utf8[i]) & 0xC0) == 0x80) continue;  // continuation byte
    if (seen++ == columns) return utf8.substr(0, i);
  }
  return utf8;
}

// Batches per second over this bar's clock; 0 until a batch has been timed. Batches done before
// the clock started (a resumed epoch) are not counted: over a few milliseconds they made rates of
// hundreds of thousands of batches a second.
double measured_rate(const ProgressSnapshot& s) {
  const int64_t done = s.count - s.initial;
  return done > 0 && s.elapsed_s > 0 ? static_cast<double>(done) / s.elapsed_s : 0;
}

std::string rate_text(const ProgressSnapshot& s) { return format_rate(s.count - s.initial, s.elapsed_s); }

std::string remaining_text(const ProgressSnapshot& s) {
  const double rate = measured_rate(s);
  if (rate <= 0 || s.total <= 0) return "?";
  return format_interval(std::max(0.0, static_cast<double>(s.total - s.count) / rate));
}

std::string postfix_text(const ProgressMetrics& metrics) {
  return metrics.empty() ? std::string() : ", " + format_postfix(metrics);
}

std::string description_prefix(const ProgressSnapshot& s) { return s.description.empty() ? std::string() : s.description + ": "; }

}  // namespace

std::string format_interval(double seconds) {
  if (!(seconds < 1e12)) return "?";  // NaN or absurd: nothing sensible to show
  const int64_t total = static_cast<int64_t>(std::max(0.0, seconds));
  const int64_t s = total % 60, minutes = total / 60, m = minutes % 60, h = minutes / 60;
  char buf[48];
  if (h > 0) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(h), static_cast<long long>(m), static_cast<long long>(s));
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", static_cast<long long>(m), static_cast<long long>(s));
  return buf;
}

std::string format_rate(int64_t done, double elapsed_s) {
  const double rate = done > 0 && elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
  return (rate > 0 ? printf_string("%5.2f", rate) : std::string("?")) + "it/s";
}

// Lightning's Tqdm.format_num: floats get 3 significant digits and are padded with zeros to 5
// characters so the postfix does not jitter ("0.5" -> "0.500", "100" -> "100.0"). Two deviations:
// nan/inf print as such (Lightning shows "nan.0"), and a negative value keeps its leading zero
// (tqdm's "-0" -> "-" replacement turns -0.5 into "-.5"; we apply it to the exponent only).
std::string format_progress_value(const ProgressValue& value) {
  if (const auto* text = std::get_if<std::string>(&value)) return *text;
  if (const auto* integer = std::get_if<int64_t>(&value))
    return tqdm_format_num(printf_string("%.3g", static_cast<double>(*integer)), std::to_string(*integer));
  const double v = std::get<double>(value);
  if (!std::isfinite(v)) return python_float_repr(v);
  std::string n = tqdm_format_num(printf_string("%.3g", v), python_float_repr(v));
  if (n.find('e') == std::string::npos) {
    if (n.find('.') == std::string::npos) n += '.';
    if (n.size() < 5) n.append(5 - n.size(), '0');
  }
  return n;
}

std::string format_postfix(const ProgressMetrics& metrics) {
  std::string out;
  for (const auto& [name, value] : metrics) out += (out.empty() ? "" : ", ") + name + "=" + format_progress_value(value);
  return out;
}

std::string render_bar(double fraction, int width) {
  static const char* const kEighths[] = {" ", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};  // 0..8 eighths
  width = std::max(width, 1);
  fraction = std::isnan(fraction) ? 0 : std::clamp(fraction, 0.0, 1.0);
  const int64_t eighths = static_cast<int64_t>(fraction * width * 8);
  const int64_t full = eighths / 8;
  std::string bar;
  for (int64_t i = 0; i < full; ++i) bar += kEighths[8];
  if (full < width) {
    bar += kEighths[eighths % 8];
    bar.append(static_cast<size_t>(width - full - 1), ' ');
  }
  return bar;
}

size_t display_width(std::string_view utf8) {
  size_t n = 0;
  for (unsigned char c : utf8) n += (c & 0xC0) != 0x80;
  return n;
}

namespace {

// The terminal line with the given metrics: the bar takes the columns the text leaves, at least one.
std::string bar_line_with(const ProgressSnapshot& s, const ProgressMetrics& metrics, int ncols) {
  const std::string elapsed = format_interval(s.elapsed_s), rate = rate_text(s);
  if (s.total <= 0)
    return description_prefix(s) + std::to_string(s.count) + "it [" + elapsed + ", " + rate + postfix_text(metrics) + "]";
  const double fraction = static_cast<double>(s.count) / static_cast<double>(s.total);
  const std::string left = description_prefix(s) + printf_string("%3.0f", fraction * 100) + "%|";
  const std::string right = "| " + std::to_string(s.count) + "/" + std::to_string(s.total) + " [" + elapsed + "<" +
                            remaining_text(s) + ", " + rate + postfix_text(metrics) + "]";
  const int width = ncols > 0 ? std::max<int>(1, ncols - static_cast<int>(display_width(left) + display_width(right))) : 10;
  return left + render_bar(fraction, width) + right;
}

}  // namespace

// Note [Fitting the bar to the width]
// tqdm cuts a line that is longer than the terminal at its last column, mid-metric ("val_a"). Kiln
// gives way in the order that loses least: the bar shrinks to one cell; then whole metrics are
// dropped, v_num first (it names the run rather than measuring it), then the others from the last;
// only a line that is too long even with no metric (a long description in a few columns) is cut.
std::string format_bar_line(const ProgressSnapshot& s, int ncols) {
  ProgressMetrics shown = s.metrics;
  std::string line = bar_line_with(s, shown, ncols);
  if (ncols <= 0) return line;
  while (display_width(line) > static_cast<size_t>(ncols) && !shown.empty()) {
    auto v_num = std::find_if(shown.begin(), shown.end(), [](const auto& item) { return item.first == "v_num"; });
    shown.erase(v_num != shown.end() ? v_num : shown.end() - 1);
    line = bar_line_with(s, shown, ncols);
  }
  return trim_to_columns(line, static_cast<size_t>(ncols));
}

std::string format_plain_line(const ProgressSnapshot& s) {
  const std::string elapsed = format_interval(s.elapsed_s), rate = rate_text(s);
  if (s.total <= 0)
    return description_prefix(s) + std::to_string(s.count) + "it [" + elapsed + ", " + rate + postfix_text(s.metrics) + "]";
  const double percent = 100.0 * static_cast<double>(s.count) / static_cast<double>(s.total);
  return description_prefix(s) + std::to_string(s.count) + "/" + std::to_string(s.total) + " (" + printf_string("%.0f", percent) +
         "%) [" + elapsed + "<" + remaining_text(s) + ", " + rate + postfix_text(s.metrics) + "]";
}

ProgressBar::ProgressBar(ProgressBarOptions options) : options_(std::move(options)) {
  KILN_CHECK(options_.stream != nullptr, "ProgressBar: stream must not be null");
  KILN_CHECK(options_.plain_every_n >= 0, "ProgressBar: plain_every_n must be >= 0, got ", options_.plain_every_n);
  interactive_ = options_.interactive.value_or(isatty(fileno(options_.stream)) == 1);
}

int ProgressBar::terminal_columns() const {
  winsize size{};
  if (ioctl(fileno(options_.stream), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  if (const char* columns = std::getenv("COLUMNS")) {
    const int n = std::atoi(columns);
    if (n > 0) return n;
  }
  return 80;
}

void ProgressBar::write(const std::string& text) {
  // Progress output is best effort: a closed or full stdout must not stop training.
  std::fputs(text.c_str(), options_.stream);
  std::fflush(options_.stream);
}

void ProgressBar::draw(const ProgressSnapshot& s) {
  const std::string line = format_bar_line(s, options_.ncols > 0 ? options_.ncols : terminal_columns());
  const size_t old_width = display_width(last_line_), new_width = display_width(line);
  // '\r' returns to the start of the line; spaces cover what a longer previous line left behind.
  write("\r" + line + std::string(old_width > new_width ? old_width - new_width : 0, ' '));
  last_line_ = line;
  line_open_ = true;
  last_draw_s_ = s.elapsed_s;
}

void ProgressBar::update(const ProgressSnapshot& s) {
  if (s.description != last_description_) {  // a new bar: draw at once
    last_description_ = s.description;
    last_draw_s_ = -1;
    last_plain_count_ = -1;
  }
  const bool complete = s.total > 0 && s.count >= s.total;
  if (interactive_) {
    if (last_draw_s_ < 0 || complete || s.elapsed_s - last_draw_s_ >= options_.refresh_interval_s) draw(s);
    return;
  }
  // Note [Progress in a log]: the completing count is finish()'s to write.
  const int64_t n = options_.plain_every_n;
  if (n > 0 && s.count > s.initial && s.count % n == 0 && !complete && s.count != last_plain_count_) {
    write(format_plain_line(s) + "\n");
    last_plain_count_ = s.count;
  }
}

void ProgressBar::finish(const ProgressSnapshot& s) {
  if (interactive_) {
    draw(s);
    write("\n");
    line_open_ = false;
    last_line_.clear();
  } else {
    write(format_plain_line(s) + "\n");
  }
  last_description_.clear();
  last_draw_s_ = -1;
  last_plain_count_ = -1;
}

void ProgressBar::print_above(const std::string& text) {
  if (!(interactive_ && line_open_)) {
    write(text + "\n");
    return;
  }
  std::string out = "\r";
  out.append(display_width(last_line_), ' ').append("\r").append(text).append("\n").append(last_line_);
  write(out);
}

}  // namespace kiln
