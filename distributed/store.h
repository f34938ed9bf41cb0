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
};

struct TcpStoreOptions {
  std::string host = "127.0.0.1";
  int port = 29500;
  bool is_server = false;  // true on global rank 0: serves the store in a thread of this process
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // connecting, get, wait
};

// A client (and, with is_server, the server). The server binds host:port; a port in use is a
// kiln::Error naming it. Clients retry connecting until the timeout, then name the address.
std::unique_ptr<Store> make_tcp_store(const TcpStoreOptions& options);

// Keys under `prefix + "/"`: a store per process group or per restart, over one connection.
std::unique_ptr<Store> make_prefix_store(std::string prefix, Store& store);

}  // namespace kiln::dist
