// The DataLoader: a pass over one epoch, made either on the caller's thread or by worker threads
// (worker w makes batches w, w + N, ...) that park their results in a ring of prefetch slots; the
// caller takes the slots in batch order, so the worker count never changes what comes out. Each
// worker draws from its own generator (Note [DataLoader worker seeds]).
#include "io/data/dataloader.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "io/data/transforms.h"
#include "tensor/parallel.h"
#include "tensor/pinned.h"

namespace kiln::data {

Batch default_collate(std::vector<Example>& examples) {
  KILN_CHECK(!examples.empty(), "default_collate: no examples to collate");
  const size_t num_fields = examples[0].size();
  const auto count = static_cast<int64_t>(examples.size());
  Batch batch;
  batch.fields.reserve(num_fields);
  for (size_t k = 0; k < num_fields; ++k) {
    const Tensor& first = examples[0].fields[k];
    KILN_CHECK(first.defined(), "default_collate: field ", k, " of example 0 is undefined");
    Dims shape = first.shape();
    shape.insert(0, count);
    Tensor out = make_tensor(shape, first.dtype(), Device::cpu());
    const size_t bytes = first.nbytes();
    char* dst = static_cast<char*>(out.data_ptr());
    for (size_t i = 0; i < examples.size(); ++i) {
      KILN_CHECK(examples[i].size() == num_fields, "default_collate: example ", i, " has ", examples[i].size(),
                 " fields, example 0 has ", num_fields);
      const Tensor& t = examples[i].fields[k];
      KILN_CHECK(t.defined(), "default_collate: field ", k, " of example ", i, " is undefined");
      KILN_CHECK(t.shape() == first.shape() && t.dtype() == first.dtype(), "default_collate: field ", k,
                 " of example ", i, " is ", t.dtype(), " of shape ", t.shape(), " but example 0's is ", first.dtype(),
                 " of shape ", first.shape(), "; give the loader a collate function that pads or packs them");
      KILN_CHECK(t.device().is_cpu(), "default_collate: field ", k, " of example ", i, " is on ", t.device(),
                 "; data sets should return CPU tensors (move batches to the device in the training step)");
      const Tensor src = t.contiguous();
      if (bytes > 0) std::memcpy(dst + i * bytes, src.data_ptr(), bytes);
    }
    batch.fields.push_back(std::move(out));
  }
  return batch;
}

namespace {

// Thrown inside a worker when the pass is being torn down, to abandon the batch in hand.
struct PassStopped {};

thread_local const WorkerInfo* t_worker_info = nullptr;  // set for the life of a worker thread

std::string describe(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

template <class T>
T json_field(const Json& state, const char* key) {
  const auto it = state.find(key);
  KILN_CHECK(it != state.end(), "DataLoader.load_state_dict: the state has no '", key, "' (got ", state.dump(), ")");
  if constexpr (std::is_same_v<T, bool>) {
    KILN_CHECK(it->is_boolean(), "DataLoader.load_state_dict: '", key, "' should be a boolean, got ", it->dump());
  } else {
    KILN_CHECK(it->is_number_integer(), "DataLoader.load_state_dict: '", key, "' should be an integer, got ",
               it->dump());
  }
  return it->get<T>();
}

}  // namespace

const WorkerInfo* get_worker_info() { return t_worker_info; }

// The worker generators of the epoch in progress (Note [DataLoader worker seeds]).
struct WorkerRandom {
  uint64_t base_seed = 0;
  // Per worker, its generator's state after its last consumed batch; nullopt: none consumed yet.
  std::vector<std::optional<GeneratorState>> after_consumed;
};

// One pass over an epoch, from first_batch on. Owned by the loader's Impl, which outlives it.
class EpochPass {
 public:
  EpochPass(DataLoader::Impl& loader, int64_t epoch, int64_t first_batch);
  ~EpochPass() { stop_workers(); }
  EpochPass(const EpochPass&) = delete;
  EpochPass& operator=(const EpochPass&) = delete;

  // The next batch in sampler order, or nullopt at the end of the epoch. Rethrows a worker's error
  // when its batch comes up (after stopping the other workers); the pass is over after an error.
  std::optional<Batch> next();

 private:
  struct Slot {
    bool filled = false;
    Batch batch;
    std::exception_ptr error;
    GeneratorState rng_after;  // the worker's generator once the batch was made
  };

