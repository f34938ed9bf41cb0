// Tests of the loggers: CRC-32C against published vectors, CSVLogger files byte for byte (header
// rewrite, versioning, flushing), hparams.yaml, and TensorBoard event files decoded by an
// independent reader below (framing, both CRCs, every protobuf field written) and, when a Python
// venv with PyPI's tensorboard exists ($KILN_PYENV, default build/pyenv), by tensorboard itself.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "testing.h"
#include "train/loggers/csv_logger.h"
#include "train/loggers/event_file.h"
#include "train/loggers/log_files.h"
#include "train/loggers/tensorboard_logger.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using kiln::Json;

namespace {

// A fresh folder per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "kiln_loggers_XXXXXX").string();
    const char* made = mkdtemp(pattern.data());
    if (made == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string str() const { return path_.string(); }
  fs::path operator/(const std::string& p) const { return path_ / p; }

 private:
  fs::path path_;
};

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// 'text' for /bin/sh (the paths here hold no single quotes of their own).
std::string shell_quote(const std::string& text) { return std::string("'").append(text).append("'"); }

double now_seconds() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// ---- An independent TFRecord + protobuf reader --------------------------------------------------

// CRC-32C bit by bit (no table): a second implementation to check the library's against.
uint32_t reference_crc32c(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int bit = 0; bit < 8; ++bit) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return ~crc;
}
uint32_t reference_masked(std::string_view data) {
  const uint32_t crc = reference_crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

uint64_t load_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s.at(at + static_cast<size_t>(i)));
  return v;
}

// The payloads of every record in a TFRecord file; each header and payload CRC is checked.
std::vector<std::string> read_records(const fs::path& path) {
  const std::string file = read_file(path);
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_LE(at + 12, file.size()) << "truncated record header at byte " << at;
    if (at + 12 > file.size()) break;
    const uint64_t length = load_le(file, at, 8);
    EXPECT_EQ(load_le(file, at + 8, 4), reference_masked(file.substr(at, 8))) << "header crc at byte " << at;
    EXPECT_LE(at + 16 + length, file.size()) << "truncated record at byte " << at;
    if (at + 16 + length > file.size()) break;
    std::string payload = file.substr(at + 12, length);
    EXPECT_EQ(load_le(file, at + 12 + length, 4), reference_masked(payload)) << "payload crc at byte " << at;
    records.push_back(std::move(payload));
    at += 16 + length;
  }
  return records;
}

struct PbField {
  int number = 0;
  int wire = 0;
  uint64_t scalar = 0;  // varint, or the raw bits of fixed32 / fixed64
  std::string bytes;    // length-delimited
};

std::vector<PbField> decode_message(const std::string& msg) {
  std::vector<PbField> fields;
  size_t at = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0; at < msg.size(); shift += 7) {
      const auto b = static_cast<unsigned char>(msg[at++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    ADD_FAILURE() << "truncated varint";
    return v;
  };
  while (at < msg.size()) {
    PbField f;
    const uint64_t key = varint();
    f.number = static_cast<int>(key >> 3);
    f.wire = static_cast<int>(key & 7);
    if (f.wire == 0) {
      f.scalar = varint();
    } else if (f.wire == 1 || f.wire == 5) {
      const int n = f.wire == 1 ? 8 : 4;
      if (at + static_cast<size_t>(n) > msg.size()) return ADD_FAILURE() << "truncated fixed field", fields;
      f.scalar = load_le(msg, at, n);
      at += static_cast<size_t>(n);
    } else if (f.wire == 2) {
      const uint64_t n = varint();
      if (at + n > msg.size()) return ADD_FAILURE() << "truncated bytes field", fields;
      f.bytes = msg.substr(at, n);
      at += n;
    } else {
      ADD_FAILURE() << "unexpected wire type " << f.wire;
      return fields;
    }
    fields.push_back(std::move(f));
  }
  return fields;
}

std::vector<PbField> fields_numbered(const std::vector<PbField>& fields, int number) {
  std::vector<PbField> out;
  for (const PbField& f : fields)
    if (f.number == number) out.push_back(f);
  return out;
}
// The one field with this number (empty when absent; more than one is a failure).
PbField field(const std::vector<PbField>& fields, int number) {
  const auto found = fields_numbered(fields, number);
  EXPECT_LE(found.size(), 1u) << "field " << number << " repeated";
  return found.empty() ? PbField{} : found[0];
}
double as_double(const PbField& f) {
  EXPECT_EQ(f.wire, 1);
  double d;
  std::memcpy(&d, &f.scalar, 8);
  return d;
}
float as_float(const PbField& f) {
  EXPECT_EQ(f.wire, 5);
  const auto bits = static_cast<uint32_t>(f.scalar);
  float x;
  std::memcpy(&x, &bits, 4);
  return x;
}

struct DecodedValue {
  std::string tag;
  bool has_simple_value = false;
  float simple_value = 0;
  std::string plugin_name, plugin_content;
};
struct DecodedEvent {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<DecodedValue> values;
};

DecodedEvent decode_event(const std::string& payload) {
  const auto event = decode_message(payload);
  DecodedEvent out;
  out.wall_time = as_double(field(event, 1));
  out.step = static_cast<int64_t>(field(event, 2).scalar);
  out.file_version = field(event, 3).bytes;
  for (const PbField& value_field : fields_numbered(decode_message(field(event, 5).bytes), 1)) {
    const auto value = decode_message(value_field.bytes);
    DecodedValue v;
    v.tag = field(value, 1).bytes;
    if (const PbField simple = field(value, 2); simple.number == 2) {
      v.has_simple_value = true;
      v.simple_value = as_float(simple);
    }
    const auto plugin = decode_message(field(decode_message(field(value, 9).bytes), 1).bytes);
    v.plugin_name = field(plugin, 1).bytes;
    v.plugin_content = field(plugin, 2).bytes;
    out.values.push_back(std::move(v));
  }
  return out;
}

std::string only_event_file(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind("events.out.tfevents.", 0) == 0) found.push_back(entry.path().string());
  EXPECT_EQ(found.size(), 1u) << "event files in " << dir;
  return found.empty() ? std::string() : found[0];
}

}  // namespace

