// Data sets, transforms and samplers: TensorDataset rows, transforms against hand-computed images,
// their determinism in (seed, epoch, index), the text corpus windows, and sampler coverage
// (every index once per epoch; distributed ranks disjoint and padded equally, as torch pads).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "io/data/dataset.h"
#include "io/data/sampler.h"
#include "io/data/text.h"
#include "io/data/transforms.h"
#include "testing.h"

namespace kt = kiln::testing;
namespace fs = std::filesystem;
using kiln::DType;
using kiln::Tensor;
using namespace kiln::data;

namespace {

std::vector<int64_t> sorted(std::vector<int64_t> v) {
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = i;
  return v;
}

// A (C, H, W) float32 image with pixel value c * 100 + y * 10 + x.
Tensor coded_image(int64_t c, int64_t h, int64_t w) {
  std::vector<float> v;
  for (int64_t i = 0; i < c; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) v.push_back(static_cast<float>(i * 100 + y * 10 + x));
  return kiln::tensor(v, kiln::Dims{c, h, w});
}

}  // namespace

// ---- Example and TensorDataset

TEST(TensorDataset, ServesRowsOfEveryTensor) {
  const Tensor x = kiln::arange(12, {.dtype = DType::f32}).view({4, 3});
  const Tensor y = kiln::arange(4, {.dtype = DType::i64});
  const TensorDataset ds({x, y});
  ASSERT_EQ(ds.size(), 4);
  const Example ex = ds.get(2);
  ASSERT_EQ(ex.size(), 2u);
  EXPECT_EQ(kt::values(ex[0]), (std::vector<double>{6, 7, 8}));
  EXPECT_EQ(ex[1].dim(), 0);
  EXPECT_EQ(kt::at(ex[1], 0), 2);
  kt::expect_error([&] { ds.get(4); }, {"TensorDataset", "index 4 is out of range", "4 samples"});
  kt::expect_error([&] { ds.get(-1); }, {"TensorDataset", "index -1"});
  kt::expect_error([&] { (void)ex[2]; }, {"Example", "field 2 is out of range", "2 fields"});
}

TEST(TensorDataset, RejectsMismatchedOrScalarTensors) {
  kt::expect_error([] { TensorDataset({kiln::zeros({3, 2}), kiln::zeros({4})}); },
                   {"TensorDataset", "tensor 1 has 4 rows but tensor 0 has 3", "[4]", "[3, 2]"});
  kt::expect_error([] { TensorDataset({kiln::zeros({})}); }, {"TensorDataset", "tensor 0 is 0-d"});
  kt::expect_error([] { TensorDataset(std::vector<Tensor>{}); }, {"TensorDataset", "at least one tensor"});
}

// ---- SampleRandom

TEST(SampleRandom, IsAFunctionOfSeedEpochIndexAndDrawNumber) {
  auto draws = [](uint64_t seed, int64_t epoch, int64_t index) {
    SampleRandom r(seed, epoch, index);
    std::vector<uint32_t> v;
    for (int i = 0; i < 9; ++i) v.push_back(r.bits());
    return v;
  };
  EXPECT_EQ(draws(1, 2, 3), draws(1, 2, 3));
  EXPECT_NE(draws(1, 2, 3), draws(1, 2, 4));
  EXPECT_NE(draws(1, 2, 3), draws(1, 3, 3));
  EXPECT_NE(draws(1, 2, 3), draws(2, 2, 3));
  // Draw 0 is word 0 of Philox(seed; counter = (index, epoch << 32 | block 0)).
  EXPECT_EQ(draws(1, 2, 3)[0], kiln::philox(1, 3, uint64_t{2} << 32)[0]);
  EXPECT_EQ(draws(1, 2, 3)[4], kiln::philox(1, 3, (uint64_t{2} << 32) | 1)[0]);
}

