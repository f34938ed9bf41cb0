// Trainer: construction, the fit/validate/test/predict entry points, logging and signals.
// The loops themselves are in fit_loop.cpp and evaluation_loop.cpp; checkpoints in checkpointing.cpp.
#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "autograd/grad_mode.h"
#include "tensor/parallel.h"
#include "train/callbacks/defaults.h"
#include "train/loggers/csv_logger.h"

namespace kiln {

// Note [Signals stop at a step boundary]: the handlers only record the signal; the loops look at
// it between steps (check_signals), where the state is consistent and a checkpoint is exact.
struct Trainer::SignalState {
  static inline std::atomic<int> received{0};
  struct sigaction previous_term {}, previous_usr1 {}, previous_int {};

  static void on_signal(int sig) {
    // SIGINT a second time while we wind down: give up at once, as a user expects.
    if (sig == SIGINT && received.load() == SIGINT) std::_Exit(130);
    received.store(sig);
  }
  SignalState() {
    received.store(0);
    struct sigaction sa {};
    sa.sa_handler = &SignalState::on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &previous_term);
    sigaction(SIGUSR1, &sa, &previous_usr1);
    sigaction(SIGINT, &sa, &previous_int);
  }
  ~SignalState() {
    sigaction(SIGTERM, &previous_term, nullptr);
    sigaction(SIGUSR1, &previous_usr1, nullptr);
    sigaction(SIGINT, &previous_int, nullptr);
  }
};

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// `loader` names the loader ("train", "val", ...) in Lightning's message for a fraction below one batch.
int64_t apply_limit(const BatchLimit& limit, int64_t available, const char* loader) {
  if (const auto* n = std::get_if<int64_t>(&limit)) return std::min(available, *n);
  const double fraction = std::get<double>(limit);
  const auto batches = static_cast<int64_t>(static_cast<double>(available) * fraction);
  KILN_CHECK(batches > 0 || fraction == 0 || available == 0, "Trainer: limit_", loader, "_batches = ", fraction,
             " of the ", loader, " loader's ", available, " batches is less than one batch; use at least ",
             1.0 / static_cast<double>(available), " (or an integer number of batches)");
  return batches;
}
}  // namespace

Trainer::Trainer(TrainerConfig config) : config_(std::move(config)), plan_(resolve_plan(config_)) {
  if (config_.fast_dev_run > 0) {  // what Lightning's fast_dev_run also sets
    config_.val_check_interval = 1.0;
    config_.check_val_every_n_epoch = 1;
    config_.num_sanity_val_steps = 0;
    config_.max_steps = config_.fast_dev_run;
  }
  callbacks_ = default_callbacks(config_, config_.callbacks);
  if (const auto* name = std::get_if<std::string>(&config_.profiler)) {
    KILN_CHECK(name->empty() || *name == "simple", "Trainer: profiler '", *name, "' is not one of: simple (or pass "
               "a Profiler object, e.g. std::make_shared<SimpleProfiler>(SimpleProfilerOptions{...}))");
    if (*name == "simple") profiler_ = std::make_shared<SimpleProfiler>();
  } else {
    profiler_ = std::get<std::shared_ptr<Profiler>>(config_.profiler);
  }
  for (const auto& cb : callbacks_) callback_actions_.push_back("[Callback]" + cb->state_key());
  const bool want_loggers = config_.logger.value_or(true) && config_.fast_dev_run == 0;
  if (want_loggers) {
    loggers_ = config_.loggers;
    if (loggers_.empty()) loggers_.push_back(std::make_shared<CSVLogger>(CSVLoggerOptions{.root_dir = config_.default_root_dir}));
  } else {
    KILN_CHECK(config_.loggers.empty() || config_.fast_dev_run > 0, "Trainer: logger = false but ",
               config_.loggers.size(), " loggers were given");
  }
}

Trainer::~Trainer() = default;

double Trainer::elapsed_seconds() const { return restored_elapsed_ + (start_time_ > 0 ? now_seconds() - start_time_ : 0); }

