// DataLoader worker generators (Note [DataLoader worker seeds]): a data set that draws from the
// default generator gets, on worker w, the stream of Generator(base_seed + w) for its own batches
// (checked against that stream drawn here by hand); base_seed is new each epoch and follows the
// loader's seed and manual_seed; runs with other thread timing and prefetch depth are bit-identical;
// the main thread's draws (dropout) see nothing of the loader; worker_init_fn and get_worker_info;
// a loader generator (torch's generator=); mid-epoch resume is bit-exact.
#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "io/data/dataloader.h"
#include "testing.h"

namespace kt = kiln::testing;
using kiln::DType;
using kiln::Generator;
using kiln::GeneratorState;
using kiln::Tensor;
using namespace kiln::data;

namespace {

// Sample i: {i, three U[0, 1) draws from the default generator, (worker id, workers, seed) or -1s}.
// `jitter` != 0 sleeps a pseudo-random while per sample, to shuffle which thread runs when.
class RandomDataset : public Dataset {
 public:
  RandomDataset(int64_t n, int jitter) : n_(n), jitter_(jitter) {}
  int64_t size() const override { return n_; }
  Example get(int64_t i) const override {
    if (jitter_) std::this_thread::sleep_for(std::chrono::microseconds((i * 7919 + jitter_ * 104729) % 400));
    const WorkerInfo* info = get_worker_info();
    const std::vector<int64_t> who =
        info ? std::vector<int64_t>{info->id, info->num_workers, static_cast<int64_t>(info->seed)}
             : std::vector<int64_t>{-1, -1, -1};
    return {kiln::scalar_tensor(static_cast<double>(i), DType::f64), kiln::rand({3}, {.dtype = DType::f64}),
            kiln::tensor<int64_t>(who)};
  }

 private:
  int64_t n_;
  int jitter_;
};

struct Seen {
  std::vector<std::vector<double>> batches;  // per batch: ids, draws, worker info
  std::vector<double> main_draws;            // what the main thread drew after each batch
  std::vector<int64_t> seeds;                // per batch: the seed its worker reported (exact)
};

// Up to max_batches of one pass; after each batch the main thread draws as dropout would.
Seen run(DataLoader& loader, int64_t max_batches = -1) {
  Seen seen;
  for (Batch& b : loader) {
    std::vector<double> v;
    for (const Tensor& f : b.fields)
      for (double x : kt::values(f)) v.push_back(x);
    seen.batches.push_back(std::move(v));
    seen.seeds.push_back(b[2].index({0, 2}).item<int64_t>());
    seen.main_draws.push_back(kiln::rand({1}, {.dtype = DType::f64}).item<double>());
    if (static_cast<int64_t>(seen.batches.size()) == max_batches) break;
  }
  return seen;
}

std::shared_ptr<const Dataset> dataset(int jitter = 0, int64_t n = 20) {
  return std::make_shared<RandomDataset>(n, jitter);
}

// The expected draws of batch b of (batch_size 2): worker b % N's generator, seeded base + w, after
// the draws of that worker's earlier batches (from batch `first` on, after `skip_per_worker` draws).
std::vector<double> expected_draws(uint64_t base, int workers, int64_t b, int64_t batch_size = 2) {
  const int w = static_cast<int>(b % workers);
  Generator gen(base + static_cast<uint64_t>(w));
  std::vector<double> out;
  for (int64_t earlier = w; earlier <= b; earlier += workers)
    for (int64_t s = 0; s < batch_size; ++s) {
      const std::vector<double> d = kt::values(kiln::rand({3}, {.dtype = DType::f64}, &gen));
      if (earlier == b) out.insert(out.end(), d.begin(), d.end());
    }
  return out;
}

// The base seed a pass's workers report (worker w reports base + w).
uint64_t base_seed_of(const Seen& seen) { return static_cast<uint64_t>(seen.seeds[0]); }

TEST(DataLoaderWorkers, EachWorkerDrawsFromBaseSeedPlusItsId) {
  kiln::manual_seed(7);
  DataLoader loader(dataset(), {.batch_size = 2, .num_workers = 3});
  const Seen seen = run(loader);
  ASSERT_EQ(seen.batches.size(), 10u);
  const uint64_t base = base_seed_of(seen);  // worker 0's seed; the others must be base + id
  for (int64_t b = 0; b < 10; ++b) {
    const std::vector<double>& v = seen.batches[static_cast<size_t>(b)];
    ASSERT_EQ(v.size(), 2u + 6u + 6u);
    EXPECT_EQ(std::vector<double>(v.begin() + 2, v.begin() + 8), expected_draws(base, 3, b)) << "batch " << b;
    const double w = static_cast<double>(b % 3);
    EXPECT_EQ(std::vector<double>(v.begin() + 8, v.begin() + 10), (std::vector<double>{w, 3}));
    EXPECT_EQ(seen.seeds[static_cast<size_t>(b)], static_cast<int64_t>(base + static_cast<uint64_t>(b % 3)));
  }
  // The main thread's stream holds its own draws only.
  Generator reference(7);
  std::vector<double> want;
  for (int i = 0; i < 10; ++i) want.push_back(kiln::rand({1}, {.dtype = DType::f64}, &reference).item<double>());
  EXPECT_EQ(seen.main_draws, want);
  EXPECT_EQ(get_worker_info(), nullptr);
  // A new base seed each epoch; another loader seed or global seed gives other ones; the same
  // settings give the same ones.
  const uint64_t next_epoch = base_seed_of(run(loader, 1));
  EXPECT_NE(next_epoch, base);
  const auto first_base = [](uint64_t loader_seed, uint64_t global_seed) {
    kiln::manual_seed(global_seed);
    DataLoader l(dataset(), {.batch_size = 2, .seed = loader_seed, .num_workers = 2});
    return base_seed_of(run(l, 1));
  };
  EXPECT_EQ(first_base(0, 7), base);
  EXPECT_NE(first_base(1, 7), base);
  EXPECT_NE(first_base(0, 8), base);
}

TEST(DataLoaderWorkers, ThreadTimingAndPrefetchDepthChangeNothing) {
  std::vector<Seen> runs;
  for (const auto& [jitter, prefetch] : std::vector<std::pair<int, int>>{{0, 2}, {1, 1}, {2, 4}, {3, 8}}) {
    kiln::manual_seed(11);
    DataLoader loader(dataset(jitter), {.batch_size = 2, .num_workers = 3, .prefetch_factor = prefetch});
    Seen both = run(loader);
    const Seen second = run(loader);  // and a second epoch, with a new base seed
    both.batches.insert(both.batches.end(), second.batches.begin(), second.batches.end());
    both.main_draws.insert(both.main_draws.end(), second.main_draws.begin(), second.main_draws.end());
    runs.push_back(both);
  }
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_EQ(runs[r].batches, runs[0].batches) << "run " << r;
    EXPECT_EQ(runs[r].main_draws, runs[0].main_draws) << "run " << r;
  }
  // Without workers, batches come from the caller's generator and get_worker_info is null.
  kiln::manual_seed(11);
  DataLoader serial(dataset(), {.batch_size = 2, .num_workers = 0});
  const Seen s = run(serial, 1);
  EXPECT_EQ(std::vector<double>(s.batches[0].begin() + 8, s.batches[0].end()), std::vector<double>(6, -1));
  Generator main(11);
  EXPECT_EQ(std::vector<double>(s.batches[0].begin() + 2, s.batches[0].begin() + 5),
            kt::values(kiln::rand({3}, {.dtype = DType::f64}, &main)));
}

