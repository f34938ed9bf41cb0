// ModelCheckpoint against Lightning 2.x's documented behaviour: which files exist after a sequence
// of scores (top-k retention, ties, NaN, mode max, keep-all and keep-latest), filename templates,
// the version counter, last.ckpt, state round trips, configuration errors; then in real fits: save
// points, the default folder, step triggers, a missing monitor, fast_dev_run and resume.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "io/checkpoint/reader.h"
#include "testing.h"
#include "train/callbacks/model_checkpoint.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::test_trainer;
using callbacks::Metrics;

namespace {

std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) out.insert(fs::relative(e.path(), dir).string());
  return out;
}

// A stand-in for Trainer::save_checkpoint: writes a small file and remembers the order.
struct FakeWriter {
  std::vector<std::string> written;
  callbacks::CheckpointWriter fn() {
    return [this](const std::string& path) {
      std::ofstream(path) << "checkpoint";
      written.push_back(fs::path(path).filename().string());
    };
  }
};

// Epoch e of a run with 2 optimizer steps per epoch, whose validation gave `score`.
Metrics at_epoch(int64_t epoch, double score) {
  return {{"epoch", double(epoch)}, {"step", double(2 * (epoch + 1))}, {"val_loss", score}};
}

void run_scores(callbacks::ModelCheckpoint& mc, const std::vector<double>& scores, FakeWriter& w) {
  for (size_t e = 0; e < scores.size(); ++e) mc.save_topk(at_epoch(int64_t(e), scores[e]), w.fn());
}

// ---- top-k retention

TEST(ModelCheckpoint, KeepsTheBestKAndDeletesFilesThatDropOut) {
  const std::string dir = fresh_dir("topk");
  callbacks::ModelCheckpoint mc({.dirpath = dir, .monitor = "val_loss", .save_top_k = 2});
  FakeWriter w;
  run_scores(mc, {5, 3, 4, 1, 2}, w);
  // e2 (4) displaces e0 (5); e3 (1) displaces e2 (4); e4 (2) displaces e1 (3).
  EXPECT_EQ(w.written, (std::vector<std::string>{"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt",
                                                 "epoch=3-step=8.ckpt", "epoch=4-step=10.ckpt"}));
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=3-step=8.ckpt", "epoch=4-step=10.ckpt"}));
  EXPECT_EQ(fs::path(mc.best_model_path()).filename(), "epoch=3-step=8.ckpt");
  EXPECT_EQ(mc.best_model_score(), 1.0);
  EXPECT_EQ(fs::path(mc.kth_best_model_path()).filename(), "epoch=4-step=10.ckpt");
  EXPECT_EQ(mc.kth_value(), 2.0);
  EXPECT_EQ(mc.current_score(), 2.0);
  ASSERT_EQ(mc.best_k_models().size(), 2u);
}

TEST(ModelCheckpoint, AScoreThatOnlyTiesTheKthIsNotSaved) {
  const std::string dir = fresh_dir("ties");
  callbacks::ModelCheckpoint mc({.dirpath = dir, .monitor = "val_loss", .save_top_k = 2});
  FakeWriter w;
  run_scores(mc, {1, 1, 1}, w);
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"}));
  // Python's min() keeps the first of equal scores.
  EXPECT_EQ(fs::path(mc.best_model_path()).filename(), "epoch=0-step=2.ckpt");
}

TEST(ModelCheckpoint, ANaNScoreCountsAsTheWorstAndGoesFirst) {
  const std::string dir = fresh_dir("nan");
  callbacks::ModelCheckpoint mc({.dirpath = dir, .monitor = "val_loss", .save_top_k = 2});
  FakeWriter w;
  run_scores(mc, {kt::kNaN, 2, 3}, w);
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"}));
  EXPECT_EQ(mc.best_model_score(), 2.0);
}

TEST(ModelCheckpoint, ModeMaxKeepsTheLargest) {
  const std::string dir = fresh_dir("max");
  callbacks::ModelCheckpoint mc({.dirpath = dir, .monitor = "val_loss", .mode = "max", .save_top_k = 2});
  FakeWriter w;
  run_scores(mc, {1, 5, 3, 4}, w);
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt"}));
  EXPECT_EQ(mc.best_model_score(), 5.0);
  EXPECT_EQ(mc.kth_value(), 4.0);
}