// A checkpoint saved after fit() returns records the fit's training time, not the time since.
void Trainer::stop_clock() {
  restored_elapsed_ = elapsed_seconds();
  start_time_ = 0;
}

int64_t Trainer::limit_batches(const BatchLimit& limit, int64_t available, const char* loader) const {
  if (config_.fast_dev_run > 0) return std::min(available, config_.fast_dev_run);
  return apply_limit(limit, available, loader);
}

bool Trainer::overfitting() const {
  if (const auto* n = std::get_if<int64_t>(&config_.overfit_batches)) return *n > 0;
  return std::get<double>(config_.overfit_batches) > 0;
}

// Lightning 2.x: overfit_batches replaces limit_train_batches and limit_val_batches (even under
// fast_dev_run); validation still reads the validation loader.
int64_t Trainer::train_batch_limit(int64_t available) const {
  return overfitting() ? apply_limit(config_.overfit_batches, available, "train")
                       : limit_batches(config_.limit_train_batches, available, "train");
}
int64_t Trainer::val_batch_limit(int64_t available) const {
  return overfitting() ? apply_limit(config_.overfit_batches, available, "val")
                       : limit_batches(config_.limit_val_batches, available, "val");
}

// Note [Deterministic runs]: Kiln's own kernels give the same bits whatever the thread count
// (fixed chunking, counter-based random streams, ordered reductions), and the DataLoader gives the
// same batches whatever num_workers. oneDNN (f32 matmul, convolution, pooling) is deterministic only
// for a fixed thread count, so deterministic = true records the count at fit start, refuses a change
// during fit, and warns when a checkpoint was written with another count or OMP_DYNAMIC may vary it.
// deterministic = "warn" warns about the change too, once per fit, instead of refusing it (Lightning's
// warn_only). Seeding stays the user's job (seed_everything), as in Lightning.
void Trainer::record_thread_count() {
  fit_threads_ = get_num_threads();
  thread_change_warned_ = false;
  if (!config_.deterministic) return;
  const std::string dynamic = std::getenv("OMP_DYNAMIC") ? std::getenv("OMP_DYNAMIC") : "";
  if (!dynamic.empty() && dynamic != "false" && dynamic != "FALSE" && dynamic != "0")
    std::fprintf(stderr, "warning: Trainer(deterministic = true): OMP_DYNAMIC=%s lets OpenMP change the thread count "
                         "between calls, which changes matmul and convolution results; unset it\n", dynamic.c_str());
}

void Trainer::check_thread_count() {
  if (!config_.deterministic) return;
  const int now = get_num_threads();
  if (now != fit_threads_ && config_.deterministic.warn_only()) {
    if (!thread_change_warned_)
      std::fprintf(stderr, "warning: Trainer(deterministic = \"warn\"): the thread count changed from %d to %d during "
                           "fit; matmul and convolution results depend on it, so this run is not bitwise reproducible\n",
                   fit_threads_, now);
    thread_change_warned_ = true;
    return;
  }
  KILN_CHECK(now == fit_threads_, "Trainer(deterministic = true): the thread count changed from ", fit_threads_, " to ",
             now, " during fit; matmul and convolution results depend on it, so the run would not be bitwise "
             "reproducible. Call kiln::set_num_threads() before fit(), not during it");
}

void Trainer::attach(TrainModule& module) {
  KILN_CHECK(!module.trainer_ || module.trainer_ == this, "Trainer: the module is attached to another Trainer that is running");
  module.trainer_ = this;
  // The optimizers of the last fit belong to its module; a call with another module drops them so
  // that a later save_checkpoint cannot pair them with the wrong parameters.
  if (last_module_ != &module) optimizers_.clear();
  module_ = last_module_ = &module;
  last_datamodule_ = nullptr;
}

void Trainer::detach() {
  if (module_) module_->trainer_ = nullptr;
  last_datamodule_ = datamodule_;
  module_ = nullptr;
  datamodule_ = nullptr;
  stage_ = TrainerStage::none;
}

