// Tests of the progress bar text against tqdm's format (as Lightning's TQDM bar uses it): times,
// rate, percent, the bar's eighth-blocks, the metric postfix, the width fitting, the plain
// non-terminal lines, and when ProgressBar writes what (into a temporary file, no terminal needed).
#include <cstdio>
#include <cstdlib>

#include "testing.h"
#include "train/progress/progress_bar.h"

namespace kt = kiln::testing;
using kiln::ProgressMetrics;
using kiln::ProgressSnapshot;

namespace {

std::string contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  return out;
}

const ProgressMetrics kMetrics = {{"loss", 0.41234}, {"v_num", int64_t{0}}};

}  // namespace

TEST(ProgressFormat, Interval) {
  EXPECT_EQ(kiln::format_interval(0), "00:00");
  EXPECT_EQ(kiln::format_interval(3.9), "00:03");  // truncated, as tqdm does
  EXPECT_EQ(kiln::format_interval(59.99), "00:59");
  EXPECT_EQ(kiln::format_interval(60), "01:00");
  EXPECT_EQ(kiln::format_interval(754), "12:34");
  EXPECT_EQ(kiln::format_interval(3723), "1:02:03");
  EXPECT_EQ(kiln::format_interval(36000), "10:00:00");
  EXPECT_EQ(kiln::format_interval(-5), "00:00");
  EXPECT_EQ(kiln::format_interval(kt::kNaN), "?");
}

TEST(ProgressFormat, Rate) {
  EXPECT_EQ(kiln::format_rate(200, 3.22), "62.11it/s");
  EXPECT_EQ(kiln::format_rate(3, 2.0), " 1.50it/s");  // '{:5.2f}': padded to 5
  EXPECT_EQ(kiln::format_rate(1, 4.0), " 0.25it/s");  // Lightning's bar never switches to s/it
  EXPECT_EQ(kiln::format_rate(123456, 1.0), "123456.00it/s");
  EXPECT_EQ(kiln::format_rate(0, 5.0), "?it/s");
  EXPECT_EQ(kiln::format_rate(10, 0.0), "?it/s");
  EXPECT_EQ(kiln::format_rate(-3, 1.0), "?it/s");
}

// A resumed epoch starts its clock at batch 300: the rate counts only the batches timed since.
TEST(ProgressFormat, RateOfAResumedEpochCountsOnlyTimedBatches) {
  const ProgressSnapshot start{.description = "Epoch 3", .count = 300, .total = 469, .initial = 300, .elapsed_s = 0.001};
  EXPECT_EQ(kiln::format_bar_line(start, 0), "Epoch 3:  64%|██████▍   | 300/469 [00:00<?, ?it/s]");
  // 1 batch in 0.05 s: 20 it/s, and 168 batches left take 8.4 s. (Counting all 301: 6020.00it/s.)
  const ProgressSnapshot one{.description = "Epoch 3", .count = 301, .total = 469, .initial = 300, .elapsed_s = 0.05};
  EXPECT_EQ(kiln::format_bar_line(one, 0), "Epoch 3:  64%|██████▍   | 301/469 [00:00<00:08, 20.00it/s]");
  EXPECT_EQ(kiln::format_plain_line(one), "Epoch 3: 301/469 (64%) [00:00<00:08, 20.00it/s]");
}

TEST(ProgressFormat, MetricValuesLikeLightning) {
  using kiln::format_progress_value;
  EXPECT_EQ(format_progress_value(0.41234), "0.412");
  EXPECT_EQ(format_progress_value(0.5), "0.500");  // padded to 5 characters
  EXPECT_EQ(format_progress_value(0.1), "0.100");
  EXPECT_EQ(format_progress_value(2.0), "2.000");
  EXPECT_EQ(format_progress_value(100.0), "100.0");
  EXPECT_EQ(format_progress_value(12345.0), "12345.0");  // "1.23e+4" is no shorter
  EXPECT_EQ(format_progress_value(123456.7), "1.23e+5");
  EXPECT_EQ(format_progress_value(1e-05), "1e-5");
  EXPECT_EQ(format_progress_value(-0.5), "-0.50");
  EXPECT_EQ(format_progress_value(kt::kNaN), "nan");
  EXPECT_EQ(format_progress_value(-kt::kInf), "-inf");
  EXPECT_EQ(format_progress_value(int64_t{0}), "0");  // integers are not padded
  EXPECT_EQ(format_progress_value(int64_t{1234567}), "1234567");
  EXPECT_EQ(format_progress_value(int64_t{123456789}), "1.23e+8");
  EXPECT_EQ(format_progress_value(std::string("run_a")), "run_a");
  EXPECT_EQ(kiln::format_postfix(kMetrics), "loss=0.412, v_num=0");
  EXPECT_EQ(kiln::format_postfix({}), "");
}