// ---- CRC and framing ------------------------------------------------------------------------------

TEST(Crc32c, KnownVectors) {
  using kiln::tfevents::crc32c;
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the standard check value
  EXPECT_EQ(crc32c(""), 0u);
  EXPECT_EQ(crc32c(std::string(32, '\0')), 0x8A9136AAu);    // RFC 3720, B.4
  EXPECT_EQ(crc32c(std::string(32, '\xFF')), 0x62A8AB43u);  // RFC 3720, B.4
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[static_cast<size_t>(i)] = static_cast<char>(i);
  EXPECT_EQ(crc32c(ascending), 0x46DD794Eu);  // RFC 3720, B.4
  EXPECT_EQ(kiln::tfevents::masked_crc32c("123456789"), 0xC78AB0E5u);  // ((c >> 15) | (c << 17)) + 0xA282EAD8
  std::string long_text;
  for (int i = 0; i < 1000; ++i) long_text += static_cast<char>(i * 7 + 3);
  EXPECT_EQ(crc32c(long_text), reference_crc32c(long_text));
}

TEST(Crc32c, RecordFraming) {
  const std::string record = kiln::tfevents::frame_record("abc");
  ASSERT_EQ(record.size(), 8u + 4u + 3u + 4u);
  EXPECT_EQ(load_le(record, 0, 8), 3u);
  EXPECT_EQ(load_le(record, 8, 4), reference_masked(record.substr(0, 8)));
  EXPECT_EQ(record.substr(12, 3), "abc");
  EXPECT_EQ(load_le(record, 15, 4), reference_masked("abc"));
}

// ---- Numbers, CSV and YAML text ---------------------------------------------------------------------

TEST(LogFiles, PythonFloatRepr) {
  const std::vector<std::pair<double, std::string>> cases = {
      {0.1, "0.1"}, {1e-05, "1e-05"}, {0.0001, "0.0001"}, {123.0, "123.0"}, {1e16, "1e+16"}, {1.5e-7, "1.5e-07"},
      {-0.0, "-0.0"}, {0.0, "0.0"}, {1234567890123456.0, "1234567890123456.0"}, {1e22, "1e+22"},
      {0.30000000000000004, "0.30000000000000004"}, {1e100, "1e+100"}, {5e-324, "5e-324"}, {-2.5, "-2.5"},
      {0.41234, "0.41234"}, {kt::kNaN, "nan"}, {kt::kInf, "inf"}, {-kt::kInf, "-inf"}};
  for (const auto& [value, want] : cases) EXPECT_EQ(kiln::python_float_repr(value), want) << value;
  EXPECT_EQ(kiln::csv_number(2.0), "2");
  EXPECT_EQ(kiln::csv_number(0.5), "0.5");
  EXPECT_EQ(kiln::csv_number(1e-05), "1e-05");
}

