// Samplers and the permutation they share.
#include "io/data/sampler.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>

#include "io/data/transforms.h"  // SampleRandom

namespace kiln::data {
namespace {

// The permutation's Philox stream uses an index no sample has (samples are < 2^63), so a sampler
// and a transform seeded alike still draw unrelated numbers.
constexpr int64_t kPermutationStream = -1;

// Reads field `key` of a sampler state as T, or fails naming the sampler and the field.
template <class T>
T state_field(const Json& state, const char* sampler, const char* key) {
  KILN_CHECK(state.is_object(), sampler, ".load_state_dict: expected a JSON object, got ", state.dump());
  const auto it = state.find(key);
  KILN_CHECK(it != state.end(), sampler, ".load_state_dict: the state has no '", key, "' (got ", state.dump(), ")");
  if constexpr (std::is_same_v<T, bool>) {
    KILN_CHECK(it->is_boolean(), sampler, ".load_state_dict: '", key, "' should be a boolean, got ", it->dump());
  } else if constexpr (std::is_same_v<T, std::string>) {
    KILN_CHECK(it->is_string(), sampler, ".load_state_dict: '", key, "' should be a string, got ", it->dump());
  } else {
    KILN_CHECK(it->is_number_integer(), sampler, ".load_state_dict: '", key, "' should be an integer, got ",
               it->dump());
  }
  return it->get<T>();
}

void check_kind(const Json& state, const char* sampler, const char* kind) {
  const auto got = state_field<std::string>(state, sampler, "kind");
  KILN_CHECK(got == kind, sampler, ".load_state_dict: the state is of a '", got, "' sampler, this is '", kind, "'");
}

template <class T>
void check_same(const Json& state, const char* sampler, const char* key, T mine) {
  const T saved = state_field<T>(state, sampler, key);
  KILN_CHECK(saved == mine, sampler, ".load_state_dict: the state has ", key, " = ", saved, " but this sampler has ",
             mine, "; resuming would visit different samples");
}

void check_size(const char* sampler, int64_t size) {
  KILN_CHECK(size >= 0, sampler, ": size must be >= 0, got ", size);
}

}  // namespace

std::vector<int64_t> random_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  check_size("random_permutation", n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  SampleRandom rng(seed, epoch, kPermutationStream);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.integer(0, i))]);
  return order;
}

// ---- SequentialSampler

SequentialSampler::SequentialSampler(int64_t size) : size_(size) { check_size("SequentialSampler", size); }

std::vector<int64_t> SequentialSampler::indices(int64_t) const {
  std::vector<int64_t> order(static_cast<size_t>(size_));
  std::iota(order.begin(), order.end(), int64_t{0});
  return order;
}

Json SequentialSampler::state_dict() const { return {{"kind", "sequential"}, {"size", size_}}; }

void SequentialSampler::load_state_dict(const Json& state) {
  check_kind(state, "SequentialSampler", "sequential");
  check_same<int64_t>(state, "SequentialSampler", "size", size_);
}

// ---- RandomSampler

RandomSampler::RandomSampler(int64_t size, uint64_t seed) : size_(size), seed_(seed) { check_size("RandomSampler", size); }

std::vector<int64_t> RandomSampler::indices(int64_t epoch) const { return random_permutation(size_, seed_, epoch); }

Json RandomSampler::state_dict() const { return {{"kind", "random"}, {"size", size_}, {"seed", seed_}}; }

void RandomSampler::load_state_dict(const Json& state) {
  check_kind(state, "RandomSampler", "random");
  check_same<int64_t>(state, "RandomSampler", "size", size_);
  seed_ = state_field<uint64_t>(state, "RandomSampler", "seed");
}

// ---- DistributedSampler

DistributedSampler::DistributedSampler(DistributedSamplerOptions options) : options_(options) {
  const auto& o = options_;
  check_size("DistributedSampler", o.dataset_size);
  KILN_CHECK(o.world_size >= 1, "DistributedSampler: world_size must be >= 1, got ", o.world_size);
  KILN_CHECK(o.rank >= 0 && o.rank < o.world_size, "DistributedSampler: rank ", o.rank,
             " is out of range for world_size ", o.world_size, " (valid: 0 to ", o.world_size - 1, ")");
  per_rank_ = o.drop_last ? o.dataset_size / o.world_size : (o.dataset_size + o.world_size - 1) / o.world_size;
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch) const {
  const auto& o = options_;
  std::vector<int64_t> order = o.shuffle ? random_permutation(o.dataset_size, o.seed, epoch)
                                         : SequentialSampler(o.dataset_size).indices(epoch);
  const int64_t total = per_rank_ * o.world_size;
  // Padding repeats the order from its start (cyclically, when it is shorter than the padding).
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(per_rank_));
  for (int64_t pos = o.rank; pos < total; pos += o.world_size)
    mine.push_back(order[static_cast<size_t>(pos % o.dataset_size)]);
  return mine;
}

Json DistributedSampler::state_dict() const {
  const auto& o = options_;
  return {{"kind", "distributed"}, {"size", o.dataset_size}, {"rank", o.rank},          {"world_size", o.world_size},
          {"shuffle", o.shuffle},  {"seed", o.seed},         {"drop_last", o.drop_last}};
}

void DistributedSampler::load_state_dict(const Json& state) {
  const char* name = "DistributedSampler";
  check_kind(state, name, "distributed");
  check_same<int64_t>(state, name, "size", options_.dataset_size);
  // Not the rank: every process of a run resumes from rank 0's checkpoint, each at its own rank.
  check_same<int64_t>(state, name, "world_size", options_.world_size);
  check_same<bool>(state, name, "shuffle", options_.shuffle);
  check_same<bool>(state, name, "drop_last", options_.drop_last);
  options_.seed = state_field<uint64_t>(state, name, "seed");
}

// ---- BatchSampler

BatchSampler::BatchSampler(std::shared_ptr<const Sampler> sampler, int64_t batch_size, bool drop_last)
    : sampler_(std::move(sampler)), batch_size_(batch_size), drop_last_(drop_last) {
  KILN_CHECK(sampler_ != nullptr, "BatchSampler: the sampler is null");
  KILN_CHECK(batch_size_ >= 1, "BatchSampler: batch_size must be >= 1, got ", batch_size_);
}

int64_t BatchSampler::size() const {
  const int64_t n = sampler_->size();
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

std::vector<std::vector<int64_t>> BatchSampler::batches(int64_t epoch) const {
  const std::vector<int64_t> order = sampler_->indices(epoch);
  std::vector<std::vector<int64_t>> out;
  out.reserve(static_cast<size_t>(size()));
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch_size_)) {
    const size_t stop = std::min(order.size(), start + static_cast<size_t>(batch_size_));
    if (drop_last_ && stop - start < static_cast<size_t>(batch_size_)) break;
    out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start), order.begin() + static_cast<std::ptrdiff_t>(stop));
  }
  return out;
}

}  // namespace kiln::data