TEST(ProgressFormat, BarCells) {
  EXPECT_EQ(kiln::render_bar(200.0 / 469, 10), "████▎     ");  // int(0.4264 * 80) = 34 eighths
  EXPECT_EQ(kiln::render_bar(0, 10), std::string(10, ' '));
  EXPECT_EQ(kiln::render_bar(1, 10), "██████████");
  EXPECT_EQ(kiln::render_bar(0.05, 4), "▏   ");
  EXPECT_EQ(kiln::render_bar(0.999, 3), "██▉");
  EXPECT_EQ(kiln::render_bar(1.5, 3), "███");  // clamped
  EXPECT_EQ(kiln::render_bar(-1, 2), "  ");
  EXPECT_EQ(kiln::display_width("████▎ ab"), 8u);
}

TEST(ProgressFormat, TerminalLine) {
  const ProgressSnapshot s{.description = "Epoch 1/5", .count = 200, .total = 469, .elapsed_s = 3.22, .metrics = kMetrics};
  EXPECT_EQ(kiln::format_bar_line(s, 0), "Epoch 1/5:  43%|████▎     | 200/469 [00:03<00:04, 62.11it/s, loss=0.412, v_num=0]");

  // With a width the bar takes what the text leaves.
  const std::string left = "Epoch 1/5:  43%|", right = "| 200/469 [00:03<00:04, 62.11it/s, loss=0.412, v_num=0]";
  const int bar_cells = 100 - static_cast<int>(left.size() + right.size());
  EXPECT_EQ(kiln::format_bar_line(s, 100), left + kiln::render_bar(200.0 / 469, bar_cells) + right);
  EXPECT_EQ(kiln::display_width(kiln::format_bar_line(s, 100)), 100u);
  // Too narrow even with a one-cell bar and no metric: the line is cut at the width.
  EXPECT_EQ(kiln::format_bar_line(s, 20), "Epoch 1/5:  43%|▍| 2");  // int(0.4264 * 8) = 3 eighths

  EXPECT_EQ(kiln::format_bar_line({.description = "Epoch 0", .count = 0, .total = 10}, 0),
            "Epoch 0:   0%|          | 0/10 [00:00<?, ?it/s]");
  EXPECT_EQ(kiln::format_bar_line({.description = "Epoch 0", .count = 10, .total = 10, .elapsed_s = 5}, 0),
            "Epoch 0: 100%|██████████| 10/10 [00:05<00:00,  2.00it/s]");
  EXPECT_EQ(kiln::format_bar_line({.description = "Validation", .count = 37, .elapsed_s = 2}, 0),
            "Validation: 37it [00:02, 18.50it/s]");  // unknown total
  EXPECT_EQ(kiln::format_bar_line({.count = 1, .total = 2, .elapsed_s = 1}, 0), " 50%|█████     | 1/2 [00:01<00:01,  1.00it/s]");
}