  std::optional<Batch> next_in_order();
  std::optional<Batch> produce(int64_t b);  // nullopt: there is no batch b (the stream ended)
  std::optional<Batch> produce_indexed(int64_t b);
  std::optional<Batch> produce_from_stream(int64_t b);
  Batch collate(std::vector<Example>& examples, int64_t b);  // and pins it when the loader pins
  void pin(Batch& batch, int64_t b) const;
  void worker_loop(int worker);
  void stop_workers();

  const Dataset* dataset_;
  IterableDataset* stream_;
  const CollateFn& collate_;
  const bool pin_batches_;
  const int64_t batch_size_;
  const bool drop_last_;
  const int64_t epoch_;
  std::vector<int64_t> order_;  // indexable data sets: the epoch's indices
  const std::function<void(int)>& worker_init_fn_;
  WorkerRandom* random_;       // null without workers; after_consumed is written on the caller's thread
  WorkerRandom start_random_;  // what the workers start from (a copy, read on the worker threads)

  // Batches [next_yield_, next_yield_ + window) may be in flight; end_batch_ is the first batch
  // number that does not exist (for a stream: unknown, the maximum, until a worker finds the end).
  std::mutex mutex_;
  std::condition_variable can_claim_, slot_filled_;
  std::atomic<bool> stopping_{false};
  bool failed_ = false;  // an error came out of next(): the pass cannot go on
  const int64_t first_batch_;
  int worker_count_ = 0;
  int64_t next_yield_, end_batch_;
  std::vector<Slot> slots_;  // batch b lives in slots_[b % window] until taken
  std::vector<std::thread> workers_;
};

struct DataLoader::Impl {
  std::shared_ptr<const Dataset> dataset;
  std::shared_ptr<IterableDataset> stream;
  DataLoaderOptions options;
  bool pin_batches = false;          // options.pin_memory, and pinning is available
  std::shared_ptr<Sampler> sampler;  // indexable data sets only
  int64_t epoch = 0, consumed = 0;
  bool pass_started = false;  // a pass of `epoch` has begun (so the next begin() moves on)
  std::optional<WorkerRandom> random;  // drawn when `epoch`'s first pass begins
  Batch current;
  std::unique_ptr<EpochPass> pass;  // last member: destroyed (workers joined) before what they read

  ~Impl() { pass.reset(); }