TEST(ModelCheckpoint, SaveTopKMinusOneKeepsEverythingAndZeroNothing) {
  const std::string all_dir = fresh_dir("all");
  callbacks::ModelCheckpoint all({.dirpath = all_dir, .monitor = "val_loss", .save_top_k = -1});
  FakeWriter w;
  run_scores(all, {3, 2, 4}, w);
  EXPECT_EQ(files_in(all_dir).size(), 3u);
  EXPECT_EQ(fs::path(all.best_model_path()).filename(), "epoch=1-step=4.ckpt");

  const std::string none_dir = fresh_dir("none");
  callbacks::ModelCheckpoint none({.dirpath = none_dir, .monitor = "val_loss", .save_top_k = 0});
  FakeWriter w0;
  run_scores(none, {3, 2}, w0);
  EXPECT_TRUE(w0.written.empty());
  EXPECT_TRUE(none.best_model_path().empty());
}

TEST(ModelCheckpoint, WithoutMonitorKeepsTheLatestOrAll) {
  const std::string dir = fresh_dir("latest");
  callbacks::ModelCheckpoint latest({.dirpath = dir});
  FakeWriter w;
  run_scores(latest, {9, 9, 9}, w);
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=2-step=6.ckpt"}));
  EXPECT_EQ(fs::path(latest.best_model_path()).filename(), "epoch=2-step=6.ckpt");
  EXPECT_FALSE(latest.best_model_score().has_value());

  const std::string all_dir = fresh_dir("latest_all");
  callbacks::ModelCheckpoint all({.dirpath = all_dir, .save_top_k = -1});
  run_scores(all, {9, 9, 9}, w);
  EXPECT_EQ(files_in(all_dir).size(), 3u);
}

TEST(ModelCheckpoint, OnlyFilesInsideDirpathAreDeleted) {
  const std::string dir = fresh_dir("inside");
  const std::string outside = fresh_dir("outside") + "/user.ckpt";
  std::ofstream(outside) << "mine";
  callbacks::ModelCheckpoint mc({.dirpath = dir, .monitor = "val_loss", .save_top_k = 1});
  // A state whose kept file lies outside dirpath (e.g. moved by hand): replacing it must not delete it.
  Json state = mc.state_dict();
  state["best_k_models"] = Json::array({Json::array({outside, 5.0})});
  state["kth_best_model_path"] = outside;
  state["kth_value"] = 5.0;
  state["best_model_path"] = outside;
  state["best_model_score"] = 5.0;
  mc.load_state_dict(state);
  FakeWriter w;
  mc.save_topk(at_epoch(0, 1.0), w.fn());
  EXPECT_TRUE(fs::exists(outside));
  EXPECT_EQ(fs::path(mc.best_model_path()).filename(), "epoch=0-step=2.ckpt");
}

// ---- names

TEST(ModelCheckpoint, FormatsFilenamesAsLightning) {
  const Metrics m = {{"epoch", 3}, {"step", 8}, {"val_loss", 0.123456}, {"val_acc", 0.5}};
  callbacks::ModelCheckpoint plain({.dirpath = "/ckpts"});
  EXPECT_EQ(plain.format_checkpoint_name(m), "/ckpts/epoch=3-step=8.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "", 2), "/ckpts/epoch=3-step=8-v2.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "{epoch:02d}-{val_loss:.2f}"), "/ckpts/epoch=03-val_loss=0.12.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "{epoch}-{val_loss:.3f}"), "/ckpts/epoch=3-val_loss=0.123.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "best-{val_acc}"), "/ckpts/best-val_acc=0.5.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "{val_acc:.1%}"), "/ckpts/val_acc=50.0%.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "{val_loss:.2e}"), "/ckpts/val_loss=1.23e-01.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "{val_loss:>8.3f}"), "/ckpts/val_loss=   0.123.ckpt");
  // A name that was not logged formats as the integer 0, as Lightning fills it in.
  EXPECT_EQ(plain.format_checkpoint_name(m, "{missing:.3f}-{other}"), "/ckpts/missing=0.000-other=0.ckpt");
  EXPECT_EQ(plain.format_checkpoint_name(m, "last"), "/ckpts/last.ckpt");

  callbacks::ModelCheckpoint bare({.dirpath = "/ckpts", .filename = "{epoch:02d}-{val_loss:.2f}",
                                   .auto_insert_metric_name = false});
  EXPECT_EQ(bare.format_checkpoint_name(m), "/ckpts/03-0.12.ckpt");

  kt::expect_error([&] { plain.format_checkpoint_name(m, "{epoch:q}"); }, {"format spec 'q'", "not supported"});
  kt::expect_error([&] { plain.format_checkpoint_name(m, "{val_loss:d}"); }, {"'d' needs an integer", "0.123456"});
  kt::expect_error([&] { plain.format_checkpoint_name(m, "{epoch"); }, {"ModelCheckpoint", "without its '}'"});
}