TEST(LogFiles, CsvQuoteAndParse) {
  EXPECT_EQ(kiln::csv_quote("loss"), "loss");
  EXPECT_EQ(kiln::csv_quote("a,b"), "\"a,b\"");
  EXPECT_EQ(kiln::csv_quote("say \"hi\""), "\"say \"\"hi\"\"\"");
  const auto rows = kiln::parse_csv("a,\"b,c\",\"d\"\"e\"\r\n1,,3\r\nlast,row");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"a", "b,c", "d\"e"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"1", "", "3"}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"last", "row"}));
  kt::expect_error([] { kiln::parse_csv("a,\"open"); }, {"CSV", "unterminated"});
}

TEST(LogFiles, HparamsYaml) {
  Json params = Json::parse(R"({
    "lr": 0.001, "eps": 1e-08, "batch_size": 64, "epochs": 3.0, "name": "fashion mnist", "flag": true,
    "none": null, "yes": "yes", "path": "./data/x", "version": "1.2", "note": "it's", "multi": "a\nb",
    "empty_map": {}, "empty_list": [], "layers": [64, 32],
    "optimizer": {"name": "adamw", "betas": [0.9, 0.999], "groups": [{"lr": 0.1, "wd": 0}, [1, 2]]}
  })");
  params["inf"] = kt::kInf;
  const std::string want =
      "batch_size: 64\n"
      "empty_list: []\n"
      "empty_map: {}\n"
      "epochs: 3.0\n"
      "eps: 1.0e-08\n"
      "flag: true\n"
      "inf: .inf\n"
      "layers:\n- 64\n- 32\n"
      "lr: 0.001\n"
      "multi: \"a\\nb\"\n"
      "name: fashion mnist\n"
      "none: null\n"
      "note: 'it''s'\n"
      "optimizer:\n"
      "  betas:\n  - 0.9\n  - 0.999\n"
      "  groups:\n  - lr: 0.1\n    wd: 0\n  - - 1\n    - 2\n"
      "  name: adamw\n"
      "path: './data/x'\n"
      "version: '1.2'\n"
      "'yes': 'yes'\n";
  EXPECT_EQ(kiln::hparams_to_yaml(params), want);
  EXPECT_EQ(kiln::hparams_to_yaml(Json::object()), "{}\n");
  kt::expect_error([] { kiln::hparams_to_yaml(Json::array({1, 2})); }, {"hparams.yaml", "expected a JSON object", "array"});
}

// ---- CSVLogger ----------------------------------------------------------------------------------

TEST(CSVLogger, WritesSortedColumnsAndRewritesTheHeaderWhenAKeyAppears) {
  TempDir tmp;
  kiln::CSVLogger logger({.root_dir = tmp.str()});
  EXPECT_EQ(logger.name(), "lightning_logs");
  EXPECT_EQ(logger.version(), "0");
  EXPECT_EQ(logger.log_dir(), (tmp / "lightning_logs/version_0").string());
  EXPECT_FALSE(fs::exists(logger.log_dir())) << "the run folder is made by the first write";

  logger.log_metrics({{"train_loss", 0.5}, {"epoch", 0}}, 0);
  logger.log_metrics({{"train_loss", 0.25}, {"epoch", 0}}, 1);
  EXPECT_FALSE(fs::exists(logger.metrics_file_path())) << "rows are buffered until save()";
  logger.save();
  EXPECT_EQ(read_file(logger.metrics_file_path()), "epoch,step,train_loss\r\n0,0,0.5\r\n0,1,0.25\r\n");

  // No new key: rows are appended under the same header.
  logger.log_metrics({{"train_loss", 0.125}, {"epoch", 1}}, 2);
  logger.save();
  EXPECT_EQ(read_file(logger.metrics_file_path()), "epoch,step,train_loss\r\n0,0,0.5\r\n0,1,0.25\r\n1,2,0.125\r\n");

  // A new key: the file is rewritten under the wider (sorted) header; old rows get blanks.
  logger.log_metrics({{"val_acc", 0.875}, {"val_loss", 1e-05}, {"epoch", 1}}, 2);
  logger.log_metrics({{"train_loss", 0.0625}, {"epoch", 2}}, 3);
  logger.finalize("success");
  EXPECT_EQ(read_file(logger.metrics_file_path()),
            "epoch,step,train_loss,val_acc,val_loss\r\n"
            "0,0,0.5,,\r\n"
            "0,1,0.25,,\r\n"
            "1,2,0.125,,\r\n"
            "1,2,,0.875,1e-05\r\n"
            "2,3,0.0625,,\r\n");
  EXPECT_EQ(read_file(logger.hparams_file_path()), "{}\n") << "Lightning writes an empty hparams.yaml";
}

