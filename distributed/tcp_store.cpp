// TcpStore: a key-value server in a thread of global rank 0 (or of kiln-run) and a blocking client
// in every rank, over one small length-prefixed protocol; and the prefix store that shares one
// connection among groups. The server is one poll() loop: a get or wait parks its connection until
// a set or add provides the keys or its deadline passes, so no one spins.
#include "distributed/store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "tensor/error.h"

namespace kiln::dist {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Note [TcpStore protocol]: a frame is a u32 length (little endian) then that many bytes. A request
// is a command byte then its fields; a reply is a status byte then its fields. Strings and values
// are a u32 length and bytes, integers 8 bytes little endian. The client sends one request and
// reads its reply before the next, so a parked get/wait never reorders replies. get and wait carry
// their timeout: the server answers kTimeout with the missing keys, and the connection stays usable.
namespace {

enum Command : uint8_t { kSet = 1, kGet = 2, kAdd = 3, kCheck = 4, kWait = 5 };
enum Status : uint8_t { kOk = 0, kTimeout = 1, kFailed = 2 };
constexpr uint32_t kMaxFrame = 1u << 30;  // a larger length is not one of our clients talking

class Writer {
 public:
  explicit Writer(uint8_t first) { out_.push_back(static_cast<char>(first)); }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void bytes(const char* p, size_t n) {
    u32(static_cast<uint32_t>(n));
    out_.insert(out_.end(), p, p + n);
  }
  void str(const std::string& s) { bytes(s.data(), s.size()); }
  void keys(const std::vector<std::string>& ks) {
    u32(static_cast<uint32_t>(ks.size()));
    for (const auto& k : ks) str(k);
  }
  // The payload with its length in front.
  std::string frame() const {
    std::string f(4, '\0');
    const auto n = static_cast<uint32_t>(out_.size());
    for (int i = 0; i < 4; ++i) f[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
    return f + out_;
  }

 private:
  std::string out_;
};

// Reads fields from one frame's payload; a short frame throws (the peer is not speaking our protocol).
class Reader {
 public:
  Reader(const char* p, size_t n) : p_(p), end_(p + n) {}
  uint8_t u8() { need(1); return static_cast<uint8_t>(*p_++); }
  uint64_t u64() {
    need(8);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 8;
    return v;
  }
  uint32_t u32() {
    need(4);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p_[i])) << (8 * i);
    p_ += 4;
    return v;
  }
  std::string str() {
    const uint32_t n = u32();
    need(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  std::vector<std::string> keys() {
    const uint32_t n = u32();
    std::vector<std::string> ks;
    for (uint32_t i = 0; i < n; ++i) ks.push_back(str());
    return ks;
  }

 private:
  void need(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) throw std::runtime_error("truncated TcpStore frame");
  }
  const char* p_;
  const char* end_;
};

std::string join_keys(const std::vector<std::string>& keys) {
  std::string s = "[";
  for (size_t i = 0; i < keys.size(); ++i) s += (i ? ", \"" : "\"") + keys[i] + "\"";
  return s + "]";
}

std::string errno_text(int err) { return std::strerror(err); }

void set_nonblocking(int fd, bool on) {
  const int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
}

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() { if (list) freeaddrinfo(list); }
};

// getaddrinfo for host:port; throws naming the host when it cannot be resolved.
void resolve(const std::string& host, int port, int flags, AddrInfo& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = flags;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &out.list);
  KILN_CHECK(rc == 0 && out.list, "TcpStore: cannot resolve host \"", host, "\": ", gai_strerror(rc));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The server: one thread, one poll() over the listening socket, a wake-up eventfd and the clients.

class TcpStore::Server {
 public:
  Server(const std::string& host, int port) {
    AddrInfo info;
    resolve(host, port, 0, info);
    // Every interface of the family the host resolves to (see the class comment in store.h).
    const int family = info.list->ai_family;
    listen_fd_ = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    KILN_CHECK(listen_fd_ >= 0, "TcpStore: socket() failed: ", errno_text(errno));
    const int one = 1;
    setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));  // a restarted job rebinds at once
    sockaddr_storage addr{};
    socklen_t len = 0;
    if (family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_any;
      a->sin6_port = htons(static_cast<uint16_t>(port));
      len = sizeof(sockaddr_in6);
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_ANY);
      a->sin_port = htons(static_cast<uint16_t>(port));
      len = sizeof(sockaddr_in);
    }
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(listen_fd_, 1024) != 0) {
      const int err = errno;
      close(listen_fd_);
      KILN_CHECK(err != EADDRINUSE, "TcpStore: cannot serve on ", host, ":", port,
                 ": the port is in use (another job's store, or a process still holding it); choose another MASTER_PORT");
      detail::throw_error("TcpStore: cannot serve on ", host, ":", port, ": ", errno_text(err));
    }
    getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                     : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
    set_nonblocking(listen_fd_, true);
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    KILN_CHECK(wake_fd_ >= 0, "TcpStore: eventfd() failed: ", errno_text(errno));
    thread_ = std::thread([this] { loop(); });
  }

  ~Server() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof(one));
    thread_.join();
    for (auto& [fd, conn] : conns_) close(fd);
    close(listen_fd_);
    close(wake_fd_);
  }

  int port() const { return port_; }

 private:
  // A get or wait that found some key missing: answered by a later set/add or at its deadline.
  struct Parked {
    Command command;
    std::vector<std::string> keys;
    Clock::time_point deadline;
  };
  struct Conn {
    std::string in;   // bytes received, not yet a whole frame
    std::string out;  // replies not yet written
    std::optional<Parked> parked;
  };

  void loop() {
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({wake_fd_, POLLIN, 0});
      fds.push_back({listen_fd_, POLLIN, 0});
      for (auto& [fd, conn] : conns_)
        fds.push_back({fd, static_cast<short>(POLLIN | (conn.out.empty() ? 0 : POLLOUT)), 0});
      const int rc = poll(fds.data(), fds.size(), poll_timeout_ms());
      if (rc < 0 && errno != EINTR) return;
      if (fds[0].revents) return;  // the owner is shutting down
      if (fds[1].revents & POLLIN) accept_all();
      for (size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto it = conns_.find(fds[i].fd);
        if (it == conns_.end()) continue;
        if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
          if (!read_from(it->first, it->second)) dead_.push_back(it->first);
        } else if (!flush(it->first, it->second)) {
          dead_.push_back(it->first);
        }
      }
      expire_parked();
      // A connection answered by someone else's set may hold a request that arrived meanwhile.
      for (auto& [fd, conn] : conns_)
        if (!conn.parked && conn.in.size() >= 4 && !serve_frames(fd, conn)) dead_.push_back(fd);
      for (int fd : dead_) {
        if (conns_.erase(fd)) close(fd);
      }
      dead_.clear();
    }
  }

  int poll_timeout_ms() const {
    std::optional<Clock::time_point> first;
    for (const auto& [fd, conn] : conns_)
      if (conn.parked && (!first || conn.parked->deadline < *first)) first = conn.parked->deadline;
    if (!first) return -1;
    const auto left = std::chrono::ceil<milliseconds>(*first - Clock::now()).count();
    return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
  }

  void accept_all() {
    for (;;) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      conns_[fd] = Conn{};
    }
  }

  // False when the connection is gone or spoke garbage.
  bool read_from(int fd, Conn& conn) {
    char buf[64 * 1024];
    for (;;) {
      const ssize_t n = recv(fd, buf, sizeof(buf), 0);
      if (n > 0) {
        conn.in.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return false;
    }
    return serve_frames(fd, conn);
  }

  bool serve_frames(int fd, Conn& conn) {
    while (!conn.parked && conn.in.size() >= 4) {
      Reader head(conn.in.data(), 4);
      const uint32_t n = head.u32();
      if (n == 0 || n > kMaxFrame) return false;
      if (conn.in.size() < 4 + static_cast<size_t>(n)) break;
      try {
        Reader req(conn.in.data() + 4, n);
        serve(fd, conn, req);
      } catch (const std::exception&) {
        return false;
      }
      conn.in.erase(0, 4 + static_cast<size_t>(n));
    }
    return flush(fd, conn);
  }

  void serve(int fd, Conn& conn, Reader& req) {
    const auto command = static_cast<Command>(req.u8());
    switch (command) {
      case kSet: {
        std::string key = req.str();
        data_[key] = req.str();
        conn.out += Writer(kOk).frame();
        wake_parked(fd);
        return;
      }
      case kAdd: {
        const std::string key = req.str();
        const auto delta = static_cast<int64_t>(req.u64());
        int64_t value = 0;
        auto it = data_.find(key);
        if (it != data_.end()) {
          char* end = nullptr;
          value = std::strtoll(it->second.c_str(), &end, 10);
          if (it->second.empty() || end != it->second.c_str() + it->second.size()) {
            Writer w(kFailed);
            w.str("add: key \"" + key + "\" holds a value that is not an integer");
            conn.out += w.frame();
            return;
          }
        }
        value += delta;
        data_[key] = std::to_string(value);
        Writer w(kOk);
        w.u64(static_cast<uint64_t>(value));
        conn.out += w.frame();
        wake_parked(fd);
        return;
      }
      case kCheck: {
        Writer w(kOk);
        w.u64(missing(req.keys()).empty() ? 1 : 0);
        conn.out += w.frame();
        return;
      }
      case kGet:
      case kWait: {
        Parked p{command, {}, {}};
        if (command == kGet) p.keys.push_back(req.str());
        else p.keys = req.keys();
        p.deadline = Clock::now() + milliseconds(static_cast<int64_t>(req.u64()));
        conn.parked = std::move(p);
        try_answer(conn);
        return;
      }
    }
    throw std::runtime_error("unknown TcpStore command");
  }

  std::vector<std::string> missing(const std::vector<std::string>& keys) const {
    std::vector<std::string> out;
    for (const auto& k : keys)
      if (!data_.count(k)) out.push_back(k);
    return out;
  }

  // Answers conn's parked request when its keys are all there (or, with timed_out, says which are not).
  bool try_answer(Conn& conn, bool timed_out = false) {
    const Parked& p = *conn.parked;
    const std::vector<std::string> absent = missing(p.keys);
    if (!absent.empty() && !timed_out) return false;
    if (!absent.empty()) {
      Writer w(kTimeout);
      w.keys(absent);
      conn.out += w.frame();
    } else {
      Writer w(kOk);
      if (p.command == kGet) w.str(data_.at(p.keys[0]));
      conn.out += w.frame();
    }
    conn.parked.reset();
    return true;
  }

  // After a set or add: answer every parked request it completes. The setter's own reply is
  // flushed by its caller; a request that arrives meanwhile is served at the loop's end.
  void wake_parked(int setter) {
    for (auto& [fd, conn] : conns_)
      if (fd != setter && conn.parked && try_answer(conn) && !flush(fd, conn)) dead_.push_back(fd);
  }

  void expire_parked() {
    const auto now = Clock::now();
    for (auto& [fd, conn] : conns_)
      if (conn.parked && conn.parked->deadline <= now && try_answer(conn, /*timed_out=*/true) && !flush(fd, conn))
        dead_.push_back(fd);
  }

  // Writes what the socket takes now; the rest waits for POLLOUT.
  bool flush(int fd, Conn& conn) {
    while (!conn.out.empty()) {
      const ssize_t n = send(fd, conn.out.data(), conn.out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        conn.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return true;
  }

  int listen_fd_ = -1;
  int wake_fd_ = -1;
  int port_ = 0;
  std::map<int, Conn> conns_;  // only the server thread touches these three
  std::vector<int> dead_;       // connections to close at the end of this turn of the loop
  std::map<std::string, std::string> data_;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// The client: one blocking socket, one request at a time.

class TcpStore::Client {
 public:
  Client(const std::string& host, int port, milliseconds timeout) : where_(host + ":" + std::to_string(port)) {
    const auto deadline = Clock::now() + timeout;
    std::string last_error = "no address";
    auto pause = milliseconds(10);
    for (;;) {
      fd_ = try_connect(host, port, deadline, last_error);
      if (fd_ >= 0) break;
      const auto now = Clock::now();
      KILN_CHECK(now < deadline, "TcpStore: could not connect to the store at ", where_, " within ", timeout.count(),
                 " ms (", last_error, "); is rank 0 (or kiln-run) serving it at that MASTER_ADDR:MASTER_PORT?");
      std::this_thread::sleep_for(std::min(pause, std::chrono::duration_cast<milliseconds>(deadline - now)));
      pause = std::min(pause * 2, milliseconds(500));
    }
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~Client() { close(fd_); }

  const std::string& where() const { return where_; }

  // Sends one request and returns its reply's payload (status byte first). `wait` bounds how long
  // the server may take: a parked request's own timeout, plus slack for the round trip.
  std::string request(const Writer& w, milliseconds wait) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string frame = w.frame();
    for (size_t sent = 0; sent < frame.size();) {
      const ssize_t n = send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      KILN_CHECK(n > 0, "TcpStore: lost the connection to the store at ", where_, " (", errno_text(errno),
                 "); did the process serving it (rank 0 or kiln-run) exit?");
      sent += static_cast<size_t>(n);
    }
    const auto deadline = Clock::now() + wait + std::chrono::seconds(10);
    std::string head = read_exact(4, deadline);
    const uint32_t n = Reader(head.data(), 4).u32();
    KILN_CHECK(n > 0 && n <= kMaxFrame, "TcpStore: the server at ", where_, " sent a malformed reply");
    return read_exact(n, deadline);
  }

 private:
  static int try_connect(const std::string& host, int port, Clock::time_point deadline, std::string& error) {
    AddrInfo info;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &info.list);
    if (rc != 0) {
      error = std::string("cannot resolve the host: ") + gai_strerror(rc);
      return -1;
    }
    for (addrinfo* a = info.list; a; a = a->ai_next) {
      const int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      // Non-blocking connect, so an unroutable host costs the time left, not the kernel's minutes.
      set_nonblocking(fd, true);
      int err = connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
      if (err == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
        if (poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 1))) == 1) {
          socklen_t len = sizeof(err);
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        } else {
          err = ETIMEDOUT;
        }
      }
      if (err == 0) {
        set_nonblocking(fd, false);
        return fd;
      }
      error = errno_text(err);
      close(fd);
    }
    return -1;
  }

  std::string read_exact(size_t n, Clock::time_point deadline) {
    std::string out(n, '\0');
    for (size_t got = 0; got < n;) {
      pollfd p{fd_, POLLIN, 0};
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now()).count();
      const int rc = poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30)));
      if (rc < 0 && errno == EINTR) continue;
      KILN_CHECK(rc > 0, "TcpStore: the store at ", where_, " did not answer in time");
      const ssize_t r = recv(fd_, out.data() + got, n - got, 0);
      if (r < 0 && errno == EINTR) continue;
      KILN_CHECK(r > 0, "TcpStore: the store at ", where_,
                 " closed the connection; did the process serving it (rank 0 or kiln-run) exit?");
      got += static_cast<size_t>(r);
    }
    return out;
  }

  std::string where_;
  std::mutex mu_;
  int fd_ = -1;
};

