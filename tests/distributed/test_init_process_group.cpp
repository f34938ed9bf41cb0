// init_process_group from a ClusterEnvironment: rank 0 serving the store, kiln-run's agent store
// with a restart's key prefix, and the errors (an unreachable master, unknown backends).
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdlib>

#include "distributed/cluster_environment.h"
#include "distributed/multiprocess.h"
#include "testing.h"

namespace kiln::dist {
namespace {

namespace kt = kiln::testing;
namespace mp = kiln::dist::testing;
using std::chrono::milliseconds;

// A port no one listens on now (bound and released: good enough for a test on one machine).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

ClusterEnvironment env_of(int rank, int world, int port) {
  return {.source = "env", .rank = rank, .world_size = world, .local_rank = rank, .local_world_size = world,
          .node_rank = 0, .master_addr = "127.0.0.1", .master_port = port};
}

void expect_working(ProcessGroup& pg, int rank) {
  Tensor x = full({4}, rank + 1.0);
  pg.all_reduce(x)->wait();
  EXPECT_EQ(kt::at(x, 3), pg.size() * (pg.size() + 1) / 2.0);
}

TEST(InitProcessGroup, RankZeroServesTheStore) {
  mp::run_processes(3, [](mp::RankContext& ctx) {
    unsetenv("KILN_AGENT_STORE");
    unsetenv("KILN_RESTART_COUNT");
    // Rank 0 picks MASTER_PORT and tells the others through the harness's store.
    if (ctx.rank == 0) {
      const std::string port = std::to_string(free_port());
      ctx.store.set("master_port", Bytes(port.begin(), port.end()));
    }
    const Bytes port = ctx.store.get("master_port");
    auto pg = init_process_group(env_of(ctx.rank, 3, std::stoi(std::string(port.begin(), port.end()))), "gloo",
                                 {.timeout = milliseconds(10000)});
    EXPECT_EQ(pg->rank(), ctx.rank);
    EXPECT_EQ(pg->size(), 3);
    EXPECT_EQ(pg->backend(), "gloo");
    expect_working(*pg, ctx.rank);
    pg->barrier()->wait();  // rank 0's store outlives the others' use of it
  });
}

TEST(InitProcessGroup, AgentStoreWithRestartPrefix) {
  // kiln-run serves the store (here: the harness's parent) and restarts under "attempt<N>/".
  mp::run_processes(2, [](mp::RankContext& ctx) {
    setenv("KILN_AGENT_STORE", "1", 1);
    setenv("KILN_RESTART_COUNT", "2", 1);
    auto pg = init_process_group(env_of(ctx.rank, 2, ctx.store_port), "gloo", {.timeout = milliseconds(10000)});
    expect_working(*pg, ctx.rank);
    // Gloo's rendezvous published each rank's address under the attempt's prefix only.
    EXPECT_TRUE(ctx.store.check({"attempt2/rank_0", "attempt2/rank_1"}));
    EXPECT_FALSE(ctx.store.check({"rank_0"}));
  });
}

TEST(InitProcessGroup, UnreachableMasterNamesTheAddress) {
  unsetenv("KILN_AGENT_STORE");
  const int port = free_port();
  kt::expect_error([&] { init_process_group(env_of(1, 2, port), "gloo", {.timeout = milliseconds(300)}); },
                   {"could not connect to the store at 127.0.0.1:" + std::to_string(port) + " within 300 ms"});
}

TEST(InitProcessGroup, Backends) {
  kt::expect_error([&] { init_process_group(env_of(0, 1, 1), "mpi"); },
                   {"init_process_group: unknown backend \"mpi\" (valid: \"gloo\", \"nccl\")"});
  kt::expect_error([&] { init_process_group(env_of(0, 1, 1), "nccl"); }, {"init_process_group: ", "nccl"});
  kt::expect_error([&] { init_process_group(env_of(2, 2, 1), "gloo"); }, {"init_process_group: rank 2 is outside [0, 2)"});
  // A job of one: rank 0 serves on a free port and forms a group alone.
  auto pg = init_process_group(env_of(0, 1, free_port()), "gloo", {.timeout = milliseconds(5000)});
  expect_working(*pg, 0);
}

}  // namespace
}  // namespace kiln::dist