TEST(ModelCheckpoint, NumbersPrintAsPythonPrintsThem) {
  EXPECT_EQ(callbacks::python_float_repr(0.1), "0.1");
  EXPECT_EQ(callbacks::python_float_repr(1.0), "1.0");
  EXPECT_EQ(callbacks::python_float_repr(-2.5), "-2.5");
  EXPECT_EQ(callbacks::python_float_repr(1e-5), "1e-05");
  EXPECT_EQ(callbacks::python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(callbacks::python_float_repr(1e16), "1e+16");
  EXPECT_EQ(callbacks::python_float_repr(1234567.0), "1234567.0");
  EXPECT_EQ(callbacks::python_float_repr(1.5e300), "1.5e+300");
  EXPECT_EQ(callbacks::python_float_repr(kt::kInf), "inf");
  EXPECT_EQ(callbacks::python_format(3, "03d", true), "003");
  EXPECT_EQ(callbacks::python_format(-3, "03d", true), "-03");
  EXPECT_EQ(callbacks::python_format(2.0, ".3", false), "2.0");
  EXPECT_EQ(callbacks::python_format(0.5, "+.2f", false), "+0.50");
  EXPECT_EQ(callbacks::python_format(7, "*^5d", true), "**7**");
}

TEST(ModelCheckpoint, VersionCounterAvoidsOverwritingOtherFiles) {
  const std::string dir = fresh_dir("version");
  std::ofstream(dir + "/epoch=0-step=2.ckpt") << "from an earlier run";
  std::ofstream(dir + "/epoch=0-step=2-v1.ckpt") << "from an earlier run";
  callbacks::ModelCheckpoint mc({.dirpath = dir, .monitor = "val_loss", .save_top_k = -1});
  FakeWriter w;
  mc.save_topk(at_epoch(0, 1.0), w.fn());
  EXPECT_EQ(w.written.back(), "epoch=0-step=2-v2.ckpt");

  callbacks::ModelCheckpoint overwrite({.dirpath = dir, .monitor = "val_loss", .enable_version_counter = false});
  overwrite.save_topk(at_epoch(0, 1.0), w.fn());
  EXPECT_EQ(w.written.back(), "epoch=0-step=2.ckpt");
}

TEST(ModelCheckpoint, SaveLastWritesLastCkptAndReplacesItsOwn) {
  const std::string dir = fresh_dir("last");
  callbacks::ModelCheckpoint mc({.dirpath = dir, .save_top_k = 0, .save_last = true});
  FakeWriter w;
  mc.save_last(at_epoch(0, 1), w.fn());
  mc.save_last(at_epoch(1, 1), w.fn());
  EXPECT_EQ(w.written, (std::vector<std::string>{"last.ckpt", "last.ckpt"}));
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"last.ckpt"}));
  EXPECT_EQ(mc.last_model_path(), dir + "/last.ckpt");

  // A last.ckpt left by another run is not this callback's: it is kept, and ours gets -v1.
  callbacks::ModelCheckpoint second({.dirpath = dir, .save_top_k = 0, .save_last = true});
  second.save_last(at_epoch(0, 1), w.fn());
  EXPECT_EQ(w.written.back(), "last-v1.ckpt");
  second.save_last(at_epoch(1, 1), w.fn());
  EXPECT_EQ(w.written.back(), "last-v1.ckpt");
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"last.ckpt", "last-v1.ckpt"}));
}

// ---- state