TEST(CSVLogger, UnionOfKeysBeforeTheFirstSaveAndQuotedNames) {
  TempDir tmp;
  kiln::CSVLogger logger({.root_dir = tmp.str(), .name = "", .prefix = "fit"});
  EXPECT_EQ(logger.log_dir(), (tmp / "version_0").string());
  logger.log_metrics({{"a", 1.5}}, 0);
  logger.log_metrics({{"b,c", kt::kNaN}}, 1);
  logger.save();
  EXPECT_EQ(read_file(logger.metrics_file_path()), "fit-a,\"fit-b,c\",step\r\n1.5,,0\r\n,nan,1\r\n");
}

TEST(CSVLogger, FlushesEveryNSteps) {
  TempDir tmp;
  kiln::CSVLogger logger({.root_dir = tmp.str(), .flush_logs_every_n_steps = 3});
  logger.log_metrics({{"loss", 1}}, 0);
  logger.log_metrics({{"loss", 2}}, 1);
  EXPECT_FALSE(fs::exists(logger.metrics_file_path()));
  logger.log_metrics({{"loss", 3}}, 2);  // (step + 1) % 3 == 0
  EXPECT_EQ(read_file(logger.metrics_file_path()), "loss,step\r\n1,0\r\n2,1\r\n3,2\r\n");
  logger.log_metrics({{"loss", 4}}, 3);
  EXPECT_EQ(read_file(logger.metrics_file_path()), "loss,step\r\n1,0\r\n2,1\r\n3,2\r\n");
  kt::expect_error([&] { kiln::CSVLogger({.root_dir = tmp.str(), .flush_logs_every_n_steps = 0}); },
                   {"CSVLogger", "flush_logs_every_n_steps", "0"});
}

TEST(CSVLogger, DestructorWritesWhatIsBuffered) {
  TempDir tmp;
  std::string path;
  {
    kiln::CSVLogger logger({.root_dir = tmp.str()});
    logger.log_hyperparams({{"lr", 0.01}});
    logger.log_metrics({{"loss", 0.75}}, 4);
    path = logger.metrics_file_path();
  }
  EXPECT_EQ(read_file(path), "loss,step\r\n0.75,4\r\n");
  EXPECT_EQ(read_file(tmp / "lightning_logs/version_0/hparams.yaml"), "lr: 0.01\n");
}

TEST(CSVLogger, HyperparamsAreMergedIntoHparamsYaml) {
  TempDir tmp;
  kiln::CSVLogger logger({.root_dir = tmp.str()});
  logger.log_hyperparams({{"lr", 0.001}, {"batch_size", 64}});
  logger.save();
  EXPECT_EQ(read_file(logger.hparams_file_path()), "batch_size: 64\nlr: 0.001\n");
  logger.log_hyperparams({{"lr", 0.002}, {"model", {{"hidden", 128}}}});
  logger.finalize("success");
  EXPECT_EQ(read_file(logger.hparams_file_path()), "batch_size: 64\nlr: 0.002\nmodel:\n  hidden: 128\n");
  kt::expect_error([&] { logger.log_hyperparams(Json(3)); }, {"CSVLogger.log_hyperparams", "expected a JSON object", "number"});
}

TEST(CSVLogger, NothingLoggedLeavesNoFolder) {
  TempDir tmp;
  {
    kiln::CSVLogger logger({.root_dir = tmp.str()});
    logger.finalize("success");
  }
  EXPECT_FALSE(fs::exists(tmp / "lightning_logs"));
}

// ---- Versions ---------------------------------------------------------------------------------------