// Note [Fitting the bar to the width]: the bar shrinks to one cell, then whole metrics go, v_num
// first and then from the last; a name or value is never cut.
TEST(ProgressFormat, MetricsDroppedWholeToFitTheWidth) {
  const ProgressSnapshot s{.description = "Epoch 0", .count = 40, .total = 40, .elapsed_s = 8.64,
                           .metrics = {{"v_num", int64_t{0}}, {"train_loss", 0.65}, {"val_acc", 0.809}, {"val_loss", 0.53}}};
  const std::string all = "Epoch 0: 100%|██████████| 40/40 [00:08<00:00,  4.63it/s, v_num=0, train_loss=0.650, "
                          "val_acc=0.809, val_loss=0.530]";
  EXPECT_EQ(kiln::format_bar_line(s, 0), all);  // no width: everything
  EXPECT_EQ(kiln::format_bar_line(s, 120), "Epoch 0: 100%|" + kiln::render_bar(1, 16) + all.substr(all.find("| 40/40")));
  // 14 + 1 + 65 columns: v_num and val_loss dropped, the bar down to one cell.
  EXPECT_EQ(kiln::format_bar_line(s, 80), "Epoch 0: 100%|█| 40/40 [00:08<00:00,  4.63it/s, train_loss=0.650, val_acc=0.809]");
  EXPECT_EQ(kiln::format_bar_line(s, 79),
            "Epoch 0: 100%|" + kiln::render_bar(1, 15) + "| 40/40 [00:08<00:00,  4.63it/s, train_loss=0.650]");
  EXPECT_EQ(kiln::format_bar_line(s, 50), "Epoch 0: 100%|████| 40/40 [00:08<00:00,  4.63it/s]");
  // Unknown totals have no bar to shrink: metrics go at once.
  const ProgressSnapshot open{.description = "Testing DataLoader 0", .count = 10, .elapsed_s = 2, .metrics = s.metrics};
  EXPECT_EQ(kiln::format_bar_line(open, 63), "Testing DataLoader 0: 10it [00:02,  5.00it/s, train_loss=0.650]");
  EXPECT_EQ(kiln::format_bar_line(open, 62), "Testing DataLoader 0: 10it [00:02,  5.00it/s]");
  for (int ncols = 47; ncols <= 130; ++ncols) {  // 47: the line with no metric and a one-cell bar
    const std::string line = kiln::format_bar_line(s, ncols);
    EXPECT_EQ(kiln::display_width(line), static_cast<size_t>(ncols)) << line;
    EXPECT_EQ(line.back(), ']') << line;
  }
}

TEST(ProgressFormat, PlainLine) {
  const ProgressSnapshot s{.description = "Epoch 1/5", .count = 200, .total = 469, .elapsed_s = 3.22, .metrics = kMetrics};
  EXPECT_EQ(kiln::format_plain_line(s), "Epoch 1/5: 200/469 (43%) [00:03<00:04, 62.11it/s, loss=0.412, v_num=0]");
  EXPECT_EQ(kiln::format_plain_line({.description = "Predicting", .count = 5, .elapsed_s = 10}),
            "Predicting: 5it [00:10,  0.50it/s]");
}

TEST(ProgressBarWriter, TerminalRedrawsInPlaceAtMostEveryRefreshInterval) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  kiln::ProgressBar bar({.stream = f, .interactive = true, .ncols = 80, .refresh_interval_s = 0.1});
  EXPECT_TRUE(bar.interactive());
  // Unknown totals: lines that do not stretch to the width, so a shorter one must cover a longer.
  const ProgressSnapshot a{.description = "Predicting", .count = 1, .elapsed_s = 0.0, .metrics = kMetrics};
  const ProgressSnapshot b{.description = "Predicting", .count = 2, .elapsed_s = 0.05, .metrics = kMetrics};
  const ProgressSnapshot c{.description = "Predicting", .count = 3, .elapsed_s = 0.2};
  const ProgressSnapshot d{.description = "Epoch 0", .count = 4, .total = 4, .elapsed_s = 0.21};
  bar.update(a);
  bar.update(b);  // within 0.1 s of the last draw: skipped
  bar.update(c);
  bar.print_above("validation: acc=0.91");
  bar.finish(d);
  const std::string la = kiln::format_bar_line(a, 80), lc = kiln::format_bar_line(c, 80), ld = kiln::format_bar_line(d, 80);
  EXPECT_EQ(kiln::display_width(ld), 80u);
  const size_t pad = kiln::display_width(la) - kiln::display_width(lc);
  const std::string want = "\r" + la + "\r" + lc + std::string(pad, ' ') +                        // redraw, covering the longer line
                           "\r" + std::string(kiln::display_width(lc), ' ') + "\rvalidation: acc=0.91\n" + lc +  // text above the bar
                           "\r" + ld + "\n";                                                     // final state stays
  EXPECT_EQ(contents(f), want);
  std::fclose(f);
}