TEST(SampleRandom, IntegersCoverTheRangeEvenly) {
  std::vector<int> counts(7, 0);
  const int n = 14000;
  for (int i = 0; i < n; ++i) {
    SampleRandom r(5, 0, i);
    const int64_t v = r.integer(-3, 3);
    ASSERT_GE(v, -3);
    ASSERT_LE(v, 3);
    ++counts[static_cast<size_t>(v + 3)];
  }
  for (int c : counts) EXPECT_NEAR(c, n / 7, 200);  // ~4.5 standard deviations
  SampleRandom r(0, 0, 0);
  EXPECT_EQ(r.integer(4, 4), 4);
  kt::expect_error([&] { r.integer(2, 1); }, {"SampleRandom::integer", "empty range [2, 1]"});
}

// ---- Transforms

TEST(Transforms, ToFloatDividesLikeTorchvision) {
  const Tensor px = kiln::tensor(std::vector<uint8_t>{0, 1, 128, 255}, kiln::Dims{1, 2, 2});
  SampleRandom rng(0, 0, 0);
  const Tensor f = to_float()(px, rng);
  EXPECT_EQ(f.dtype(), DType::f32);
  EXPECT_EQ(f.shape(), px.shape());
  EXPECT_EQ(kt::values(f), (std::vector<double>{0.0, static_cast<double>(1.0f / 255.0f),
                                                static_cast<double>(128.0f / 255.0f), 1.0}));
}

TEST(Transforms, NormalizePerChannel) {
  const Tensor img = coded_image(2, 1, 2);  // channel 0: 0, 1; channel 1: 100, 101
  SampleRandom rng(0, 0, 0);
  const Tensor out = normalize({1.0, 100.0}, {2.0, 0.5})(img, rng);
  EXPECT_EQ(kt::values(out), (std::vector<double>{-0.5, 0.0, 0.0, 2.0}));
  const Tensor one = normalize({0.5}, {0.25})(img, rng);  // one value: every channel
  EXPECT_EQ(kt::values(one), (std::vector<double>{-2.0, 2.0, 398.0, 402.0}));
  kt::expect_error([&] { normalize({0.1, 0.2, 0.3}, {1, 1, 1})(img, rng); },
                   {"normalize", "3 mean/std values", "2 channels", "[2, 1, 2]"});
  kt::expect_error([] { normalize({0.1}, {0.0}); }, {"normalize", "std[0] is 0"});
  kt::expect_error([] { normalize({0.1, 0.2}, {1.0}); }, {"normalize", "2 and 1"});
  kt::expect_error([&] { normalize({0.1}, {1.0})(kiln::zeros({5}), rng); }, {"normalize", "(C, H, W)", "[5]"});
}

TEST(Transforms, RandomCropIsAWindowOfThePaddedImage) {
  const int64_t h = 4, w = 5, pad = 2;
  const Tensor img = coded_image(2, h, w);
  const Transform crop = random_crop(h, w, pad, -1.0);
  std::set<std::pair<int64_t, int64_t>> seen;
  for (int64_t index = 0; index < 400; ++index) {
    SampleRandom rng(7, 0, index);
    const Tensor out = crop(img, rng);
    ASSERT_EQ(out.shape(), img.shape());
    // Find the offset (dy, dx) of the window by its first pixel that is inside the image, then check
    // every pixel against a naive padded lookup.
    bool matched = false;
    for (int64_t dy = -pad; dy <= pad && !matched; ++dy) {
      for (int64_t dx = -pad; dx <= pad && !matched; ++dx) {
        bool all = true;
        for (int64_t c = 0; c < 2 && all; ++c)
          for (int64_t y = 0; y < h && all; ++y)
            for (int64_t x = 0; x < w && all; ++x) {
              const int64_t sy = y + dy, sx = x + dx;
              const double want = (sy < 0 || sy >= h || sx < 0 || sx >= w) ? -1.0 : c * 100 + sy * 10 + sx;
              all = kt::at(out, (c * h + y) * w + x) == want;
            }
        if (all) {
          matched = true;
          seen.insert({dy, dx});
        }
      }
    }
    ASSERT_TRUE(matched) << "sample " << index << " is not a window of the padded image";
  }
  EXPECT_EQ(seen.size(), 25u);  // every one of the 5 x 5 offsets occurs
  SampleRandom rng(0, 0, 0);
  kt::expect_error([&] { random_crop(9, 5, 2)(img, rng); }, {"random_crop", "9x5 crop does not fit", "[2, 4, 5]"});
  kt::expect_error([] { random_crop(0, 5); }, {"random_crop", "size must be positive"});
  kt::expect_error([] { random_crop(3, 3, -1); }, {"random_crop", "padding must be >= 0"});
}