// ---- logging

void Trainer::log_from_module(const std::string& name, double value, const LogOptions& options) {
  KILN_CHECK(stage_ != TrainerStage::none, "log('", name, "'): the module is not being run by a Trainer");
  if (stage_ == TrainerStage::predicting) return;
  const int64_t batch_size = options.batch_size.value_or(current_batch_size_);
  metrics_.log(log_scope_, name, value, options, batch_size);
}

void Trainer::send_to_loggers(const std::map<std::string, double>& metrics, int64_t step) {
  if (metrics.empty() || stage_ == TrainerStage::sanity_checking) return;
  std::map<std::string, double> row = metrics;
  if (stage_ == TrainerStage::fitting || stage_ == TrainerStage::validating) row["epoch"] = static_cast<double>(current_epoch());
  for (auto& logger : rank_zero_loggers()) logger->log_metrics(row, step);
}

void Trainer::log_step_metrics() {
  std::map<std::string, double> step_metrics = metrics_.take_step_logger_metrics();
  const int64_t n = config_.log_every_n_steps;
  // Lightning: a batch that ended an accumulation window (every batch under manual optimization)
  // logs when its step is the n-th counting from 1, or once a stop was requested.
  const int64_t step = logging_step();
  if (batch_stepped_ && n > 0 && ((step + 1) % n == 0 || should_stop)) send_to_loggers(step_metrics, step);
}

void Trainer::manual_backward(const Tensor& loss) {
  KILN_CHECK(module_ && !module_->automatic_optimization, "manual_backward: only with automatic_optimization = false");
  each_callback("on_before_backward", [&](Callback& cb) { cb.on_before_backward(*this, *module_, loss); });
  module_->on_before_backward(loss);
  {
    const ProfileScope timed(profiler_.get(), actions_.backward);
    plan_.strategy->backward(loss);
  }
  each_callback("on_after_backward", [&](Callback& cb) { cb.on_after_backward(*this, *module_); });
  module_->on_after_backward();
}

// Lightning's action names, with Kiln's strategy name and the module's type name.
void Trainer::start_profiler(const std::string& stage) {
  if (!profiler_) return;
  const std::string strategy = "[Strategy]" + plan_.strategy->name() + ".";
  actions_ = {strategy + "batch_to_device", strategy + "training_step", strategy + "backward",
              "[TrainModule]" + module_->type_name() + ".optimizer_step", strategy + "validation_step",
              strategy + "test_step", strategy + "predict_step"};
  profiler_->setup(stage, log_dir());
}

// Lightning's order for every stage's batches: the precision's conversion, then the module's
// on_before_batch_transfer, transfer_batch_to_device (to the strategy's device), on_after_batch_transfer.
data::Batch Trainer::transfer_batch(const data::Batch& raw) {
  TrainModule& module = *module_;
  const ProfileScope timed(profiler_.get(), actions_.batch_to_device);
  data::Batch batch = module.on_before_batch_transfer(plan_.strategy->precision().convert_batch(raw), 0);
  batch = module.transfer_batch_to_device(std::move(batch), plan_.strategy->root_device(), 0);
  return module.on_after_batch_transfer(std::move(batch), 0);
}

// ---- signals

void Trainer::check_signals() {
  if (!signals_) return;
  const int sig = SignalState::received.load();
  if (sig == 0) return;
  if (sig == SIGINT) throw RunInterrupted{sig};
  handle_stop_signal(sig);
}

