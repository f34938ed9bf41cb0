// DataLoader: batches of a Dataset in a sampler's order (or of an IterableDataset in stream
// order), made on background threads with bounded prefetch, handed out as a C++ range:
//   for (Batch& b : loader) { Tensor x = b[0], y = b[1]; ... }
// Batches come out in the same order with the same contents whatever num_workers is, and the
// loader's position (epoch, batches consumed) can be saved and restored to resume mid-epoch.
// See Note [DataLoader epochs and resume].
#pragma once

#include <concepts>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <vector>

#include "io/data/dataset.h"
#include "io/data/sampler.h"
#include "tensor/generator.h"
#include "tensor/state_dict.h"

namespace kiln::data {

// Turns a batch's examples into a Batch. Runs on a worker thread when num_workers > 0.
using CollateFn = std::function<Batch(std::vector<Example>& examples)>;

// What code running on a loader's worker thread (a data set's fetch, a transform, a collate
// function, worker_init_fn) can learn about that worker, as torch.utils.data.get_worker_info().
struct WorkerInfo {
  int id = 0;           // 0 .. num_workers - 1
  int num_workers = 0;  // threads of this pass (1 for an IterableDataset, which one thread reads)
  uint64_t seed = 0;    // the seed of this worker's generator: base_seed + id
};
// This thread's worker, or nullptr outside a loader's worker thread (on the caller's thread, and
// with num_workers = 0), as in torch.
const WorkerInfo* get_worker_info();

// Stacks field k of every example into field k of the batch: a new contiguous (B, ...) tensor.
// All examples need the same number of fields, and field k the same shape and dtype in each.
Batch default_collate(std::vector<Example>& examples);

struct DataLoaderOptions {
  int64_t batch_size = 1;
  bool shuffle = false;        // visit the data set in a new random order each epoch
  uint64_t seed = 0;           // of that order: RandomSampler(size, seed), fixed by (seed, epoch)
  bool drop_last = false;      // drop the last batch when it is short
  int num_workers = 0;         // threads that make batches; 0: made on the caller's thread on demand
  int prefetch_factor = 2;     // batches made ahead per worker (ignored when num_workers is 0)
  std::shared_ptr<Sampler> sampler;  // replaces shuffle and seed (e.g. a DistributedSampler)
  CollateFn collate;           // default_collate when empty
  // Copy each batch's tensors into pinned host memory (tensor/pinned.h), so that moving them to a
  // GPU is a direct DMA. The copy is made where the batch is made: on a worker thread when
  // num_workers > 0 (overlapping the training step), else on the caller's thread. When pinning is
  // unavailable (no CUDA build, driver or GPU) the loader warns once per process on stderr and hands
  // out ordinary batches, so a CPU-only machine trains unchanged. Values never change either way.
  bool pin_memory = false;
  // Runs once on each worker thread at the start of each pass, after the worker's generator is
  // seeded and made current, before its first batch (torch's worker_init_fn). May reseed it with
  // manual_seed. An exception surfaces where the worker's first batch would have come out.
  std::function<void(int worker_id)> worker_init_fn;
  // Draws each epoch's base seed for the worker generators; null: the loader's own stream (Note
  // [DataLoader worker seeds]).
  std::shared_ptr<Generator> generator;
};

// Note [DataLoader worker seeds]
// With num_workers > 0 each worker thread owns a Generator, current on that thread (Note
// [Per-thread default generator]), so random augmentation that calls the default generator draws
// from it. As in torch, worker w's generator is seeded with base_seed + w, and base_seed is drawn
// once per epoch (at its first begin()) from the loader's generator: options.generator when given
// (torch's generator= argument); else the loader's own counter-based stream, keyed by options.seed
// and the default CPU generator's seed (so manual_seed / seed_everything change it), at position
// `epoch`. Unlike torch's default, that stream is never the default generator's: a draw there would
// make the main thread's stream (dropout) depend on how many evaluation passes ran, and a resume
// after trainer.validate() would no longer be bit-exact.
// Batch b is always made by worker b % num_workers, so each worker draws for its own batches in
// batch order, and the contents depend on neither thread timing nor prefetch depth. state_dict()
// keeps base_seed and each worker's generator state after its last consumed batch, so a resumed
// pass makes the remaining batches bit-exactly (worker_init_fn runs again first; the saved state
// then replaces what it left). Resumed with another num_workers, the workers start from
// base_seed + id. With num_workers = 0 batches are made on the caller's thread from its default
// generator, as in torch.

class DataLoader {
 public:
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options = {});
  template <class D>
    requires std::derived_from<D, Dataset>
  DataLoader(D dataset, DataLoaderOptions options = {})
      : DataLoader(std::shared_ptr<const Dataset>(std::make_shared<D>(std::move(dataset))), std::move(options)) {}
  // Stream order; one background thread reads the stream when num_workers > 0 (any number).
  DataLoader(std::shared_ptr<IterableDataset> stream, DataLoaderOptions options = {});
  ~DataLoader();  // stops and joins the workers of a pass in progress
  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;

  struct Impl;
  // An input iterator over one pass. Only the most recent begin()'s iterator is valid.
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using reference = Batch&;
    using pointer = Batch*;

    Iterator() = default;
    Batch& operator*() const;
    Batch* operator->() const { return &**this; }
    Iterator& operator++();
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return impl_ == nullptr; }

   private:
    friend class DataLoader;
    explicit Iterator(Impl* impl) : impl_(impl) {}
    Impl* impl_ = nullptr;  // null once the pass is over
  };

  Iterator begin();  // starts a pass; makes its first batch
  std::default_sentinel_t end() const { return {}; }

  int64_t size() const;  // batches per epoch (len(loader)); -1 for an IterableDataset
  int64_t epoch() const;
  int64_t batches_consumed() const;  // of the current epoch
  const DataLoaderOptions& options() const;
  std::shared_ptr<const Dataset> dataset() const;  // null for an IterableDataset

  void set_epoch(int64_t epoch);
  // Ends the current pass and joins its worker threads (torch's _shutdown_workers), as before the
  // process exits: the position and state_dict() stay; the next begin() goes on as after a break.
  void shutdown_workers();
  // {"epoch", "batches_consumed", "batch_size", "num_batches", "drop_last", "sampler": {...},
  //  "workers": null or {"base_seed", "rng": [null or {"seed", "offset"} per worker]}}
  Json state_dict() const;
  // Checks the state fits this loader (batch size, sampler kind and size) and adopts its position
  // and sampler seed; a mismatch is a kiln::Error naming the field.
  void load_state_dict(const Json& state);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::data
