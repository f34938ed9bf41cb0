// Samplers: the order in which a DataLoader visits a data set's indices, one epoch at a time
// (torch.utils.data's Sequential/Random/DistributedSampler and BatchSampler). A sampler is a pure
// function of (its settings, epoch): nothing advances as it is used, so the loader can resume
// mid-epoch from two integers and any worker can be handed any batch.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tensor/state_dict.h"

namespace kiln::data {

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual int64_t size() const = 0;                               // indices per epoch
  virtual std::vector<int64_t> indices(int64_t epoch) const = 0;  // this epoch's order
  // The settings a resumed run must share (kind, size, seed); load_state_dict adopts the seed and
  // rejects a state whose kind or sizes differ, naming the field.
  virtual Json state_dict() const = 0;
  virtual void load_state_dict(const Json& state) = 0;
};

// A permutation of [0, n) drawn from Philox keyed by seed, fixed by (seed, epoch): Fisher-Yates.
std::vector<int64_t> random_permutation(int64_t n, uint64_t seed, int64_t epoch);

// 0, 1, ..., n - 1 every epoch.
class SequentialSampler : public Sampler {
 public:
  explicit SequentialSampler(int64_t size);
  int64_t size() const override { return size_; }
  std::vector<int64_t> indices(int64_t epoch) const override;
  Json state_dict() const override;
  void load_state_dict(const Json& state) override;

 private:
  int64_t size_;
};

// A new permutation of [0, n) every epoch: random_permutation(n, seed, epoch).
class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(int64_t size, uint64_t seed = 0);
  int64_t size() const override { return size_; }
  uint64_t seed() const { return seed_; }
  std::vector<int64_t> indices(int64_t epoch) const override;
  Json state_dict() const override;
  void load_state_dict(const Json& state) override;

 private:
  int64_t size_;
  uint64_t seed_;
};

struct DistributedSamplerOptions {
  int64_t dataset_size = 0;
  int64_t rank = 0;
  int64_t world_size = 1;
  bool shuffle = true;     // the same permutation (seed, epoch) on every rank, then split
  uint64_t seed = 0;
  bool drop_last = false;  // false: pad by repeating indices from the start so every rank gets
                           // ceil(n / world_size); true: drop the tail so each gets floor(n / world_size)
};

// This rank's share of each epoch, as torch's DistributedSampler: the epoch's order (permuted or
// not) is padded or cut to a multiple of world_size, and rank r takes positions r, r + W, r + 2W...
// All ranks get the same count, so collective ops in a data-parallel step stay in lockstep.
class DistributedSampler : public Sampler {
 public:
  explicit DistributedSampler(DistributedSamplerOptions options);
  int64_t size() const override { return per_rank_; }
  std::vector<int64_t> indices(int64_t epoch) const override;
  Json state_dict() const override;
  void load_state_dict(const Json& state) override;
  const DistributedSamplerOptions& options() const { return options_; }

 private:
  DistributedSamplerOptions options_;
  int64_t per_rank_ = 0;
};

// Groups a sampler's indices into batches of batch_size; the last one is shorter, or dropped when
// drop_last.
class BatchSampler {
 public:
  BatchSampler(std::shared_ptr<const Sampler> sampler, int64_t batch_size, bool drop_last);
  int64_t size() const;  // batches per epoch
  std::vector<std::vector<int64_t>> batches(int64_t epoch) const;

 private:
  std::shared_ptr<const Sampler> sampler_;
  int64_t batch_size_;
  bool drop_last_;
};

}  // namespace kiln::data
