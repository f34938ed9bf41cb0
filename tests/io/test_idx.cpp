// The IDX reader: headers and element types against hand-made files, every malformed-header case,
// truncation at every byte, broken gzip streams, and the real Fashion-MNIST files against values
// Python's gzip module computed (tests/fixtures/data/make_data_fixtures.py).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/data/fashion_mnist.h"
#include "io/data/idx.h"
#include "testing.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using kiln::Tensor;
using kiln::data::read_idx;

namespace {

const std::string kFixtures = std::string(KILN_TEST_FIXTURES) + "/data/";

// A scratch folder for files written by a test, removed at the end.
class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("kiln_test_idx_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
    return p;
  }

 private:
  fs::path path_;
};

// An IDX file by hand: magic (0, 0, type, ndims), big-endian dims, then the payload as given.
std::vector<uint8_t> idx(uint8_t type, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    b.push_back(static_cast<uint8_t>(d >> 24));
    b.push_back(static_cast<uint8_t>(d >> 16));
    b.push_back(static_cast<uint8_t>(d >> 8));
    b.push_back(static_cast<uint8_t>(d));
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i);
  return v;
}

}  // namespace

TEST(Idx, ReadsPlainU8WithItsDims) {
  TempDir dir;
  const Tensor t = read_idx(dir.write("a", idx(0x08, {2, 3, 4}, iota_bytes(24))));
  EXPECT_EQ(t.dtype(), kiln::DType::u8);
  EXPECT_EQ(t.shape(), (kiln::Dims{2, 3, 4}));
  std::vector<double> want(24);
  for (int i = 0; i < 24; ++i) want[static_cast<size_t>(i)] = i;
  EXPECT_EQ(kt::values(t), want);
}

TEST(Idx, ReadsGzipU8TheSameAsPlain) {
  const Tensor t = read_idx(kFixtures + "tiny-u8-idx3-ubyte.gz");
  EXPECT_EQ(t.shape(), (kiln::Dims{2, 3, 4}));
  EXPECT_EQ(kt::at(t, 0), 0);
  EXPECT_EQ(kt::at(t, 23), 23);
  EXPECT_EQ(kt::at(t, 13), 13);
}

TEST(Idx, ConvertsBigEndianElementTypes) {
  const Tensor f = read_idx(kFixtures + "tiny-f32-idx2-ubyte.gz");
  EXPECT_EQ(f.dtype(), kiln::DType::f32);
  EXPECT_EQ(kt::values(f), (std::vector<double>{1.5, -2.25, static_cast<double>(1e-3f), static_cast<double>(3e38f)}));
  const Tensor s = read_idx(kFixtures + "tiny-i16-idx1-ubyte.gz");
  EXPECT_EQ(s.dtype(), kiln::DType::i32);  // i16 widens: Kiln has no int16
  EXPECT_EQ(kt::values(s), (std::vector<double>{-2, 300, -32768}));

  TempDir dir;
  // i32 -7 and 65536, big-endian; i8 -1 and 127; f64 -0.5.
  const Tensor i = read_idx(dir.write("i32", idx(0x0C, {2}, {0xFF, 0xFF, 0xFF, 0xF9, 0x00, 0x01, 0x00, 0x00})));
  EXPECT_EQ(kt::values(i), (std::vector<double>{-7, 65536}));
  const Tensor b = read_idx(dir.write("i8", idx(0x09, {2}, {0xFF, 0x7F})));
  EXPECT_EQ(b.dtype(), kiln::DType::i32);
  EXPECT_EQ(kt::values(b), (std::vector<double>{-1, 127}));
  const Tensor d = read_idx(dir.write("f64", idx(0x0E, {1, 1}, {0xBF, 0xE0, 0, 0, 0, 0, 0, 0})));
  EXPECT_EQ(d.dtype(), kiln::DType::f64);
  EXPECT_EQ(kt::values(d), (std::vector<double>{-0.5}));
}

TEST(Idx, EmptyDimGivesAnEmptyTensor) {
  TempDir dir;
  const Tensor t = read_idx(dir.write("e", idx(0x08, {0, 28, 28}, {})));
  EXPECT_EQ(t.shape(), (kiln::Dims{0, 28, 28}));
  EXPECT_EQ(t.numel(), 0);
}

