// The key-value store that ranks meet through: Gloo's rendezvous (each rank publishes its
// address), the launcher's "who failed" notes, and small agreements (a checkpoint's step, a
// model's shapes). TcpStore is one process's server (global rank 0, at MASTER_ADDR:MASTER_PORT)
// and every rank's client; torch.distributed.TCPStore has the same role.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::dist {

using Bytes = std::vector<char>;

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const Bytes& value) = 0;
  // Waits until `key` is set (up to timeout()), then returns its value.
  virtual Bytes get(const std::string& key) = 0;
  // Adds `delta` to the integer at `key` (0 when unset) and returns the sum: a counter ranks share.
  virtual int64_t add(const std::string& key, int64_t delta) = 0;
  // True when every key is set, without waiting.
  virtual bool check(const std::vector<std::string>& keys) = 0;
  // Waits until every key is set; throws kiln::Error naming the missing keys after `timeout`.
  virtual void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) = 0;
  void wait(const std::vector<std::string>& keys) { wait(keys, timeout()); }
  virtual std::chrono::milliseconds timeout() const = 0;
  // The host that serves this store over the network, "" for a store without one. A Gloo group
  // whose options name no host listens on the local address that routes to it.
  virtual std::string host() const { return {}; }
};

struct TcpStoreOptions {
  std::string host = "127.0.0.1";
  int port = 29500;  // on a server, 0 picks a free port: TcpStore::port() says which
  bool is_server = false;  // true on global rank 0: serves the store in a thread of this process
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // connecting, get, wait
};

// A client (and, with is_server, the server). The server listens on `port` of every interface of
// this machine (host is where clients find it), as torch's TCPStore does, so a master_addr that
// resolves to another local address still works; a port in use is a kiln::Error naming
// host:port. Clients retry connecting until the timeout, then name the address. One client
// serves one request at a time: a thread's get() holds the connection until it returns. The
// server is a thread of this object, stopped and joined when it is destroyed.
class TcpStore : public Store {
 public:
  explicit TcpStore(const TcpStoreOptions& options);
  ~TcpStore() override;
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key) override;
  int64_t add(const std::string& key, int64_t delta) override;
  bool check(const std::vector<std::string>& keys) override;
  using Store::wait;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  std::chrono::milliseconds timeout() const override { return timeout_; }
  std::string host() const override { return host_; }
  int port() const { return port_; }  // the server's bound port (the chosen one when 0 was asked)

 private:
  class Server;
  class Client;
  std::string host_;
  int port_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Client> client_;
};

std::unique_ptr<TcpStore> make_tcp_store(const TcpStoreOptions& options);

// Keys under `prefix + "/"`: a store per process group or per restart, over one connection.
// The first form borrows `store` (it must outlive the result); the second shares it.
std::unique_ptr<Store> make_prefix_store(std::string prefix, Store& store);
std::shared_ptr<Store> make_prefix_store(std::string prefix, std::shared_ptr<Store> store);

}  // namespace kiln::dist