TEST(Transforms, RandomCropKeepsIntegerDtypes) {
  const Tensor px = kiln::tensor(std::vector<uint8_t>{1, 2, 3, 4}, kiln::Dims{1, 2, 2});
  SampleRandom rng(0, 0, 0);
  const Tensor out = random_crop(1, 1, 0)(px, rng);
  EXPECT_EQ(out.dtype(), DType::u8);
  EXPECT_EQ(out.shape(), (kiln::Dims{1, 1, 1}));
  EXPECT_GE(kt::at(out, 0), 1);
  EXPECT_LE(kt::at(out, 0), 4);
}

TEST(Transforms, HorizontalFlipMirrorsRowsWithProbabilityP) {
  const Tensor img = coded_image(2, 2, 3);
  SampleRandom rng(0, 0, 0);
  EXPECT_EQ(kt::values(random_horizontal_flip(1.0)(img, rng)),
            (std::vector<double>{2, 1, 0, 12, 11, 10, 102, 101, 100, 112, 111, 110}));
  EXPECT_EQ(kt::values(random_horizontal_flip(0.0)(img, rng)), kt::values(img));
  int flipped = 0;
  const int n = 4000;
  const Transform flip = random_horizontal_flip(0.3);
  for (int i = 0; i < n; ++i) {
    SampleRandom r(3, 1, i);
    flipped += kt::at(flip(img, r), 0) == 2;
  }
  EXPECT_NEAR(flipped, 0.3 * n, 130);  // ~4.5 standard deviations
  kt::expect_error([] { random_horizontal_flip(1.5); }, {"random_horizontal_flip", "[0, 1]", "1.5"});
}

TEST(Transforms, TransformedDatasetDependsOnlyOnSeedEpochAndIndex) {
  const Tensor images = kiln::arange(10 * 16, {.dtype = DType::f32}).view({10, 1, 4, 4});
  const Tensor labels = kiln::arange(10, {.dtype = DType::i64});
  const TransformedDataset ds(TensorDataset({images, labels}),
                              compose({random_crop(4, 4, 1), random_horizontal_flip(), normalize({1.0}, {2.0})}), 11);
  ASSERT_EQ(ds.size(), 10);
  // Asking in any order, twice, gives the same samples; labels pass through untouched.
  std::vector<std::vector<double>> epoch0, epoch1;
  for (int64_t i = 0; i < 10; ++i) epoch0.push_back(kt::values(ds.fetch(i, 0)[0]));
  for (int64_t i = 9; i >= 0; --i) EXPECT_EQ(kt::values(ds.fetch(i, 0)[0]), epoch0[static_cast<size_t>(i)]);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(kt::values(ds.get(i)[0]), epoch0[static_cast<size_t>(i)]);
    EXPECT_EQ(kt::at(ds.fetch(i, 1)[1], 0), i);
    epoch1.push_back(kt::values(ds.fetch(i, 1)[0]));
  }
  EXPECT_NE(epoch0, epoch1);  // a new epoch draws new crops and flips
  const TransformedDataset other_seed(TensorDataset({images, labels}),
                                      compose({random_crop(4, 4, 1), random_horizontal_flip(), normalize({1.0}, {2.0})}), 12);
  std::vector<std::vector<double>> other;
  for (int64_t i = 0; i < 10; ++i) other.push_back(kt::values(other_seed.fetch(i, 0)[0]));
  EXPECT_NE(other, epoch0);
  kt::expect_error([&] { TransformedDataset(TensorDataset({images}), to_float(), 0, 1).get(0); },
                   {"TransformedDataset", "field 1 is out of range", "sample 0 has 1 fields"});
  kt::expect_error([&] { TransformedDataset(TensorDataset({images}), Transform()); }, {"transform is empty"});
  kt::expect_error([] { compose({to_float(), Transform()}); }, {"compose", "transform 1 is empty"});
}