TEST(LoggerVersions, NextFreeVersionLikeLightning) {
  TempDir tmp;
  const fs::path root = tmp / "lightning_logs";
  EXPECT_EQ(kiln::next_version(root.string()), 0) << "a missing folder means version 0";
  fs::create_directories(root / "version_0");
  fs::create_directories(root / "version_3");
  fs::create_directories(root / "version_x");       // not a number: ignored
  fs::create_directories(root / "version_5_old");   // Lightning reads the part before the next '_': 5
  fs::create_directories(root / "other_9");
  std::ofstream(root / "version_12") << "a file, not a folder";
  EXPECT_EQ(kiln::next_version(root.string()), 6);

  kiln::CSVLogger automatic({.root_dir = tmp.str()});
  EXPECT_EQ(automatic.version(), "6");
  EXPECT_EQ(automatic.log_dir(), (root / "version_6").string());
  kiln::CSVLogger numbered({.root_dir = tmp.str(), .version = 2});
  EXPECT_EQ(numbered.log_dir(), (root / "version_2").string());
  kiln::CSVLogger named({.root_dir = tmp.str(), .name = "mnist", .version = "baseline"});
  EXPECT_EQ(named.version(), "baseline");
  EXPECT_EQ(named.log_dir(), (tmp / "mnist/baseline").string());

  kt::expect_error([&] { kiln::CSVLogger({.root_dir = tmp.str(), .version = -1}); }, {"logger", "version", ">= 0", "-1"});
  kt::expect_error([&] { kiln::CSVLogger({.root_dir = tmp.str(), .version = ""}); }, {"logger", "version", "empty"});
}

TEST(LoggerVersions, ReusedVersionReplacesOldMetrics) {
  TempDir tmp;
  {
    kiln::CSVLogger first({.root_dir = tmp.str()});
    first.log_metrics({{"old", 1}}, 0);
    first.save();
  }
  kiln::CSVLogger again({.root_dir = tmp.str(), .version = 0});
  again.log_metrics({{"new", 2}}, 0);
  again.save();
  EXPECT_EQ(read_file(again.metrics_file_path()), "new,step\r\n2,0\r\n");
}

TEST(LoggerVersions, LoggersBuiltTogetherShareOneRunFolder) {
  TempDir tmp;
  fs::create_directories(tmp / "lightning_logs/version_0");
  kiln::CSVLogger csv({.root_dir = tmp.str()});
  kiln::TensorBoardLogger tb({.root_dir = tmp.str()});
  std::vector<kiln::Logger*> loggers = {&csv, &tb};
  for (kiln::Logger* logger : loggers) {
    logger->log_hyperparams({{"lr", 0.1}});
    logger->log_metrics({{"loss", 0.5}}, 0);
    logger->finalize("success");
  }
  EXPECT_EQ(csv.log_dir(), tb.log_dir());
  EXPECT_EQ(csv.log_dir(), (tmp / "lightning_logs/version_1").string());
  EXPECT_TRUE(fs::exists(csv.metrics_file_path()));
  EXPECT_FALSE(only_event_file(tb.log_dir()).empty());
  EXPECT_EQ(read_file(tmp / "lightning_logs/version_1/hparams.yaml"), "lr: 0.1\n");
}

TEST(LoggerErrors, FailingWritesNameThePath) {
  TempDir tmp;
  std::ofstream(tmp / "blocker") << "a file where a folder should be";
  const std::string root = (tmp / "blocker").string();
  kiln::CSVLogger csv({.root_dir = root});
  csv.log_metrics({{"loss", 1}}, 0);
  kt::expect_error([&] { csv.save(); }, {"CSVLogger", "cannot create folder", root + "/lightning_logs/version_0"});
  kiln::TensorBoardLogger tb({.root_dir = root});
  kt::expect_error([&] { tb.log_metrics({{"loss", 1}}, 0); },
                   {"TensorBoardLogger", "cannot create folder", root + "/lightning_logs/version_0"});
  kt::expect_error([&] { kiln::tfevents::EventFileWriter((tmp / "no/such/folder/events").string()); },
                   {"TensorBoard event file", "cannot create", "no/such/folder/events"});
  kt::expect_error([&] { kiln::write_file_atomically((tmp / "missing/hparams.yaml").string(), "x", "CSVLogger"); },
                   {"CSVLogger", "cannot create", "missing/hparams.yaml.tmp"});
}

// ---- TensorBoardLogger ------------------------------------------------------------------------------

