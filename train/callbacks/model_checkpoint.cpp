// ModelCheckpoint (see model_checkpoint.h): when to save, under which name, which files to keep.
// Each step follows Lightning 2.x's callback of the same behaviour; its private method names are
// noted where they differ.
#include "train/callbacks/model_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "tensor/error.h"
#include "train/trainer.h"

namespace kiln::callbacks {

namespace fs = std::filesystem;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool is_better(double a, double b, const std::string& mode) { return mode == "min" ? a < b : a > b; }

std::string python_str_or_none(const std::string& s) { return s.empty() ? "None" : "'" + s + "'"; }

// Lightning's _format_checkpoint_name: "{name}" or "{name:spec}" becomes the metric's value
// (prefixed by "name=" when auto_insert); a name not among the metrics formats as the integer 0.
std::string fill_template(const std::string& tmpl, const Metrics& metrics, bool auto_insert) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] != '{') {
      out += tmpl[i++];
      continue;
    }
    const size_t close = tmpl.find('}', i);
    KILN_CHECK(close != std::string::npos, "ModelCheckpoint: filename '", tmpl, "' has a '{' without its '}'");
    const std::string field = tmpl.substr(i + 1, close - i - 1);
    const size_t colon = field.find(':');
    const std::string name = field.substr(0, colon);
    const std::string spec = colon == std::string::npos ? "" : field.substr(colon + 1);
    const auto it = metrics.find(name);
    const bool is_integer = it == metrics.end() || name == "epoch" || name == "step";
    if (auto_insert) out += name + "=";
    out += python_format(it == metrics.end() ? 0.0 : it->second, spec, is_integer);
    i = close + 1;
  }
  return out;
}

}  // namespace

ModelCheckpoint::ModelCheckpoint(ModelCheckpointOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  KILN_CHECK(o.mode == "min" || o.mode == "max", "ModelCheckpoint: mode can be 'min' or 'max', got '", o.mode, "'");
  KILN_CHECK(o.save_top_k >= -1, "ModelCheckpoint: invalid save_top_k=", o.save_top_k, " (must be >= -1)");
  KILN_CHECK(o.every_n_train_steps.value_or(0) >= 0, "ModelCheckpoint: invalid every_n_train_steps=",
             *o.every_n_train_steps, " (must be >= 0)");
  KILN_CHECK(o.every_n_epochs.value_or(0) >= 0, "ModelCheckpoint: invalid every_n_epochs=", *o.every_n_epochs,
             " (must be >= 0)");
  KILN_CHECK(o.train_time_interval_seconds.value_or(1) > 0, "ModelCheckpoint: invalid train_time_interval_seconds=",
             *o.train_time_interval_seconds, " (must be > 0)");
  if (!o.every_n_train_steps && !o.every_n_epochs && !o.train_time_interval_seconds) {
    every_n_epochs_ = 1;
  } else {
    every_n_epochs_ = o.every_n_epochs.value_or(0);
    every_n_train_steps_ = o.every_n_train_steps.value_or(0);
  }
  const int triggers = (every_n_train_steps_ >= 1) + (every_n_epochs_ >= 1) + o.train_time_interval_seconds.has_value();
  KILN_CHECK(triggers <= 1, "ModelCheckpoint: every_n_train_steps=", every_n_train_steps_,
             ", every_n_epochs=", every_n_epochs_, " and train_time_interval_seconds should be mutually exclusive");
  KILN_CHECK(!o.monitor.empty() || o.save_top_k == -1 || o.save_top_k == 0 || o.save_top_k == 1,
             "ModelCheckpoint: save_top_k=", o.save_top_k, " without a monitor is not a valid configuration "
             "(no quantity for top_k to track): set monitor, or save_top_k to -1, 0 or 1");
  kth_value_ = o.mode == "min" ? kInf : -kInf;
  dirpath_ = o.dirpath;
}