// ---------------------------------------------------------------------------------------------

TcpStore::TcpStore(const TcpStoreOptions& options)
    : host_(options.host), port_(options.port), timeout_(options.timeout) {
  KILN_CHECK(options.port >= 0 && options.port < 65536, "TcpStore: port ", options.port, " is out of range [0, 65535]");
  KILN_CHECK(options.is_server || options.port > 0, "TcpStore: a client needs the server's port, got 0");
  if (options.is_server) {
    server_ = std::make_unique<Server>(options.host, options.port);
    port_ = server_->port();
  }
  client_ = std::make_unique<Client>(options.host, port_, options.timeout);
}

TcpStore::~TcpStore() {
  client_.reset();
  server_.reset();
}

namespace {
// The reply's status: kOk returns a reader past it (valid while `reply` lives); kTimeout and
// kFailed throw naming `what`.
Reader expect_ok(const std::string& reply, const std::string& where, const std::string& what, milliseconds timeout) {
  Reader r(reply.data(), reply.size());
  const uint8_t status = r.u8();
  if (status == kTimeout)
    detail::throw_error("TcpStore at ", where, ": ", what, " timed out after ", timeout.count(), " ms; missing: ",
                        join_keys(r.keys()));
  if (status == kFailed) detail::throw_error("TcpStore at ", where, ": ", r.str());
  return r;
}
}  // namespace

