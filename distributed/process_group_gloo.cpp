// The Gloo process group: CPU collectives among processes over Gloo's TCP transport. Calls are
// checked on the calling thread, then run in order on the group's one worker thread (so they are
// asynchronous); send/recv complete on a second thread. The first failure breaks the group: later
// calls fail at once. Not here: the store (tcp_store.cpp) and the job's default group (process_group.cpp).
#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/types.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iomanip>
#include <mutex>
#include <optional>
#include <thread>

#include "distributed/process_group.h"
#include "distributed/store.h"
#include "tensor/factories.h"

namespace kiln::dist {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Gloo's rendezvous reads and writes our Store (each rank publishes its address there).
class GlooStore final : public gloo::rendezvous::Store {
 public:
  explicit GlooStore(kiln::dist::Store& store) : store_(store) {}
  void set(const std::string& key, const std::vector<char>& data) override { store_.set(key, data); }
  std::vector<char> get(const std::string& key) override { return store_.get(key); }
  void wait(const std::vector<std::string>& keys) override { store_.wait(keys); }
  void wait(const std::vector<std::string>& keys, const milliseconds& timeout) override { store_.wait(keys, timeout); }

 private:
  kiln::dist::Store& store_;
};

// ---- reductions: one function per (dtype, op), called by Gloo on pieces of the buffers.
// 16-bit floats are widened to float for each step and rounded once per step; integer sums wrap
// (as torch's); bool's sum and max are "or" and min is "and", which the comparisons below give.
struct SumOp {
  template <class C> static C apply(C x, C y) {
    if constexpr (std::is_same_v<C, bool>) return x || y;
    else if constexpr (std::is_integral_v<C>) {
      using U = std::make_unsigned_t<C>;
      return static_cast<C>(static_cast<U>(x) + static_cast<U>(y));
    }
    else return x + y;
  }
};
struct MaxOp {  // a NaN wins, as in torch.maximum
  template <class C> static C apply(C x, C y) { return (x > y || x != x) ? x : y; }
};
struct MinOp {
  template <class C> static C apply(C x, C y) { return (x < y || x != x) ? x : y; }
};

template <class T, class Op>
void reduce_elements(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<T*>(out);  // may alias a or b: each element is read before it is written
  const auto* x = static_cast<const T*>(a);
  const auto* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = T(Op::apply(compute_t<T>(x[i]), compute_t<T>(y[i])));
}

using ReduceFn = void (*)(void*, const void*, const void*, size_t);
ReduceFn reduce_function(DType dtype, ReduceOp op) {
  return visit_dtype(dtype, [&]<class T>() -> ReduceFn {
    switch (op) {
      case ReduceOp::sum:
      case ReduceOp::avg: return &reduce_elements<T, SumOp>;
      case ReduceOp::max: return &reduce_elements<T, MaxOp>;
      case ReduceOp::min: return &reduce_elements<T, MinOp>;
    }
    KILN_ASSERT(false, "unknown ReduceOp ", static_cast<int>(op));
    __builtin_unreachable();
  });
}

// avg's second half: element / size, integers rounded toward zero as C++ division does.
void divide_in_place(void* data, int64_t n, DType dtype, int size) {
  visit_dtype(dtype, [&]<class T>() {
    if constexpr (!std::is_same_v<T, bool>) {
      auto* p = static_cast<T*>(data);
      for (int64_t i = 0; i < n; ++i) p[i] = T(compute_t<T>(p[i]) / static_cast<compute_t<T>>(size));
    }
  });
}

// Gloo sizes its segments in elements: hand it an unsigned type of the element's size.
template <class Fn>
void with_element_type(size_t element_size, Fn&& fn) {
  switch (element_size) {
    case 1: return fn.template operator()<uint8_t>();
    case 2: return fn.template operator()<uint16_t>();
    case 4: return fn.template operator()<uint32_t>();
    case 8: return fn.template operator()<uint64_t>();
  }
  KILN_ASSERT(false, "no element type of ", element_size, " bytes");
}

// ---- Note [Collective agreement]: Gloo trusts every rank to pass the same sizes. When they
// differ, the rank that receives more than it posted aborts inside Gloo's own thread (an
// EnforceNotMet nobody can catch), and one that receives less is silently left short. So each
// collective first all-gathers a small fingerprint (what, dtype, op, root, bytes, counts) and
// every rank compares: a mismatch is the same kiln::Error on every rank. It costs one small
// all-gather per collective (bench/bench_allreduce.cpp measures it); barrier is that all-gather.
// With check_agreement off, Note [Tags] still makes a mismatch an error, after the timeout.
enum class Kind : uint64_t { all_reduce = 1, broadcast, all_gather, reduce_scatter, barrier };
const char* kind_name(Kind k) {
  constexpr const char* kNames[] = {"?", "all_reduce", "broadcast", "all_gather", "reduce_scatter", "barrier"};
  return kNames[static_cast<size_t>(k)];
}

struct Fingerprint {
  uint64_t kind = 0, dtype = 0, op = 0, root = 0, bytes = 0, counts = 0;
  bool operator==(const Fingerprint&) const = default;
};

uint64_t hash_counts(const std::vector<int64_t>& counts) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (int64_t c : counts) h = (h ^ static_cast<uint64_t>(c)) * 1099511628211ull;
  return h;
}

