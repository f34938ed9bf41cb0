// Trainer checkpoints: everything a bit-exact resume needs, in Kiln's native checkpoint format.
// Tensors: `state_dict.<name>` (the module) and `optimizer_states.<i>.<name>`. Metadata: loop
// progress, scheduler/callback/loader/precision states, logged-metric accumulators, RNG state,
// hyperparameters and the Kiln version. See docs/checkpoint-format.md for the file itself.
#include <cstdio>
#include <filesystem>

#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"
#include "tensor/generator.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/trainer.h"

#ifndef KILN_VERSION
#define KILN_VERSION "unknown"
#endif

namespace kiln {
namespace {

constexpr const char* kFormat = "kiln-trainer-checkpoint";

// The entries of `from` whose names start with `prefix`, with the prefix removed.
TensorDict with_prefix_removed(const TensorDict& from, const std::string& prefix) {
  TensorDict out;
  for (const auto& [name, t] : from)
    if (name.compare(0, prefix.size(), prefix) == 0) out.insert(name.substr(prefix.size()), t);
  return out;
}

const ModelCheckpoint* find_model_checkpoint(const std::vector<std::shared_ptr<Callback>>& callbacks) {
  for (const auto& cb : callbacks)
    if (auto* mc = dynamic_cast<const ModelCheckpoint*>(cb.get())) return mc;
  return nullptr;
}

Json generator_state(const Generator& g) { return {{"seed", g.state().seed}, {"offset", g.state().offset}}; }

}  // namespace

State Trainer::make_checkpoint() {
  // Between calls: the module the last call ran, as that call left it (see save_checkpoint).
  TrainModule* module = module_ ? module_ : last_module_;
  DataModule* datamodule = module_ ? datamodule_ : last_datamodule_;
  KILN_CHECK(module, "save_checkpoint: this Trainer has not run a module yet (call fit, validate, test or predict first)");
  State ckpt;
  for (const auto& [name, t] : module->state_dict()) ckpt.tensors.insert("state_dict." + name, t);
  Json& meta = ckpt.meta;
  meta["format"] = kFormat;
  meta["kiln_version"] = KILN_VERSION;
  meta["epoch"] = current_epoch();
  meta["global_step"] = global_step();
  meta["hyper_parameters"] = module->hparams();
  meta["optimizer_states"] = Json::array();
  meta["lr_schedulers"] = Json::array();
  for (size_t i = 0; i < optimizers_.size(); ++i) {
    State opt = plan_.strategy->optimizer_state(*optimizers_[i].optimizer);
    for (const auto& [name, t] : opt.tensors) ckpt.tensors.insert("optimizer_states." + std::to_string(i) + "." + name, t);
    meta["optimizer_states"].push_back(opt.meta);
    Json scheds = Json::array();
    for (const auto& sc : optimizers_[i].schedulers) scheds.push_back(sc.state_dict().meta);
    meta["lr_schedulers"].push_back(scheds);
  }
  // Note [Checkpoints between micro-batches]: inside an accumulation window the gradients summed so
  // far are part of the state; without them a resumed run would step on a partial sum.
  if (progress_.micro_batches_in_window > 0)
    for (const auto& [name, p] : module->named_parameters())
      if (p.grad().defined()) ckpt.tensors.insert("accumulated_grads." + name, p.grad());
  // Note [Checkpoints inside a batch's end] (fit_loop.cpp): where in the batch's end this was written.
  meta["loops"] = {{"fit", progress_.state_dict()},
                   {"batch_end", {{"batch_stepped", batch_stepped_}, {"in_tail", in_batch_tail_},
                                  {"validation_unlogged", validation_unlogged_}}}};
  meta["metrics"] = metrics_.state_dict();
  Json callbacks = Json::object();
  for (const auto& cb : callbacks_) callbacks[cb->state_key()] = cb->state_dict();
  meta["callbacks"] = callbacks;
  meta["loaders"] = Json::object();
  if (train_loader_) meta["loaders"]["train"] = train_loader_->state_dict();
  meta["world_size"] = plan_.strategy->world_size();
  if (datamodule) meta["datamodule"] = datamodule->state_dict();
  const Precision& precision = plan_.strategy->precision();
  meta["precision"] = {{"name", precision.name()}, {"state", precision.state_dict()}};
  meta["rng"] = {{"cpu", generator_state(default_generator())}};
  meta["elapsed_seconds"] = elapsed_seconds();
  meta["num_threads"] = fit_threads_;  // Note [Deterministic runs]
  module->on_save_checkpoint(ckpt);
  each_callback("on_save_checkpoint", [&](Callback& cb) { cb.on_save_checkpoint(*this, *module, ckpt); });
  return ckpt;
}

// Note [No logged row is lost]: the loggers write out what they buffer before the checkpoint is
// written, and the step values not yet sent are in the checkpoint (MetricStore), so a process that
// dies any time after this save leaves every row logged up to it on disk or in the checkpoint,
// which the resumed run sends first (Note [Checkpoints inside a batch's end], fit_loop.cpp). Rows
// logged after the save are logged again by the resumed run, into its own version folder.
//
// Note [Async checkpoints]
// async_checkpointing is Lightning's AsyncCheckpointIO plugin: during fit, save_checkpoint builds the
// checkpoint, copies its tensors (one more copy of the weights and optimizer state in memory) and
// leaves the writing to a background thread (io::AsyncSaver), so training goes on meanwhile. What
// keeps it as safe as a synchronous save:
// - one write is in flight at a time: the next save (and each ModelCheckpoint save point, so that
//   names see the files before them) waits for it first;
// - every file is written under a temporary name and renamed in place (io::save): a reader or a
//   crash sees the old complete file or the new one;
// - a file a save replaces (ModelCheckpoint's top-k and last) is deleted only after the new one is
//   in place, on the same thread, as Lightning 2.6 orders saves and removals; when the save fails,
//   the deletion is dropped, so the file it would have replaced stays;
// - a failed write raises at the next save, or when fit() ends, which waits for the last write
//   (also when fit ends by an exception or a signal: the checkpoint taken on SIGTERM is waited for
//   before the process exits).
// Between calls, and in validate/test/predict, saves are synchronous.
void Trainer::save_checkpoint(const std::string& path) {
  for (auto& logger : rank_zero_loggers()) logger->save();
  plan_.strategy->save_checkpoint(make_checkpoint(), path);
  if (stage_ != TrainerStage::fitting) wait_for_checkpoints();
}

void Trainer::wait_for_checkpoints() { plan_.strategy->checkpoint_io().wait(); }

// A fit ending by an exception or SIGINT reports a failed write on stderr: its own error is the one raised.
void Trainer::wait_for_checkpoints_quietly() {
  try {
    wait_for_checkpoints();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: a checkpoint write failed: %s\n", e.what());
  }
}

void Trainer::remove_checkpoint(const std::string& path) { plan_.strategy->remove_checkpoint(path); }

std::string Trainer::best_model_path() const {
  const ModelCheckpoint* mc = find_model_checkpoint(callbacks_);
  return mc ? mc->best_model_path() : "";
}

std::string Trainer::last_model_path() const {
  const ModelCheckpoint* mc = find_model_checkpoint(callbacks_);
  return mc ? mc->last_model_path() : "";
}

// Note [ckpt_path="last"]: "last" is the newest (by modification time, as Lightning picks) of the
// run's complete checkpoints that mark where it stopped: ModelCheckpoint's last*.ckpt files and the
// hpc_ckpt_N.ckpt files written on a signal in default_root_dir. Lightning looks only in the new
// process's checkpoint folder, which a logger places in a fresh version_N, so a restarted process
// would never find its own run; Kiln also looks in the same place under every other version folder
// of the logger (root/name/version_*/checkpoints when dirpath is left to the logger), so after
// SIGKILL, or after a finished run, "last" is where the run got to. Writes in progress are named
// *.tmp-N until their atomic rename, so a file found is complete. When there is none, Kiln warns
// and starts fresh, as Lightning does (a script can pass "last" from its very first run).
std::vector<std::string> Trainer::last_checkpoint_candidates() const {
  namespace fs = std::filesystem;
  std::vector<std::string> candidates;
  std::error_code ec;
  for (const auto& cb : callbacks_) {
    const auto* mc = dynamic_cast<const ModelCheckpoint*>(cb.get());
    if (!mc) continue;
    if (!mc->last_model_path().empty()) candidates.push_back(mc->last_model_path());
    for (const std::string& p : mc->find_last_checkpoints()) candidates.push_back(p);
    if (!mc->options().dirpath.empty() || loggers_.empty()) continue;
    const fs::path run = log_dir();
    const fs::path inside = fs::path(mc->dirpath()).lexically_relative(run);  // "checkpoints"
    if (inside.empty() || *inside.begin() == "..") continue;
    for (const auto& version : fs::directory_iterator(run.parent_path(), ec))
      if (version.is_directory(ec) && version.path() != run)
        for (const std::string& p : ModelCheckpoint::last_checkpoints_in((version.path() / inside).string()))
          candidates.push_back(p);
  }
  for (const auto& entry : fs::directory_iterator(config_.default_root_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("hpc_ckpt_", 0) == 0 && entry.path().extension() == ".ckpt") candidates.push_back(entry.path().string());
  }
  return candidates;
}

// "best" names the ModelCheckpoint's best file; "last" see Note [ckpt_path="last"]. Empty: none.
std::string Trainer::resolve_ckpt_path(const std::string& ckpt_path) const {
  namespace fs = std::filesystem;
  if (ckpt_path == "best") {
    const std::string best = best_model_path();
    KILN_CHECK(!best.empty(), "ckpt_path=\"best\": no best checkpoint is known (is a ModelCheckpoint with a monitor "
               "configured, and has it saved yet?)");
    return best;
  }
  if (ckpt_path != "last") return ckpt_path;
  std::string newest;
  fs::file_time_type newest_time{};
  std::error_code ec;
  for (const auto& c : last_checkpoint_candidates()) {
    const auto t = fs::last_write_time(c, ec);
    if (!ec && (newest.empty() || t > newest_time)) newest = c, newest_time = t;
  }
  if (newest.empty())
    std::fprintf(stderr, "warning: ckpt_path=\"last\" is set, but there is no last checkpoint available (no last*.ckpt "
                         "of this run's ModelCheckpoint in any version folder, no hpc_ckpt_*.ckpt in %s). No checkpoint "
                         "will be loaded. HINT: set ModelCheckpointOptions{.save_last = true}\n",
                 config_.default_root_dir.c_str());
  return newest;
}

// Note [Resuming with another number of processes]
// The loader's position is in batches of this process's share, so it carries over only to a run
// with the same number of processes. A checkpoint taken between epochs needs no position (the next
// epoch starts from its beginning on any number of processes: the model, optimizer and loop state
// are whole in the file); one taken mid-epoch is refused, naming both counts.
void Trainer::restore_train_loader(const Json& meta, const std::string& path) {
  const Json& state = meta["loaders"]["train"];
  const int saved_world = meta.value("world_size", 1);
  if (saved_world == plan_.strategy->world_size()) return train_loader_->load_state_dict(state);
  const int64_t consumed = state.value("batches_consumed", int64_t{0});
  const int64_t batches = state.value("num_batches", int64_t{0});
  KILN_CHECK(consumed == 0 || consumed == batches, "checkpoint ", path, ": written by ", saved_world,
             " process(es) in the middle of an epoch (", consumed, " of ", batches, " batches), and this run has ",
             plan_.strategy->world_size(), "; a mid-epoch checkpoint resumes with the same number of processes "
             "(one written at an epoch's end resumes with any)");
}

void Trainer::restore_checkpoint(const std::string& path) {
  const State ckpt = plan_.strategy->load_checkpoint(path);
  const Json& meta = ckpt.meta;
  KILN_CHECK(meta.value("format", "") == kFormat, "checkpoint ", path, ": not a Trainer checkpoint (format '",
             meta.value("format", std::string("?")), "', expected '", kFormat, "')");
  module_->load_state_dict(with_prefix_removed(ckpt.tensors, "state_dict."), true);
  if (stage_ != TrainerStage::fitting) return;  // validate/test/predict: weights only

  const Json& opt_states = meta.at("optimizer_states");
  KILN_CHECK(opt_states.size() == optimizers_.size(), "checkpoint ", path, ": holds ", opt_states.size(),
             " optimizer states but configure_optimizers() returned ", optimizers_.size());
  const Json& sched_states = meta.at("lr_schedulers");
  for (size_t i = 0; i < optimizers_.size(); ++i) {
    State opt;
    opt.tensors = with_prefix_removed(ckpt.tensors, "optimizer_states." + std::to_string(i) + ".");
    opt.meta = opt_states[i];
    plan_.strategy->load_optimizer_state(*optimizers_[i].optimizer, opt);
    KILN_CHECK(sched_states[i].size() == optimizers_[i].schedulers.size(), "checkpoint ", path, ": optimizer ", i,
               " has ", sched_states[i].size(), " saved schedulers but ", optimizers_[i].schedulers.size(), " are configured");
    for (size_t j = 0; j < optimizers_[i].schedulers.size(); ++j)
      optimizers_[i].schedulers[j].load_state_dict(State{{}, sched_states[i][j]});
  }
  progress_.load_state_dict(meta.at("loops").at("fit"));
  const TensorDict grads = with_prefix_removed(ckpt.tensors, "accumulated_grads.");
  for (auto& [name, p] : module_->named_parameters()) {
    Tensor param = p;
    const Tensor* g = grads.find(name);
    param.mutable_grad() = g ? g->clone() : Tensor();
  }
  // Written between a batch's processing and its completion: inside its end hooks.
  const bool in_batch_end = progress_.train_batches.total.processed > progress_.train_batches.total.completed;
  const Json batch_end = meta.at("loops").value("batch_end", Json::object());
  batch_stepped_ = batch_end.value("batch_stepped", false);
  resume_tail_ = in_batch_end                                    ? BatchTail::step_row
                 : batch_end.value("validation_unlogged", false) ? BatchTail::validation
                 : batch_end.value("in_tail", false)             ? BatchTail::after_validation
                                                                 : BatchTail::stop_checks;
  progress_.train_batches.settle_after_load();
  metrics_.load_state_dict(meta.at("metrics"));
  const Json& cb_states = meta.at("callbacks");
  for (auto& cb : callbacks_)
    if (cb_states.contains(cb->state_key())) cb->load_state_dict(cb_states[cb->state_key()]);
  if (train_loader_ && meta.at("loaders").contains("train")) restore_train_loader(meta, path);
  if (datamodule_ && meta.contains("datamodule")) datamodule_->load_state_dict(meta["datamodule"]);
  Precision& precision = plan_.strategy->precision();
  KILN_CHECK(meta.at("precision").at("name") == precision.name(), "checkpoint ", path, ": saved with precision '",
             meta["precision"]["name"].get<std::string>(), "' but this Trainer uses '", precision.name(), "'");
  precision.load_state_dict(meta["precision"]["state"]);
  const Json& rng = meta.at("rng").at("cpu");
  default_generator().set_state({rng.at("seed").get<uint64_t>(), rng.at("offset").get<uint64_t>()});
  restored_elapsed_ = meta.value("elapsed_seconds", 0.0);
  const int saved_threads = meta.value("num_threads", fit_threads_);
  if (config_.deterministic && saved_threads != fit_threads_)
    std::fprintf(stderr, "warning: Trainer(deterministic = true): checkpoint %s was written by a run with %d threads, "
                         "this one has %d; matmul and convolution results depend on the thread count, so the resumed "
                         "run will not be bitwise equal to an uninterrupted one (kiln::set_num_threads(%d) would)\n",
                 path.c_str(), saved_threads, fit_threads_, saved_threads);
  restored_ = true;
  module_->on_load_checkpoint(ckpt);
  each_callback("on_load_checkpoint", [&](Callback& cb) { cb.on_load_checkpoint(*this, *module_, ckpt); });
}

// ---- TrainModule::load_from_checkpoint (train_module.h)

State TrainModule::read_checkpoint_for_module(const std::string& path) {
  State checkpoint = io::load(path);
  KILN_CHECK(checkpoint.meta.value("format", "") == kFormat, "load_from_checkpoint: ", path, " is not a Trainer "
             "checkpoint (format '", checkpoint.meta.value("format", std::string("?")), "', expected '", kFormat,
             "'); a bare state dict loads with io::load and module.load_state_dict");
  return checkpoint;
}

Json TrainModule::checkpoint_hparams(const State& checkpoint, const CheckpointLoadOptions& options,
                                     const std::string& path) {
  Json hparams = checkpoint.meta.value("hyper_parameters", Json::object());
  KILN_CHECK(hparams.is_object(), "load_from_checkpoint: ", path, ": hyper_parameters is not an object but ",
             hparams.type_name());
  KILN_CHECK(options.hparams.is_object(), "load_from_checkpoint: options.hparams must be a JSON object, got ",
             options.hparams.type_name());
  hparams.update(options.hparams);  // by name, as Lightning's **kwargs
  return hparams;
}

void TrainModule::load_checkpoint_into(TrainModule& module, const State& checkpoint,
                                       const CheckpointLoadOptions& options, const std::string& path) {
  module.on_load_checkpoint(checkpoint);
  nn::LoadResult keys;
  try {
    keys = module.load_state_dict(with_prefix_removed(checkpoint.tensors, "state_dict."), options.strict);
  } catch (const Error& e) {
    throw Error("load_from_checkpoint(" + path + "): " + e.what());
  }
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
    return "[" + out + "]";
  };
  if (!keys.missing_keys.empty())
    std::fprintf(stderr, "warning: load_from_checkpoint(%s): Found keys that are in the model state dict but not in "
                         "the checkpoint: %s\n", path.c_str(), list(keys.missing_keys).c_str());
  if (!keys.unexpected_keys.empty())
    std::fprintf(stderr, "warning: load_from_checkpoint(%s): Found keys that are not in the model state dict but in "
                         "the checkpoint: %s\n", path.c_str(), list(keys.unexpected_keys).c_str());
  if (options.map_location) module.to(*options.map_location);
}

}  // namespace kiln