TEST(DataLoaderWorkers, WorkerInitFnRunsOnEachWorkerAndMaySeedIt) {
  std::mutex mutex;
  std::multiset<int> ids;
  kiln::manual_seed(5);
  DataLoader loader(dataset(), {.batch_size = 2, .num_workers = 2, .worker_init_fn = [&](int id) {
                                  {
                                    std::lock_guard<std::mutex> lock(mutex);
                                    ids.insert(id);
                                  }
                                  EXPECT_EQ(get_worker_info()->id, id);
                                  kiln::manual_seed(1000 + static_cast<uint64_t>(id));  // this worker only
                                }});
  const Seen seen = run(loader, 4);
  EXPECT_EQ(ids, (std::multiset<int>{0, 1}));
  for (int64_t b = 0; b < 4; ++b)
    EXPECT_EQ(std::vector<double>(seen.batches[static_cast<size_t>(b)].begin() + 2,
                                  seen.batches[static_cast<size_t>(b)].begin() + 8),
              expected_draws(1000, 2, b));
  Generator main(5);  // the main thread drew its own 4 draws, nothing else
  for (int i = 0; i < 4; ++i) kiln::rand({1}, {.dtype = DType::f64}, &main);
  EXPECT_EQ(kiln::default_generator().state(), main.state());

  DataLoader failing(dataset(), {.batch_size = 2, .num_workers = 2, .worker_init_fn = [](int id) {
                                   if (id == 1) throw std::runtime_error("no GPU for worker 1");
                                 }});
  auto it = failing.begin();
  kt::expect_error([&] { ++it; }, {"worker_init_fn failed in worker 1", "no GPU for worker 1"});
}

TEST(DataLoaderWorkers, ALoaderGeneratorLeavesTheDefaultOneAlone) {
  kiln::manual_seed(3);
  auto gen = std::make_shared<Generator>(99);
  DataLoader loader(dataset(), {.batch_size = 2, .num_workers = 2, .generator = gen});
  auto it = loader.begin();
  EXPECT_EQ(kiln::default_generator().state(), (GeneratorState{3, 0}));
  EXPECT_EQ(gen->state(), (GeneratorState{99, 1}));
  Generator copy(99);
  EXPECT_EQ(it->fields[2].index({0, 2}).item<int64_t>(), static_cast<int64_t>(kiln::draw_seed(copy)));
}

