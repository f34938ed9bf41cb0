// ModelCheckpoint: saves the run as .ckpt files and keeps the best k by a monitored metric, with
// Lightning 2.x's semantics: filename templates ("{epoch}-{val_loss:.3f}" → epoch=3-val_loss=0.123.ckpt),
// top-k retention that deletes files dropping out, last.ckpt, step / epoch / time triggers, and a
// state_dict so a resumed run keeps its best scores. Files are written by Trainer::save_checkpoint
// (atomic, Kiln's native format, async with async_checkpointing) and deleted by
// Trainer::remove_checkpoint; this class only decides when, under which name, and what to delete.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "train/callback.h"
#include "train/callbacks/callback_util.h"

namespace kiln::callbacks {

struct ModelCheckpointOptions {
  std::string dirpath;   // empty: <trainer.log_dir()>/checkpoints, resolved in setup()
  std::string filename;  // empty: "{epoch}-{step}"
  std::string monitor;   // empty: no metric; keeps the latest file (save_top_k 1) or all (-1)
  std::string mode = "min";  // "min" | "max": which end of the monitored metric is best
  int64_t save_top_k = 1;    // -1: keep all, 0: keep none (save_last still works)
  bool save_last = false;    // also write last.ckpt at every save point
  // Triggers, mutually exclusive; none set: every epoch.
  std::optional<int64_t> every_n_train_steps;
  std::optional<int64_t> every_n_epochs;
  std::optional<double> train_time_interval_seconds;
  // Unset: at train epoch end when validation runs once per epoch at its end (or not at all),
  // else after each validation.
  std::optional<bool> save_on_train_epoch_end;
  bool auto_insert_metric_name = true;  // "{epoch}" → "epoch=3"
  bool enable_version_counter = true;   // a name already taken becomes name-v1.ckpt, name-v2.ckpt...
  bool verbose = false;
};

// Writes a checkpoint file at a path. In a fit this is Trainer::save_checkpoint.
using CheckpointWriter = std::function<void(const std::string& path)>;

class ModelCheckpoint : public Callback {
 public:
  static constexpr const char* kFileExtension = ".ckpt";
  static constexpr const char* kNameLast = "last";

  explicit ModelCheckpoint(ModelCheckpointOptions options = {});

  std::string name() const override { return "ModelCheckpoint"; }
  // Lightning's: ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, ...}
  std::string state_key() const override;

  void setup(Trainer& trainer, TrainModule& module, const std::string& stage) override;
  void on_train_start(Trainer& trainer, TrainModule& module) override;
  void on_train_batch_end(Trainer& trainer, TrainModule& module, const StepOutput& outputs, const data::Batch& batch,
                          int64_t batch_idx) override;
  void on_train_epoch_end(Trainer& trainer, TrainModule& module) override;
  void on_validation_end(Trainer& trainer, TrainModule& module) override;

  // best_model_path, best_model_score, best_k_models, kth_best_model_path, kth_value,
  // last_model_path, current_score and dirpath. Loaded only when dirpath matches (else only
  // best_model_path), as Lightning does, or (Kiln) when dirpath was left to the logger and the
  // saved one is the same place in another version_N folder of the run. Plus the global step
  // saved last (not in Lightning's), always loaded: a resumed run does not save that step again.
  Json state_dict() const override;
  void load_state_dict(const Json& state) override;

  // ---- results
  const std::string& dirpath() const { return dirpath_; }
  const std::string& best_model_path() const { return best_model_path_; }
  std::optional<double> best_model_score() const { return best_model_score_; }
  std::optional<double> current_score() const { return current_score_; }
  // The kept files and their scores, in the order they were saved.
  const std::vector<std::pair<std::string, double>>& best_k_models() const { return best_k_models_; }
  const std::string& kth_best_model_path() const { return kth_best_model_path_; }
  double kth_value() const { return kth_value_; }
  const std::string& last_model_path() const { return last_model_path_; }
  const ModelCheckpointOptions& options() const { return options_; }
  // Lightning's _find_last_checkpoints: the .ckpt files in dirpath whose name contains "last"
  // (what ckpt_path="last" resumes from when this run has not saved yet).
  std::vector<std::string> find_last_checkpoints() const;
  // The same for any folder (ckpt_path="last" also looks in the run's other version folders).
  static std::vector<std::string> last_checkpoints_in(const std::string& dir);

  // ---- the steps of a save point, public so a hand-written loop (or a test) can drive them.
  // `candidates` are the callback metrics plus "epoch" and "step" (formatted as integers).
  // The path for `filename` (default: options().filename) filled in from candidates, with "-v<N>"
  // before the extension when `version` is given.
  std::string format_checkpoint_name(const Metrics& candidates, const std::string& filename = "",
                                     std::optional<int64_t> version = {}) const;
  // Lightning's _save_topk_checkpoint: saves by the monitored metric (or the latest without one)
  // and deletes the file that drops out. `validation_has_run`: a missing monitor is an error
  // (listing what was logged); before any validation it only warns and saves nothing.
  void save_topk(const Metrics& candidates, const CheckpointWriter& write, bool validation_has_run = true);
  // Lightning's _save_last_checkpoint: last.ckpt (or the "last" template) when save_last.
  void save_last(const Metrics& candidates, const CheckpointWriter& write);
  void set_dirpath(std::string dirpath) { dirpath_ = std::move(dirpath); }

 private:
  bool same_run_other_version(const std::string& saved_dir) const;
  bool should_skip_saving(const Trainer& trainer) const;
  bool should_save_on_train_epoch_end(const Trainer& trainer) const;
  bool epoch_trigger_due(const Trainer& trainer) const;
  Metrics monitor_candidates(const Trainer& trainer) const;
  void save_point(Trainer& trainer, bool topk);
  void save_epoch_point(Trainer& trainer);

  bool check_monitor_top_k(std::optional<double> current) const;
  void update_best_and_save(double current, const Metrics& candidates, const CheckpointWriter& write);
  void save_without_monitor(const Metrics& candidates, const CheckpointWriter& write);
  std::string unused_name(const Metrics& candidates, const std::string& filename, const std::string& allowed) const;
  void write_checkpoint(const std::string& path, int64_t step, const CheckpointWriter& write);
  bool should_remove(const std::string& previous, const std::string& current) const;
  void remove_checkpoint(const std::string& path) const;
  Trainer* saving_for_ = nullptr;  // the Trainer whose save point runs: it deletes files (else std::filesystem)
  const double* find_score(const std::string& path) const;

  ModelCheckpointOptions options_;
  int64_t every_n_train_steps_ = 0;
  int64_t every_n_epochs_ = 0;

  std::string dirpath_;
  bool fitting_ = false;
  bool validation_has_run_ = false;
  bool warned_missing_monitor_ = false;
  double last_time_checked_ = -1;
  int64_t last_global_step_saved_ = 0;  // no save before the first step, nor twice at one step

  std::vector<std::pair<std::string, double>> best_k_models_;
  std::string best_model_path_;
  std::optional<double> best_model_score_;
  std::optional<double> current_score_;
  std::string kth_best_model_path_;
  double kth_value_;
  std::string last_model_path_;
};

}  // namespace kiln::callbacks

namespace kiln {
using callbacks::ModelCheckpoint;  // also kiln::ModelCheckpoint; see progress_bar_callback.h for why the namespace
}  // namespace kiln
