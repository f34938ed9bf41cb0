// TrainerConfig::async_checkpointing (Note [Async checkpoints], train/checkpointing.cpp): the same
// files as synchronous saving, fit waiting for its last write (also when it ends by an exception),
// a failed write failing the fit without deleting what it would have replaced, and runs SIGKILLed
// at random moments leaving only complete files, with the top-k files and last.ckpt all there.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "testing.h"
#include "io/checkpoint/atomic_file.h"
#include "io/checkpoint/reader.h"
#include "train/callbacks/model_checkpoint.h"
#include "train/seed.h"
#include "trainer_fixtures.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using namespace kiln;
using namespace kiln::test_trainer;

namespace {

// Renames (the moment a written file takes its name) take 20 ms: a fit that did not wait for its
// writes would return, or unwind, before its last file is in place.
class SlowRename : public io::FileOps {
 public:
  int rename(const std::string& from, const std::string& to) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return io::FileOps::rename(from, to);
  }
};

// The write of any file whose name contains `marker` fails as on a full disk.
class FailingWrite : public io::FileOps {
 public:
  explicit FailingWrite(std::string marker) : marker_(std::move(marker)) {}
  int rename(const std::string& from, const std::string& to) override {
    if (to.find(marker_) != std::string::npos) {
      errno = ENOSPC;
      return -1;
    }
    return io::FileOps::rename(from, to);
  }

 private:
  std::string marker_;
};

class ThrowsAtStep : public TinyClassifier {
 public:
  explicit ThrowsAtStep(int64_t step) : step_(step) {}
  void on_train_batch_end(const StepOutput&, const data::Batch&, int64_t) override {
    if (trainer().global_step() == step_) throw std::runtime_error("stop for the test");
  }

 private:
  int64_t step_;
};

// Top 2 by step (every save displaces the oldest, so every save also deletes a file) and last.ckpt,
// at every step, into `dir`.
TrainerConfig saving_every_step(const std::string& dir, bool async, int64_t epochs = 2) {
  TrainerConfig c = quiet({.max_epochs = epochs, .logger = false});
  c.enable_checkpointing = true;
  c.async_checkpointing = async;
  c.callbacks = {std::make_shared<ModelCheckpoint>(callbacks::ModelCheckpointOptions{
      .dirpath = dir, .monitor = "step", .mode = "max", .save_top_k = 2, .save_last = true, .every_n_train_steps = 1})};
  return c;
}

std::set<std::string> files_in(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

int64_t step_of(const std::string& path) { return io::load(path).meta.at("global_step").get<int64_t>(); }

TEST(AsyncCheckpointing, WritesWhatSynchronousSavingWritesAndFitWaitsForTheLastWrite) {
  const std::string sync_dir = fresh_dir("async_ref"), async_dir = fresh_dir("async_run");
  seed_everything(42);
  TinyClassifier reference;
  Trainer(saving_every_step(sync_dir, false)).fit(reference, Loaders{.train = make_loader(8, true, 0, 5)});
  seed_everything(42);
  TinyClassifier module;
  {
    SlowRename slow;
    io::ScopedFileOps scope(slow);
    Trainer trainer(saving_every_step(async_dir, true));  // alive below: its destructor would wait too
    trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5)});
    // fit has returned: the last write is in place, nothing is left in flight.
    EXPECT_EQ(files_in(async_dir), (std::set<std::string>{"epoch=1-step=9.ckpt", "epoch=1-step=10.ckpt", "last.ckpt"}));
    EXPECT_EQ(step_of(async_dir + "/last.ckpt"), 10);
  }
  ASSERT_EQ(files_in(async_dir), files_in(sync_dir));
  for (const std::string& name : files_in(sync_dir)) {
    const State a = io::load(sync_dir + "/" + name), b = io::load(async_dir + "/" + name);
    EXPECT_EQ(a.meta["loops"], b.meta["loops"]) << name;
    ASSERT_EQ(a.tensors.size(), b.tensors.size()) << name;
    for (const auto& [key, t] : a.tensors) EXPECT_TRUE(bitwise_equal(t, b.tensors.at(key))) << name << " " << key;
  }
  const TensorDict weights = module.state_dict();
  for (const auto& [name, t] : reference.state_dict()) EXPECT_TRUE(bitwise_equal(t, weights.at(name))) << name;
}

