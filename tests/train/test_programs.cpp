// The built programs' command lines, run as a user runs them: `demo` and `kiln` answer --help on
// stdout with exit 0 and reject bad flags with exit 2 and a message naming the flag and the value,
// before any work; `kiln ckpt convert --weights-only` keeps exactly a Trainer checkpoint's module
// weights. Runs <build>/demo and <build>/kiln; a test skips if its program was not built.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/checkpoint/checkpoint.h"
#include "io/data/fashion_mnist.h"
#include "io/safetensors/safetensors.h"
#include "testing.h"
#include "trainer_fixtures.h"

using namespace kiln;
using namespace kiln::test_trainer;
namespace fs = std::filesystem;

namespace {

std::string build_dir() {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  return fs::path(std::string(self, static_cast<size_t>(std::max<ssize_t>(n, 0)))).parent_path().parent_path().string();
}

struct Outcome {
  int status;
  std::string out, err;
};

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

Outcome run(const std::string& program, const std::string& args) {
  const std::string dir = fresh_dir("programs_io");
  const std::string cmd = build_dir() + "/" + program + " " + args + " >" + dir + "/out 2>" + dir + "/err";
  const int rc = std::system(cmd.c_str());
  Outcome r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(dir + "/out"), slurp(dir + "/err")};
  fs::remove_all(dir);
  return r;
}

// GTEST_SKIP only returns from the function it is in, so each test checks this itself.
bool is_built(const std::string& program) { return ::access((build_dir() + "/" + program).c_str(), X_OK) == 0; }

// Saves a Trainer checkpoint at the end of fit (the file a run's ModelCheckpoint writes).
struct SaveAtEnd : Callback {
  std::string path;
  std::string name() const override { return "SaveAtEnd"; }
  void on_train_end(Trainer& trainer, TrainModule&) override { trainer.save_checkpoint(path); }
};

}  // namespace

TEST(Programs, DemoHelpAndBadFlagsStopBeforeTraining) {
  if (!is_built("demo")) GTEST_SKIP() << build_dir() << "/demo is not built";
  const std::string root = fresh_dir("demo_flags");
  fs::remove_all(root);
  Outcome r = run("demo", "--help --root " + root);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out.rfind("usage: demo [flags]\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("--epochs N"), std::string::npos) << r.out;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--epochs abc", "demo: --epochs expects a positive integer, got 'abc'\n"},
      {"--epochs 0", "demo: --epochs expects a positive integer, got '0'\n"},
      {"--epochs -1", "demo: --epochs expects a positive integer, got '-1'\n"},
      {"--limit-batches 0", "demo: --limit-batches expects a positive integer, got '0'\n"},
      {"--epoch 3", "demo: unknown flag --epoch (valid: "},
  };
  for (const auto& [args, message] : cases) {
    r = run("demo", args + " --root " + root);
    EXPECT_EQ(r.status, 2) << args;
    EXPECT_EQ(r.err.rfind(message, 0), 0u) << args << ": " << r.err;
    EXPECT_EQ(r.out, "") << args;
  }
  EXPECT_FALSE(fs::exists(root));  // no run folder: nothing started
}

