// The DataLoader: collation, order, the same batches whatever the worker count, epochs, exact
// mid-epoch resume (shuffle on/off, workers 0/2), worker errors surfacing with the sample index,
// no hang when a loader dies mid-pass, iterable data sets, and bad options and states.
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "io/data/dataloader.h"
#include "io/data/transforms.h"
#include "testing.h"

namespace kt = kiln::testing;
using kiln::DType;
using kiln::Tensor;
using namespace kiln::data;

namespace {

// Sample i: {x = [i, 10 i] float32, y = i int64}. Optionally throws at one index, or sleeps.
class IndexDataset : public Dataset {
 public:
  explicit IndexDataset(int64_t n, int64_t throw_at = -1, int sleep_us = 0) : n_(n), throw_at_(throw_at), sleep_us_(sleep_us) {}
  int64_t size() const override { return n_; }
  Example get(int64_t i) const override {
    if (sleep_us_ > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us_));
    if (i == throw_at_) throw std::runtime_error("disk on fire");
    return {kiln::tensor({static_cast<double>(i), 10.0 * static_cast<double>(i)}),
            kiln::tensor(std::vector<int64_t>{i}, kiln::Dims{})};
  }

 private:
  int64_t n_, throw_at_;
  int sleep_us_;
};

// Every batch of a pass, as values, with the y field first (which samples) and x after.
using Pass = std::vector<std::vector<double>>;

Pass one_pass(DataLoader& loader, int64_t max_batches = -1) {
  Pass out;
  for (Batch& b : loader) {
    std::vector<double> v = kt::values(b[1]);
    for (double x : kt::values(b[0])) v.push_back(x);
    out.push_back(std::move(v));
    if (static_cast<int64_t>(out.size()) == max_batches) break;
  }
  return out;
}

// Field 0 of each batch of a pass (at most max_batches), for loaders of one-field examples.
std::vector<std::vector<double>> first_fields(DataLoader& loader, int64_t max_batches = -1) {
  std::vector<std::vector<double>> out;
  for (Batch& b : loader) {
    out.push_back(kt::values(b[0]));
    if (static_cast<int64_t>(out.size()) == max_batches) break;
  }
  return out;
}

std::vector<double> sample_ids(const Pass& pass) {
  std::vector<double> ids;
  for (const auto& b : pass)
    for (size_t i = 0; i < b.size() / 3; ++i) ids.push_back(b[i]);
  return ids;
}

// A stream of n examples {i} that can throw at one position.
class CountingStream : public IterableDataset {
 public:
  explicit CountingStream(int64_t n, int64_t throw_at = -1) : n_(n), throw_at_(throw_at) {}
  void start(int64_t epoch) override {
    next_ = 0;
    epoch_ = epoch;
    ++starts;
  }
  std::optional<Example> next() override {
    if (next_ == n_) return std::nullopt;
    if (next_ == throw_at_) throw std::runtime_error("bad record");
    const int64_t v = 100 * epoch_ + next_++;
    return Example{kiln::tensor(std::vector<int64_t>{v}, kiln::Dims{})};
  }
  int starts = 0;

 private:
  int64_t n_, throw_at_, next_ = 0, epoch_ = 0;
};

}  // namespace