// ---- TextCorpus

class TextCorpusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("kiln_test_text_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "a.txt", std::ios::binary) << "abcdefghij";  // 10 bytes
    std::ofstream(dir_ / "b.txt", std::ios::binary) << "KLMNOPQRST";  // 10 bytes
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const char* name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(TextCorpusTest, WindowsAreShiftedByOneToken) {
  const TextCorpus train({.files = {file("a.txt"), file("b.txt")}, .block_size = 4, .val_fraction = 0.25});
  // 20 bytes, 15 for training: windows of 5 bytes start at 0..10.
  EXPECT_EQ(train.tokens().numel(), 15);
  ASSERT_EQ(train.size(), 11);
  const Example first = train.get(0);
  EXPECT_EQ(first[0].dtype(), DType::i64);
  EXPECT_EQ(TextCorpus::decode(first[0]), "abcd");
  EXPECT_EQ(TextCorpus::decode(first[1]), "bcde");
  EXPECT_EQ(TextCorpus::decode(train.get(10)[0]), "KLMN");
  EXPECT_EQ(TextCorpus::decode(train.get(10)[1]), "LMNO");
  EXPECT_EQ(kt::values(first[0]), (std::vector<double>{'a', 'b', 'c', 'd'}));
  kt::expect_error([&] { train.get(11); }, {"TextCorpus", "index 11 is out of range"});

  const TextCorpus val({.files = {file("a.txt"), file("b.txt")}, .block_size = 4, .train = false,
                        .val_fraction = 0.25, .dtype = DType::u8});
  EXPECT_EQ(TextCorpus::decode(val.tokens()), "PQRST");
  ASSERT_EQ(val.size(), 1);
  EXPECT_EQ(val.get(0)[0].dtype(), DType::u8);
  EXPECT_EQ(TextCorpus::decode(val.get(0)[1]), "QRST");

  const TextCorpus strided({.files = {file("a.txt")}, .block_size = 3, .stride = 3, .val_fraction = 0.0});
  ASSERT_EQ(strided.size(), 3);  // starts 0, 3, 6 (a window needs 4 bytes)
  EXPECT_EQ(TextCorpus::decode(strided.get(2)[0]), "ghi");
  EXPECT_EQ(TextCorpus::decode(strided.get(2)[1]), "hij");
}

TEST_F(TextCorpusTest, BadOptionsAndFilesAreClearErrors) {
  kt::expect_error([&] { TextCorpus({.files = {file("a.txt")}, .block_size = 10, .val_fraction = 0.0}); },
                   {"TextCorpus", "train split has 10 bytes", "block_size + 1 = 11"});
  kt::expect_error([&] { TextCorpus({.files = {file("missing.txt")}}); }, {"TextCorpus", "cannot open", "missing.txt"});
  kt::expect_error([&] { TextCorpus({.files = {file("a.txt")}, .block_size = 0}); }, {"block_size must be >= 1"});
  kt::expect_error([&] { TextCorpus({.files = {file("a.txt")}, .val_fraction = 1.5}); }, {"val_fraction", "[0, 1]"});
  kt::expect_error([&] { TextCorpus({.files = {file("a.txt")}, .dtype = DType::f32}); }, {"int64 or uint8"});
  kt::expect_error([] { TextCorpus::decode(kiln::tensor({300.0}, {.dtype = DType::i64})); }, {"token 300", "not a byte"});
}

TEST(TextCorpusFortunes, DefaultsToThePlainFortuneFiles) {
  if (!fs::exists(kFortunesDir)) GTEST_SKIP() << "the fortunes package is not installed";
  const std::vector<std::string> files = TextCorpus::default_files();
  ASSERT_FALSE(files.empty());
  EXPECT_TRUE(std::is_sorted(files.begin(), files.end()));
  uintmax_t bytes = 0;
  for (const std::string& f : files) {
    const std::string ext = fs::path(f).extension().string();
    EXPECT_TRUE(ext != ".dat" && ext != ".u8") << f;
    bytes += fs::file_size(f);
  }
  const TextCorpus train({.block_size = 64}), val({.block_size = 64, .train = false});
  EXPECT_EQ(static_cast<uintmax_t>(train.tokens().numel() + val.tokens().numel()), bytes);
  EXPECT_NEAR(static_cast<double>(val.tokens().numel()) / static_cast<double>(bytes), 0.1, 1e-6);
  EXPECT_EQ(train.size(), train.tokens().numel() - 64);
}

// ---- Samplers

TEST(Samplers, SequentialAndRandomVisitEveryIndexOncePerEpoch) {
  EXPECT_EQ(SequentialSampler(5).indices(3), iota(5));
  const RandomSampler random(1000, 42);
  std::set<std::vector<int64_t>> orders;
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    const std::vector<int64_t> order = random.indices(epoch);
    EXPECT_EQ(sorted(order), iota(1000)) << "epoch " << epoch;
    EXPECT_EQ(order, random.indices(epoch));  // a pure function of the epoch
    orders.insert(order);
  }
  EXPECT_EQ(orders.size(), 4u);
  EXPECT_NE(RandomSampler(1000, 43).indices(0), random.indices(0));
  EXPECT_TRUE(RandomSampler(0, 1).indices(0).empty());
  kt::expect_error([] { RandomSampler(-1); }, {"RandomSampler", "size must be >= 0", "-1"});
}