// Note [Progress in a log]: one line per finished bar, plus one each plain_every_n batches if asked.
TEST(ProgressBarWriter, PlainLinesAtTheEndAndEveryNBatches) {
  const auto run = [](int64_t every_n, int64_t total, int64_t batches) {
    std::FILE* f = std::tmpfile();
    kiln::ProgressBar bar({.stream = f, .plain_every_n = every_n});
    EXPECT_FALSE(bar.interactive()) << "a temporary file is not a terminal";
    for (int64_t i = 0; i <= batches; ++i)
      bar.update({.description = "Epoch 0", .count = i, .total = total, .elapsed_s = 0.5 * static_cast<double>(i)});
    bar.finish({.description = "Epoch 0", .count = batches, .total = total, .elapsed_s = 25, .metrics = kMetrics});
    const std::string text = contents(f);
    std::fclose(f);
    return text;
  };
  const std::string end = "Epoch 0: 50/50 (100%) [00:25<00:00,  2.00it/s, loss=0.412, v_num=0]\n";
  EXPECT_EQ(run(0, 50, 50), end);
  // Every 20: 20 and 40; the 50th is finish()'s line, which carries the final metrics.
  EXPECT_EQ(run(20, 50, 50), "Epoch 0: 20/50 (40%) [00:10<00:15,  2.00it/s]\nEpoch 0: 40/50 (80%) [00:20<00:05,  2.00it/s]\n" + end);
  EXPECT_EQ(run(25, 50, 50), "Epoch 0: 25/50 (50%) [00:12<00:12,  2.00it/s]\n" + end);
  // Unknown total: the same rule.
  EXPECT_EQ(run(30, 0, 50), "Epoch 0: 30it [00:15,  2.00it/s]\nEpoch 0: 50it [00:25,  2.00it/s, loss=0.412, v_num=0]\n");

  // A resumed bar (20 batches restored) writes no line for where it starts, only for what it does.
  std::FILE* f = std::tmpfile();
  kiln::ProgressBar bar({.stream = f, .plain_every_n = 10});
  for (int64_t i = 20; i <= 35; ++i)
    bar.update({.description = "Epoch 1", .count = i, .total = 50, .initial = 20, .elapsed_s = 0.5 * static_cast<double>(i - 20)});
  EXPECT_EQ(contents(f), "Epoch 1: 30/50 (60%) [00:05<00:10,  2.00it/s]\n");
  std::fclose(f);
}

// Without a width the terminal's is used: $COLUMNS when the stream is no terminal to ask.
TEST(ProgressBarWriter, TerminalWidthFromColumns) {
  const char* saved = std::getenv("COLUMNS");
  const std::string restore = saved ? saved : "";
  for (const int columns : {60, 80, 100}) {
    ASSERT_EQ(setenv("COLUMNS", std::to_string(columns).c_str(), 1), 0);
    std::FILE* f = std::tmpfile();
    kiln::ProgressBar bar({.stream = f, .interactive = true});
    const ProgressSnapshot s{.description = "Epoch 0", .count = 3, .total = 8, .elapsed_s = 1,
                             .metrics = {{"v_num", int64_t{0}}, {"train_loss", 0.65}, {"val_acc", 0.809}}};
    bar.update(s);
    EXPECT_EQ(contents(f), "\r" + kiln::format_bar_line(s, columns));
    EXPECT_EQ(kiln::display_width(kiln::format_bar_line(s, columns)), static_cast<size_t>(columns));
    std::fclose(f);
  }
  if (saved) setenv("COLUMNS", restore.c_str(), 1);
  else unsetenv("COLUMNS");
}

TEST(ProgressBarWriter, RejectsBadOptions) {
  kt::expect_error([] { kiln::ProgressBar({.stream = nullptr}); }, {"ProgressBar", "stream"});
  kt::expect_error([] { kiln::ProgressBar({.plain_every_n = -1}); }, {"ProgressBar", "plain_every_n", "-1"});
}