namespace {

struct LoggedRun {
  std::string event_file;
  double started = 0, finished = 0;
};

// A short run: hyperparameters (nested, of every type), then losses at several steps.
const Json kHparams = {{"lr", 0.001}, {"batch_size", 64}, {"use_bias", true}, {"optimizer", {{"name", "adamw"}, {"betas", {0.9, 0.999}}}}};
const std::vector<std::pair<int64_t, std::map<std::string, double>>> kSteps = {
    {0, {{"train_loss", 2.302585}, {"lr", 0.001}}},
    {1, {{"train_loss", 1.75}}},
    {7, {{"train_loss", 0.4123}, {"val_acc", 0.0}}},
    {50, {{"train_loss", -3.5e-7}, {"val_acc", 0.9125}}}};

LoggedRun log_a_run(const std::string& root) {
  LoggedRun run;
  run.started = now_seconds() - 1;  // the file name and wall times use whole or fractional seconds
  kiln::TensorBoardLogger logger({.root_dir = root});
  logger.log_hyperparams(kHparams);
  for (const auto& [step, metrics] : kSteps) logger.log_metrics(metrics, step);
  logger.finalize("success");
  run.event_file = logger.event_file_path();
  run.finished = now_seconds() + 1;
  return run;
}

}  // namespace

TEST(TensorBoardLogger, EventFileDecodesToEveryValueWritten) {
  TempDir tmp;
  const LoggedRun run = log_a_run(tmp.str());
  ASSERT_FALSE(run.event_file.empty());
  const std::string file_name = fs::path(run.event_file).filename().string();
  // events.out.tfevents.<10-digit time>.<host>.<pid>.<n>
  const std::string prefix = "events.out.tfevents.";
  ASSERT_EQ(file_name.rfind(prefix, 0), 0u) << file_name;
  const std::string time_digits = file_name.substr(prefix.size(), 10);
  EXPECT_EQ(time_digits.find_first_not_of("0123456789"), std::string::npos) << file_name;
  EXPECT_GE(std::stod(time_digits), std::floor(run.started));
  EXPECT_EQ(file_name.at(prefix.size() + 10), '.') << file_name;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string tail = ".";
  tail.append(host).append(".").append(std::to_string(getpid())).append(".");
  EXPECT_EQ(file_name.find(tail), prefix.size() + 10) << file_name;
  EXPECT_EQ(file_name.substr(prefix.size() + 10 + tail.size()).find_first_not_of("0123456789"), std::string::npos) << file_name;
  EXPECT_EQ(fs::path(run.event_file).parent_path(), tmp / "lightning_logs/version_0");

  const std::vector<std::string> records = read_records(run.event_file);
  // file_version, hp_metric, experiment, session start, one event per log_metrics, session end.
  ASSERT_EQ(records.size(), 1 + 3 + kSteps.size() + 1);
  std::vector<DecodedEvent> events;
  for (const std::string& r : records) events.push_back(decode_event(r));
  for (const DecodedEvent& e : events) {
    EXPECT_GE(e.wall_time, run.started);
    EXPECT_LE(e.wall_time, run.finished);
  }
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_TRUE(events[0].values.empty());

  // hp_metric = -1 at step 0, as Lightning logs it with the hyperparameters.
  ASSERT_EQ(events[1].values.size(), 1u);
  EXPECT_EQ(events[1].step, 0);
  EXPECT_EQ(events[1].values[0].tag, "hp_metric");
  EXPECT_TRUE(events[1].values[0].has_simple_value);
  EXPECT_EQ(events[1].values[0].simple_value, -1.0f);

  // The experiment: every flattened hparam with its type, and the metric to show.
  ASSERT_EQ(events[2].values.size(), 1u);
  EXPECT_EQ(events[2].values[0].tag, "_hparams_/experiment");
  EXPECT_EQ(events[2].values[0].plugin_name, "hparams");
  EXPECT_FALSE(events[2].values[0].has_simple_value);
  const auto experiment_data = decode_message(events[2].values[0].plugin_content);
  EXPECT_EQ(field(experiment_data, 1).number, 0) << "HParamsPluginData.version 0 is the default, left out";
  const auto experiment = decode_message(field(experiment_data, 2).bytes);
  std::map<std::string, uint64_t> types;
  for (const PbField& info : fields_numbered(experiment, 4)) {
    const auto fields = decode_message(info.bytes);
    types[field(fields, 1).bytes] = field(fields, 4).scalar;
  }
  const std::map<std::string, uint64_t> want_types = {
      {"batch_size", 3}, {"lr", 3}, {"optimizer/betas", 1}, {"optimizer/name", 1}, {"use_bias", 2}};  // FLOAT64 3, STRING 1, BOOL 2
  EXPECT_EQ(types, want_types);
  const auto metric_infos = fields_numbered(experiment, 5);
  ASSERT_EQ(metric_infos.size(), 1u);
  EXPECT_EQ(field(decode_message(field(decode_message(metric_infos[0].bytes), 1).bytes), 2).bytes, "hp_metric");

  // Session start: the values themselves, as google.protobuf.Value.
  EXPECT_EQ(events[3].values.at(0).tag, "_hparams_/session_start_info");
  const auto start = decode_message(field(decode_message(events[3].values[0].plugin_content), 3).bytes);
  std::map<std::string, std::vector<PbField>> hparams;
  for (const PbField& entry : fields_numbered(start, 1)) {
    const auto kv = decode_message(entry.bytes);
    hparams[field(kv, 1).bytes] = decode_message(field(kv, 2).bytes);
  }
  ASSERT_EQ(hparams.size(), 5u);
  EXPECT_EQ(as_double(field(hparams["lr"], 2)), 0.001);
  EXPECT_EQ(as_double(field(hparams["batch_size"], 2)), 64.0);
  EXPECT_EQ(field(hparams["use_bias"], 4).scalar, 1u);
  EXPECT_EQ(field(hparams["use_bias"], 4).wire, 0);
  EXPECT_EQ(field(hparams["optimizer/name"], 3).bytes, "adamw");
  EXPECT_EQ(field(hparams["optimizer/betas"], 3).bytes, "[0.9,0.999]");

  // Every scalar with its step, as float32 (what simple_value holds).
  for (size_t i = 0; i < kSteps.size(); ++i) {
    const DecodedEvent& e = events[4 + i];
    EXPECT_EQ(e.step, kSteps[i].first);
    ASSERT_EQ(e.values.size(), kSteps[i].second.size());
    size_t v = 0;
    for (const auto& [tag, value] : kSteps[i].second) {
      EXPECT_EQ(e.values[v].tag, tag);
      EXPECT_TRUE(e.values[v].has_simple_value) << tag << " at step " << e.step << " (0.0 must still be written)";
      EXPECT_EQ(e.values[v].simple_value, static_cast<float>(value)) << tag << " at step " << e.step;
      ++v;
    }
  }

  // Session end with the status finalize() was given.
  const DecodedEvent& end = events.back();
  EXPECT_EQ(end.values.at(0).tag, "_hparams_/session_end_info");
  const auto end_info = decode_message(field(decode_message(end.values[0].plugin_content), 4).bytes);
  EXPECT_EQ(field(end_info, 1).scalar, 1u) << "STATUS_SUCCESS";
  EXPECT_GE(as_double(field(end_info, 2)), run.started);

  EXPECT_EQ(read_file(tmp / "lightning_logs/version_0/hparams.yaml"),
            "batch_size: 64\nlr: 0.001\noptimizer:\n  betas:\n  - 0.9\n  - 0.999\n  name: adamw\nuse_bias: true\n");
}

