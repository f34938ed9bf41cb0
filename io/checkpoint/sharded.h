// Sharded checkpoints: a folder with one native checkpoint file per rank and an index.json, the
// commit point, written by rank 0 after every shard is in place. Loadable at any world size.
// How tensors are split (docs/checkpoint-format.md, "Sharded checkpoints"): each rank passes its
// rows of every tensor along dim 0; the global tensor is the ranks' pieces concatenated in rank
// order (a rank may hold 0 rows). Tensors listed as replicated are whole on every rank; rank 0's copy
// is written. On load, rank r of W gets rows [r*N/W, (r+1)*N/W) of each split tensor (integer
// division), gathered from whichever saved shards hold them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint/reader.h"
#include "io/checkpoint/writer.h"

namespace kiln::io {

struct ShardedSaveOptions {
  // Blocks until every rank has called it (a communicator's barrier, or std::barrier for ranks
  // simulated by threads). Required when world_size > 1; called 3 times per save on every rank.
  std::function<void()> barrier;
  std::vector<std::string> replicated;  // names of tensors every rank holds whole
  SaveOptions save;
};

// Called by every rank with its own shard, concurrently. The shard files are written in parallel;
// rank 0 then checks that the shards agree (names, dtypes, trailing dims) and writes the index.
// Every rank throws if the save as a whole failed. Save into a fresh folder (a step folder):
// overwriting a sharded checkpoint in place removes the old index first.
void save_sharded(const std::string& dir, int rank, int world_size, const State& shard,
                  const ShardedSaveOptions& options = {});

// Rank `rank` of `world_size` reads its rows of every split tensor and every replicated tensor
// whole. meta is rank 0's meta at save time. LoadOptions::zero_copy applies when one saved shard
// holds all of a rank's rows.
State load_sharded(const std::string& dir, int rank, int world_size, const LoadOptions& options = {});

// Rows [first, second) of an n-row tensor that `rank` of `world_size` loads.
std::pair<int64_t, int64_t> shard_rows(int64_t n, int rank, int world_size);

// "shard-00002-of-00004.kiln"
std::string shard_file_name(int rank, int world_size);

}  // namespace kiln::io