TEST(AsyncCheckpointing, AFitEndingInAnExceptionWaitsForItsLastWrite) {
  const std::string dir = fresh_dir("async_throw");
  seed_everything(42);
  ThrowsAtStep module(4);  // after step 4's files were handed to the background thread
  SlowRename slow;
  io::ScopedFileOps scope(slow);
  Trainer trainer(saving_every_step(dir, true));
  EXPECT_THROW(trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5)}), std::runtime_error);
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=0-step=3.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"}));
  EXPECT_EQ(step_of(dir + "/last.ckpt"), 4);
}

TEST(AsyncCheckpointing, AFailedWriteFailsTheFitAndKeepsWhatItWouldHaveReplaced) {
  const std::string dir = fresh_dir("async_fail");
  seed_everything(42);
  TinyClassifier module;
  FailingWrite full_disk("step=3");
  io::ScopedFileOps scope(full_disk);
  Trainer trainer(saving_every_step(dir, true));
  // Step 3's top-k file fails in the background; the next save (step 3's last.ckpt) reports it.
  kt::expect_error([&] { trainer.fit(module, Loaders{.train = make_loader(8, true, 0, 5)}); },
                   {"epoch=0-step=3.ckpt", "No space left on device"});
  EXPECT_EQ(files_in(dir), (std::set<std::string>{"epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt"}));
  EXPECT_EQ(step_of(dir + "/last.ckpt"), 2);
  EXPECT_EQ(trainer.stage(), TrainerStage::none);
}

// ---- SIGKILL at random moments of a run saving asynchronously at every step

TEST(AsyncCheckpointingChild, FitsUntilKilled) {
  const char* dir = std::getenv("KILN_ASYNC_CHILD_DIR");
  if (!dir) GTEST_SKIP() << "runs only as a child of AsyncCheckpointing.KilledAtRandomMomentsLosesNoSavedFile";
  seed_everything(42);
  TinyClassifier module;
  Trainer(saving_every_step(dir, true, 100000)).fit(module, Loaders{.train = make_loader(8, true, 0, 5)});
  std::exit(0);
}

TEST(AsyncCheckpointing, KilledAtRandomMomentsLosesNoSavedFile) {
  const std::string dir = fresh_dir("async_kill");
  std::mt19937 rng(7);
  int killed_while_writing = 0;
  for (int kill = 0; kill < 12; ++kill) {
    SCOPED_TRACE("kill " + std::to_string(kill));
    fs::remove_all(dir);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      setenv("KILN_ASYNC_CHILD_DIR", dir.c_str(), 1);
      execl("/proc/self/exe", "test_async_checkpoints", "--gtest_filter=AsyncCheckpointingChild.FitsUntilKilled",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    // Once two top-k saves are in place, at any moment of the run that follows.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::error_code ec;
    while (!fs::exists(dir + "/epoch=0-step=3.ckpt", ec) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 30000)(rng)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child ended on its own (status " << status << ")";

    int topk = 0;
    for (const std::string& name : files_in(dir)) {
      if (name.find(".tmp-") != std::string::npos) {
        ++killed_while_writing;
        continue;
      }
      EXPECT_NO_THROW(io::load(dir + "/" + name)) << name;  // every checksum: no file is partial
      topk += name.rfind("epoch=", 0) == 0;
    }
    EXPECT_GE(topk, 2);  // a file that drops out goes only after the one replacing it is in place
    EXPECT_TRUE(fs::exists(dir + "/last.ckpt"));
    if (HasFailure()) break;
  }
  std::printf("killed during a write %d times of 12\n", killed_while_writing);
}

}  // namespace