TEST(Programs, KilnHelpAndUnknownCommands) {
  if (!is_built("kiln")) GTEST_SKIP() << build_dir() << "/kiln is not built";
  Outcome r = run("kiln", "--help");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(r.out.rfind("usage: kiln COMMAND [ARGS]\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("kiln ckpt convert FILE --to safetensors|kiln [--weights-only] [-o OUT]"), std::string::npos);
  r = run("kiln", "ckpt convert --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("--weights-only"), std::string::npos) << r.out;
  r = run("kiln", "frobnicate");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err.rfind("kiln: unknown command 'frobnicate' (valid: ckpt)\n", 0), 0u) << r.err;
  r = run("kiln", "ckpt inspekt x");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err.rfind("kiln ckpt: unknown command 'inspekt' (valid: inspect, verify, convert)\n", 0), 0u) << r.err;
  r = run("kiln", "ckpt convert x.ckpt");
  EXPECT_EQ(r.status, 2);
  EXPECT_EQ(r.err.rfind("kiln ckpt convert: missing --to safetensors|kiln\n", 0), 0u) << r.err;
}

TEST(Programs, ConvertWeightsOnlyKeepsTheModuleAndItsHyperparameters) {
  if (!is_built("kiln")) GTEST_SKIP() << build_dir() << "/kiln is not built";
  const std::string dir = fresh_dir("weights_only");
  TinyClassifier model;
  auto saver = std::make_shared<SaveAtEnd>();
  saver->path = dir + "/last.ckpt";
  Trainer trainer(quiet({.max_epochs = 1, .logger = false, .callbacks = {saver}}));
  trainer.fit(model, Loaders{.train = make_loader(8, false, 0)});
  const TensorDict weights = model.state_dict();
  ASSERT_EQ(weights.size(), 4u);

  // The full export carries the optimizer's momentum buffers; the weights-only one does not.
  Outcome r = run("kiln", "ckpt convert " + saver->path + " --to safetensors -o " + dir + "/full.safetensors");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_GT(io::SafetensorsReader::open(dir + "/full.safetensors").records().size(), weights.size());
  r = run("kiln", "ckpt convert " + saver->path + " --to safetensors --weights-only");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, saver->path + " -> " + dir + "/last.weights.safetensors\n");
  const auto reader = io::SafetensorsReader::open(dir + "/last.weights.safetensors");
  const TensorDict loaded = reader.load();
  EXPECT_EQ(loaded.keys(), weights.keys());  // the module's own names, in its order
  for (const auto& [name, t] : weights) EXPECT_TRUE(bitwise_equal(*loaded.find(name), t)) << name;
  const Json meta = Json::parse(reader.metadata().at("kiln.meta"));
  EXPECT_EQ(meta.at("format"), "kiln-weights");
  EXPECT_EQ(meta.at("hyper_parameters"), (Json{{"dropout", 0.2}, {"lr", 0.1}}));
  EXPECT_FALSE(meta.contains("optimizer_states"));
  TinyClassifier fresh(0.2, 0.1);
  EXPECT_TRUE(fresh.load_state_dict(loaded).missing_keys.empty());

  // Native to native, and a file with no module weights refused with one line.
  r = run("kiln", "ckpt convert " + saver->path + " --to kiln --weights-only -o " + dir + "/w.kiln");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(io::load(dir + "/w.kiln").tensors.keys(), weights.keys());
  r = run("kiln", "ckpt convert " + dir + "/full.safetensors --to safetensors");
  EXPECT_EQ(r.status, 1);  // already safetensors, and not asked for weights only
  r = run("kiln", "ckpt convert " + dir + "/w.kiln --to safetensors --weights-only");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("tensors named state_dict.*); this file has none"), std::string::npos) << r.err;
  fs::remove_all(dir);
}

// README: `demo --resume last --epochs N` right after a finished run continues it. The new process
// logs into version_1; "last" is version_0's last.ckpt, and the best scores carry over.
TEST(Programs, DemoResumesLastAfterAFinishedRun) {
  if (!is_built("demo")) GTEST_SKIP() << build_dir() << "/demo is not built";
  if (!fs::exists(std::string(data::kFashionMNISTRoot) + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "no Fashion-MNIST under " << data::kFashionMNISTRoot;
  const std::string root = fresh_dir("demo_resume");
  Outcome r = run("demo", "--epochs 1 --limit-batches 3 --root " + root);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run("demo", "--resume last --epochs 2 --limit-batches 3 --root " + root);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err.find("no last checkpoint"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("dirpath has changed"), std::string::npos) << r.err;
  const std::string resumed = slurp(root + "/lightning_logs/version_1/metrics.csv");
  // Only the second epoch ran: the rows that name an epoch (the first column) name epoch 1.
  std::istringstream lines(resumed);
  std::string line;
  std::getline(lines, line);
  ASSERT_EQ(line.rfind("epoch,", 0), 0u) << resumed;
  int epoch_rows = 0;
  while (std::getline(lines, line)) {
    const std::string epoch = line.substr(0, line.find(','));
    if (epoch.empty()) continue;  // the test() row
    ++epoch_rows;
    EXPECT_EQ(epoch, "1") << line;
  }
  EXPECT_GT(epoch_rows, 0) << resumed;
  EXPECT_TRUE(fs::exists(root + "/lightning_logs/version_1/checkpoints/last.ckpt"));
}