TEST(Samplers, PermutationsAreUniform) {
  // Where element 0 lands in a permutation of 4, over 8000 epochs: each place ~1/4 of the time.
  std::vector<int> place(4, 0);
  for (int64_t epoch = 0; epoch < 8000; ++epoch) {
    const std::vector<int64_t> p = random_permutation(4, 9, epoch);
    ++place[static_cast<size_t>(std::find(p.begin(), p.end(), 0) - p.begin())];
  }
  for (int c : place) EXPECT_NEAR(c, 2000, 180);  // ~4.6 standard deviations
}

TEST(Samplers, DistributedMatchesTorchPaddingAndDropLast) {
  // torch.utils.data.DistributedSampler(range(10), num_replicas=4, shuffle=False): the order is
  // padded with its first 2 indices, and rank r takes positions r, r + 4, r + 8.
  const std::vector<std::vector<int64_t>> padded = {{0, 4, 8}, {1, 5, 9}, {2, 6, 0}, {3, 7, 1}};
  const std::vector<std::vector<int64_t>> dropped = {{0, 4}, {1, 5}, {2, 6}, {3, 7}};
  for (int64_t rank = 0; rank < 4; ++rank) {
    const DistributedSampler pad({.dataset_size = 10, .rank = rank, .world_size = 4, .shuffle = false});
    EXPECT_EQ(pad.size(), 3);
    EXPECT_EQ(pad.indices(0), padded[static_cast<size_t>(rank)]);
    const DistributedSampler drop({.dataset_size = 10, .rank = rank, .world_size = 4, .shuffle = false, .drop_last = true});
    EXPECT_EQ(drop.size(), 2);
    EXPECT_EQ(drop.indices(5), dropped[static_cast<size_t>(rank)]);
  }
  // More ranks than samples: the order repeats cyclically so every rank still gets one.
  EXPECT_EQ(DistributedSampler({.dataset_size = 2, .rank = 4, .world_size = 5, .shuffle = false}).indices(0),
            (std::vector<int64_t>{0}));
  kt::expect_error([] { DistributedSampler({.dataset_size = 10, .rank = 4, .world_size = 4}); },
                   {"DistributedSampler", "rank 4 is out of range for world_size 4", "0 to 3"});
  kt::expect_error([] { DistributedSampler({.dataset_size = 10, .world_size = 0}); }, {"world_size must be >= 1"});
}