TEST(TensorBoardLogger, BuffersUntilSaveAndLosesNothingOnFinalize) {
  TempDir tmp;
  kiln::TensorBoardLogger logger({.root_dir = tmp.str(), .prefix = "fit", .default_hp_metric = false});
  logger.log_hyperparams({{"seed", 7}});  // without hp_metric there is nothing for the hparams dashboard
  EXPECT_FALSE(fs::exists(tmp / "lightning_logs")) << "no metrics yet: nothing written";
  logger.log_metrics({{"loss", 1.0}}, 3);
  const std::string path = logger.event_file_path();
  EXPECT_EQ(read_records(path).size(), 1u) << "only the file_version record is written at once";
  logger.save();
  ASSERT_EQ(read_records(path).size(), 2u);
  EXPECT_EQ(decode_event(read_records(path)[1]).values.at(0).tag, "fit-loss");
  logger.log_metrics({{"loss", 0.5}}, 4);
  logger.finalize("failed");
  const auto records = read_records(path);
  ASSERT_EQ(records.size(), 3u) << "no session was started, so no session end either";
  EXPECT_EQ(decode_event(records[2]).step, 4);
  EXPECT_EQ(decode_event(records[2]).values.at(0).simple_value, 0.5f);
  EXPECT_EQ(read_file(tmp / "lightning_logs/version_0/hparams.yaml"), "seed: 7\n");
}