  // Worker threads of a pass: one reads a stream, whatever num_workers asks for.
  int worker_count() const { return options.num_workers == 0 ? 0 : (stream ? 1 : options.num_workers); }
  void next_epoch() {
    ++epoch;
    consumed = 0;
    random.reset();
  }
  int64_t num_batches() const {
    if (!sampler) return -1;
    const int64_t n = sampler->size(), b = options.batch_size;
    return options.drop_last ? n / b : (n + b - 1) / b;
  }
  // Makes the next batch current; false at the end of the pass, which moves on to the next epoch.
  bool advance() {
    std::optional<Batch> batch = pass->next();
    if (!batch) {
      pass.reset();
      next_epoch();
      pass_started = false;
      current = Batch();
      return false;
    }
    current = std::move(*batch);
    ++consumed;
    return true;
  }
};

EpochPass::EpochPass(DataLoader::Impl& loader, int64_t epoch, int64_t first_batch)
    : dataset_(loader.dataset.get()),
      stream_(loader.stream.get()),
      collate_(loader.options.collate),
      pin_batches_(loader.pin_batches),
      batch_size_(loader.options.batch_size),
      drop_last_(loader.options.drop_last),
      epoch_(epoch),
      worker_init_fn_(loader.options.worker_init_fn),
      random_(loader.worker_count() > 0 ? &*loader.random : nullptr),
      first_batch_(first_batch),
      next_yield_(first_batch),
      end_batch_(std::numeric_limits<int64_t>::max()) {
  if (loader.sampler) {
    order_ = loader.sampler->indices(epoch);
    KILN_CHECK(static_cast<int64_t>(order_.size()) == loader.sampler->size(), "DataLoader: the sampler gave ",
               order_.size(), " indices for epoch ", epoch, " but its size() is ", loader.sampler->size());
    end_batch_ = loader.num_batches();
  } else {
    stream_->start(epoch);
    // Resuming a stream: read again, and drop, the examples consumed before the state was saved.
    for (int64_t skipped = 0; skipped < first_batch * batch_size_; ++skipped) {
      if (!stream_->next()) {
        end_batch_ = first_batch;
        break;
      }
    }
  }
  const int count = loader.worker_count();
  if (count == 0) return;
  worker_count_ = count;
  start_random_ = *random_;
  slots_.resize(static_cast<size_t>(loader.options.num_workers) * static_cast<size_t>(loader.options.prefetch_factor));
  workers_.reserve(static_cast<size_t>(count));
  for (int w = 0; w < count; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
}

std::optional<Batch> EpochPass::produce(int64_t b) { return stream_ ? produce_from_stream(b) : produce_indexed(b); }

std::optional<Batch> EpochPass::produce_indexed(int64_t b) {
  const auto begin = static_cast<size_t>(b * batch_size_);
  const size_t end = std::min(order_.size(), begin + static_cast<size_t>(batch_size_));
  std::vector<Example> examples;
  examples.reserve(end - begin);
  const int64_t size = dataset_->size();
  for (size_t pos = begin; pos < end; ++pos) {
    if (stopping_.load(std::memory_order_relaxed)) throw PassStopped{};
    const int64_t index = order_[pos];
    KILN_CHECK(index >= 0 && index < size, "DataLoader: the sampler gave index ", index, " (batch ", b, " of epoch ",
               epoch_, "), outside the data set of ", size, " samples");
    try {
      examples.push_back(dataset_->fetch(index, epoch_));
    } catch (...) {
      detail::throw_error("DataLoader: sample ", index, " (batch ", b, " of epoch ", epoch_,
                          ") failed: ", describe(std::current_exception()));
    }
  }
  return collate(examples, b);
}

std::optional<Batch> EpochPass::produce_from_stream(int64_t b) {
  std::vector<Example> examples;
  examples.reserve(static_cast<size_t>(batch_size_));
  for (int64_t k = 0; k < batch_size_; ++k) {
    if (stopping_.load(std::memory_order_relaxed)) throw PassStopped{};
    std::optional<Example> example;
    try {
      example = stream_->next();
    } catch (...) {
      detail::throw_error("DataLoader: example ", b * batch_size_ + k, " of the stream (batch ", b, " of epoch ",
                          epoch_, ") failed: ", describe(std::current_exception()));
    }
    if (!example) break;
    examples.push_back(std::move(*example));
  }
  const auto got = static_cast<int64_t>(examples.size());
  if (got == 0 || (drop_last_ && got < batch_size_)) return std::nullopt;
  return collate(examples, b);
}

Batch EpochPass::collate(std::vector<Example>& examples, int64_t b) {
  Batch batch;
  try {
    batch = collate_ ? collate_(examples) : default_collate(examples);
  } catch (...) {
    std::ostringstream samples;
    if (!stream_) {
      const auto begin = static_cast<size_t>(b * batch_size_);
      for (size_t i = 0; i < examples.size(); ++i) samples << (i ? ", " : " (samples ") << order_[begin + i];
      samples << ")";
    }
    detail::throw_error("DataLoader: collating batch ", b, " of epoch ", epoch_, samples.str(),
                        " failed: ", describe(std::current_exception()));
  }
  if (pin_batches_) pin(batch, b);
  return batch;
}

void EpochPass::pin(Batch& batch, int64_t b) const {
  for (size_t k = 0; k < batch.fields.size(); ++k) {
    Tensor& field = batch.fields[k];
    if (!field.defined()) continue;
    try {
      field = pin_memory(field);
    } catch (...) {
      detail::throw_error("DataLoader: pinning field ", k, " of batch ", b, " of epoch ", epoch_,
                          " failed: ", describe(std::current_exception()));
    }
  }
}

// Worker w of N makes batches w, w + N, ... (from first_batch on) with its own generator current,
// so what it draws depends on neither thread timing nor prefetch depth.
void EpochPass::worker_loop(int worker) {
  const auto window = static_cast<int64_t>(slots_.size());
  const int64_t count = worker_count_;
  const WorkerInfo info{worker, static_cast<int>(count), start_random_.base_seed + static_cast<uint64_t>(worker)};
  Generator gen(info.seed);
  const CurrentGeneratorGuard current(gen);
  const SingleThreadedScope own_core;  // the compute threads are the training loop's (tensor/parallel.h)
  t_worker_info = &info;
  struct ClearInfo {
    ~ClearInfo() { t_worker_info = nullptr; }
  } clear_info;
  std::exception_ptr init_error;
  if (worker_init_fn_) {
    try {
      worker_init_fn_(worker);
    } catch (...) {
      try {
        detail::throw_error("DataLoader: worker_init_fn failed in worker ", worker, " (epoch ", epoch_,
                            "): ", describe(std::current_exception()));
      } catch (...) {
        init_error = std::current_exception();
      }
    }
  }
  if (const auto& saved = start_random_.after_consumed[static_cast<size_t>(worker)]) gen.set_state(*saved);
  for (int64_t b = first_batch_ + ((worker - first_batch_ % count) % count + count) % count;; b += count) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      can_claim_.wait(lock, [&] { return stopping_ || b >= end_batch_ || b < next_yield_ + window; });
      if (stopping_ || b >= end_batch_) return;
    }
    Slot result;
    bool exists = true;
    if (init_error) {
      result.error = init_error;  // surfaces where this worker's first batch would have
    } else {
      try {
        std::optional<Batch> batch = produce(b);
        exists = batch.has_value();
        if (exists) result.batch = std::move(*batch);
      } catch (const PassStopped&) {
        return;
      } catch (...) {
        result.error = std::current_exception();
      }
    }
    result.rng_after = gen.state();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (exists) {
        result.filled = true;
        slots_[static_cast<size_t>(b % window)] = std::move(result);
      } else {
        end_batch_ = std::min(end_batch_, b);
      }
    }
    slot_filled_.notify_all();
    if (!exists) can_claim_.notify_all();
    if (init_error) return;
  }
}

