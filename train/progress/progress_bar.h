// Progress bar rendering for the Trainer's progress-bar callback: given a description, counts,
// elapsed time and metrics, the line Lightning's TQDM bar shows on a terminal
//   Epoch 1/5:  43%|████▎     | 200/469 [00:03<00:04, 62.10it/s, loss=0.412, v_num=0]
// redrawn in place, and plain lines when the output is not a terminal (Note [Progress in a log]).
// The formatting functions are pure; ProgressBar only decides when to write and where.
// It knows nothing of epochs or loops: the callback says what to show.
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kiln {

// A value shown after the bar: floats as Lightning formats them (3 significant digits, padded to
// 5 characters: "0.412", "0.500", "1e-5"), integers as they are ("v_num=0"), strings verbatim.
using ProgressValue = std::variant<double, int64_t, std::string>;
using ProgressMetrics = std::vector<std::pair<std::string, ProgressValue>>;

struct ProgressSnapshot {
  std::string description;  // "Epoch 1/5"; empty: no "desc: " prefix
  int64_t count = 0;        // batches done
  int64_t total = 0;        // <= 0: unknown (no bar, percent or ETA)
  int64_t initial = 0;      // batches already done when the clock started (a resumed epoch)
  double elapsed_s = 0;     // since this bar started
  ProgressMetrics metrics;  // in display order
};

// tqdm's pieces, each exactly as tqdm prints it.
std::string format_interval(double seconds);               // "00:03", "12:34", "1:02:03"
// done: batches timed over elapsed_s; "?it/s" until one has been (tqdm, before its first interval).
std::string format_rate(int64_t done, double elapsed_s);  // " 1.50it/s", "62.10it/s", "?it/s"
std::string format_progress_value(const ProgressValue& value);
std::string format_postfix(const ProgressMetrics& metrics);  // "loss=0.412, v_num=0"
std::string render_bar(double fraction, int width);          // "████▎     " (width cells)
// Terminal columns a UTF-8 string takes (one per code point: the bar's block characters included).
size_t display_width(std::string_view utf8);

// The terminal line. ncols > 0: the bar stretches or shrinks (to one cell) so that the line fills
// ncols; when that is not enough, whole metrics are dropped (see Note [Fitting the bar to the
// width]). ncols <= 0: a 10-cell bar and every metric, as tqdm draws without a width.
std::string format_bar_line(const ProgressSnapshot& s, int ncols);
// The non-terminal line: the same facts without the bar, "Epoch 1/5: 200/469 (43%) [00:03<00:04, ...]".
std::string format_plain_line(const ProgressSnapshot& s);

struct ProgressBarOptions {
  std::FILE* stream = stdout;
  std::optional<bool> interactive;   // unset: whether stream is a terminal (isatty)
  int ncols = 0;                     // 0: the terminal's width (then $COLUMNS, then 80)
  double refresh_interval_s = 0.1;   // terminal: redraw at most this often (tqdm's mininterval)
  int64_t plain_every_n = 0;         // not a terminal: also a line each N batches; 0: finish() only
};

// Note [Progress in a log]
// Piped into a file, tqdm's '\r' redraws make one enormous line, and a line per redraw buries the
// log. So elsewhere than a terminal, update() writes only at counts past `initial` that are
// multiples of plain_every_n (0, the default: never), and finish() writes the final state: one
// line per finished bar, one per epoch, which is what a terminal keeps. The count that completes a
// bar is left to finish(), whose line carries the metrics known by then (the epoch's validation).

// Writes snapshots as they come: on a terminal, one line redrawn with '\r'; otherwise as the note
// above says. finish() leaves the final state on its own line (tqdm's leave=True).
class ProgressBar {
 public:
  explicit ProgressBar(ProgressBarOptions options = {});
  bool interactive() const { return interactive_; }

  void update(const ProgressSnapshot& s);
  void finish(const ProgressSnapshot& s);
  // Prints a line of text (validation results, warnings) without breaking the bar: on a terminal
  // the bar is cleared, the text printed, and the bar drawn again below it.
  void print_above(const std::string& text);

 private:
  int terminal_columns() const;
  void draw(const ProgressSnapshot& s);
  void write(const std::string& text);

  ProgressBarOptions options_;
  bool interactive_ = false;
  bool line_open_ = false;           // a bar is on the current terminal line
  std::string last_line_;            // what is drawn there
  double last_draw_s_ = -1;
  int64_t last_plain_count_ = -1;    // plain: the count of the last periodic line of this bar
  std::string last_description_;     // a new description starts a new bar
};

}  // namespace kiln