TEST(TensorBoardLogger, FailedStatusAndDestructorFlush) {
  TempDir tmp;
  std::string path;
  {
    kiln::TensorBoardLogger logger({.root_dir = tmp.str()});
    logger.log_hyperparams({{"lr", 1}}, {{"val_loss", 9.0}});
    logger.log_metrics({{"val_loss", 2.0}}, 10);
    path = logger.event_file_path();
  }  // no save(): the destructor writes the buffer out
  auto records = read_records(path);
  ASSERT_EQ(records.size(), 5u);  // file_version, val_loss at 0, experiment, session start, val_loss at 10
  EXPECT_EQ(decode_event(records[4]).values.at(0).simple_value, 2.0f);

  TempDir tmp2;
  kiln::TensorBoardLogger failed({.root_dir = tmp2.str()});
  failed.log_hyperparams({{"lr", 1}});
  failed.finalize("failed");
  records = read_records(failed.log_dir() + "/" + fs::path(only_event_file(failed.log_dir())).filename().string());
  const auto end = decode_message(field(decode_message(decode_event(records.back()).values.at(0).plugin_content), 4).bytes);
  EXPECT_EQ(field(end, 1).scalar, 2u) << "STATUS_FAILURE";
  kt::expect_error([&] { failed.log_hyperparams(Json::array()); }, {"TensorBoardLogger.log_hyperparams", "expected a JSON object"});
}

// Reads the file back with PyPI's tensorboard (tests/train/read_tfevents.py), when a venv with it
// exists: $KILN_PYENV, or build/pyenv in the source tree (scripts/install-python-deps.sh makes it).
TEST(TensorBoardLogger, TensorboardPackageReadsEveryValueAndStep) {
  const fs::path source_root = (fs::path(KILN_TEST_FIXTURES) / ".." / "..").lexically_normal();
  const char* env = std::getenv("KILN_PYENV");
  const fs::path pyenv = env && *env ? fs::path(env) : source_root / "build" / "pyenv";
  const fs::path python = pyenv / "bin" / "python";
  const std::string probe = shell_quote(python.string()) + " -c 'import tensorboard' >/dev/null 2>&1";
  if (!fs::exists(python) || std::system(probe.c_str()) != 0)
    GTEST_SKIP() << "no Python venv with the tensorboard package at " << pyenv.string()
                 << " (make one: python3 -m venv " << pyenv.string() << " && " << (pyenv / "bin/pip").string()
                 << " install tensorboard; or point KILN_PYENV at one)";

  TempDir tmp;
  const LoggedRun run = log_a_run(tmp.str());
  const fs::path script = fs::path(KILN_TEST_FIXTURES) / ".." / "train" / "read_tfevents.py";
  const std::string command =
      shell_quote(python.string()) + " " + shell_quote(script.string()) + " " + shell_quote(run.event_file) + " 2>&1";
  std::FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) output.append(buf, n);
  ASSERT_EQ(pclose(pipe), 0) << output;

  std::map<std::pair<std::string, int64_t>, float> scalars;
  std::map<std::string, std::string> hparams;
  std::vector<std::string> metric_infos, session_ends;
  int64_t records = -1;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "records") {
      words >> records;
    } else if (kind == "scalar") {
      std::string tag, value;
      int64_t step;
      double wall_time;
      words >> tag >> step >> value >> wall_time;
      EXPECT_GE(wall_time, run.started);
      EXPECT_LE(wall_time, run.finished);
      EXPECT_TRUE(scalars.emplace(std::make_pair(tag, step), std::stof(value)).second) << line;
    } else if (kind == "hparam") {
      std::string name, type, value;
      words >> name >> type;
      std::getline(words >> std::ws, value);
      hparams[name] = type + " " + value;
    } else if (kind == "metric_info") {
      metric_infos.emplace_back();
      words >> metric_infos.back();
    } else if (kind == "session_end") {
      session_ends.emplace_back();
      words >> session_ends.back();
    } else {
      ADD_FAILURE() << "unexpected line from read_tfevents.py: " << line;
    }
  }
  EXPECT_EQ(records, static_cast<int64_t>(1 + 3 + kSteps.size() + 1));
  std::map<std::pair<std::string, int64_t>, float> want = {{{"hp_metric", 0}, -1.0f}};
  for (const auto& [step, metrics] : kSteps)
    for (const auto& [tag, value] : metrics) want[{tag, step}] = static_cast<float>(value);
  EXPECT_EQ(scalars, want);
  const std::map<std::string, std::string> want_hparams = {{"batch_size", "number 64.0"}, {"lr", "number 0.001"},
                                                           {"optimizer/betas", "string [0.9,0.999]"},
                                                           {"optimizer/name", "string adamw"}, {"use_bias", "bool True"}};
  EXPECT_EQ(hparams, want_hparams);
  EXPECT_EQ(metric_infos, std::vector<std::string>{"hp_metric"});
  EXPECT_EQ(session_ends, std::vector<std::string>{"STATUS_SUCCESS"});
}