// SIGTERM (preemption) and SIGUSR1 (SLURM's warning before the time limit): save where we are,
// requeue the job when SLURM runs us, flush the loggers, and exit with a status the scheduler
// can act on: 0 after a successful requeue, else 128 + the signal, as if the signal had killed us.
void Trainer::handle_stop_signal(int sig) {
  namespace fs = std::filesystem;
  const fs::path dir = config_.default_root_dir;
  fs::create_directories(dir);
  int64_t n = 1;
  while (fs::exists(dir / ("hpc_ckpt_" + std::to_string(n) + ".ckpt"))) ++n;
  const std::string path = (dir / ("hpc_ckpt_" + std::to_string(n) + ".ckpt")).string();
  save_checkpoint(path);
  wait_for_checkpoints();  // Note [Async checkpoints]: in place before the process exits
  std::fprintf(stderr, "kiln: received signal %d; saved %s\n", sig, path.c_str());
  int status = 128 + sig;
  if (const char* job = std::getenv("SLURM_JOB_ID"); job && sig == SIGUSR1) {
    const std::string cmd = std::string("scontrol requeue ") + job;
    const int rc = std::system(cmd.c_str());
    std::fprintf(stderr, "kiln: %s -> %s\n", cmd.c_str(), rc == 0 ? "requeued" : "requeue failed");
    if (rc == 0) status = 0;
  }
  for (auto& logger : rank_zero_loggers()) logger->finalize("interrupted");
  throw RunStopped{status};  // exiting here would leave the loader's threads running through exit
}

// ---- entry points

void Trainer::fit(TrainModule& module, DataModule& data, const std::string& ckpt_path) {
  run_fit(module, &data, {}, ckpt_path);
}
void Trainer::fit(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path) {
  run_fit(module, nullptr, loaders, ckpt_path);
}

// The batch counts of a fit, after Lightning's rules for the limits, overfit_batches and val_check_interval.
void Trainer::setup_fit_data() {
  KILN_CHECK(train_loader_, "fit: no training data: pass Loaders{.train = ...} or a DataModule whose "
             "train_dataloader() returns a loader");
  KILN_CHECK(train_loader_->size() >= 0, "fit: the training loader has no length (an IterableDataset); "
             "Kiln's Trainer needs a sized loader for now");
  // Lightning turns the train loader's shuffling off when overfitting, so every epoch trains on the
  // data set's first batches: the loader is rebuilt over the same data set, sequentially.
  const data::DataLoaderOptions& options = train_loader_->options();
  const bool sequential = options.sampler ? dynamic_cast<const data::SequentialSampler*>(options.sampler.get()) != nullptr
                                          : !options.shuffle;
  if (overfitting() && !sequential) {
    std::fprintf(stderr, "warning: Trainer: you requested to overfit but enabled train dataloader shuffling; "
                         "turning off the train dataloader shuffling for you\n");
    data::DataLoaderOptions in_order = options;
    in_order.shuffle = false;
    in_order.sampler = nullptr;
    train_loader_ = std::make_shared<data::DataLoader>(train_loader_->dataset(), std::move(in_order));
  }
  train_loader_ = distributed_loader(train_loader_, "train");
  val_loader_ = distributed_loader(val_loader_, "val");
  num_train_batches_ = train_batch_limit(train_loader_->size());
  num_val_batches_ = val_loader_ ? val_batch_limit(val_loader_->size()) : 0;
  if (num_val_batches_ > 0 && module_->validation_step_missing_) skip_validation_without_step();
  if (const int64_t* every = std::get_if<int64_t>(&config_.val_check_interval))
    KILN_CHECK(!config_.check_val_every_n_epoch || num_val_batches_ == 0 || *every <= num_train_batches_,
               "fit: val_check_interval (", *every, ") must be less than or equal to the number of training batches (",
               num_train_batches_, "). To disable validation set limit_val_batches = 0; to validate every ", *every,
               " batches across epochs, unset check_val_every_n_epoch");
}

// reload_dataloaders_every_n_epochs (Lightning): a fresh epoch N or more epochs after the loaders
// were made asks the DataModule again, and the batch counts follow the new loaders. Loaders given
// directly are the same objects on every request, so only a DataModule's can change. Lightning
// asks for the val loader at that epoch's first validation; Kiln asks at the epoch's start.
void Trainer::reload_dataloaders_if_due() {
  const int64_t every = config_.reload_dataloaders_every_n_epochs;
  if (every <= 0 || !datamodule_ || current_epoch() - loaders_epoch_ < every) return;
  train_loader_ = datamodule_->train_dataloader();
  val_loader_ = datamodule_->val_dataloader();
  loaders_epoch_ = current_epoch();
  setup_fit_data();
}