std::string ModelCheckpoint::state_key() const {
  std::string interval = "None";
  if (options_.train_time_interval_seconds) interval = python_float_repr(*options_.train_time_interval_seconds);
  return "ModelCheckpoint{'monitor': " + python_str_or_none(options_.monitor) + ", 'mode': '" + options_.mode +
         "', 'every_n_train_steps': " + std::to_string(every_n_train_steps_) +
         ", 'every_n_epochs': " + std::to_string(every_n_epochs_) + ", 'train_time_interval': " + interval + "}";
}

// ---- hooks

void ModelCheckpoint::setup(Trainer& trainer, TrainModule&, const std::string& stage) {
  fitting_ = stage == "fit";
  validation_has_run_ = false;
  if (dirpath_.empty()) dirpath_ = (fs::path(trainer.log_dir()) / "checkpoints").string();
  std::error_code ec;
  if (fitting_ && options_.save_top_k != 0 && trainer.is_global_zero() && fs::is_directory(dirpath_, ec) &&
      !fs::is_empty(dirpath_, ec))
    std::fprintf(stderr, "ModelCheckpoint: checkpoint directory %s exists and is not empty.\n", dirpath_.c_str());
}

void ModelCheckpoint::on_train_start(Trainer&, TrainModule&) { last_time_checked_ = monotonic_seconds(); }

void ModelCheckpoint::on_train_batch_end(Trainer& trainer, TrainModule&, const StepOutput&, const data::Batch&,
                                         int64_t) {
  if (should_skip_saving(trainer)) return;
  const bool skip_batch = every_n_train_steps_ < 1 || trainer.global_step() % every_n_train_steps_ != 0;
  bool skip_time = true;
  const double now = monotonic_seconds();
  if (options_.train_time_interval_seconds)
    skip_time = last_time_checked_ < 0 || now - last_time_checked_ < *options_.train_time_interval_seconds;
  if (skip_batch && skip_time) return;
  if (!skip_time) last_time_checked_ = now;
  save_point(trainer, true);
}

void ModelCheckpoint::on_train_epoch_end(Trainer& trainer, TrainModule&) {
  if (!should_skip_saving(trainer) && should_save_on_train_epoch_end(trainer)) save_epoch_point(trainer);
}

void ModelCheckpoint::on_validation_end(Trainer& trainer, TrainModule&) {
  if (trainer.sanity_checking()) return;
  validation_has_run_ = true;
  if (!should_skip_saving(trainer) && !should_save_on_train_epoch_end(trainer)) save_epoch_point(trainer);
}

void ModelCheckpoint::save_epoch_point(Trainer& trainer) { save_point(trainer, epoch_trigger_due(trainer)); }

// A save point of a fit. A write still in flight (Note [Async checkpoints], checkpointing.cpp) is
// waited for first, so that names are chosen against the files on disk, and files dropping out are
// deleted by the Trainer, after the writes that replace them.
void ModelCheckpoint::save_point(Trainer& trainer, bool topk) {
  trainer.wait_for_checkpoints();
  struct Scope {
    ModelCheckpoint& mc;
    ~Scope() { mc.saving_for_ = nullptr; }
  } scope{*this};
  saving_for_ = &trainer;
  const Metrics candidates = monitor_candidates(trainer);
  const CheckpointWriter write = [&trainer](const std::string& path) { trainer.save_checkpoint(path); };
  if (topk) save_topk(candidates, write, validation_has_run_);
  save_last(candidates, write);
}

bool ModelCheckpoint::epoch_trigger_due(const Trainer& trainer) const {
  return every_n_epochs_ >= 1 && (trainer.current_epoch() + 1) % every_n_epochs_ == 0;
}

bool ModelCheckpoint::should_skip_saving(const Trainer& trainer) const {
  return trainer.config().fast_dev_run > 0 || !fitting_ || trainer.sanity_checking() ||
         last_global_step_saved_ == trainer.global_step();
}

bool ModelCheckpoint::should_save_on_train_epoch_end(const Trainer& trainer) const {
  if (options_.save_on_train_epoch_end) return *options_.save_on_train_epoch_end;
  // With check_val_every_n_epoch != 1 one cannot tell which epochs validate: save after validation.
  if (trainer.config().check_val_every_n_epoch != 1) return false;
  if (trainer.num_val_batches() == 0) return true;
  return validates_once_per_epoch(trainer);
}