TEST(ModelCheckpoint, StateRoundTripContinuesTheSameRetention) {
  const std::string dir = fresh_dir("state");
  const callbacks::ModelCheckpointOptions options{.dirpath = dir, .monitor = "val_loss", .save_top_k = 2,
                                                  .save_last = true};
  callbacks::ModelCheckpoint first(options);
  FakeWriter w;
  run_scores(first, {5, 3, kt::kNaN}, w);
  first.save_last(at_epoch(2, 0), w.fn());
  const Json saved = Json::parse(first.state_dict().dump());  // through text, as in a checkpoint

  callbacks::ModelCheckpoint resumed(options);
  resumed.load_state_dict(saved);
  EXPECT_EQ(resumed.best_model_path(), first.best_model_path());
  EXPECT_EQ(resumed.best_model_score(), first.best_model_score());
  EXPECT_EQ(resumed.best_k_models(), first.best_k_models());
  EXPECT_EQ(resumed.kth_best_model_path(), first.kth_best_model_path());
  EXPECT_EQ(resumed.kth_value(), first.kth_value());
  EXPECT_EQ(resumed.last_model_path(), first.last_model_path());
  EXPECT_EQ(saved["kth_value"], 5.0);  // the NaN compared false against 5: not saved
  // Before k files exist the kth value is infinite: JSON holds it as a string.
  EXPECT_EQ(callbacks::ModelCheckpoint({.monitor = "val_loss"}).state_dict()["kth_value"], "inf");

  // The resumed callback goes on as the first would have: 4 displaces 5.
  resumed.save_topk(at_epoch(3, 4), w.fn());
  EXPECT_EQ(resumed.best_k_models(), (std::vector<std::pair<std::string, double>>{{dir + "/epoch=1-step=4.ckpt", 3},
                                                                                  {dir + "/epoch=3-step=8.ckpt", 4}}));
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=1-step=4.ckpt", "epoch=3-step=8.ckpt", "last.ckpt"}));

  // Another folder: only best_model_path comes back, as in Lightning.
  callbacks::ModelCheckpoint elsewhere({.dirpath = dir + "/other", .monitor = "val_loss", .save_top_k = 2});
  elsewhere.load_state_dict(saved);
  EXPECT_EQ(elsewhere.best_model_path(), first.best_model_path());
  EXPECT_TRUE(elsewhere.best_k_models().empty());
  EXPECT_FALSE(elsewhere.best_model_score().has_value());

  kt::expect_error([&] { resumed.load_state_dict(Json::object()); }, {"ModelCheckpoint.load_state_dict", "best_model_path"});
}

// Kiln: with dirpath left to the logger, a run resumed into a new version folder is the same run:
// it keeps its scores and kept files (and never deletes the older folder's files).
TEST(ModelCheckpoint, StateCarriesOverToAnotherVersionFolderOfTheRun) {
  const std::string root = fresh_dir("versions") + "/lightning_logs";
  const callbacks::ModelCheckpointOptions options{.monitor = "val_loss", .save_top_k = 2};
  callbacks::ModelCheckpoint first(options);
  first.set_dirpath(root + "/version_0/checkpoints");
  fs::create_directories(first.dirpath());
  FakeWriter w;
  run_scores(first, {5, 3}, w);
  const Json saved = Json::parse(first.state_dict().dump());

  callbacks::ModelCheckpoint resumed(options);
  resumed.set_dirpath(root + "/version_1/checkpoints");
  fs::create_directories(resumed.dirpath());
  resumed.load_state_dict(saved);
  EXPECT_EQ(resumed.best_k_models(), first.best_k_models());
  EXPECT_EQ(resumed.best_model_score(), 3.0);
  resumed.save_topk(at_epoch(2, 4), w.fn());  // 4 displaces 5, whose file stays in version_0
  EXPECT_EQ(resumed.best_k_models(), (std::vector<std::pair<std::string, double>>{
                                         {root + "/version_0/checkpoints/epoch=1-step=4.ckpt", 3},
                                         {root + "/version_1/checkpoints/epoch=2-step=6.ckpt", 4}}));
  EXPECT_EQ(files_in(root + "/version_0/checkpoints"), (std::set<std::string>{"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt"}));

  // Not a version folder of the same run, or a dirpath the user chose: Lightning's rule.
  callbacks::ModelCheckpoint other(options);
  other.set_dirpath(root + "/../elsewhere/checkpoints");
  other.load_state_dict(saved);
  EXPECT_TRUE(other.best_k_models().empty());
  callbacks::ModelCheckpoint chosen({.dirpath = root + "/version_2/checkpoints", .monitor = "val_loss", .save_top_k = 2});
  chosen.load_state_dict(saved);
  EXPECT_TRUE(chosen.best_k_models().empty());
  EXPECT_EQ(chosen.best_model_path(), first.best_model_path());
}