// Note [Steps a module does not define]
// C++ cannot ask whether a virtual is overridden, so the default validation_step, test_step and
// forward mark the module when they run. Lightning checks before any hook runs; Kiln knows at the
// first step call, unless the module was marked by an earlier call (then before any hook too):
// - fit with a validation loader but no validation_step: Lightning skips the validation loop with
//   a warning. The first validation of the fit (the sanity check, as a rule) stops after that one
//   batch, its hooks closed in order, and the fit validates no more.
// - validate() without validation_step, test() without test_step: Lightning's
//   MisconfigurationException, as a kiln::Error with its words.
// - predict() without predict_step runs forward (Lightning's default predict_step); without
//   forward either, Lightning's "requires `forward`" error.
// A loader limited to 0 batches calls no step, so there it goes unnoticed (Lightning still raises).
void Trainer::skip_validation_without_step() {
  std::fprintf(stderr, "warning: Trainer: you passed in a val_dataloader but have no validation_step; "
                       "skipping the validation loop\n");
  num_val_batches_ = 0;
}

void Trainer::require_evaluation_step(const TrainModule& module) const {
  KILN_CHECK(stage_ != TrainerStage::validating || !module.validation_step_missing_, "No `validation_step()` method "
             "defined to run `Trainer.validate`. (", module.type_name(), " does not override validation_step)");
  KILN_CHECK(stage_ != TrainerStage::testing || !module.test_step_missing_, "No `test_step()` method defined to run "
             "`Trainer.test`. (", module.type_name(), " does not override test_step)");
}