Metrics ModelCheckpoint::monitor_candidates(const Trainer& trainer) const {
  Metrics candidates = trainer.callback_metrics();
  // A logged "epoch" or "step" wins (as an integer); otherwise the trainer's counters.
  auto as_integer = [&](const char* key, int64_t fallback) {
    auto it = candidates.find(key);
    candidates[key] = it != candidates.end() ? std::trunc(it->second) : static_cast<double>(fallback);
  };
  as_integer("epoch", trainer.current_epoch());
  as_integer("step", trainer.global_step());
  return candidates;
}

// ---- names

std::string ModelCheckpoint::format_checkpoint_name(const Metrics& candidates, const std::string& filename,
                                                    std::optional<int64_t> version) const {
  std::string tmpl = filename.empty() ? options_.filename : filename;
  if (tmpl.empty()) tmpl = "{epoch}-{step}";
  std::string name = fill_template(tmpl, candidates, options_.auto_insert_metric_name);
  if (version) name += "-v" + std::to_string(*version);
  name += kFileExtension;
  return dirpath_.empty() ? name : (fs::path(dirpath_) / name).string();
}

// Lightning's _get_metric_interpolated_filepath_name (and the loop in _save_last_checkpoint): a name
// already on disk gets -v1, -v2... unless it is `allowed` (the file about to be replaced).
std::string ModelCheckpoint::unused_name(const Metrics& candidates, const std::string& filename,
                                         const std::string& allowed) const {
  std::string path = format_checkpoint_name(candidates, filename);
  if (!options_.enable_version_counter) return path;
  std::error_code ec;
  for (int64_t version = 1; fs::exists(path, ec) && path != allowed; ++version)
    path = format_checkpoint_name(candidates, filename, version);
  return path;
}

// ---- saving

void ModelCheckpoint::save_topk(const Metrics& candidates, const CheckpointWriter& write, bool validation_has_run) {
  if (options_.save_top_k == 0) return;
  if (options_.monitor.empty()) {
    save_without_monitor(candidates, write);
    return;
  }
  const auto it = candidates.find(options_.monitor);
  if (it == candidates.end()) {
    const std::string message = "ModelCheckpoint(monitor='" + options_.monitor +
                                "') could not find the monitored key in the returned metrics: " +
                                python_key_list(candidates) + ". HINT: Did you call log('" + options_.monitor +
                                "', value) in the TrainModule?";
    KILN_CHECK(!validation_has_run, message);
    if (!warned_missing_monitor_) std::fprintf(stderr, "warning: %s\n", message.c_str());
    warned_missing_monitor_ = true;
    return;
  }
  const double current = it->second;
  // Every process keeps the same top k (Lightning's reduce_boolean_decision); their file names and
  // scores agree when the monitored value is logged with sync_dist.
  bool better = check_monitor_top_k(current);
  if (saving_for_) better = saving_for_->strategy().reduce_boolean_decision(better);
  if (better) {
    update_best_and_save(current, candidates, write);
  } else if (options_.verbose) {
    std::printf("Epoch %lld, global step %lld: '%s' was not in top %lld\n",
                static_cast<long long>(candidates.at("epoch")), static_cast<long long>(candidates.at("step")),
                options_.monitor.c_str(), static_cast<long long>(options_.save_top_k));
  }
}

bool ModelCheckpoint::check_monitor_top_k(std::optional<double> current) const {
  if (!current) return false;
  if (options_.save_top_k == -1) return true;
  if (static_cast<int64_t>(best_k_models_.size()) < options_.save_top_k) return true;
  // A NaN current compares false: it never displaces a kept file.
  const double* kth = find_score(kth_best_model_path_);
  return is_better(*current, kth ? *kth : kth_value_, options_.mode);
}

const double* ModelCheckpoint::find_score(const std::string& path) const {
  for (const auto& [p, score] : best_k_models_)
    if (p == path) return &score;
  return nullptr;
}

