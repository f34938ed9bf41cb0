// safetensors: round trips of every dtype and layout, the bytes on disk, files from an independent
// Python writer, zero-copy reads, metadata, the writer's errors, and a round trip with PyPI's
// `safetensors` package (skipped, with a message, when scripts/install-python-deps.sh made no venv).
#include <sys/wait.h>

#include <cstdio>

#include "ckpt_helpers.h"
#include "io/checkpoint/checksum.h"

namespace kt = kiln::testing;
namespace kc = kiln::testing::ckpt;
using namespace kiln;

TEST(Safetensors, RoundTripsEveryDtypeAndLayout) {
  kc::ScratchDir dir;
  const State state = kc::sample_state(8);
  io::save_safetensors(dir / "a.safetensors", state.tensors, {{"format", "pt"}, {"step", "7"}});
  const auto reader = io::SafetensorsReader::open(dir / "a.safetensors");
  EXPECT_EQ(reader.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"step", "7"}}));
  EXPECT_EQ(reader.names(), state.tensors.keys());  // file order is insertion order
  kc::expect_identical(io::load_safetensors(dir / "a.safetensors"), state.tensors);
  kc::expect_identical(io::load_safetensors(dir / "a.safetensors", {.zero_copy = true}), state.tensors);
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"a.safetensors"});
}

TEST(Safetensors, BytesFollowTheSpecification) {
  kc::ScratchDir dir;
  TensorDict d;
  d.insert("b", tensor(std::vector<int32_t>{1, -2}));
  d.insert("a", tensor({0.5, 1.5, 2.5}));
  io::save_safetensors(dir / "s.safetensors", d);
  const auto bytes = kc::read_bytes(dir / "s.safetensors");
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // padded with spaces, as the reference writer does
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(n));
  const std::string json = R"({"b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]},)"
                           R"("a":{"dtype":"F32","shape":[3],"data_offsets":[8,20]}})";
  EXPECT_EQ(header.substr(0, json.size()), json);
  EXPECT_EQ(header.find_first_not_of(' ', json.size()), std::string::npos);
  EXPECT_EQ(bytes.size(), 8 + n + 20);
  int32_t b1;
  std::memcpy(&b1, &bytes[8 + n + 4], 4);
  EXPECT_EQ(b1, -2);
  float a2;
  std::memcpy(&a2, &bytes[8 + n + 16], 4);
  EXPECT_EQ(a2, 2.5f);
}

TEST(Safetensors, ReadsFilesFromTheIndependentPythonWriter) {
  for (DType d : kt::kAllDTypes) {
    const std::string name(dtype_name(d));
    const auto reader = io::SafetensorsReader::open(kc::fixture_dir() + "/valid/" + name + ".safetensors");
    EXPECT_EQ(reader.metadata().at("dtype"), name);
    const Tensor m = reader.get(name + ".matrix");
    EXPECT_EQ(m.shape(), (Dims{2, 3}));
    for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(kt::at(m, i), kc::corpus_value(d, i)) << name << " " << i;
    EXPECT_EQ(reader.get(name + ".scalar").dim(), 0);
    EXPECT_EQ(reader.get(name + ".empty").shape(), (Dims{0, 4}));
  }
}

TEST(Safetensors, ConvertsToAndFromTheNativeFormatLosslessly) {
  kc::ScratchDir dir;
  const TensorDict original = io::load_safetensors(kc::fixture_dir() + "/valid/all.safetensors");
  State s;
  s.tensors = original;
  io::save(dir / "x.kiln", s);
  io::save_safetensors(dir / "x.safetensors", io::load(dir / "x.kiln").tensors, {{"step", "7"}});
  kc::expect_identical(io::load_safetensors(dir / "x.safetensors"), original);
  EXPECT_EQ(kc::read_bytes(dir / "x.safetensors"), kc::read_bytes(kc::fixture_dir() + "/valid/all.safetensors"));
}

TEST(Safetensors, WriterErrors) {
  kc::ScratchDir dir;
  TensorDict d;
  d.insert("__metadata__", tensor({1.0}));
  kt::expect_error([&] { io::save_safetensors(dir / "m.safetensors", d); }, {"save_safetensors", "__metadata__"});
  TensorDict e;
  e.insert("", tensor({1.0}));
  kt::expect_error([&] { io::save_safetensors(dir / "e.safetensors", e); }, {"save_safetensors", "name is empty"});
  kt::expect_error([&] { io::load_safetensors(dir / "none.safetensors"); }, {"load_safetensors", "cannot open"});
  kt::expect_error([&] { io::SafetensorsReader::open(kc::fixture_dir() + "/valid/all.safetensors").get("zz"); },
                   {"no tensor named 'zz'"});
  EXPECT_EQ(dir.entries(), std::vector<std::string>{});
}

namespace {
std::string python_env() {
  if (const char* env = std::getenv("KILN_PYENV"); env && *env) return env;
  return std::string(KILN_TEST_FIXTURES) + "/../../build/pyenv";
}
}  // namespace

TEST(Safetensors, RoundTripsWithThePythonPackage) {
  const std::string python = python_env() + "/bin/python";
  if (::access(python.c_str(), X_OK) != 0 ||
      std::system((python + " -c 'import safetensors, numpy' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "no Python venv with safetensors at " << python_env()
                 << " (run scripts/install-python-deps.sh, or set KILN_PYENV)";
  kc::ScratchDir dir;
  const State state = kc::sample_state(21);
  io::save_safetensors(dir / "kiln.safetensors", state.tensors, {{"framework", "kiln"}});
  const std::string cmd = python + " " + kc::fixture_dir() + "/safetensors_roundtrip.py " + (dir / "kiln.safetensors") +
                          " " + (dir / "py.safetensors");
  FILE* pipe = ::popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  ASSERT_EQ(::pclose(pipe), 0) << cmd << "\n" << out;
  const Json seen = Json::parse(out);
  // What Python saw in Kiln's file: names, dtypes, shapes, exact bytes, metadata, numpy values.
  EXPECT_EQ(seen["metadata"], Json({{"framework", "kiln"}}));
  ASSERT_EQ(seen["tensors"].size(), state.tensors.size());
  for (const auto& [name, t] : state.tensors) {
    const Json& info = seen["tensors"].at(name);
    EXPECT_EQ(info["dtype"], io::safetensors_dtype_name(t.dtype())) << name;
    EXPECT_EQ(info["shape"], Json(t.shape().vec())) << name;
    if (!info["first"].is_null() && t.numel() > 0 && t.dtype() != DType::boolean) {
      EXPECT_DOUBLE_EQ(info["first"][0].get<double>(), kt::at(t, 0)) << name;
    }
  }
  // What Kiln reads back from the file Python wrote.
  kc::expect_identical(io::load_safetensors(dir / "py.safetensors"), [&] {
    // Python orders tensors its own way; compare by name.
    TensorDict sorted;
    for (const auto& n : io::SafetensorsReader::open(dir / "py.safetensors").names()) sorted.insert(n, state.tensors.at(n));
    return sorted;
  }());
  EXPECT_EQ(io::SafetensorsReader::open(dir / "py.safetensors").metadata().at("framework"), "kiln");
}