std::string describe(const Fingerprint& f) {
  std::ostringstream os;
  const auto kind = static_cast<Kind>(f.kind);
  os << kind_name(kind);
  if (kind == Kind::barrier) return os.str();
  if (kind == Kind::all_reduce || kind == Kind::reduce_scatter) os << "(" << to_string(static_cast<ReduceOp>(f.op)) << ")";
  os << " of " << static_cast<DType>(f.dtype) << ", " << f.bytes << (kind == Kind::all_gather ? " bytes a row" : " bytes");
  if (kind == Kind::broadcast) os << " from rank " << f.root;
  if (kind == Kind::all_gather || kind == Kind::reduce_scatter) os << ", counts #" << std::hex << (f.counts & 0xffff);
  return os.str();
}

// p2p slots: above Gloo's collective prefixes (gloo/types.h), the user's tag in Gloo's tag bits,
// and the message's size and dtype hashed into the low 24 bits. A send and a recv that disagree
// on the size never match, so the mismatch is a timeout error, not an abort or a short read.
constexpr uint8_t kSendRecvSlotPrefix = 0x40;
constexpr uint8_t kReduceScatterSlotPrefix = 0x41;  // Note [Ring reduce-scatter]: a step in the low bits
uint64_t p2p_slot(int tag, size_t nbytes, DType dtype) {
  const uint64_t h = ((static_cast<uint64_t>(nbytes) * 1099511628211ull) ^ static_cast<uint64_t>(dtype)) * 0x9E3779B97F4A7C15ull;
  return static_cast<uint64_t>(gloo::Slot::build(kSendRecvSlotPrefix, static_cast<uint32_t>(tag))) | (h >> 40);
}

std::string seconds(Clock::duration d) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << std::chrono::duration<double>(d).count() << " s";
  return os.str();
}

// Gloo's message without its "[file:line] " prefix.
std::string strip_location(std::string s) {
  if (!s.empty() && s[0] == '[') {
    const size_t end = s.find("] ");
    if (end != std::string::npos) s.erase(0, end + 2);
  }
  return s;
}

// What a Gloo failure means for the user, then Gloo's own words.
std::string explain(const std::string& gloo_text, milliseconds timeout) {
  const std::string text = strip_location(gloo_text);
  std::string cause;
  if (text.find("Timed out") != std::string::npos)
    cause = "timed out after " + seconds(timeout) + " (a peer died, hung, or called a different collective)";
  else if (text.find("reset by peer") != std::string::npos || text.find("closed") != std::string::npos ||
           text.find("EOF") != std::string::npos || text.find("Broken pipe") != std::string::npos)
    cause = "a peer closed its connection (it may have died)";
  else
    return text;
  return cause + " [gloo: " + text + "]";
}