TEST(ModelCheckpoint, StateKeyNamesMonitorModeAndTriggers) {
  callbacks::ModelCheckpoint mc({.monitor = "val_loss"});
  EXPECT_EQ(mc.state_key(), "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
                            "'every_n_epochs': 1, 'train_time_interval': None}");
  callbacks::ModelCheckpoint steps({.every_n_train_steps = 100});
  EXPECT_EQ(steps.state_key(), "ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 100, "
                               "'every_n_epochs': 0, 'train_time_interval': None}");
}

TEST(ModelCheckpoint, RefusesInvalidSettings) {
  using O = callbacks::ModelCheckpointOptions;
  kt::expect_error([] { callbacks::ModelCheckpoint(O{.mode = "avg"}); }, {"ModelCheckpoint", "'min' or 'max'", "avg"});
  kt::expect_error([] { callbacks::ModelCheckpoint(O{.save_top_k = -2}); }, {"save_top_k=-2", ">= -1"});
  kt::expect_error([] { callbacks::ModelCheckpoint(O{.save_top_k = 3}); }, {"save_top_k=3", "without a monitor"});
  kt::expect_error([] { callbacks::ModelCheckpoint(O{.every_n_train_steps = 5, .every_n_epochs = 2}); },
                   {"mutually exclusive", "every_n_train_steps=5", "every_n_epochs=2"});
  kt::expect_error([] { callbacks::ModelCheckpoint(O{.every_n_train_steps = -1}); }, {"every_n_train_steps=-1"});
  kt::expect_error([] { callbacks::ModelCheckpoint(O{.train_time_interval_seconds = 0.0}); },
                   {"train_time_interval_seconds=0"});
}

// ---- in a fit

// Logs a scripted val_loss: scores[epoch] at every validation of that epoch.
class Scripted : public TinyClassifier {
 public:
  explicit Scripted(std::vector<double> scores) : TinyClassifier(0.0), scores_(std::move(scores)) {}
  StepOutput validation_step(const data::Batch&, int64_t) override {
    const auto epoch = static_cast<size_t>(trainer().current_epoch());
    log("val_loss", scores_.at(std::min(epoch, scores_.size() - 1)));
    return {};
  }

 private:
  std::vector<double> scores_;
};

TrainerConfig quiet(TrainerConfig c) {
  c.enable_progress_bar = false;
  c.enable_model_summary = false;
  c.handle_signals = false;
  return c;
}

// 2 training batches per epoch, one validation batch.
Loaders two_batch_loaders() { return {.train = make_loader(20, false, 0), .val = make_loader(40, false, 0)}; }

TEST(ModelCheckpointFit, SavesAtValidationEndAndKeepsTheTopK) {
  const std::string dir = fresh_dir("fit_topk");
  auto mc = std::make_shared<callbacks::ModelCheckpoint>(
      callbacks::ModelCheckpointOptions{.dirpath = dir, .monitor = "val_loss", .save_top_k = 2, .save_last = true});
  Scripted module({5, 3, 4, 1, 2});
  Trainer trainer(quiet({.max_epochs = 5, .logger = false, .callbacks = {mc}, .default_root_dir = dir}));
  trainer.fit(module, two_batch_loaders());
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=3-step=8.ckpt", "epoch=4-step=10.ckpt", "last.ckpt"}));
  EXPECT_EQ(trainer.best_model_path(), dir + "/epoch=3-step=8.ckpt");
  EXPECT_EQ(trainer.last_model_path(), dir + "/last.ckpt");
  EXPECT_EQ(mc->best_model_score(), 1.0);

  // The files are real checkpoints of the right step, holding the callback's state as it was then.
  const State best = io::load(mc->best_model_path());
  EXPECT_EQ(best.meta.at("global_step"), 8);
  const Json& saved = best.meta.at("callbacks").at(mc->state_key());
  EXPECT_EQ(saved.at("best_model_path"), mc->best_model_path());
  EXPECT_EQ(io::load(dir + "/last.ckpt").meta.at("global_step"), 10);
}

TEST(ModelCheckpointFit, DefaultCallbackSavesTheLatestUnderTheLogFolder) {
  const std::string dir = fresh_dir("fit_default");
  Scripted module({1});
  Trainer trainer(quiet({.max_epochs = 2, .default_root_dir = dir}));
  trainer.fit(module, two_batch_loaders());
  const fs::path ckpts = fs::path(trainer.log_dir()) / "checkpoints";
  EXPECT_EQ(ckpts, fs::path(dir) / "lightning_logs" / "version_0" / "checkpoints");
  EXPECT_EQ(files_in(ckpts.string()), (std::set<std::string>{"epoch=1-step=4.ckpt"}));
}