void Trainer::run_fit(TrainModule& module, DataModule* data, const Loaders& loaders, const std::string& ckpt_path) {
  attach(module);
  datamodule_ = data;
  stage_ = TrainerStage::fitting;
  optimizers_.clear();
  interrupted_ = false;
  should_stop = false;
  agreed_time_up_ = false;
  if (config_.handle_signals) signals_ = std::make_unique<SignalState>();
  std::optional<autograd::DetectAnomalyGuard> anomaly;
  if (config_.detect_anomaly) anomaly.emplace(true);
  record_thread_count();
  if (config_.benchmark.value_or(false))
    std::fprintf(stderr, "kiln: Trainer(benchmark = true): nothing to benchmark on the CPU: oneDNN picks each "
                         "kernel by shape without timing candidates, and Kiln caches each shape's oneDNN primitives "
                         "anyway (Note [Primitive cache] in kernels/cpu/onednn_common.h)\n");
  try {
    setup_processes();
    start_profiler("fit");
    if (data) {
      prepare_data(*data);
      data->setup("fit");
    }
    each_callback("setup", [&](Callback& cb) { cb.setup(*this, module, "fit"); });
    module.setup("fit");
    train_loader_ = data ? data->train_dataloader() : loaders.train;
    val_loader_ = data ? data->val_dataloader() : loaders.val;
    setup_fit_data();

    plan_.strategy->setup_module(module);
    KILN_CHECK(module.automatic_optimization || !config_.gradient_clip_val || *config_.gradient_clip_val <= 0,
               "fit: automatic gradient clipping is not supported for manual optimization; remove gradient_clip_val = ",
               config_.gradient_clip_val.value_or(0), " or clip in training_step (or switch to automatic optimization)");
    KILN_CHECK(module.automatic_optimization || config_.accumulate_grad_batches == 1, "fit: automatic gradient "
               "accumulation is not supported for manual optimization; remove accumulate_grad_batches = ",
               config_.accumulate_grad_batches, " (or switch to automatic optimization)");
    optimizers_ = module.configure_optimizers();
    KILN_CHECK(!optimizers_.empty() || !module.automatic_optimization, "fit: configure_optimizers() returned no optimizer");
    KILN_CHECK(optimizers_.size() <= 1 || !module.automatic_optimization, "fit: configure_optimizers() returned ",
               optimizers_.size(), " optimizers; several optimizers need manual optimization "
               "(set automatic_optimization = false and step them in training_step), as in Lightning");
    for (const auto& oc : optimizers_) KILN_CHECK(oc.optimizer, "fit: configure_optimizers() returned a null optimizer");

    progress_ = {};
    batch_stepped_ = false;
    validation_unlogged_ = in_batch_tail_ = false;
    reset_metrics();
    restored_ = false;
    restored_elapsed_ = 0;
    if (const std::string path = resolve_ckpt_path(ckpt_path); !path.empty()) restore_checkpoint(path);
    loaders_epoch_ = current_epoch();
    start_time_ = now_seconds();
    if (!restored_)
      for (auto& logger : rank_zero_loggers()) logger->log_hyperparams(module.hparams());

    each_callback("on_fit_start", [&](Callback& cb) { cb.on_fit_start(*this, module); });
    module.on_fit_start();
    const int64_t sanity_steps = config_.num_sanity_val_steps < 0 ? num_val_batches_
                                                                   : std::min(config_.num_sanity_val_steps, num_val_batches_);
    if (val_loader_ && sanity_steps > 0 && !restored_ && config_.fast_dev_run == 0) validation_loop(sanity_steps, true);
    each_callback("on_train_start", [&](Callback& cb) { cb.on_train_start(*this, module); });
    module.on_train_start();
    last_validation_elapsed_ = elapsed_seconds();

    fit_loop();

    each_callback("on_train_end", [&](Callback& cb) { cb.on_train_end(*this, module); });
    module.on_train_end();
    each_callback("on_fit_end", [&](Callback& cb) { cb.on_fit_end(*this, module); });
    module.on_fit_end();
    if (data) data->teardown("fit");
    each_callback("teardown", [&](Callback& cb) { cb.teardown(*this, module, "fit"); });
    module.teardown("fit");
    plan_.strategy->teardown();  // Note [Async checkpoints]: fit returns with every checkpoint in place
    for (auto& logger : rank_zero_loggers()) logger->finalize("success");
    if (profiler_) profiler_->describe();
  } catch (const RunInterrupted& stop) {
    interrupted_ = true;
    // Lightning's words, so that a user knows the run is winding down rather than hung.
    std::fprintf(stderr, "\nkiln: detected SIGINT (Ctrl-C), attempting graceful shutdown ... (press Ctrl-C again to "
                         "exit at once)\n");
    const Error error("fit: interrupted by signal " + std::to_string(stop.signal));
    each_callback("on_exception", [&](Callback& cb) { cb.on_exception(*this, module, error); });
    each_callback("teardown", [&](Callback& cb) { cb.teardown(*this, module, "fit"); });
    module.teardown("fit");
    wait_for_checkpoints_quietly();
    for (auto& logger : rank_zero_loggers()) logger->finalize("interrupted");
    if (profiler_) profiler_->describe();
  } catch (const RunStopped& stop) {
    shutdown_loader_workers();  // no thread of ours runs on through exit()
    signals_.reset();
    stop_clock();
    detach();
    std::fflush(nullptr);
    std::exit(stop.status);
  } catch (const std::exception& e) {
    each_callback("on_exception", [&](Callback& cb) { cb.on_exception(*this, module, e); });
    wait_for_checkpoints_quietly();  // the fit's own error is the one to raise
    for (auto& logger : rank_zero_loggers()) logger->finalize("failed");
    if (profiler_) profiler_->teardown();
    shutdown_loader_workers();
    signals_.reset();
    stop_clock();
    detach();
    throw;
  }
  shutdown_loader_workers();
  signals_.reset();
  stop_clock();
  detach();
}

