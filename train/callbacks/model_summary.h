// ModelSummary: at fit start, prints a table of the module's layers as Lightning 2.x does
//     | Name    | Type       | Params | Mode
//   ---------------------------------------------
//   0 | encoder | Sequential | 100 K  | train
//   ...then trainable / non-trainable / total parameter counts, the estimated size in MB and the
// number of submodules in train and eval mode. summarize_module() gives the same text for any module.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "nn/module.h"
#include "train/callback.h"

namespace kiln::callbacks {

// Lightning's get_human_readable_count: 123 → "123  ", 1234 → "1.2 K", 201000 → "201 K", "3.5 M".
std::string human_readable_count(int64_t number);

// The table for `module`. max_depth 1: its children; N > 1: submodules down to N levels; -1: all
// submodules; 0: an empty string. Parameters shared between layers count once in the totals.
std::string summarize_module(nn::Module& module, int max_depth = 1);

struct ModelSummaryOptions {
  int max_depth = 1;
  std::FILE* stream = stdout;
};

class ModelSummary : public Callback {
 public:
  explicit ModelSummary(ModelSummaryOptions options = {});

  std::string name() const override { return "ModelSummary"; }
  void on_fit_start(Trainer& trainer, TrainModule& module) override;

  // The last summary printed (empty before fit starts, or with max_depth 0).
  const std::string& summary() const { return summary_; }
  int max_depth() const { return options_.max_depth; }

 private:
  ModelSummaryOptions options_;
  std::string summary_;
};

}  // namespace kiln::callbacks

namespace kiln {
using callbacks::ModelSummary;  // also kiln::ModelSummary; see progress_bar_callback.h for why the namespace
}  // namespace kiln