TEST(ModelCheckpointFit, EveryNTrainStepsSavesOnThoseSteps) {
  const std::string dir = fresh_dir("fit_steps");
  auto mc = std::make_shared<callbacks::ModelCheckpoint>(
      callbacks::ModelCheckpointOptions{.dirpath = dir, .save_top_k = -1, .every_n_train_steps = 3});
  Scripted module({1});
  Trainer trainer(quiet({.max_epochs = 3, .logger = false, .callbacks = {mc}}));
  trainer.fit(module, two_batch_loaders());
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=1-step=3.ckpt", "epoch=2-step=6.ckpt"}));
}

TEST(ModelCheckpointFit, AMissingMonitorListsWhatWasLogged) {
  const std::string dir = fresh_dir("fit_missing");
  auto mc = std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions{.dirpath = dir, .monitor = "val_los"});
  Scripted module({1});
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .callbacks = {mc}}));
  kt::expect_error([&] { trainer.fit(module, two_batch_loaders()); },
                   {"ModelCheckpoint(monitor='val_los') could not find the monitored key", "'val_loss'", "'epoch'"});
}

TEST(ModelCheckpointFit, NothingIsSavedInFastDevRunOrWithoutSteps) {
  const std::string dir = fresh_dir("fit_fast");
  auto mc = std::make_shared<callbacks::ModelCheckpoint>(callbacks::ModelCheckpointOptions{.dirpath = dir, .save_last = true});
  Scripted module({1});
  Trainer trainer(quiet({.fast_dev_run = 1, .callbacks = {mc}}));
  trainer.fit(module, two_batch_loaders());
  EXPECT_TRUE(files_in(dir).empty());
  // Sanity checking alone saves nothing either: the monitor need not exist yet.
  auto monitored = std::make_shared<callbacks::ModelCheckpoint>(
      callbacks::ModelCheckpointOptions{.dirpath = dir, .monitor = "val_loss"});
  Trainer limited(quiet({.max_epochs = 1, .limit_train_batches = int64_t{0}, .logger = false, .callbacks = {monitored}}));
  limited.fit(module, two_batch_loaders());
  EXPECT_TRUE(files_in(dir).empty());
}

TEST(ModelCheckpointFit, ResumeKeepsBestScoresAndTopK) {
  const std::vector<double> scores = {5, 3, 4, 1, 2};
  const std::string straight_dir = fresh_dir("fit_straight");
  auto straight = std::make_shared<callbacks::ModelCheckpoint>(
      callbacks::ModelCheckpointOptions{.dirpath = straight_dir, .monitor = "val_loss", .save_top_k = 2, .save_last = true});
  {
    Scripted module(scores);
    Trainer(quiet({.max_epochs = 5, .logger = false, .callbacks = {straight}})).fit(module, two_batch_loaders());
  }
  const std::string dir = fresh_dir("fit_resume");
  const callbacks::ModelCheckpointOptions options{.dirpath = dir, .monitor = "val_loss", .save_top_k = 2, .save_last = true};
  {
    Scripted module(scores);
    auto mc = std::make_shared<callbacks::ModelCheckpoint>(options);
    Trainer(quiet({.max_epochs = 3, .logger = false, .callbacks = {mc}})).fit(module, two_batch_loaders());
    EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt", "last.ckpt"}));
  }
  Scripted module(scores);
  auto mc = std::make_shared<callbacks::ModelCheckpoint>(options);
  Trainer trainer(quiet({.max_epochs = 5, .logger = false, .callbacks = {mc}}));
  EXPECT_EQ(mc->find_last_checkpoints(), std::vector<std::string>{dir + "/last.ckpt"});
  trainer.fit(module, two_batch_loaders(), dir + "/last.ckpt");
  EXPECT_EQ(files_in(dir), files_in(straight_dir));
  EXPECT_EQ(mc->best_model_score(), straight->best_model_score());
  EXPECT_EQ(fs::path(mc->best_model_path()).filename(), fs::path(straight->best_model_path()).filename());
  EXPECT_EQ(mc->best_k_models().size(), 2u);
}

}  // namespace