void ModelCheckpoint::update_best_and_save(double current, const Metrics& candidates, const CheckpointWriter& write) {
  const int64_t kept = static_cast<int64_t>(best_k_models_.size());
  const int64_t k = options_.save_top_k == -1 ? kept + 1 : options_.save_top_k;
  std::string del_filepath;
  if (kept == k && k > 0) {
    del_filepath = kth_best_model_path_;
    std::erase_if(best_k_models_, [&](const auto& item) { return item.first == del_filepath; });
  }
  // A NaN score is kept as the worst possible value, so it is the first to go.
  if (std::isnan(current)) current = options_.mode == "min" ? kInf : -kInf;
  const std::string filepath = unused_name(candidates, "", del_filepath);
  current_score_ = current;
  const auto same = std::find_if(best_k_models_.begin(), best_k_models_.end(),
                                 [&](const auto& item) { return item.first == filepath; });
  if (same != best_k_models_.end()) same->second = current;
  else best_k_models_.emplace_back(filepath, current);

  // Python's min()/max() over the dict keep the first of equal scores: strict comparisons below.
  if (static_cast<int64_t>(best_k_models_.size()) == k) {
    const auto* worst = &best_k_models_[0];
    for (const auto& item : best_k_models_)
      if (is_better(worst->second, item.second, options_.mode)) worst = &item;
    kth_best_model_path_ = worst->first;
    kth_value_ = worst->second;
  }
  const auto* best = &best_k_models_[0];
  for (const auto& item : best_k_models_)
    if (is_better(item.second, best->second, options_.mode)) best = &item;
  best_model_path_ = best->first;
  best_model_score_ = best->second;

  const int64_t epoch = static_cast<int64_t>(candidates.at("epoch")), step = static_cast<int64_t>(candidates.at("step"));
  if (options_.verbose)
    std::printf("Epoch %lld, global step %lld: '%s' reached %0.5f (best %0.5f), saving model to '%s' as top %lld\n",
                static_cast<long long>(epoch), static_cast<long long>(step), options_.monitor.c_str(), current,
                *best_model_score_, filepath.c_str(), static_cast<long long>(k));
  write_checkpoint(filepath, step, write);
  if (!del_filepath.empty() && should_remove(del_filepath, filepath)) remove_checkpoint(del_filepath);
}

void ModelCheckpoint::save_without_monitor(const Metrics& candidates, const CheckpointWriter& write) {
  const std::string filepath = unused_name(candidates, "", best_model_path_);
  // Set before writing: the path is part of the state saved in the file.
  const std::string previous = std::exchange(best_model_path_, filepath);
  write_checkpoint(filepath, static_cast<int64_t>(candidates.at("step")), write);
  if (options_.save_top_k == 1 && !previous.empty() && should_remove(previous, filepath)) remove_checkpoint(previous);
}

void ModelCheckpoint::save_last(const Metrics& candidates, const CheckpointWriter& write) {
  if (!options_.save_last) return;
  const std::string filepath = unused_name(candidates, kNameLast, last_model_path_);
  const std::string previous = std::exchange(last_model_path_, filepath);
  write_checkpoint(filepath, static_cast<int64_t>(candidates.at("step")), write);
  if (!previous.empty() && should_remove(previous, filepath)) remove_checkpoint(previous);
}

// Set before writing: the file holds it, so a run resumed from this step does not save the step
// again on its next micro-batch (inside the accumulation window global_step does not move).
void ModelCheckpoint::write_checkpoint(const std::string& path, int64_t step, const CheckpointWriter& write) {
  last_global_step_saved_ = step;
  write(path);
}

// Only files inside dirpath are ever deleted (a checkpoint resumed from elsewhere is the user's).
bool ModelCheckpoint::should_remove(const std::string& previous, const std::string& current) const {
  if (previous == current || dirpath_.empty()) return false;
  const fs::path dir = fs::absolute(dirpath_).lexically_normal();
  const fs::path file = fs::absolute(previous).lexically_normal();
  const auto [dir_end, file_it] = std::mismatch(dir.begin(), dir.end(), file.begin(), file.end());
  return dir_end == dir.end() && file_it != file.end();
}

void ModelCheckpoint::remove_checkpoint(const std::string& path) const {
  if (saving_for_) return saving_for_->remove_checkpoint(path);
  std::error_code ec;
  fs::remove(path, ec);
}

