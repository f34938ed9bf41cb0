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
#include "tensor/state_dict.h"

namespace kiln::data {

// Turns a batch's examples into a Batch. Runs on a worker thread when num_workers > 0.
using CollateFn = std::function<Batch(std::vector<Example>& examples)>;

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
};

// Note [DataLoader epochs and resume]
// The loader's position is (epoch, batches consumed). A batch counts as consumed when the iterator
// hands it out, so a state saved while the loop body runs on batch k resumes at batch k + 1.
// - begin() starts a pass at the current position. A pass that runs to its end moves the position
//   to (epoch + 1, 0): `for (...) for (Batch& b : loader)` sees a new shuffle every epoch.
// - begin() after a pass that was left early (break, exception) starts the next epoch, as a new
//   iter() on a torch DataLoader does.
// - set_epoch(e) makes the next pass epoch e from its first batch; it keeps a position just
//   restored by load_state_dict when that position is in epoch e (so Lightning-style code that calls
//   set_epoch every epoch still resumes mid-epoch).
// - load_state_dict(state_dict()) in a new loader over the same data continues exactly where the
//   saved one was: the same remaining batches of that epoch, then the same later epochs.
// Samplers are pure functions of the epoch, so nothing else needs saving. An IterableDataset is
// restarted and the consumed examples are read again and dropped.

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
  // {"epoch", "batches_consumed", "batch_size", "num_batches", "drop_last", "sampler": {...}}
  Json state_dict() const;
  // Checks the state fits this loader (batch size, sampler kind and size) and adopts its position
  // and sampler seed; a mismatch is a kiln::Error naming the field.
  void load_state_dict(const Json& state);

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::data
