// What goes wrong between ranks becomes a kiln::Error, never a hang: a rank killed mid-collective,
// a rank that stops calling, ranks that disagree on sizes, bad arguments on this rank; and the
// harness reports a rank that fails or runs past its time.
#include <gtest/gtest-spi.h>
#include <signal.h>

#include <thread>

#include "distributed/multiprocess.h"
#include "testing.h"

namespace kiln::dist {
namespace {

namespace kt = kiln::testing;
namespace mp = kiln::dist::testing;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

mp::RunOptions with_timeout(milliseconds group_timeout) {
  mp::RunOptions o;
  o.group.timeout = group_timeout;
  o.timeout = std::chrono::seconds(30);
  return o;
}

TEST(ProcessGroupFaults, PeerKilledMidCollective) {
  const auto results = mp::run_ranks_results(3, [](ProcessGroup& pg, int rank) {
    Tensor x = ones({16 << 20});  // 64 MiB: still in flight when rank 1 dies
    if (rank == 1) {
      pg.all_reduce(x);
      std::this_thread::sleep_for(milliseconds(5));
      raise(SIGKILL);
    }
    const auto start = Clock::now();
    kt::expect_error([&] { pg.all_reduce(x)->wait(); },
                     {"rank " + std::to_string(rank) + " of 3: all_reduce of 67108864 bytes failed after"});
    EXPECT_LT(seconds_since(start), 4.5);  // at once on a reset socket, else the 3 s timeout; slack for a busy host
    // Broken now: every later call fails at once, naming the first failure.
    const auto again = Clock::now();
    kt::expect_error([&] { pg.barrier()->wait(); }, {"barrier: the group is broken by an earlier failure (rank "});
    EXPECT_LT(seconds_since(again), 0.5);
  }, with_timeout(milliseconds(3000)));
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[1].signal, SIGKILL);
  EXPECT_EQ(results[1].describe(), "rank 1 was killed by signal 9 (Killed)");
  for (int r : {0, 2}) EXPECT_TRUE(results[static_cast<size_t>(r)].ok()) << results[static_cast<size_t>(r)].output;
}

TEST(ProcessGroupFaults, PeerThatStopsCallingTimesOut) {
  mp::run_processes(2, [](mp::RankContext& ctx) {
    std::shared_ptr<ProcessGroup> pg = make_gloo_group(std::shared_ptr<Store>(&ctx.store, [](Store*) {}), ctx.rank, 2,
                                                       {.timeout = milliseconds(1000)});
    if (ctx.rank == 1) {  // alive, connected, but never calls: rank 0 must give up on its own
      ctx.store.wait({"rank0 gave up"}, milliseconds(10000));
      return;
    }
    const auto start = Clock::now();
    kt::expect_error([&] { pg->all_reduce(ones({16}))->wait(); },
                     {"rank 0 of 2: all_reduce of 64 bytes failed after 1.", "timed out after 1.0 s"});
    EXPECT_LT(seconds_since(start), 3.0);
    ctx.store.set("rank0 gave up", {});
  });
}

TEST(ProcessGroupFaults, MismatchedSizesAreAnErrorOnEveryRank) {
  mp::run_ranks(2, [](ProcessGroup& pg, int rank) {
    const auto start = Clock::now();
    kt::expect_error([&] { pg.all_reduce(ones({rank == 0 ? 1000 : 2000}))->wait(); },
                     {"the ranks called different collectives (rank 0: all_reduce(sum) of float32, 4000 bytes; "
                      "rank 1: all_reduce(sum) of float32, 8000 bytes)"});
    EXPECT_LT(seconds_since(start), 1.0);  // found at once, not by the timeout
  });
}

TEST(ProcessGroupFaults, MismatchedSizesWithoutTheCheckTimeOut) {
  // No agreement check: the fingerprint in the tags keeps the ranks' messages apart (Note [Tags]),
  // so the rank posting fewer bytes is not aborted by Gloo, nor the other left with a short result.
  mp::RunOptions options = with_timeout(milliseconds(800));
  options.group.check_agreement = false;
  mp::run_ranks(2, [](ProcessGroup& pg, int rank) {
    // The first rank to time out leaves, so the other may see its connection close instead.
    kt::expect_error([&] { pg.all_reduce(ones({rank == 0 ? 1000 : 2000}))->wait(); },
                     {"all_reduce of " + std::to_string(rank == 0 ? 4000 : 8000) + " bytes failed after"});
    Tensor b = zeros({rank == 0 ? 10 : 20});
    kt::expect_error([&] { pg.broadcast(b, 0)->wait(); }, {"the group is broken"});
  }, options);
}

TEST(ProcessGroupFaults, MismatchedCollectivesAreAnError) {
  mp::run_ranks(2, [](ProcessGroup& pg, int rank) {
    Tensor x = zeros({4}, {.dtype = DType::i32});
    kt::expect_error([&] { (rank == 0 ? pg.broadcast(x, 1) : pg.all_reduce(x, ReduceOp::max))->wait(); },
                     {"rank 0: broadcast of int32, 16 bytes from rank 1; rank 1: all_reduce(max) of int32, 16 bytes"});
  });
}

TEST(ProcessGroupFaults, MismatchedSendRecvSizesTimeOut) {
  mp::run_ranks(2, [](ProcessGroup& pg, int rank) {
    if (rank == 0)
      kt::expect_error([&] { pg.send(ones({10}), 1)->wait(); },
                       {"send of 40 bytes to rank 1 (tag 0, float32) failed after", "a recv of another size"});
    else
      kt::expect_error([&] { pg.recv(zeros({20}), 0)->wait(); },
                       {"recv of 80 bytes from rank 0 (tag 0, float32) failed after", "a send of another size"});
  }, with_timeout(milliseconds(800)));
}

// Each check on this rank names the op, the shapes and dtypes (a group of one needs no peers).
TEST(ProcessGroupFaults, BadArgumentsOnThisRank) {
  auto store = std::shared_ptr<Store>(make_tcp_store({.host = "127.0.0.1", .port = 0, .is_server = true}));
  kt::expect_error([&] { make_gloo_group(store, 2, 2); }, {"make_gloo_group: rank 2 is outside [0, 2)"});
  auto pg = make_gloo_group(store, 0, 1, {.timeout = milliseconds(5000)});
  EXPECT_EQ(pg->size(), 1);
  Tensor m = zeros({2, 3});
  kt::expect_error([&] { pg->all_reduce(m.t()); }, {"all_reduce: tensor of shape [3, 2] (float32) is not contiguous"});
  kt::expect_error([&] { pg->all_reduce(zeros({2}, {.dtype = DType::boolean}), ReduceOp::avg); },
                   {"all_reduce: avg is not defined for bool"});
  kt::expect_error([&] { pg->broadcast(m, 1); }, {"broadcast: src 1 is outside the group's ranks [0, 1)"});
  kt::expect_error([&] { pg->all_gather(m, zeros({2, 3}, {.dtype = DType::f64}), {2}); },
                   {"all_gather: input is float32 but output is float64"});
  kt::expect_error([&] { pg->all_gather(m, zeros({2, 3}), {1, 1}); },
                   {"all_gather: counts has 2 entries for a group of 1 ranks"});
  kt::expect_error([&] { pg->all_gather(m, zeros({3, 3}), {3}); },
                   {"all_gather: this rank's input [2, 3] has 2 rows but counts[0] is 3"});
  kt::expect_error([&] { pg->all_gather(m, zeros({4, 3}), {2}); },
                   {"all_gather: output [4, 3] has 4 rows but counts add up to 2"});
  kt::expect_error([&] { pg->all_gather(m, zeros({2, 4}), {2}); },
                   {"all_gather: output [2, 4] and input [2, 3] differ beyond dim 0"});
  kt::expect_error([&] { pg->reduce_scatter(m, zeros({1, 3}), {2}); },
                   {"reduce_scatter: this rank's output [1, 3] has 1 rows but counts[0] is 2"});
  kt::expect_error([&] { pg->all_gather(zeros(Dims{})); }, {"all_gather: input needs at least one dim"});
  kt::expect_error([&] { pg->send(m, 0); }, {"send: rank 0 cannot send to itself"});
  kt::expect_error([&] { pg->recv(m, 3); }, {"recv: src 3 is outside the group's ranks [0, 1)"});
  // A group of one still reduces (avg divides by 1) and gathers.
  Tensor x = full({3}, 5, {.dtype = DType::i64});
  pg->all_reduce(x, ReduceOp::avg)->wait();
  EXPECT_EQ(kt::at(x, 2), 5);
  EXPECT_EQ(pg->all_gather(m).shape(), Dims({2, 3}));
  pg->barrier()->wait();
}

// The harness itself: a rank that fails or hangs fails the parent's test, naming it.
void exit_on_rank_1(ProcessGroup& pg, int rank) {
  pg.barrier()->wait();
  if (rank == 1) std::_Exit(3);
}

TEST(Harness, NamesAFailingRank) {
  EXPECT_NONFATAL_FAILURE(mp::run_ranks(2, exit_on_rank_1), "rank 1 exited with code 3");
}

TEST(Harness, KillsARankPastTheTimeout) {
  mp::RunOptions options;
  options.timeout = milliseconds(1500);
  const auto results = mp::run_processes_results(2, [](mp::RankContext& ctx) {
    if (ctx.rank == 1) std::this_thread::sleep_for(std::chrono::seconds(30));
  }, options);
  EXPECT_TRUE(results[0].ok());
  EXPECT_TRUE(results[1].timed_out);
  EXPECT_EQ(results[1].describe(), "rank 1 ran past the timeout and was killed");
}

}  // namespace
}  // namespace kiln::dist