std::vector<std::string> ModelCheckpoint::find_last_checkpoints() const { return last_checkpoints_in(dirpath_); }

// Only finished files: a write in progress is named <path>.tmp-<n> until its atomic rename.
std::vector<std::string> ModelCheckpoint::last_checkpoints_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file(ec) && name.find(kNameLast) != std::string::npos && entry.path().extension() == kFileExtension)
      out.push_back(entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ---- state

Json ModelCheckpoint::state_dict() const {
  Json kept = Json::array();
  for (const auto& [path, score] : best_k_models_) kept.push_back({path, score_to_json(score)});
  return {
      {"monitor", options_.monitor},
      {"best_model_score", best_model_score_ ? score_to_json(*best_model_score_) : Json()},
      {"best_model_path", best_model_path_},
      {"current_score", current_score_ ? score_to_json(*current_score_) : Json()},
      {"dirpath", dirpath_},
      {"best_k_models", kept},
      {"kth_best_model_path", kth_best_model_path_},
      {"kth_value", score_to_json(kth_value_)},
      {"last_model_path", last_model_path_},
      {"last_global_step_saved", last_global_step_saved_},  // Kiln's addition, see write_checkpoint
  };
}

// Kiln's addition to Lightning's rule below: a resumed run whose logger started a new version
// folder (R/version_1/checkpoints after R/version_0/checkpoints, dirpath left to the logger) is
// the same run, so it keeps its best scores and kept files. The files stay where they are: only
// files inside dirpath are ever deleted (should_remove), so the older folder is never touched.
bool ModelCheckpoint::same_run_other_version(const std::string& saved_dir) const {
  if (!options_.dirpath.empty() || saved_dir.empty() || dirpath_.empty()) return false;
  const fs::path saved = fs::path(saved_dir).lexically_normal(), now = fs::path(dirpath_).lexically_normal();
  return saved.filename() == now.filename() && saved.parent_path().parent_path() == now.parent_path().parent_path() &&
         saved.parent_path().filename().string().rfind("version_", 0) == 0 &&
         now.parent_path().filename().string().rfind("version_", 0) == 0;
}

void ModelCheckpoint::load_state_dict(const Json& state) {
  KILN_CHECK(state.is_object() && state.contains("best_model_path"),
             "ModelCheckpoint.load_state_dict: expected an object with 'best_model_path', got ", state.dump());
  const std::string saved_dir = state.value("dirpath", dirpath_);
  if (saved_dir == dirpath_ || same_run_other_version(saved_dir)) {
    const Json& best = state.at("best_model_score");
    best_model_score_ = best.is_null() ? std::nullopt : std::optional(score_from_json(best, "best_model_score"));
    kth_best_model_path_ = state.value("kth_best_model_path", kth_best_model_path_);
    if (state.contains("kth_value")) kth_value_ = score_from_json(state["kth_value"], "kth_value");
    if (state.contains("best_k_models")) {
      std::vector<std::pair<std::string, double>> kept;
      for (const Json& item : state["best_k_models"]) {
        KILN_CHECK(item.is_array() && item.size() == 2 && item[0].is_string(),
                   "ModelCheckpoint.load_state_dict: best_k_models entries are [path, score], got ", item.dump());
        kept.emplace_back(item[0].get<std::string>(), score_from_json(item[1], "best_k_models score"));
      }
      best_k_models_ = std::move(kept);
    }
    last_model_path_ = state.value("last_model_path", last_model_path_);
  } else {
    std::fprintf(stderr,
                 "warning: ModelCheckpoint: the dirpath has changed from '%s' to '%s', therefore best_model_score, "
                 "kth_best_model_path, kth_value, last_model_path and best_k_models won't be reloaded. Only "
                 "best_model_path will be reloaded.\n",
                 saved_dir.c_str(), dirpath_.c_str());
  }
  best_model_path_ = state.at("best_model_path").get<std::string>();
  // The run's progress, not its files: restored whatever the dirpath.
  last_global_step_saved_ = state.value("last_global_step_saved", last_global_step_saved_);
}

}  // namespace kiln::callbacks
