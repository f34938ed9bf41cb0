// ModelSummary (see model_summary.h): the layer table and totals, laid out character for
// character as Lightning's _format_summary_table does. Lightning 2.6 adds a FLOPs column (0 unless
// the module has an example input); Kiln counts no FLOPs, so it prints no such column.
#include "train/callbacks/model_summary.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <unordered_set>
#include <vector>

#include "tensor/error.h"
#include "train/train_module.h"
#include "train/trainer.h"

namespace kiln::callbacks {

namespace {

// Python's "," format option: digits before the point grouped by thousands ("1234.500" → "1,234.500").
std::string with_thousands(const std::string& number) {
  const size_t int_end = std::min(number.find('.'), number.size());
  std::string out;
  for (size_t i = 0; i < int_end; ++i) {
    if (i > 0 && (int_end - i) % 3 == 0) out += ',';
    out += number[i];
  }
  return out + number.substr(int_end);
}

std::string pad_right(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

struct Column {
  std::string header;
  std::vector<std::string> cells;
};

int64_t count_params(const nn::Module& m) {
  int64_t n = 0;
  for (const Tensor& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

std::string human_readable_count(int64_t number) {
  KILN_CHECK(number >= 0, "human_readable_count: expected a count >= 0, got ", number);
  static const std::array<const char*, 5> labels = {" ", "K", "M", "B", "T"};
  const int num_digits = number > 0 ? static_cast<int>(std::floor(std::log10(static_cast<double>(number)))) + 1 : 1;
  const int num_groups = std::min<int>((num_digits + 2) / 3, static_cast<int>(labels.size()));
  const double scaled = static_cast<double>(number) * std::pow(10.0, -3 * (num_groups - 1));
  const int index = num_groups - 1;
  if (index < 1 || scaled >= 100) return with_thousands(std::to_string(static_cast<int64_t>(scaled))) + " " + labels[index];
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.1f %s", scaled, labels[index]);  // < 100: no thousands separator
  return buf;
}

std::string summarize_module(nn::Module& module, int max_depth) {
  KILN_CHECK(max_depth >= -1, "ModelSummary: max_depth can be -1, 0 or > 0, got ", max_depth);
  if (max_depth == 0) return "";
  nn::NamedModules layers;
  if (max_depth == 1) {
    layers = module.named_children();
  } else {
    nn::NamedModules all = module.named_modules();
    for (size_t i = 1; i < all.size(); ++i) {  // [0] is the module itself
      const auto depth = std::count(all[i].first.begin(), all[i].first.end(), '.');
      if (max_depth == -1 || depth < max_depth) layers.push_back(all[i]);
    }
  }

  std::vector<Column> cols = {{" ", {}}, {"Name", {}}, {"Type", {}}, {"Params", {}}, {"Mode", {}}};
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& [name, layer] = layers[i];
    cols[0].cells.push_back(std::to_string(i));
    cols[1].cells.push_back(name);
    cols[2].cells.push_back(layer->type_name());
    cols[3].cells.push_back(human_readable_count(count_params(*layer)));
    cols[4].cells.push_back(layer->is_training() ? "train" : "eval");
  }

  int64_t total = 0, trainable = 0;
  double bytes = 0;
  for (const Tensor& p : module.parameters()) {
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
    bytes += static_cast<double>(p.nbytes());
  }
  int64_t in_train = 0, in_eval = 0;
  const nn::NamedModules all = module.named_modules();
  for (size_t i = 1; i < all.size(); ++i) (all[i].second->is_training() ? in_train : in_eval) += 1;

  std::vector<size_t> widths;
  size_t total_width = 3;  // Lightning rules 3 * (columns + 1) characters beyond the cells
  for (const Column& c : cols) {
    size_t w = c.header.size();
    for (const std::string& cell : c.cells) w = std::max(w, cell.size());
    widths.push_back(w);
    total_width += w + 3;
  }
  auto row = [&](auto cell_of) {
    std::string line;
    for (size_t c = 0; c < cols.size(); ++c) line += (c ? " | " : "") + pad_right(cell_of(cols[c]), widths[c]);
    return line;
  };
  const std::string rule(total_width, '-');
  std::string out = row([](const Column& c) { return c.header; }) + "\n" + rule;
  for (size_t r = 0; r < layers.size(); ++r) out += "\n" + row([r](const Column& c) { return c.cells[r]; });
  out += "\n" + rule;
  char size_text[64];
  std::snprintf(size_text, sizeof(size_text), "%.3f", bytes / 1e6);
  out += "\n" + pad_right(human_readable_count(trainable), 10) + "Trainable params";
  out += "\n" + pad_right(human_readable_count(total - trainable), 10) + "Non-trainable params";
  out += "\n" + pad_right(human_readable_count(total), 10) + "Total params";
  out += "\n" + pad_right(with_thousands(size_text), 10) + "Total estimated model params size (MB)";
  out += "\n" + pad_right(std::to_string(in_train), 10) + "Modules in train mode";
  out += "\n" + pad_right(std::to_string(in_eval), 10) + "Modules in eval mode";
  return out;
}

ModelSummary::ModelSummary(ModelSummaryOptions options) : options_(options) {
  KILN_CHECK(options_.max_depth >= -1, "ModelSummary: max_depth can be -1, 0 or > 0, got ", options_.max_depth);
}

void ModelSummary::on_fit_start(Trainer& trainer, TrainModule& module) {
  if (options_.max_depth == 0 || !trainer.strategy().is_global_zero()) return;
  summary_ = summarize_module(module, options_.max_depth);
  if (options_.stream) {
    std::fputs((summary_ + "\n").c_str(), options_.stream);
    std::fflush(options_.stream);
  }
}

}  // namespace kiln::callbacks