TEST(Samplers, ShuffledDistributedRanksAreDisjointAndEqual) {
  for (const int64_t n : {96, 101}) {
    for (const int64_t epoch : {0, 1}) {
      std::map<int64_t, int> seen;
      for (int64_t rank = 0; rank < 4; ++rank) {
        const DistributedSampler s({.dataset_size = n, .rank = rank, .world_size = 4, .seed = 3});
        const std::vector<int64_t> mine = s.indices(epoch);
        EXPECT_EQ(static_cast<int64_t>(mine.size()), (n + 3) / 4);
        for (int64_t i : mine) ++seen[i];
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), n);  // every index on some rank
      int repeats = 0;
      for (const auto& [index, count] : seen) repeats += count - 1;
      EXPECT_EQ(repeats, (n + 3) / 4 * 4 - n);  // only the padding repeats
    }
  }
  const DistributedSampler a({.dataset_size = 50, .rank = 1, .world_size = 2, .seed = 3});
  EXPECT_NE(a.indices(0), a.indices(1));  // reshuffled per epoch
}

TEST(Samplers, BatchSamplerGroupsInOrder) {
  const auto seq = std::make_shared<SequentialSampler>(7);
  const BatchSampler keep(seq, 3, false), drop(seq, 3, true);
  EXPECT_EQ(keep.size(), 3);
  EXPECT_EQ(keep.batches(0), (std::vector<std::vector<int64_t>>{{0, 1, 2}, {3, 4, 5}, {6}}));
  EXPECT_EQ(drop.size(), 2);
  EXPECT_EQ(drop.batches(0), (std::vector<std::vector<int64_t>>{{0, 1, 2}, {3, 4, 5}}));
  kt::expect_error([&] { BatchSampler(seq, 0, false); }, {"BatchSampler", "batch_size must be >= 1"});
}

TEST(Samplers, StateAdoptsTheSeedAndRejectsOtherSizes) {
  RandomSampler saved(20, 77), restored(20, 1);
  restored.load_state_dict(saved.state_dict());
  EXPECT_EQ(restored.seed(), 77u);
  EXPECT_EQ(restored.indices(2), saved.indices(2));
  RandomSampler other(21, 77);
  kt::expect_error([&] { other.load_state_dict(saved.state_dict()); },
                   {"RandomSampler.load_state_dict", "size = 20", "has 21"});
  kt::expect_error([&] { other.load_state_dict(SequentialSampler(21).state_dict()); },
                   {"RandomSampler.load_state_dict", "'sequential' sampler", "this is 'random'"});
  kt::expect_error([&] { other.load_state_dict(kiln::Json{{"kind", "random"}, {"size", 21}}); }, {"no 'seed'"});
  // Every process resumes from rank 0's checkpoint: the rank is its own, the seed rank 0's.
  DistributedSampler d({.dataset_size = 10, .rank = 1, .world_size = 2});
  d.load_state_dict(DistributedSampler({.dataset_size = 10, .rank = 0, .world_size = 2, .seed = 9}).state_dict());
  EXPECT_EQ(d.options().rank, 1);
  EXPECT_EQ(d.options().seed, 9u);
  kt::expect_error([&] { d.load_state_dict(DistributedSampler({.dataset_size = 10, .rank = 0, .world_size = 3}).state_dict()); },
                   {"DistributedSampler.load_state_dict", "world_size = 3", "has 2"});
}