// A pass cut short (a stop, an error, max_steps) leaves its workers making batches ahead until the
// loader makes its next pass or dies; fit ends them, as torch does when its iterator goes away.
void Trainer::shutdown_loader_workers() {
  for (data::DataLoader* loader : {train_loader_.get(), val_loader_.get()})
    if (loader) loader->shutdown_workers();
}

std::map<std::string, double> Trainer::validate(TrainModule& module, DataModule& data, const std::string& ckpt_path) {
  return run_evaluation(module, &data, {}, ckpt_path, TrainerStage::validating);
}
std::map<std::string, double> Trainer::validate(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path) {
  return run_evaluation(module, nullptr, loaders, ckpt_path, TrainerStage::validating);
}
std::map<std::string, double> Trainer::test(TrainModule& module, DataModule& data, const std::string& ckpt_path) {
  return run_evaluation(module, &data, {}, ckpt_path, TrainerStage::testing);
}
std::map<std::string, double> Trainer::test(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path) {
  return run_evaluation(module, nullptr, loaders, ckpt_path, TrainerStage::testing);
}

std::map<std::string, double> Trainer::run_evaluation(TrainModule& module, DataModule* data, const Loaders& loaders,
                                                      const std::string& ckpt_path, TrainerStage stage) {
  const bool testing = stage == TrainerStage::testing;
  const char* name = testing ? "test" : "validate";
  attach(module);
  datamodule_ = data;
  stage_ = stage;
  std::map<std::string, double> result;
  try {
    require_evaluation_step(module);  // Note [Steps a module does not define]
    setup_processes();
    start_profiler(testing ? "test" : "validate");
    if (data) {
      prepare_data(*data);
      data->setup(testing ? "test" : "validate");
    }
    each_callback("setup", [&](Callback& cb) { cb.setup(*this, module, testing ? "test" : "validate"); });
    module.setup(testing ? "test" : "validate");
    std::shared_ptr<data::DataLoader> loader = distributed_loader(
        data ? (testing ? data->test_dataloader() : data->val_dataloader()) : (testing ? loaders.test : loaders.val), name);
    KILN_CHECK(loader, name, ": no data: pass Loaders{.", testing ? "test" : "val", " = ...} or a DataModule whose ",
               testing ? "test" : "val", "_dataloader() returns a loader");
    plan_.strategy->setup_module(module);
    if (const std::string path = resolve_ckpt_path(ckpt_path); !path.empty()) restore_checkpoint(path);  // weights only
    const int64_t limit =
        testing ? limit_batches(config_.limit_test_batches, loader->size(), "test") : val_batch_limit(loader->size());
    num_val_batches_ = limit;  // what progress bars show as the total
    result = evaluation_loop(*loader, limit, stage);
    if (data) data->teardown(testing ? "test" : "validate");
    each_callback("teardown", [&](Callback& cb) { cb.teardown(*this, module, testing ? "test" : "validate"); });
    module.teardown(testing ? "test" : "validate");
    for (auto& logger : rank_zero_loggers()) logger->save();
    if (profiler_) profiler_->describe();
  } catch (...) {
    detach();
    throw;
  }
  detach();
  return result;
}

std::vector<Tensor> Trainer::predict(TrainModule& module, DataModule& data, const std::string& ckpt_path) {
  Loaders loaders;
  setup_processes();
  prepare_data(data);
  data.setup("predict");
  loaders.predict = data.predict_dataloader();
  auto out = predict(module, loaders, ckpt_path);
  data.teardown("predict");
  return out;
}