std::optional<Batch> EpochPass::next() {
  KILN_CHECK(!failed_, "DataLoader: this pass stopped at an error; start a new loop (begin()) to go on");
  try {
    return next_in_order();
  } catch (...) {
    failed_ = true;
    stop_workers();
    throw;
  }
}

std::optional<Batch> EpochPass::next_in_order() {
  if (workers_.empty()) {
    if (next_yield_ >= end_batch_) return std::nullopt;
    std::optional<Batch> batch = produce(next_yield_);
    if (!batch) {
      end_batch_ = next_yield_;
      return std::nullopt;
    }
    ++next_yield_;
    return batch;
  }
  Slot taken;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    Slot& slot = slots_[static_cast<size_t>(next_yield_ % static_cast<int64_t>(slots_.size()))];
    slot_filled_.wait(lock, [&] { return slot.filled || next_yield_ >= end_batch_; });
    if (!slot.filled) return std::nullopt;
    taken = std::move(slot);
    slot = Slot();
    ++next_yield_;
  }
  can_claim_.notify_all();
  if (taken.error) std::rethrow_exception(taken.error);
  random_->after_consumed[static_cast<size_t>((next_yield_ - 1) % worker_count_)] = taken.rng_after;
  return std::move(taken.batch);
}

void EpochPass::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  can_claim_.notify_all();
  for (std::thread& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

// ---- DataLoader

namespace {

void check_options(const DataLoaderOptions& o) {
  KILN_CHECK(o.batch_size >= 1, "DataLoader: batch_size must be >= 1, got ", o.batch_size);
  KILN_CHECK(o.num_workers >= 0, "DataLoader: num_workers must be >= 0, got ", o.num_workers);
  KILN_CHECK(o.prefetch_factor >= 1, "DataLoader: prefetch_factor must be >= 1, got ", o.prefetch_factor);
  KILN_CHECK(!(o.sampler && o.shuffle), "DataLoader: give either a sampler or shuffle = true, not both (the sampler ",
             "decides the order; a DistributedSampler shuffles with its own shuffle option)");
}

// Whether a loader asked for pin_memory gets it. Without pinning, training goes on with ordinary
// batches after one warning per process (the text torch gives in the same case).
bool resolve_pin_memory(const DataLoaderOptions& o) {
  if (!o.pin_memory) return false;
  if (pinned_memory_available()) return true;
  static std::once_flag warned;
  std::call_once(warned, [] {
    std::fprintf(stderr, "warning: DataLoader: 'pin_memory' argument is set as true but no accelerator is found, "
                         "then device pinned memory won't be used\n");
  });
  return false;
}

// The loader's own stream of base seeds, one per epoch (Note [DataLoader worker seeds]): keyed by
// the loader's seed and the default CPU generator's seed, which is read, never drawn from.
uint64_t epoch_base_seed(uint64_t loader_seed, int64_t epoch) {
  constexpr int64_t kWorkerSeedStream = -2;  // SampleRandom's index: apart from samples and permutations
  SampleRandom rng(loader_seed ^ (default_generator().seed() * 0x9E3779B97F4A7C15ull), epoch, kWorkerSeedStream);
  const uint64_t hi = rng.bits(), lo = rng.bits();
  return ((hi << 32) | lo) >> 1;
}

Json worker_random_json(const std::optional<WorkerRandom>& random) {
  if (!random) return nullptr;
  Json rng = Json::array();
  for (const auto& state : random->after_consumed)
    rng.push_back(state ? Json{{"seed", state->seed}, {"offset", state->offset}} : Json(nullptr));
  return {{"base_seed", random->base_seed}, {"rng", rng}};
}

uint64_t json_u64(const Json& j, const char* key) {
  const auto it = j.find(key);
  KILN_CHECK(it != j.end() && it->is_number_unsigned(), "DataLoader.load_state_dict: 'workers' needs a non-negative "
             "integer '", key, "', got ", j.dump());
  return it->get<uint64_t>();
}

std::optional<WorkerRandom> worker_random_from_json(const Json& j) {
  if (j.is_null()) return std::nullopt;
  KILN_CHECK(j.is_object() && j.contains("rng") && j.at("rng").is_array(),
             "DataLoader.load_state_dict: 'workers' should be null or {\"base_seed\", \"rng\": [...]}, got ", j.dump());
  WorkerRandom random{json_u64(j, "base_seed"), {}};
  for (const Json& state : j.at("rng")) {
    if (state.is_null()) random.after_consumed.emplace_back();
    else random.after_consumed.push_back(GeneratorState{json_u64(state, "seed"), json_u64(state, "offset")});
  }
  return random;
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  KILN_CHECK(dataset != nullptr, "DataLoader: the data set is null");
  check_options(options);
  impl_->dataset = std::move(dataset);
  impl_->pin_batches = resolve_pin_memory(options);
  impl_->options = std::move(options);
  impl_->sampler = impl_->options.sampler;
  if (!impl_->sampler) {
    const int64_t n = impl_->dataset->size();
    if (impl_->options.shuffle) impl_->sampler = std::make_shared<RandomSampler>(n, impl_->options.seed);
    else impl_->sampler = std::make_shared<SequentialSampler>(n);
  }
}

DataLoader::DataLoader(std::shared_ptr<IterableDataset> stream, DataLoaderOptions options)
    : impl_(std::make_unique<Impl>()) {
  KILN_CHECK(stream != nullptr, "DataLoader: the iterable data set is null");
  check_options(options);
  KILN_CHECK(!options.shuffle && !options.sampler, "DataLoader: an IterableDataset is read in stream order; it ",
             "takes neither shuffle nor a sampler (shuffle inside the stream instead)");
  impl_->stream = std::move(stream);
  impl_->pin_batches = resolve_pin_memory(options);
  impl_->options = std::move(options);
}

DataLoader::~DataLoader() = default;
DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&&) noexcept = default;

Batch& DataLoader::Iterator::operator*() const {
  KILN_CHECK(impl_ != nullptr, "DataLoader: dereferencing an iterator past the end of its pass");
  return impl_->current;
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  KILN_CHECK(impl_ != nullptr, "DataLoader: advancing an iterator past the end of its pass");
  KILN_CHECK(impl_->pass != nullptr, "DataLoader: this iterator's pass was ended (by begin(), set_epoch, ",
             "load_state_dict or shutdown_workers); start a new loop");
  if (!impl_->advance()) impl_ = nullptr;
  return *this;
}

DataLoader::Iterator DataLoader::begin() {
  Impl& s = *impl_;
  s.pass.reset();
  if (s.pass_started) s.next_epoch();
  s.pass_started = true;
  if (!s.random) {
    const std::shared_ptr<Generator>& gen = s.options.generator;
    s.random = WorkerRandom{gen ? draw_seed(*gen) : epoch_base_seed(s.options.seed, s.epoch), {}};
  }
  s.random->after_consumed.resize(static_cast<size_t>(s.worker_count()));
  s.pass = std::make_unique<EpochPass>(s, s.epoch, s.consumed);
  return s.advance() ? Iterator(&s) : Iterator();
}

int64_t DataLoader::size() const { return impl_->num_batches(); }
int64_t DataLoader::epoch() const { return impl_->epoch; }
int64_t DataLoader::batches_consumed() const { return impl_->consumed; }
const DataLoaderOptions& DataLoader::options() const { return impl_->options; }
std::shared_ptr<const Dataset> DataLoader::dataset() const { return impl_->dataset; }

void DataLoader::shutdown_workers() { impl_->pass.reset(); }

void DataLoader::set_epoch(int64_t epoch) {
  KILN_CHECK(epoch >= 0, "DataLoader.set_epoch: epoch must be >= 0, got ", epoch);
  Impl& s = *impl_;
  if (epoch != s.epoch || s.pass_started) {
    s.pass.reset();
    s.epoch = epoch;
    s.consumed = 0;
    s.random.reset();
  }
  s.pass_started = false;
}

Json DataLoader::state_dict() const {
  const Impl& s = *impl_;
  return {{"epoch", s.epoch},
          {"batches_consumed", s.consumed},
          {"batch_size", s.options.batch_size},
          {"drop_last", s.options.drop_last},
          {"num_batches", s.num_batches()},
          {"sampler", s.sampler ? s.sampler->state_dict() : Json(nullptr)},
          {"workers", worker_random_json(s.random)}};
}

void DataLoader::load_state_dict(const Json& state) {
  Impl& s = *impl_;
  KILN_CHECK(state.is_object(), "DataLoader.load_state_dict: expected a JSON object, got ", state.dump());
  const auto epoch = json_field<int64_t>(state, "epoch");
  const auto consumed = json_field<int64_t>(state, "batches_consumed");
  const auto batch_size = json_field<int64_t>(state, "batch_size");
  const auto drop_last = json_field<bool>(state, "drop_last");
  const auto num_batches = json_field<int64_t>(state, "num_batches");
  KILN_CHECK(epoch >= 0 && consumed >= 0, "DataLoader.load_state_dict: epoch (", epoch, ") and batches_consumed (",
             consumed, ") must be >= 0");
  KILN_CHECK(batch_size == s.options.batch_size, "DataLoader.load_state_dict: the state has batch_size = ",
             batch_size, " but this loader has ", s.options.batch_size, "; resuming would visit different samples");
  KILN_CHECK(drop_last == s.options.drop_last, "DataLoader.load_state_dict: the state has drop_last = ", drop_last,
             " but this loader has ", s.options.drop_last);
  KILN_CHECK(num_batches == s.num_batches(), "DataLoader.load_state_dict: the state has num_batches = ", num_batches,
             " but this loader has ", s.num_batches(), " (a different data set or sampler?)");
  KILN_CHECK(num_batches < 0 || consumed <= num_batches, "DataLoader.load_state_dict: batches_consumed = ", consumed,
             " exceeds the epoch's ", num_batches, " batches");
  const auto sampler_state = state.find("sampler");
  KILN_CHECK(sampler_state != state.end(), "DataLoader.load_state_dict: the state has no 'sampler'");
  if (s.sampler) s.sampler->load_state_dict(*sampler_state);
  else KILN_CHECK(sampler_state->is_null(), "DataLoader.load_state_dict: the state has a sampler but this loader reads "
                  "an IterableDataset");
  // Absent in states saved before worker generators existed: the epoch's base seed is drawn anew.
  const auto workers = state.find("workers");
  std::optional<WorkerRandom> random = workers == state.end() ? std::nullopt : worker_random_from_json(*workers);
  s.pass.reset();
  s.epoch = epoch;
  s.consumed = consumed;
  s.pass_started = false;
  s.random = std::move(random);
  // Saved with another worker count: batches go to other workers, who start from base_seed + id.
  if (s.random && s.random->after_consumed.size() != static_cast<size_t>(s.worker_count()))
    s.random->after_consumed.assign(static_cast<size_t>(s.worker_count()), std::nullopt);
}

}  // namespace kiln::data
