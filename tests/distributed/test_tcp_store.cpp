// TcpStore and the prefix store: set/get/add/check/wait on one server, their timeouts naming the
// keys, a port in use, an unreachable server, and many clients (threads and processes) at once.
#include <sys/socket.h>
#include <netinet/in.h>

#include <thread>

#include "distributed/multiprocess.h"
#include "testing.h"

namespace kiln::dist {
namespace {

namespace kt = kiln::testing;
namespace mp = kiln::dist::testing;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }
std::string text(const Bytes& b) { return std::string(b.begin(), b.end()); }

std::unique_ptr<TcpStore> server(milliseconds timeout = milliseconds(2000)) {
  return make_tcp_store({.host = "127.0.0.1", .port = 0, .is_server = true, .timeout = timeout});
}
std::unique_ptr<TcpStore> client(int port, milliseconds timeout = milliseconds(2000)) {
  return make_tcp_store({.host = "127.0.0.1", .port = port, .is_server = false, .timeout = timeout});
}

// A port nothing listens on: bound (so no one else takes it) but never listening.
struct DeadPort {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int port = 0;
  DeadPort() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~DeadPort() { close(fd); }
};

TEST(TcpStore, SetGetAddCheckWait) {
  auto s = server();
  EXPECT_GT(s->port(), 0);
  EXPECT_EQ(s->host(), "127.0.0.1");
  s->set("a", bytes("hello"));
  EXPECT_EQ(text(s->get("a")), "hello");
  s->set("a", bytes(""));  // overwrite, and an empty value
  EXPECT_EQ(text(s->get("a")), "");
  Bytes binary = {'\0', '\xff', 'x', '\0'};
  s->set("bin", binary);
  EXPECT_EQ(s->get("bin"), binary);

  EXPECT_EQ(s->add("n", 5), 5);
  EXPECT_EQ(s->add("n", -7), -2);
  EXPECT_EQ(text(s->get("n")), "-2");  // counters are decimal text, as torch's
  EXPECT_THROW(s->add("bin", 1), Error);

  EXPECT_TRUE(s->check({"a", "n"}));
  EXPECT_FALSE(s->check({"a", "missing"}));
  EXPECT_TRUE(s->check({}));
  s->wait({"a", "bin"}, milliseconds(100));

  // A second client sees the first one's keys; a wait returns when another client sets the key.
  auto c = client(s->port());
  EXPECT_EQ(text(c->get("a")), "");
  std::thread setter([&] {
    std::this_thread::sleep_for(milliseconds(50));
    s->set("late", bytes("v"));
  });
  c->wait({"a", "late"});
  EXPECT_EQ(text(c->get("late")), "v");
  setter.join();
  // A big value crosses several reads and writes.
  Bytes big(3 << 20);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
  c->set("big", big);
  EXPECT_EQ(s->get("big"), big);
}

TEST(TcpStore, TimeoutsNameTheKeys) {
  auto s = server(milliseconds(200));
  s->set("here", bytes("1"));
  const auto start = Clock::now();
  kt::expect_error([&] { s->get("absent"); }, {"get(\"absent\") timed out after 200 ms; missing: [\"absent\"]"});
  kt::expect_error([&] { s->wait({"here", "gone"}, milliseconds(100)); },
                   {"wait for [\"here\", \"gone\"] timed out after 100 ms; missing: [\"gone\"]"});
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GT(took, 0.29);
  EXPECT_LT(took, 2.0);
  // The connection is still in step after timeouts.
  EXPECT_EQ(text(s->get("here")), "1");
}

TEST(TcpStore, PortInUseNamesHostAndPort) {
  auto s = server();
  const std::string where = "127.0.0.1:" + std::to_string(s->port());
  kt::expect_error([&] { make_tcp_store({.host = "127.0.0.1", .port = s->port(), .is_server = true}); },
                   {"cannot serve on " + where + ": the port is in use"});
  // SO_REUSEADDR: once the server is gone its port serves again at once.
  const int port = s->port();
  s.reset();
  auto again = make_tcp_store({.host = "127.0.0.1", .port = port, .is_server = true, .timeout = milliseconds(500)});
  again->set("k", bytes("v"));
  EXPECT_EQ(text(again->get("k")), "v");
}

TEST(TcpStore, UnreachableServerNamesTheAddress) {
  DeadPort dead;
  const auto start = Clock::now();
  kt::expect_error([&] { client(dead.port, milliseconds(300)); },
                   {"could not connect to the store at 127.0.0.1:" + std::to_string(dead.port) + " within 300 ms"});
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GT(took, 0.25);
  EXPECT_LT(took, 2.0);
}

TEST(TcpStore, ClientRetriesUntilTheServerComesUp) {
  DeadPort reserved;
  const int port = reserved.port;
  std::unique_ptr<TcpStore> s;
  std::thread late([&] {
    std::this_thread::sleep_for(milliseconds(150));
    close(reserved.fd);
    reserved.fd = -1;
    s = make_tcp_store({.host = "127.0.0.1", .port = port, .is_server = true});
    s->set("up", bytes("yes"));
  });
  auto c = client(port, milliseconds(5000));
  EXPECT_EQ(text(c->get("up")), "yes");
  late.join();
}

TEST(TcpStore, ServerGoneIsAnError) {
  auto s = server();
  auto c = client(s->port());
  c->set("k", bytes("v"));
  s.reset();  // joins the server thread; the client's next request finds the socket closed
  EXPECT_THROW(c->get("k"), Error);
}

TEST(PrefixStore, KeysLiveUnderThePrefix) {
  auto s = server();
  auto a = make_prefix_store("groupA", *s);
  std::shared_ptr<Store> shared = client(s->port());
  std::shared_ptr<Store> b = make_prefix_store("groupB", shared);
  a->set("k", bytes("1"));
  b->set("k", bytes("2"));
  EXPECT_EQ(text(s->get("groupA/k")), "1");
  EXPECT_EQ(text(s->get("groupB/k")), "2");
  EXPECT_EQ(a->add("n", 3), 3);
  EXPECT_EQ(b->add("n", 4), 4);
  EXPECT_TRUE(a->check({"k", "n"}));
  EXPECT_FALSE(a->check({"other"}));
  s->set("groupB/late", bytes("x"));
  b->wait({"late"}, milliseconds(100));
  EXPECT_EQ(a->timeout(), s->timeout());
  EXPECT_EQ(b->host(), "127.0.0.1");
  shared.reset();  // b keeps its base alive
  EXPECT_EQ(text(b->get("k")), "2");
}

TEST(TcpStore, ManyThreadsAndProcessesAtOnce) {
  auto s = server(milliseconds(5000));
  constexpr int kThreads = 8, kAdds = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      auto c = client(s->port(), milliseconds(5000));
      for (int i = 0; i < kAdds; ++i) c->add("count", 1);
      c->set("done" + std::to_string(t), bytes("1"));
      std::vector<std::string> all;
      for (int u = 0; u < kThreads; ++u) all.push_back("done" + std::to_string(u));
      c->wait(all);  // every thread parks here until the last one arrives
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(text(s->get("count")), std::to_string(kThreads * kAdds));
}

TEST(TcpStore, ProcessesShareTheParentsStore) {
  // Four processes count on the harness's store and wait for each other.
  mp::run_processes(4, [](mp::RankContext& ctx) {
    for (int i = 0; i < 25; ++i) ctx.store.add("count", 1);
    ctx.store.set("rank" + std::to_string(ctx.rank), bytes(std::to_string(ctx.rank * 10)));
    std::vector<std::string> all;
    for (int r = 0; r < ctx.world_size; ++r) all.push_back("rank" + std::to_string(r));
    ctx.store.wait(all);
    EXPECT_EQ(text(ctx.store.get("count")), "100");
    EXPECT_EQ(text(ctx.store.get("rank3")), "30");
  });
}

}  // namespace
}  // namespace kiln::dist