std::optional<std::string> local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* list = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &list) != 0 || !list) return std::nullopt;
  std::optional<std::string> out;
  // A UDP "connect" sends nothing: it asks the kernel's routing table which local address it would use.
  const int fd = socket(list->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  char text[INET6_ADDRSTRLEN] = {};
  if (fd >= 0 && connect(fd, list->ai_addr, list->ai_addrlen) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
    const void* addr = local.ss_family == AF_INET6 ? static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr)
                                                   : static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr);
    if (inet_ntop(local.ss_family, addr, text, sizeof(text))) out = text;
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(list);
  return out;
}

// Where this rank listens for its peers (ProcessGroupOptions::host's comment).
struct ListenAddress {
  std::string value;
  bool is_interface = false;
};
ListenAddress listen_address(const ProcessGroupOptions& options, const Store& store) {
  if (!options.host.empty()) return {options.host, false};
  for (const char* var : {"KILN_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"})
    if (const char* v = std::getenv(var); v && *v) return {v, true};
  if (const std::string target = store.host(); !target.empty())
    if (std::optional<std::string> local = local_address_towards(target)) return {*local, false};
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  return {name, false};
}

class GlooGroup final : public ProcessGroup {
 public:
  GlooGroup(std::shared_ptr<Store> store, int rank, int size, const ProcessGroupOptions& options)
      : store_(std::move(store)), rank_(rank), size_(size), options_(options) {
    KILN_CHECK(store_ != nullptr, "make_gloo_group: the store is null");
    KILN_CHECK(size >= 1 && rank >= 0 && rank < size, "make_gloo_group: rank ", rank, " is outside [0, ", size, ")");
    KILN_CHECK(options.timeout.count() > 0, "make_gloo_group: the timeout must be positive, got ",
               options.timeout.count(), " ms");
    gloo::transport::tcp::attr attr;
    const ListenAddress where = listen_address(options, *store_);
    (where.is_interface ? attr.iface : attr.hostname) = where.value;
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      context_ = std::make_shared<gloo::rendezvous::Context>(rank, size);
      context_->setTimeout(options.timeout);
      GlooStore gloo_store(*store_);
      context_->connectFullMesh(gloo_store, device_);
    } catch (const kiln::Error& e) {
      detail::throw_error("make_gloo_group: rank ", rank, " of ", size, " could not meet its peers through the store: ",
                          e.what());
    } catch (const std::exception& e) {
      detail::throw_error("make_gloo_group: rank ", rank, " of ", size, " could not connect to its peers (listening on ",
                          where.is_interface ? "interface " : "", where.value, ") within ", seconds(options.timeout), ": ",
                          strip_location(e.what()));
    }
    worker_ = std::thread([this] { run_jobs(); });
    waiter_ = std::thread([this] { complete_p2p(); });
  }

  ~GlooGroup() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    worker_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      worker_done_ = true;
    }
    cv_.notify_all();
    waiter_.join();
  }

  std::string backend() const override { return "gloo"; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  milliseconds timeout() const override { return options_.timeout; }

  WorkPtr all_reduce(const Tensor& tensor, ReduceOp op) override {
    check_tensor("all_reduce", tensor, "tensor");
    check_op("all_reduce", op, tensor.dtype());
    const Fingerprint fp{uint64_t(Kind::all_reduce), uint64_t(tensor.dtype()), uint64_t(op), 0, tensor.nbytes(), 0};
    tensor.bump_version();  // written in place: autograd sees it as modified from this call on
    return enqueue(what("all_reduce", tensor.nbytes()), [this, tensor, op, fp] {
      agree(fp);
      if (tensor.nbytes() == 0) return;
      run_all_reduce(tensor, op, fp);
      if (op == ReduceOp::avg) divide_in_place(tensor.data_ptr(), tensor.numel(), tensor.dtype(), size_);
    });
  }

  WorkPtr broadcast(const Tensor& tensor, int src) override {
    check_tensor("broadcast", tensor, "tensor");
    check_rank("broadcast", "src", src);
    const Fingerprint fp{uint64_t(Kind::broadcast), uint64_t(tensor.dtype()), 0, uint64_t(src), tensor.nbytes(), 0};
    if (src != rank_) tensor.bump_version();
    return enqueue(what("broadcast", tensor.nbytes()) + " from rank " + std::to_string(src), [this, tensor, src, fp] {
      agree(fp);
      if (tensor.nbytes() == 0) return;
      with_element_type(tensor.element_size(), [&]<class U>() {
        gloo::BroadcastOptions o(context_);
        o.setOutput<U>(static_cast<U*>(tensor.data_ptr()), static_cast<size_t>(tensor.numel()));
        o.setRoot(src);
        o.setTag(next_tag(fp));
        o.setTimeout(options_.timeout);
        gloo::broadcast(o);
      });
    });
  }

  WorkPtr all_gather(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts) override {
    check_tensor("all_gather", input, "input");
    check_tensor("all_gather", output, "output");
    check_pieces("all_gather", output, input, counts, /*whole_is_output=*/true);
    const size_t row_bytes = row_nbytes(input);
    const Fingerprint fp{uint64_t(Kind::all_gather), uint64_t(input.dtype()), 0, 0, row_bytes, hash_counts(counts)};
    output.bump_version();
    return enqueue(what("all_gather", output.nbytes()), [this, input, output, counts, row_bytes, fp] {
      agree(fp);
      if (output.nbytes() == 0) return;
      std::vector<size_t> bytes;
      for (int64_t c : counts) bytes.push_back(static_cast<size_t>(c) * row_bytes);
      gloo::AllgathervOptions o(context_);
      o.setInput<uint8_t>(static_cast<uint8_t*>(input.data_ptr()), input.nbytes());
      o.setOutput<uint8_t>(static_cast<uint8_t*>(output.data_ptr()), std::move(bytes));
      o.setTag(next_tag(fp));
      o.setTimeout(options_.timeout);
      gloo::allgatherv(o);
    });
  }

  // Gloo (this 2022 snapshot) has no new-style reduce-scatter: only ReduceScatterHalvingDoubling,
  // an old-style algorithm with no per-call tag or timeout, int counts, and reductions limited to
  // Gloo's own typed functions (no f16/bf16 through f32). An all-reduce and a copy of this rank's
  // piece would move twice the bytes, so this is a ring over Gloo's unbound buffers: run_ring.
  WorkPtr reduce_scatter(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts,
                         ReduceOp op) override {
    check_tensor("reduce_scatter", input, "input");
    check_tensor("reduce_scatter", output, "output");
    check_op("reduce_scatter", op, input.dtype());
    check_pieces("reduce_scatter", input, output, counts, /*whole_is_output=*/false);
    const Fingerprint fp{uint64_t(Kind::reduce_scatter), uint64_t(input.dtype()), uint64_t(op), 0, input.nbytes(),
                         hash_counts(counts)};
    const int64_t max_rows = *std::max_element(counts.begin(), counts.end());
    Tensor spare = empty({3 * max_rows * static_cast<int64_t>(row_nbytes(input))}, {.dtype = DType::u8});
    output.bump_version();
    return enqueue(what("reduce_scatter", input.nbytes()), [this, input, output, counts, spare, op, fp] {
      agree(fp);
      run_ring(input, output, counts, op, fp, static_cast<char*>(spare.data_ptr()));
      if (op == ReduceOp::avg) divide_in_place(output.data_ptr(), output.numel(), output.dtype(), size_);
    });
  }

  WorkPtr barrier() override {
    return enqueue("barrier", [this] {
      if (options_.check_agreement) return agree(Fingerprint{uint64_t(Kind::barrier)});
      gloo::BarrierOptions o(context_);
      o.setTag(next_tag(Fingerprint{uint64_t(Kind::barrier)}));
      o.setTimeout(options_.timeout);
      gloo::barrier(o);
    });
  }

  WorkPtr send(const Tensor& tensor, int dst, int tag) override { return p2p("send", tensor, dst, tag); }
  WorkPtr recv(const Tensor& tensor, int src, int tag) override { return p2p("recv", tensor, src, tag); }

 private:
  struct Job {
    std::string what;  // "all_reduce of 4096 bytes", for errors
    std::function<void()> run;
    std::promise<void> done;
    Clock::time_point start;
    std::unique_ptr<gloo::transport::UnboundBuffer> p2p;  // a posted send/recv, for the waiter
    bool is_send = false;
    std::string hint;  // appended to a failure's message
    Tensor keep;  // the p2p buffer's memory
  };

  // ---- checks on this rank (STYLE L7: name the op, shapes and dtypes)
  static void check_tensor(const char* op, const Tensor& t, const char* name) {
    KILN_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
    KILN_CHECK(t.device().is_cpu(), op, ": ", name, " is on ", t.device(), "; a gloo group moves CPU tensors");
    KILN_CHECK(t.is_contiguous(), op, ": ", name, " of shape ", t.shape(), " (", t.dtype(),
               ") is not contiguous; pass .contiguous()");
  }
  static void check_op(const char* op, ReduceOp r, DType dtype) {
    KILN_CHECK(!(r == ReduceOp::avg && dtype == DType::boolean), op,
               ": avg is not defined for bool (use sum for \"any\" or min for \"all\")");
  }
  void check_rank(const char* op, const char* name, int r) const {
    KILN_CHECK(r >= 0 && r < size_, op, ": ", name, " ", r, " is outside the group's ranks [0, ", size_, ")");
  }
  static size_t row_nbytes(const Tensor& t) {
    size_t n = t.element_size();
    for (int64_t d = 1; d < t.dim(); ++d) n *= static_cast<size_t>(t.size(d));
    return n;
  }
  // `whole` holds every rank's piece (counts[r] rows each); `piece` is this rank's.
  void check_pieces(const char* op, const Tensor& whole, const Tensor& piece, const std::vector<int64_t>& counts,
                    bool whole_is_output) const {
    const char* whole_name = whole_is_output ? "output" : "input";
    const char* piece_name = whole_is_output ? "input" : "output";
    KILN_CHECK(whole.dtype() == piece.dtype(), op, ": input is ", (whole_is_output ? piece : whole).dtype(), " but output is ",
               (whole_is_output ? whole : piece).dtype());
    KILN_CHECK(whole.dim() >= 1 && piece.dim() == whole.dim(), op, ": ", whole_name, " ", whole.shape(), " and ", piece_name,
               " ", piece.shape(), " must have the same number of dims (at least 1)");
    for (int64_t d = 1; d < whole.dim(); ++d)
      KILN_CHECK(whole.size(d) == piece.size(d), op, ": ", whole_name, " ", whole.shape(), " and ", piece_name, " ",
                 piece.shape(), " differ beyond dim 0");
    KILN_CHECK(static_cast<int>(counts.size()) == size_, op, ": counts has ", counts.size(), " entries for a group of ",
               size_, " ranks");
    int64_t total = 0;
    for (int64_t c : counts) {
      KILN_CHECK(c >= 0, op, ": counts has a negative entry ", c);
      total += c;
    }
    KILN_CHECK(whole.size(0) == total, op, ": ", whole_name, " ", whole.shape(), " has ", whole.size(0),
               " rows but counts add up to ", total);
    KILN_CHECK(piece.size(0) == counts[static_cast<size_t>(rank_)], op, ": this rank's ", piece_name, " ", piece.shape(), " has ",
               piece.size(0), " rows but counts[", rank_, "] is ", counts[static_cast<size_t>(rank_)]);
  }

  std::string what(const char* op, size_t nbytes) const { return std::string(op) + " of " + std::to_string(nbytes) + " bytes"; }

  // ---- the worker (Gloo's context is used by this thread, and by the waiter only to wait)
  // Note [Tags]: each collective's Gloo tag (slot) is new, so a fast rank's next collective never
  // mixes with a slow rank's current one, and mixes in the collective's fingerprint: ranks that
  // disagree on it post to different slots, which never match. With check_agreement off that makes
  // a mismatch a timeout error, not an abort or a short result (Note [Collective agreement]).
  uint32_t next_tag(const Fingerprint& fp = {}) {
    uint64_t h = (++tag_count_) * 0x9E3779B97F4A7C15ull;
    for (uint64_t v : {fp.kind, fp.dtype, fp.op, fp.root, fp.bytes, fp.counts}) h = (h ^ v) * 1099511628211ull;
    return static_cast<uint32_t>(h ^ (h >> 32));
  }

  void agree(const Fingerprint& mine) {
    if (!options_.check_agreement) return;
    std::vector<Fingerprint> all(static_cast<size_t>(size_));
    Fingerprint in = mine;
    gloo::AllgathervOptions o(context_);
    o.setInput<uint8_t>(reinterpret_cast<uint8_t*>(&in), sizeof(in));
    o.setOutput<uint8_t>(reinterpret_cast<uint8_t*>(all.data()), std::vector<size_t>(all.size(), sizeof(Fingerprint)));
    o.setTag(next_tag());
    o.setTimeout(options_.timeout);
    gloo::allgatherv(o);
    for (const Fingerprint& f : all) {
      if (f == mine) continue;
      std::string list;
      for (size_t r = 0; r < all.size(); ++r) list += (r ? "; rank " : "rank ") + std::to_string(r) + ": " + describe(all[r]);
      detail::throw_error("the ranks called different collectives (", list,
                          "); every rank must call the same collectives in the same order with the same sizes");
    }
  }

  void run_all_reduce(const Tensor& tensor, ReduceOp op, const Fingerprint& fp) {
    with_element_type(tensor.element_size(), [&]<class U>() {
      gloo::AllreduceOptions o(context_);
      o.setOutput<U>(static_cast<U*>(tensor.data_ptr()), static_cast<size_t>(tensor.numel()));
      o.setReduceFunction(reduce_function(tensor.dtype(), op));
      o.setTag(next_tag(fp));
      o.setTimeout(options_.timeout);
      gloo::allreduce(o);
    });
  }

  // Note [Ring reduce-scatter]: piece p is counts[p] rows of the input. In step s (of size-1) rank
  // r sends its partial reduction of piece (r-s-1) to rank r+1 and folds rank r-1's partial of
  // piece (r-s-2) into its own input's; after the last step it holds piece r reduced over every
  // rank. Each rank sends (size-1)/size of the input once. `spare`: 3 pieces of the largest size
  // (the incoming piece, and two partials that take turns being sent and written).
  void run_ring(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts, ReduceOp op,
                const Fingerprint& fp, char* spare) {
    const size_t row_bytes = row_nbytes(input), element = input.element_size();
    std::vector<size_t> offset(static_cast<size_t>(size_) + 1, 0);  // bytes
    for (size_t p = 0; p < counts.size(); ++p) offset[p + 1] = offset[p] + static_cast<size_t>(counts[p]) * row_bytes;
    const char* in = static_cast<const char*>(input.data_ptr());
    if (size_ == 1) {
      std::memcpy(output.data_ptr(), in, output.nbytes());
      return;
    }
    size_t largest = 0;
    for (int p = 0; p < size_; ++p) largest = std::max(largest, offset[p + 1] - offset[p]);
    char* incoming = spare;
    char* partials[2] = {spare + largest, spare + 2 * largest};
    const ReduceFn reduce = reduce_function(input.dtype(), op);
    const uint64_t slot = gloo::Slot::build(kReduceScatterSlotPrefix, next_tag(fp));
    const int next = (rank_ + 1) % size_, prev = (rank_ + size_ - 1) % size_;
    const char* sending = nullptr;
    for (int s = 0; s + 1 < size_; ++s) {
      const int send_piece = (rank_ - s - 1 + 2 * size_) % size_;
      const int recv_piece = (rank_ - s - 2 + 2 * size_) % size_;
      const size_t send_bytes = offset[send_piece + 1] - offset[send_piece];
      const size_t recv_bytes = offset[recv_piece + 1] - offset[recv_piece];
      const char* from = s == 0 ? in + offset[send_piece] : sending;
      char* into = s + 2 == size_ ? static_cast<char*>(output.data_ptr()) : partials[s % 2];
      std::unique_ptr<gloo::transport::UnboundBuffer> recv_buf, send_buf;
      if (recv_bytes > 0) {  // both sides of a piece know its size: an empty one is never sent
        recv_buf = context_->createUnboundBuffer(incoming, recv_bytes);
        recv_buf->recv(prev, slot + static_cast<uint64_t>(s));
      }
      if (send_bytes > 0) {
        send_buf = context_->createUnboundBuffer(const_cast<char*>(from), send_bytes);
        send_buf->send(next, slot + static_cast<uint64_t>(s));
      }
      if (recv_buf) {
        KILN_CHECK(recv_buf->waitRecv(options_.timeout), "Gloo aborted the wait");
        reduce(into, in + offset[recv_piece], incoming, recv_bytes / element);
      }
      if (send_buf) KILN_CHECK(send_buf->waitSend(options_.timeout), "Gloo aborted the wait");
      sending = into;
    }
  }

  WorkPtr enqueue(std::string what, std::function<void()> run, std::unique_ptr<Job> job = nullptr) {
    if (!job) job = std::make_unique<Job>();
    job->what = std::move(what);
    job->run = std::move(run);
    auto work = std::make_shared<Work>(job->done.get_future().share());
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!broken_.empty()) job->done.set_exception(std::make_exception_ptr(kiln::Error(broken_message(*job))));
      else jobs_.push_back(std::move(job));
    }
    cv_.notify_all();
    return work;
  }

  std::string broken_message(const Job& job) const {
    return "rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + job.what +
           ": the group is broken by an earlier failure (" + broken_ + "); make a new group (restart the job)";
  }

  // Turns the exception in flight into the group's failure, and fails `job` with it.
  void fail(Job& job) {
    std::string cause;
    try {
      throw;
    } catch (const kiln::Error& e) {
      cause = e.what();
    } catch (const gloo::EnforceNotMet& e) {
      cause = explain(e.what(), options_.timeout);
    } catch (const std::exception& e) {  // gloo::IoException and the other gloo::Exceptions
      cause = explain(e.what(), options_.timeout);
    }
    const std::string message = "rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + job.what +
                                " failed after " + seconds(Clock::now() - job.start) + ": " + cause + job.hint;
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.empty()) broken_ = message;
    fail_locked(job, message);
  }

  // Note [Errors outlive the group's threads]: a Work's error is an exception object shared with the
  // thread that waits on it, freed by whoever drops the last reference. Its count lives in the
  // C++ runtime, where ThreadSanitizer cannot see it, so a worker freeing the error right after the
  // user read it looks like a race. The group keeps every error its threads raise until it is
  // destroyed (its threads joined by then), so none is freed on those threads. (mu_ held.)
  void fail_locked(Job& job, const std::string& message) {
    errors_.push_back(std::make_exception_ptr(kiln::Error(message)));
    job.done.set_exception(errors_.back());
  }

  // Takes the next job of `queue` (nullptr once stopping and drained); a job that finds the group
  // broken or stopping fails here.
  std::unique_ptr<Job> next_job() {
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return nullptr;
      std::unique_ptr<Job> job = std::move(jobs_.front());
      jobs_.pop_front();
      if (broken_.empty() && !stopping_) return job;
      const std::string message = broken_.empty() ? "rank " + std::to_string(rank_) + ": " + job->what +
                                                        ": the process group was destroyed before it ran"
                                                  : broken_message(*job);
      fail_locked(*job, message);
    }
  }

  void run_jobs() {
    while (std::unique_ptr<Job> job = next_job()) {
      job->start = Clock::now();
      try {
        job->run();
      } catch (...) {
        fail(*job);
        continue;
      }
      if (!job->p2p) {
        job->done.set_value();
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        posted_.push_back(std::move(job));
      }
      cv_.notify_all();
    }
  }

  // Note [Posted send/recv]: a Gloo send waits for its recv to be posted, so a job that posted and
  // then waited would deadlock two ranks that both send first. The worker posts in order and this
  // thread waits, in order: every send and recv is posted without depending on another's end.
  // Posted operations are always waited for (bounded by the timeout): Gloo may still write into
  // their memory until then.
  void complete_p2p() {
    for (;;) {
      std::unique_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return worker_done_ || !posted_.empty(); });
        if (posted_.empty()) return;
        job = std::move(posted_.front());
        posted_.pop_front();
      }
      try {
        const bool done = job->is_send ? job->p2p->waitSend(options_.timeout) : job->p2p->waitRecv(options_.timeout);
        KILN_CHECK(done, "Gloo aborted the wait");
      } catch (...) {
        fail(*job);
        continue;
      }
      job->done.set_value();
    }
  }

  WorkPtr p2p(const char* op, const Tensor& tensor, int peer, int tag) {
    const bool is_send = std::strcmp(op, "send") == 0;
    check_tensor(op, tensor, "tensor");
    check_rank(op, is_send ? "dst" : "src", peer);
    KILN_CHECK(peer != rank_, op, ": rank ", rank_, " cannot ", op, is_send ? " to" : " from", " itself");
    KILN_CHECK(tag >= 0, op, ": tag ", tag, " is negative");
    if (!is_send) tensor.bump_version();
    auto job = std::make_unique<Job>();
    job->is_send = is_send;
    job->keep = tensor;
    Job* raw = job.get();
    const uint64_t slot = p2p_slot(tag, tensor.nbytes(), tensor.dtype());
    std::string name = what(op, tensor.nbytes()) + (is_send ? " to rank " : " from rank ") + std::to_string(peer) +
                       " (tag " + std::to_string(tag) + ", " + std::string(dtype_name(tensor.dtype())) + ")";
    job->hint = std::string(" (a ") + (is_send ? "recv" : "send") + " of another size or dtype never matches it)";
    return enqueue(std::move(name), [this, raw, tensor, peer, slot, is_send] {
      raw->p2p = context_->createUnboundBuffer(tensor.data_ptr(), tensor.nbytes());
      if (is_send) raw->p2p->send(peer, slot);
      else raw->p2p->recv(peer, slot);
    }, std::move(job));
  }

  std::shared_ptr<Store> store_;  // kept: it may serve other ranks (rank 0's TcpStore server)
  const int rank_;
  const int size_;
  const ProcessGroupOptions options_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::rendezvous::Context> context_;
  uint64_t tag_count_ = 0;  // the worker's: every rank counts the same collectives in the same order

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> jobs_;    // to run, in order
  std::deque<std::unique_ptr<Job>> posted_;  // send/recv posted, to wait for
  bool stopping_ = false;     // the destructor began: jobs not yet run fail
  bool worker_done_ = false;  // the worker posts no more: the waiter may stop once posted_ is empty
  std::string broken_;  // the first failure
  std::vector<std::exception_ptr> errors_;  // Note [Errors outlive the group's threads]
  std::thread worker_;
  std::thread waiter_;
};

}  // namespace

// Note [SIGPIPE and dead peers]
// Gloo writes to its peers with writev, which raises SIGPIPE when the peer's end is closed; the
// default action ends the process silently, so a rank whose peer died would vanish instead of
// reporting it. Python ignores SIGPIPE at start-up, which is why torch never shows this. A group
// ignores it too, when nothing else handles it: the write then fails with EPIPE, Gloo throws, and
// the collective's kiln::Error names the dead peer. A handler the program installed is kept.
namespace {

void ignore_sigpipe_unless_handled() {
  struct sigaction current {};
  sigaction(SIGPIPE, nullptr, &current);
  if (current.sa_handler != SIG_DFL) return;
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  sigaction(SIGPIPE, &ignore, nullptr);
}

}  // namespace

std::shared_ptr<ProcessGroup> make_gloo_group(std::shared_ptr<Store> store, int rank, int size,
                                              const ProcessGroupOptions& options) {
  ignore_sigpipe_unless_handled();
  return std::make_shared<GlooGroup>(std::move(store), rank, size, options);
}

}  // namespace kiln::dist