TEST(Idx, MalformedHeadersNameTheFileAndField) {
  TempDir dir;
  const std::string missing = dir.write("x", {}) + ".missing";
  kt::expect_error([&] { read_idx(missing); }, {"read_idx", "cannot open", missing});
  const std::string empty = dir.write("empty", {});
  kt::expect_error([&] { read_idx(empty); }, {"read_idx", empty, "too short for an IDX magic", "0 bytes"});
  const std::string magic = dir.write("magic", {0x12, 0x34, 0x08, 0x01, 0, 0, 0, 1, 7});
  kt::expect_error([&] { read_idx(magic); }, {magic, "bad magic", "0x12 0x34"});
  const std::string type = dir.write("type", idx(0x07, {1}, {0}));
  kt::expect_error([&] { read_idx(type); }, {type, "unknown element type code 0x7", "0x08 u8"});
  const std::string nodims = dir.write("nodims", idx(0x08, {}, {}));
  kt::expect_error([&] { read_idx(nodims); }, {nodims, "gives 0 dims", "expected 1 to 16"});
  const std::string manydims = dir.write("manydims", {0, 0, 0x08, 17});
  kt::expect_error([&] { read_idx(manydims); }, {manydims, "gives 17 dims"});
  const std::string header = dir.write("header", {0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0});
  kt::expect_error([&] { read_idx(header); }, {header, "truncated header", "dim 1 of 3"});
  // 2^32-1 cubed elements: more than 2^64, refused before any allocation.
  const std::string overflow = dir.write("overflow", idx(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, {}));
  kt::expect_error([&] { read_idx(overflow); }, {overflow, "more elements than fit in 64 bits"});
  // A plausible size the file cannot hold: refused before allocating the 4 GB it claims.
  const std::string huge = dir.write("huge", idx(0x0E, {0x7FFFFFFF, 2}, {1, 2, 3}));
  kt::expect_error([&] { read_idx(huge); }, {huge, "truncated data", "need 34359738352 bytes", "holds at most 3"});
}

TEST(Idx, DataSizeMustMatchTheDimsExactly) {
  TempDir dir;
  const std::string short_data = dir.write("short", idx(0x08, {2, 3}, iota_bytes(5)));
  kt::expect_error([&] { read_idx(short_data); }, {short_data, "truncated data", "[2, 3]", "need 6 bytes"});
  const std::string trailing = dir.write("trailing", idx(0x08, {2, 3}, iota_bytes(7)));
  kt::expect_error([&] { read_idx(trailing); }, {trailing, "trailing bytes", "after the 6 bytes"});
  const std::string f32 = dir.write("f32", idx(0x0D, {3}, iota_bytes(11)));
  kt::expect_error([&] { read_idx(f32); }, {f32, "truncated data", "of f32 need 12 bytes"});
}

// Every proper prefix of a valid file is an error (never a crash or a silently short tensor).
TEST(Idx, TruncationAtEveryByteIsAnError) {
  TempDir dir;
  const std::vector<uint8_t> full = idx(0x0C, {2, 3}, iota_bytes(24));
  for (size_t len = 0; len < full.size(); ++len) {
    const std::string p = dir.write("cut" + std::to_string(len), std::vector<uint8_t>(full.begin(), full.begin() + static_cast<long>(len)));
    kt::expect_error([&] { read_idx(p); }, {"read_idx", p});
  }
  EXPECT_EQ(read_idx(dir.write("whole", full)).numel(), 6);
}

TEST(Idx, BrokenGzipStreams) {
  const std::string cut = kFixtures + "truncated-stream.gz";
  kt::expect_error([&] { read_idx(cut); }, {cut, "truncated data", "[64, 64]", "the gzip stream ends early"});
  const std::string trailer = kFixtures + "missing-trailer.gz";
  kt::expect_error([&] { read_idx(trailer); }, {trailer, "gzip stream ends early"});
  const std::string crc = kFixtures + "bad-crc.gz";
  kt::expect_error([&] { read_idx(crc); }, {crc, "corrupt gzip data", "incorrect data check"});
  const std::string short_data = kFixtures + "short-data.gz";
  kt::expect_error([&] { read_idx(short_data); }, {short_data, "truncated data", "need 7840 bytes", "only 100"});
  const std::string magic = kFixtures + "bad-magic.gz";
  kt::expect_error([&] { read_idx(magic); }, {magic, "bad magic"});
}

// ---- The real data set, when Debian's dataset-fashion-mnist is installed.

class FashionMNISTFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(std::string(kiln::data::kFashionMNISTRoot) + "/t10k-images-idx3-ubyte.gz"))
      GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    std::ifstream in(kFixtures + "fashion_mnist_reference.json");
    ASSERT_TRUE(in.good());
    reference_ = nlohmann::json::parse(in);
  }
  void check_split(const std::string& split, bool train) {
    const nlohmann::json& ref = reference_.at(split);
    const auto start = std::chrono::steady_clock::now();
    const kiln::data::FashionMNIST data({.train = train, .dtype = kiln::DType::u8});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("FashionMNIST %s: %lld images decoded in %.3f s\n", split.c_str(),
                static_cast<long long>(data.size()), seconds);

    const int64_t n = ref.at("count").get<int64_t>();
    ASSERT_EQ(data.size(), n);
    EXPECT_EQ(data.images().shape(), (kiln::Dims{n, 1, 28, 28}));
    const int64_t* labels = data.labels().data_ptr<int64_t>();
    const auto first = ref.at("first_labels").get<std::vector<int64_t>>();
    for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(labels[i], first[i]) << "label " << i;
    EXPECT_EQ(labels[n - 1], ref.at("last_label").get<int64_t>());
    std::vector<int64_t> counts(10, 0);
    for (int64_t i = 0; i < n; ++i) ++counts[static_cast<size_t>(labels[i])];
    EXPECT_EQ(counts, ref.at("label_counts").get<std::vector<int64_t>>());

    const uint8_t* pixels = data.images().data_ptr<uint8_t>();
    const auto image0 = ref.at("image0").get<std::vector<int>>();
    for (size_t i = 0; i < image0.size(); ++i) ASSERT_EQ(pixels[i], image0[i]) << "pixel " << i << " of image 0";
    for (const auto& [index, sum] : ref.at("image_sums").items()) {
      const int64_t k = std::stoll(index);
      int64_t got = 0;
      for (int64_t p = 0; p < 784; ++p) got += pixels[k * 784 + p];
      EXPECT_EQ(got, sum.get<int64_t>()) << "pixel sum of image " << k;
    }
    int64_t total = 0;
    for (int64_t p = 0; p < n * 784; ++p) total += pixels[p];
    EXPECT_EQ(total, ref.at("total_pixel_sum").get<int64_t>());

    if (train) return;  // the float32 view is checked on the test split (one more decode)
    // The float32 view of a sample is the u8 one divided by 255; the label is a 0-d int64.
    const kiln::data::FashionMNIST scaled({.train = train});
    const kiln::data::Example ex = scaled.get(0);
    EXPECT_EQ(ex[0].shape(), (kiln::Dims{1, 28, 28}));
    EXPECT_EQ(ex[0].dtype(), kiln::DType::f32);
    EXPECT_EQ(ex[1].dim(), 0);
    EXPECT_EQ(kt::at(ex[1], 0), first[0]);
    for (int64_t p = 0; p < 784; ++p)
      ASSERT_EQ(kt::at(ex[0], p), static_cast<double>(static_cast<float>(image0[static_cast<size_t>(p)]) / 255.0f));
  }

  nlohmann::json reference_;
};

// The train split is one zlib decode of 26 MB (about 0.3 s idle, 0.8 s on a loaded machine).
TEST_F(FashionMNISTFiles, TestSplitMatchesPythonGzip) { check_split("t10k", false); }
TEST_F(FashionMNISTFiles, TrainSplitMatchesPythonGzip) { check_split("train", true); }

TEST(FashionMNIST, MissingFilesAndBadOptionsAreClearErrors) {
  TempDir dir;
  const std::string root = fs::path(dir.write("empty", {})).parent_path().string();
  kt::expect_error([&] { kiln::data::FashionMNIST({.root = root}); },
                   {"FashionMNIST", "train-images-idx3-ubyte.gz", "dataset-fashion-mnist", "options.root"});
  kt::expect_error([&] { kiln::data::FashionMNIST({.root = root, .dtype = kiln::DType::i64}); },
                   {"FashionMNIST", "float32 or uint8", "int64"});
  // Files that exist but disagree: 3 images, 2 labels; then a label outside the 10 classes.
  dir.write("train-images-idx3-ubyte", idx(0x08, {3, 2, 2}, iota_bytes(12)));
  dir.write("train-labels-idx1-ubyte", idx(0x08, {2}, {1, 2}));
  kt::expect_error([&] { kiln::data::FashionMNIST({.root = root}); }, {"has 3 images", "has 2 labels"});
  dir.write("train-labels-idx1-ubyte", idx(0x08, {3}, {1, 12, 2}));
  kt::expect_error([&] { kiln::data::FashionMNIST({.root = root}); }, {"label 12 of sample 1", "0 to 9"});
  dir.write("train-labels-idx1-ubyte", idx(0x08, {3}, {1, 9, 2}));
  const kiln::data::FashionMNIST tiny({.root = root, .dtype = kiln::DType::u8});
  EXPECT_EQ(tiny.size(), 3);
  EXPECT_EQ(tiny.images().shape(), (kiln::Dims{3, 1, 2, 2}));
  EXPECT_EQ(kt::values(tiny.get(2)[0]), (std::vector<double>{8, 9, 10, 11}));
  EXPECT_EQ(kt::at(tiny.get(1)[1], 0), 9);
  kt::expect_error([&] { tiny.get(3); }, {"FashionMNIST", "index 3 is out of range", "3 samples"});
}