TEST(DataLoader, CollatesFieldsIntoContiguousBatches) {
  DataLoader loader(IndexDataset(10), {.batch_size = 4});
  EXPECT_EQ(loader.size(), 3);
  std::vector<std::vector<double>> ys, xs;
  for (auto& batch : loader) {
    EXPECT_TRUE(batch[0].is_contiguous());
    EXPECT_EQ(batch[0].dtype(), DType::f32);
    EXPECT_EQ(batch[1].dtype(), DType::i64);
    EXPECT_EQ(batch[0].size(1), 2);
    ys.push_back(kt::values(batch[1]));
    xs.push_back(kt::values(batch[0]));
  }
  EXPECT_EQ(ys, (std::vector<std::vector<double>>{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  EXPECT_EQ(xs[2], (std::vector<double>{8, 80, 9, 90}));
  auto shared = std::make_shared<IndexDataset>(10);
  EXPECT_EQ(DataLoader(shared, {.batch_size = 4}).dataset().get(), shared.get());
  DataLoader dropping(IndexDataset(10), {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(dropping.size(), 2);
  EXPECT_EQ(one_pass(dropping).size(), 2u);
}

TEST(DataLoader, ShuffleVisitsEveryIndexOnceAndReshufflesEachEpoch) {
  DataLoader loader(IndexDataset(50), {.batch_size = 8, .shuffle = true, .seed = 5});
  const std::vector<double> e0 = sample_ids(one_pass(loader));
  EXPECT_EQ(loader.epoch(), 1);
  const std::vector<double> e1 = sample_ids(one_pass(loader));
  std::vector<int64_t> want0 = RandomSampler(50, 5).indices(0), want1 = RandomSampler(50, 5).indices(1);
  EXPECT_EQ(e0, std::vector<double>(want0.begin(), want0.end()));
  EXPECT_EQ(e1, std::vector<double>(want1.begin(), want1.end()));
  loader.set_epoch(0);
  EXPECT_EQ(sample_ids(one_pass(loader)), e0);
  // Leaving a pass early and starting again moves on to the next epoch (a new iter() in torch).
  loader.set_epoch(3);
  one_pass(loader, 2);
  EXPECT_EQ(loader.batches_consumed(), 2);
  one_pass(loader, 1);
  EXPECT_EQ(loader.epoch(), 4);
}

TEST(DataLoader, BatchesDoNotDependOnTheWorkerCount) {
  const Tensor images = kiln::arange(64 * 9, {.dtype = DType::f32}).view({64, 1, 3, 3});
  const Tensor labels = kiln::arange(64, {.dtype = DType::i64});
  const TransformedDataset augmented(TensorDataset({images, labels}),
                                     compose({random_crop(3, 3, 1), random_horizontal_flip()}), 9);
  std::vector<Pass> reference;
  for (const auto& [workers, prefetch] : std::vector<std::pair<int, int>>{{0, 2}, {1, 1}, {2, 2}, {3, 1}, {4, 3}}) {
    DataLoader loader(augmented, {.batch_size = 5, .shuffle = true, .seed = 1, .num_workers = workers,
                                  .prefetch_factor = prefetch});
    std::vector<Pass> epochs = {one_pass(loader), one_pass(loader)};
    EXPECT_NE(epochs[0], epochs[1]);
    if (reference.empty()) reference = epochs;
    else EXPECT_EQ(epochs, reference) << workers << " workers, prefetch " << prefetch;
  }
}

// Iterate k batches, save inside the loop body, stop; a new loader that loads the state must see
// exactly the rest of that epoch and then the same next epoch as an uninterrupted run.
TEST(DataLoader, ResumesMidEpochExactly) {
  for (const bool shuffle : {false, true}) {
    for (const int workers : {0, 2}) {
      const DataLoaderOptions options = {.batch_size = 3, .shuffle = shuffle, .seed = 17, .num_workers = workers};
      DataLoader uninterrupted(IndexDataset(20), options);
      const Pass epoch0 = one_pass(uninterrupted), epoch1 = one_pass(uninterrupted);
      ASSERT_EQ(epoch0.size(), 7u);

      for (const int64_t k : {1, 4, 7}) {
        std::string saved;
        {
          DataLoader first(IndexDataset(20), options);
          int64_t seen = 0;
          for (Batch& b : first) {
            (void)b;
            if (++seen == k) {
              saved = first.state_dict().dump();
              break;
            }
          }
        }  // destroyed with its workers mid-pass
        DataLoader resumed(IndexDataset(20), options);
        resumed.load_state_dict(kiln::Json::parse(saved));
        resumed.set_epoch(0);  // as a trainer calls it each epoch: keeps the restored position
        const Pass rest = one_pass(resumed);
        EXPECT_EQ(rest, Pass(epoch0.begin() + k, epoch0.end())) << "shuffle " << shuffle << ", workers " << workers << ", k " << k;
        EXPECT_EQ(one_pass(resumed), epoch1) << "shuffle " << shuffle << ", workers " << workers << ", k " << k;
      }
    }
  }
}

TEST(DataLoader, StateDictRecordsThePosition) {
  DataLoader loader(IndexDataset(10), {.batch_size = 4, .shuffle = true, .seed = 8});
  one_pass(loader, 2);
  const kiln::Json s = loader.state_dict();
  EXPECT_EQ(s.at("epoch"), 0);
  EXPECT_EQ(s.at("batches_consumed"), 2);
  EXPECT_EQ(s.at("num_batches"), 3);
  EXPECT_EQ(s.at("sampler").at("seed"), 8);
  EXPECT_EQ(s.at("sampler").at("kind"), "random");
  // The seed comes from the state, not from the new loader's options.
  DataLoader other_seed(IndexDataset(10), {.batch_size = 4, .shuffle = true, .seed = 99});
  other_seed.load_state_dict(s);
  DataLoader same(IndexDataset(10), {.batch_size = 4, .shuffle = true, .seed = 8});
  same.load_state_dict(s);
  EXPECT_EQ(one_pass(other_seed), one_pass(same));
}

TEST(DataLoader, RejectsStatesThatDoNotFit) {
  DataLoader loader(IndexDataset(10), {.batch_size = 4});
  const kiln::Json good = loader.state_dict();
  DataLoader other_batch(IndexDataset(10), {.batch_size = 5});
  kt::expect_error([&] { other_batch.load_state_dict(good); }, {"load_state_dict", "batch_size = 4", "has 5"});
  DataLoader other_size(IndexDataset(11), {.batch_size = 4});
  kt::expect_error([&] { other_size.load_state_dict(good); }, {"load_state_dict", "size = 10", "has 11"});
  DataLoader shuffled(IndexDataset(10), {.batch_size = 4, .shuffle = true});
  kt::expect_error([&] { shuffled.load_state_dict(good); }, {"'sequential' sampler", "'random'"});
  kiln::Json bad = good;
  bad["batches_consumed"] = 4;
  kt::expect_error([&] { loader.load_state_dict(bad); }, {"batches_consumed = 4", "3 batches"});
  bad = good;
  bad.erase("epoch");
  kt::expect_error([&] { loader.load_state_dict(bad); }, {"no 'epoch'"});
  bad = good;
  bad["epoch"] = "one";
  kt::expect_error([&] { loader.load_state_dict(bad); }, {"'epoch' should be an integer", "\"one\""});
  kt::expect_error([&] { loader.load_state_dict(kiln::Json::array()); }, {"expected a JSON object"});
}

TEST(DataLoader, WorkerErrorsSurfaceWithTheSampleIndexInOrder) {
  for (const int workers : {0, 2}) {
    DataLoader loader(IndexDataset(40, 13), {.batch_size = 4, .num_workers = workers, .prefetch_factor = 4});
    std::vector<double> delivered;
    try {
      for (Batch& b : loader)
        for (double id : kt::values(b[1])) delivered.push_back(id);
      ADD_FAILURE() << "no error surfaced with " << workers << " workers";
    } catch (const kiln::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("sample 13 (batch 3 of epoch 0) failed: disk on fire"), std::string::npos) << msg;
    }
    // The batches before the failing one came out, in order; nothing after it.
    EXPECT_EQ(delivered.size(), 12u) << workers << " workers";
    EXPECT_EQ(loader.batches_consumed(), 3);

    // The pass is over after an error: going on says so; a new loop starts the next epoch.
    DataLoader again(IndexDataset(8, 5), {.batch_size = 4, .num_workers = workers});
    auto it = again.begin();
    EXPECT_EQ(kt::values((*it)[1]), (std::vector<double>{0, 1, 2, 3}));
    kt::expect_error([&] { ++it; }, {"sample 5 (batch 1 of epoch 0)"});
    kt::expect_error([&] { ++it; }, {"this pass stopped at an error"});
    EXPECT_EQ(kt::values((*again.begin())[1]), (std::vector<double>{0, 1, 2, 3}));
    EXPECT_EQ(again.epoch(), 1);
  }
}

TEST(DataLoader, DestroyingMidPassJoinsWorkersWithoutHanging) {
  const auto start = std::chrono::steady_clock::now();
  for (int round = 0; round < 5; ++round) {
    DataLoader loader(IndexDataset(10000, -1, 200), {.batch_size = 16, .num_workers = 2, .prefetch_factor = 4});
    auto it = loader.begin();  // workers are now filling the prefetch window
    EXPECT_EQ((*it)[1].size(0), 16);
    ++it;
  }  // each loader dies with ~8 batches in flight
  {
    DataLoader loader(IndexDataset(10000, -1, 200), {.batch_size = 16, .num_workers = 3});
    one_pass(loader, 2);
    loader.set_epoch(5);  // ends the abandoned pass
    one_pass(loader, 1);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);  // each loader makes at most a window of batches, a few ms each
}

TEST(DataLoader, CollateErrorsNameTheSamplesAndACustomCollateIsUsed) {
  class Ragged : public Dataset {
   public:
    int64_t size() const override { return 4; }
    Example get(int64_t i) const override { return {kiln::zeros({i + 1})}; }
  };
  DataLoader ragged(Ragged(), {.batch_size = 2});
  kt::expect_error([&] { one_pass(ragged); },
                   {"collating batch 0 of epoch 0 (samples 0, 1)", "field 0 of example 1", "[2]", "[1]", "collate function"});
  // A collate that packs ragged samples into one flat tensor plus their lengths.
  DataLoader packed(Ragged(), {.batch_size = 2, .collate = [](std::vector<Example>& examples) {
                                 std::vector<Tensor> parts;
                                 std::vector<int64_t> lengths;
                                 for (Example& e : examples) {
                                   parts.push_back(e[0]);
                                   lengths.push_back(e[0].numel());
                                 }
                                 return Batch{kiln::cat(parts), kiln::tensor(lengths)};
                               }});
  std::vector<std::vector<double>> lengths;
  for (Batch& b : packed) lengths.push_back(kt::values(b[1]));
  EXPECT_EQ(lengths, (std::vector<std::vector<double>>{{1, 2}, {3, 4}}));
}

TEST(DataLoader, DistributedSamplerSplitsTheEpoch) {
  std::vector<double> all;
  for (int64_t rank = 0; rank < 3; ++rank) {
    auto sampler = std::make_shared<DistributedSampler>(
        DistributedSamplerOptions{.dataset_size = 10, .rank = rank, .world_size = 3, .seed = 2});
    DataLoader loader(IndexDataset(10), {.batch_size = 2, .num_workers = 1, .sampler = sampler});
    EXPECT_EQ(loader.size(), 2);  // 4 samples per rank (10 padded to 12)
    const std::vector<double> ids = sample_ids(one_pass(loader));
    EXPECT_EQ(ids.size(), 4u);
    all.insert(all.end(), ids.begin(), ids.end());
  }
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()) - all.begin(), 10);
}

TEST(DataLoader, IterableDatasetsBatchInStreamOrderAndResume) {
  for (const int workers : {0, 3}) {
    auto stream = std::make_shared<CountingStream>(10);
    DataLoader loader(stream, {.batch_size = 4, .num_workers = workers});
    EXPECT_EQ(loader.size(), -1);
    EXPECT_EQ(loader.dataset(), nullptr);  // a stream has no data set to rebuild a loader over
    using Batches = std::vector<std::vector<double>>;
    EXPECT_EQ(first_fields(loader), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
    EXPECT_EQ(first_fields(loader).front(), (std::vector<double>{100, 101, 102, 103}));  // epoch 1: restarted

    DataLoader first(std::make_shared<CountingStream>(10), {.batch_size = 4, .num_workers = workers});
    first_fields(first, 1);
    auto again = std::make_shared<CountingStream>(10);
    DataLoader resumed(again, {.batch_size = 4, .num_workers = workers});
    resumed.load_state_dict(first.state_dict());
    EXPECT_EQ(first_fields(resumed), (Batches{{4, 5, 6, 7}, {8, 9}}));
    EXPECT_EQ(again->starts, 1);
  }
  DataLoader dropping(std::make_shared<CountingStream>(10), {.batch_size = 4, .drop_last = true, .num_workers = 1});
  EXPECT_EQ(first_fields(dropping).size(), 2u);
  DataLoader failing(std::make_shared<CountingStream>(10, 6), {.batch_size = 4, .num_workers = 2});
  kt::expect_error([&] { first_fields(failing); }, {"example 6 of the stream (batch 1 of epoch 0) failed: bad record"});
}

TEST(DataLoader, BadOptionsAreClearErrors) {
  kt::expect_error([] { DataLoader(IndexDataset(4), {.batch_size = 0}); }, {"DataLoader", "batch_size must be >= 1"});
  kt::expect_error([] { DataLoader(IndexDataset(4), {.num_workers = -1}); }, {"num_workers must be >= 0"});
  kt::expect_error([] { DataLoader(IndexDataset(4), {.prefetch_factor = 0}); }, {"prefetch_factor must be >= 1"});
  kt::expect_error([] { DataLoader(IndexDataset(4), {.shuffle = true, .sampler = std::make_shared<SequentialSampler>(4)}); },
                   {"either a sampler or shuffle"});
  kt::expect_error([] { DataLoader(std::make_shared<CountingStream>(3), {.shuffle = true}); },
                   {"IterableDataset", "neither shuffle nor a sampler"});
  // A sampler that points outside the data set is caught before the data set is asked.
  DataLoader outside(IndexDataset(4), {.batch_size = 2, .sampler = std::make_shared<SequentialSampler>(6)});
  kt::expect_error([&] { one_pass(outside); }, {"the sampler gave index 4", "batch 2 of epoch 0", "4 samples"});
}

TEST(DataLoader, MovesKeepTheirPosition) {
  DataLoader a(IndexDataset(9), {.batch_size = 3, .num_workers = 2});
  one_pass(a, 1);
  DataLoader b = std::move(a);
  EXPECT_EQ(b.batches_consumed(), 1);
  EXPECT_EQ(b.size(), 3);
  EXPECT_EQ(sample_ids(one_pass(b)), (std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8}));  // a new epoch
}