TEST(DataLoaderWorkers, ResumeMidEpochIsBitExact) {
  for (int workers : {2, 3}) {
    SCOPED_TRACE(std::to_string(workers) + " workers");
    const auto init = [](int) { kiln::rand({5}); };  // moves the worker's generator before batch 0
    const DataLoaderOptions options{.batch_size = 2, .shuffle = true, .seed = 4, .num_workers = workers,
                                    .prefetch_factor = 3, .worker_init_fn = init};
    kiln::manual_seed(21);
    DataLoader full(dataset(1), options);
    Seen whole = run(full);
    const Seen second = run(full);
    whole.batches.insert(whole.batches.end(), second.batches.begin(), second.batches.end());
    whole.main_draws.insert(whole.main_draws.end(), second.main_draws.begin(), second.main_draws.end());

    for (int64_t stop : {1, 4, 7}) {
      kiln::manual_seed(21);
      DataLoader first(dataset(2), options);
      run(first, stop);
      const std::string saved = first.state_dict().dump();
      const GeneratorState main_state = kiln::default_generator().state();

      kiln::manual_seed(12345);  // whatever happened in between
      DataLoader resumed(dataset(3), options);
      resumed.load_state_dict(kiln::Json::parse(saved));
      kiln::default_generator().set_state(main_state);
      Seen rest = run(resumed);
      const Seen next = run(resumed);
      rest.batches.insert(rest.batches.end(), next.batches.begin(), next.batches.end());
      rest.main_draws.insert(rest.main_draws.end(), next.main_draws.begin(), next.main_draws.end());
      ASSERT_EQ(rest.batches.size(), whole.batches.size() - static_cast<size_t>(stop));
      for (size_t i = 0; i < rest.batches.size(); ++i) {
        EXPECT_EQ(rest.batches[i], whole.batches[i + static_cast<size_t>(stop)]) << "stop " << stop << ", batch " << i;
        EXPECT_EQ(rest.main_draws[i], whole.main_draws[i + static_cast<size_t>(stop)]) << "stop " << stop;
      }
    }
  }
}

TEST(DataLoaderWorkers, StatesFromBeforeWorkerSeedsStillLoad) {
  DataLoader loader(dataset(), {.batch_size = 2, .num_workers = 2});
  run(loader, 3);
  kiln::Json state = loader.state_dict();
  ASSERT_TRUE(state.contains("workers"));
  EXPECT_EQ(state["workers"]["rng"].size(), 2u);
  state.erase("workers");
  DataLoader again(dataset(), {.batch_size = 2, .num_workers = 2});
  again.load_state_dict(state);
  EXPECT_EQ(run(again).batches.size(), 7u);
  state["workers"] = {{"base_seed", -4}, {"rng", kiln::Json::array()}};
  kt::expect_error([&] { again.load_state_dict(state); }, {"'workers' needs a non-negative integer 'base_seed'"});
}

}  // namespace

// A data set whose samples record how many chunks a parallel_for split into where they were made.
class ChunkCountingDataset : public Dataset {
 public:
  int64_t size() const override { return 8; }
  Example get(int64_t i) const override {
    std::atomic<int> chunks{0};
    kiln::parallel_for(4096, 1, [&](int64_t, int64_t) { chunks.fetch_add(1); });
    return {kiln::scalar_tensor(static_cast<double>(i), DType::f64),
            kiln::scalar_tensor(static_cast<double>(chunks.load()), DType::f64)};
  }
};

TEST(DataLoaderWorkers, KernelsOnWorkersRunSingleThreaded) {
  const int threads = kiln::get_num_threads();
  kiln::set_num_threads(4);
  // Workers keep to their own thread (the compute pool is the training loop's); with no workers
  // the batch is made on the caller's thread, whose kernels use the whole pool.
  for (int workers : {0, 2}) {
    DataLoader loader(std::make_shared<ChunkCountingDataset>(), {.batch_size = 4, .num_workers = workers});
    for (Batch& b : loader)
      for (double chunks : kt::values(b[1])) EXPECT_EQ(chunks, workers ? 1.0 : 4.0) << workers << " workers";
  }
  kiln::set_num_threads(threads);
}

TEST(DataLoaderWorkers, ShutdownWorkersEndsThePassAndKeepsItsPosition) {
  DataLoader loader(dataset(), {.batch_size = 2, .num_workers = 2});
  auto it = loader.begin();
  ++it;  // two batches consumed
  const kiln::Json before = loader.state_dict();
  loader.shutdown_workers();  // joins the workers, which were making batches ahead
  EXPECT_EQ(loader.state_dict(), before);
  EXPECT_THROW(++it, kiln::Error);  // the pass is over for its iterators
  // The next loop goes on as after a break: the next epoch, from its first batch.
  int64_t batches = 0;
  for (Batch& b : loader) {
    if (batches++ == 0) {
      EXPECT_EQ(loader.epoch(), 1);
    }
    EXPECT_EQ(b[0].size(0), 2);
  }
  EXPECT_EQ(batches, 10);
}