void TcpStore::set(const std::string& key, const Bytes& value) {
  Writer w(kSet);
  w.str(key);
  w.bytes(value.data(), value.size());
  expect_ok(client_->request(w, timeout_), client_->where(), "set", timeout_);
}

Bytes TcpStore::get(const std::string& key) {
  Writer w(kGet);
  w.str(key);
  w.u64(static_cast<uint64_t>(timeout_.count()));
  const std::string reply = client_->request(w, timeout_);  // the reader points into it
  const std::string v = expect_ok(reply, client_->where(), "get(\"" + key + "\")", timeout_).str();
  return Bytes(v.begin(), v.end());
}

int64_t TcpStore::add(const std::string& key, int64_t delta) {
  Writer w(kAdd);
  w.str(key);
  w.u64(static_cast<uint64_t>(delta));
  const std::string reply = client_->request(w, timeout_);
  return static_cast<int64_t>(expect_ok(reply, client_->where(), "add", timeout_).u64());
}

bool TcpStore::check(const std::vector<std::string>& keys) {
  Writer w(kCheck);
  w.keys(keys);
  const std::string reply = client_->request(w, timeout_);
  return expect_ok(reply, client_->where(), "check", timeout_).u64() != 0;
}

void TcpStore::wait(const std::vector<std::string>& keys, milliseconds timeout) {
  Writer w(kWait);
  w.keys(keys);
  w.u64(static_cast<uint64_t>(std::max<int64_t>(timeout.count(), 0)));
  expect_ok(client_->request(w, timeout), client_->where(), "wait for " + join_keys(keys), timeout);
}

