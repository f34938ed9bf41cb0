// Sharded checkpoints with ranks simulated by threads: save at one world size, load at another
// (resharding), replicated tensors, and the errors of a save whose ranks disagree or of a folder
// whose shards do not match its index.
#include <barrier>
#include <thread>

#include "ckpt_helpers.h"

namespace kt = kiln::testing;
namespace kc = kiln::testing::ckpt;
using namespace kiln;

namespace {

// The global tensors: "w" (10 x 3, f32), "ids" (7, i64), "bias" (3 x 2 x 2, bf16), "step" replicated.
State global_state() {
  State s;
  s.tensors.insert("w", kt::random_tensor({10, 3}, DType::f32, -1, 1, 11));
  s.tensors.insert("ids", kt::random_tensor({7}, DType::i64, 0, 1000, 12));
  s.tensors.insert("bias", kt::random_tensor({3, 2, 2}, DType::bf16, -1, 1, 13));
  s.tensors.insert("step", full({}, 42, {.dtype = DType::i64}));
  s.meta = {{"epoch", 3}};
  return s;
}

// Rank r's shard at save time: uneven splits on purpose (rank r holds rows_of(r) rows).
State shard_for(const State& global, int rank, int world, const std::function<int64_t(int64_t, int)>& start_of) {
  State s;
  for (const auto& [name, t] : global.tensors) {
    if (name == "step") {
      s.tensors.insert(name, t);
      continue;
    }
    const int64_t a = start_of(t.shape()[0], rank), b = start_of(t.shape()[0], rank + 1);
    s.tensors.insert(name, t.narrow(0, a, b - a));
  }
  s.meta = global.meta;
  return s;
}

void save_with_threads(const std::string& dir, int world, const State& global,
                       const std::function<int64_t(int64_t, int)>& start_of) {
  std::barrier sync(world);
  std::vector<std::thread> ranks;
  std::vector<std::string> errors(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      try {
        io::save_sharded(dir, r, world, shard_for(global, r, world, start_of),
                         {.barrier = [&] { sync.arrive_and_wait(); }, .replicated = {"step"}});
      } catch (const Error& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
}

}  // namespace

TEST(Sharded, ShardRowsSplitEvenly) {
  EXPECT_EQ(io::shard_rows(10, 0, 3), (std::pair<int64_t, int64_t>{0, 3}));
  EXPECT_EQ(io::shard_rows(10, 1, 3), (std::pair<int64_t, int64_t>{3, 6}));
  EXPECT_EQ(io::shard_rows(10, 2, 3), (std::pair<int64_t, int64_t>{6, 10}));
  EXPECT_EQ(io::shard_rows(2, 4, 5), (std::pair<int64_t, int64_t>{1, 2}));
  EXPECT_EQ(io::shard_rows(2, 0, 5), (std::pair<int64_t, int64_t>{0, 0}));
}

TEST(Sharded, ReshardsToAnyWorldSize) {
  const State global = global_state();
  const auto uneven = [](int64_t n, int r) { return std::min<int64_t>(n, r * (n / 3 + 1)); };  // 4 ranks, last short
  kc::ScratchDir dir;
  save_with_threads(dir / "step-1", 4, global, uneven);
  EXPECT_EQ(io::detect_format(dir / "step-1"), "kiln-sharded");
  for (int world : {1, 2, 3, 4, 5, 11}) {
    for (int r = 0; r < world; ++r) {
      SCOPED_TRACE("world " + std::to_string(world) + " rank " + std::to_string(r));
      const State got = io::load_sharded(dir / "step-1", r, world);
      EXPECT_EQ(got.meta, global.meta);
      EXPECT_EQ(got.tensors.keys(), global.tensors.keys());
      for (const auto& [name, t] : global.tensors) {
        if (name == "step") {
          kc::expect_identical(got.tensors.at(name), t, name);
          continue;
        }
        const auto [a, b] = io::shard_rows(t.shape()[0], r, world);
        kc::expect_identical(got.tensors.at(name), t.narrow(0, a, b - a), name);
      }
    }
  }
  // Same world size, zero-copy: each rank's rows live in one shard file.
  const auto even = [](int64_t n, int r) { return io::shard_rows(n, r, 2).first; };
  save_with_threads(dir / "step-2", 2, global, even);
  const State zc = io::load_sharded(dir / "step-2", 1, 2, {.zero_copy = true});
  kc::expect_identical(zc.tensors.at("w"), global.tensors.at("w").narrow(0, 5, 5), "zero-copy");
  const State part = io::load_sharded(dir / "step-2", 0, 1, {.names = {"ids"}});
  EXPECT_EQ(part.tensors.keys(), std::vector<std::string>{"ids"});
}

TEST(Sharded, RanksThatDisagreeFailOnEveryRank) {
  kc::ScratchDir dir;
  std::barrier sync(2);
  std::string errors[2];
  std::thread ranks[2];
  for (int r = 0; r < 2; ++r)
    ranks[r] = std::thread([&, r] {
      State s;
      s.tensors.insert("w", zeros({2, r == 0 ? 3 : 4}));  // trailing dims differ
      try {
        io::save_sharded(dir / "bad", r, 2, s, {.barrier = [&] { sync.arrive_and_wait(); }});
      } catch (const Error& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : ranks) t.join();
  EXPECT_NE(errors[0].find("tensor 'w' has shape [2, 3] on rank 0 but [2, 4] on rank 1"), std::string::npos) << errors[0];
  EXPECT_NE(errors[1].find("has no index.json"), std::string::npos) << errors[1];
  kt::expect_error([&] { io::load_sharded(dir / "bad", 0, 1); }, {"no index.json", "did not finish"});
}

TEST(Sharded, ChecksItsInputsAndItsFolder) {
  kc::ScratchDir dir;
  State s;
  s.tensors.insert("w", zeros({2, 2}));
  kt::expect_error([&] { io::save_sharded(dir / "x", 0, 2, s); }, {"barrier is required"});
  kt::expect_error([&] { io::save_sharded(dir / "x", 2, 2, s, {.barrier = [] {}}); }, {"rank 2 of world_size 2"});
  State scalar;
  scalar.tensors.insert("lr", full({}, 0.1));
  kt::expect_error([&] { io::save_sharded(dir / "s", 0, 1, scalar); }, {"'lr' is 0-d", "replicated"});
  io::save_sharded(dir / "one", 0, 1, s);
  EXPECT_NO_THROW(io::load_sharded(dir / "one", 0, 3));
  // A shard replaced by another save's file no longer matches the index.
  State other;
  other.tensors.insert("w", ones({2, 2}));
  io::save(dir / "one/shard-00000-of-00001.kiln", other);
  kt::expect_error([&] { io::load_sharded(dir / "one", 0, 1); }, {"shard-00000-of-00001.kiln", "does not match the index"});
  kt::expect_error([&] { io::load_sharded(dir / "one", 1, 1); }, {"rank 1 of world_size 1"});
}