std::vector<Tensor> Trainer::predict(TrainModule& module, const Loaders& loaders, const std::string& ckpt_path) {
  attach(module);
  stage_ = TrainerStage::predicting;
  std::vector<Tensor> predictions;
  try {
    KILN_CHECK(loaders.predict, "predict: no data: pass Loaders{.predict = ...} or a DataModule whose "
               "predict_dataloader() returns a loader");
    setup_processes();
    const std::shared_ptr<data::DataLoader> loader = distributed_loader(loaders.predict, "predict");
    start_profiler("predict");
    each_callback("setup", [&](Callback& cb) { cb.setup(*this, module, "predict"); });
    module.setup("predict");
    plan_.strategy->setup_module(module);
    if (const std::string path = resolve_ckpt_path(ckpt_path); !path.empty()) restore_checkpoint(path);  // weights only
    const int64_t limit = limit_batches(config_.limit_predict_batches, loader->size(), "predict");
    num_val_batches_ = limit;
    module.eval();
    NoGradGuard no_grad;
    InferenceModeGuard inference(config_.inference_mode);
    each_callback("on_predict_start", [&](Callback& cb) { cb.on_predict_start(*this, module); });
    module.on_predict_start();
    int64_t idx = 0;
    for (data::Batch& raw : *loader) {
      if (idx >= limit) break;
      const data::Batch batch = transfer_batch(raw);
      each_callback("on_predict_batch_start", [&](Callback& cb) { cb.on_predict_batch_start(*this, module, batch, idx); });
      module.on_predict_batch_start(batch, idx);
      Tensor prediction;
      {
        const ProfileScope timed(profiler_.get(), actions_.predict_step);
        try {
          prediction = plan_.strategy->predict_step(module, batch, idx);
        } catch (const Error&) {
          KILN_CHECK(!module.forward_missing_, "`Trainer.predict` requires `forward` method to run. (",
                     module.type_name(), " does not define forward(const Tensor&); define it, or predict_step)");
          throw;
        }
      }
      each_callback("on_predict_batch_end", [&](Callback& cb) { cb.on_predict_batch_end(*this, module, prediction, batch, idx); });
      module.on_predict_batch_end(prediction, batch, idx);
      predictions.push_back(std::move(prediction));
      ++idx;
    }
    each_callback("on_predict_end", [&](Callback& cb) { cb.on_predict_end(*this, module); });
    module.on_predict_end();
    each_callback("teardown", [&](Callback& cb) { cb.teardown(*this, module, "predict"); });
    module.teardown("predict");
    if (profiler_) profiler_->describe();
  } catch (...) {
    detach();
    throw;
  }
  detach();
  return predictions;
}

// ---- TrainModule's side

void TrainModule::log(const std::string& name, double value, const LogOptions& options) {
  trainer().log_from_module(name, value, options);
}
void TrainModule::log(const std::string& name, const Tensor& value, const LogOptions& options) {
  KILN_CHECK(value.defined() && value.numel() == 1, "log('", name, "'): expected a one-element tensor, got shape ",
             value.defined() ? value.shape() : Dims{});
  trainer().log_from_module(name, value.detach().to(DType::f64).item<double>(), options);
}
void TrainModule::log_dict(const std::map<std::string, double>& values, const LogOptions& options) {
  for (const auto& [name, value] : values) log(name, value, options);
}
Trainer& TrainModule::trainer() const {
  KILN_CHECK(trainer_, "TrainModule: not attached to a Trainer (call trainer.fit/validate/test/predict)");
  return *trainer_;
}
std::vector<TrainOptimizer> TrainModule::optimizers() const {
  std::vector<TrainOptimizer> out;
  for (const auto& oc : trainer().optimizer_configs()) out.emplace_back(trainer(), oc.optimizer);
  return out;
}
void TrainOptimizer::step() { trainer_->step_optimizer(*optimizer_); }
std::vector<std::shared_ptr<optim::LRScheduler>> TrainModule::lr_schedulers() const {
  std::vector<std::shared_ptr<optim::LRScheduler>> out;
  for (const auto& oc : trainer().optimizer_configs())
    for (const auto& sc : oc.schedulers)
      if (sc.scheduler) out.push_back(sc.scheduler);
  return out;
}
void TrainModule::manual_backward(const Tensor& loss) { trainer().manual_backward(loss); }

}  // namespace kiln