std::unique_ptr<TcpStore> make_tcp_store(const TcpStoreOptions& options) { return std::make_unique<TcpStore>(options); }

// ---------------------------------------------------------------------------------------------

namespace {
class PrefixStore final : public Store {
 public:
  PrefixStore(std::string prefix, Store& base, std::shared_ptr<Store> owned = nullptr)
      : prefix_(std::move(prefix) + "/"), base_(base), owned_(std::move(owned)) {}
  void set(const std::string& key, const Bytes& value) override { base_.set(prefix_ + key, value); }
  Bytes get(const std::string& key) override { return base_.get(prefix_ + key); }
  int64_t add(const std::string& key, int64_t delta) override { return base_.add(prefix_ + key, delta); }
  bool check(const std::vector<std::string>& keys) override { return base_.check(prefixed(keys)); }
  using Store::wait;
  void wait(const std::vector<std::string>& keys, milliseconds timeout) override { base_.wait(prefixed(keys), timeout); }
  milliseconds timeout() const override { return base_.timeout(); }
  std::string host() const override { return base_.host(); }

 private:
  std::vector<std::string> prefixed(const std::vector<std::string>& keys) const {
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back(prefix_ + k);
    return out;
  }
  std::string prefix_;
  Store& base_;
  std::shared_ptr<Store> owned_;  // keeps base_ alive in the sharing form
};
}  // namespace

std::unique_ptr<Store> make_prefix_store(std::string prefix, Store& store) {
  return std::make_unique<PrefixStore>(std::move(prefix), store);
}

std::shared_ptr<Store> make_prefix_store(std::string prefix, std::shared_ptr<Store> store) {
  KILN_CHECK(store != nullptr, "make_prefix_store: the store is null");
  Store& base = *store;
  return std::make_shared<PrefixStore>(std::move(prefix), base, std::move(store));
}

}  // namespace kiln::dist
