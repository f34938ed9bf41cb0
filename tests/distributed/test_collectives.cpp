// The Gloo group's collectives at 2, 3 and 4 ranks, every dtype and reduction, against references
// computed here from each rank's known inputs (small integers, exact in every dtype), and the
// conveniences, send/recv, barrier, and several all-reduces in flight at once.
#include <cmath>
#include <thread>

#include "distributed/multiprocess.h"
#include "testing.h"

namespace kiln::dist {
namespace {

namespace kt = kiln::testing;
namespace mp = kiln::dist::testing;
using std::chrono::milliseconds;

// Rank r's element i: a small integer every dtype holds exactly (u8 non-negative; bool every third).
double input_value(DType t, int r, int64_t i) {
  if (t == DType::boolean) return (r + i) % 3 == 0 ? 1.0 : 0.0;
  const double v = static_cast<double>((r * 7 + i * 3) % 9);
  return t == DType::u8 ? v : v - 4.0;
}

Tensor make_input(DType t, const Dims& shape, int r, int64_t first = 0) {
  Tensor f = empty(shape, {.dtype = DType::f64});
  for (int64_t i = 0; i < f.numel(); ++i) f.data_ptr<double>()[i] = input_value(t, r, first + i);
  return f.to(t);
}

// The reduction of xs, as each dtype defines it (bool: or/and; integer avg rounds toward zero).
double reference(ReduceOp op, DType t, const std::vector<double>& xs) {
  double sum = 0, hi = xs[0], lo = xs[0];
  for (double x : xs) {
    sum += x;
    hi = std::max(hi, x);
    lo = std::min(lo, x);
  }
  switch (op) {
    case ReduceOp::sum: return t == DType::boolean ? (sum > 0) : sum;
    case ReduceOp::avg: return is_floating(t) ? sum / xs.size() : std::trunc(sum / xs.size());
    case ReduceOp::max: return hi;
    case ReduceOp::min: return lo;
  }
  return 0;
}

void expect_value(double got, double want, DType t, const std::string& where) {
  const double tol = (t == DType::f16 || t == DType::bf16) ? 1e-2 * std::max(1.0, std::abs(want)) : 1e-6;
  EXPECT_NEAR(got, want, tol) << where;
}

std::vector<int64_t> uneven_counts(int size) {  // rank 1 contributes no rows
  std::vector<int64_t> c;
  for (int r = 0; r < size; ++r) c.push_back(r == 1 ? 0 : r + 1);
  return c;
}

void all_reduce_every_dtype(ProcessGroup& pg, int rank) {
  const int n = pg.size();
  const std::vector<ReduceOp> ops = {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min};
  // Issue them all, then wait: they queue on the group's thread and run in order.
  struct Case { DType t; ReduceOp op; Tensor x; WorkPtr work; };
  std::vector<Case> cases;
  for (DType t : kt::kAllDTypes)
    for (ReduceOp op : ops) {
      if (t == DType::boolean && op == ReduceOp::avg) continue;
      Tensor x = make_input(t, {3, 5}, rank);
      cases.push_back({t, op, x, pg.all_reduce(x, op)});
    }
  for (Case& c : cases) {
    c.work->wait();
    EXPECT_TRUE(c.work->is_completed());
    for (int64_t i = 0; i < c.x.numel(); ++i) {
      std::vector<double> xs;
      for (int r = 0; r < n; ++r) xs.push_back(input_value(c.t, r, i));
      expect_value(kt::at(c.x, i), reference(c.op, c.t, xs), c.t,
                   std::string(dtype_name(c.t)) + " " + to_string(c.op) + " element " + std::to_string(i));
    }
  }
  // The written tensor's version moves (autograd then refuses it as a saved input).
  Tensor v = ones({2});
  const uint32_t before = v.storage().version();
  pg.all_reduce(v)->wait();
  EXPECT_GT(v.storage().version(), before);
  // Empty tensors and a NaN (max keeps it, as torch.maximum).
  pg.all_reduce(empty({0}))->wait();
  Tensor m = full({2}, rank == 1 ? std::nan("") : 1.0, {.dtype = DType::f32});
  pg.all_reduce(m, ReduceOp::max)->wait();
  EXPECT_TRUE(std::isnan(kt::at(m, 0)));
}

void broadcast_from_each_source(ProcessGroup& pg, int rank) {
  for (int src : {0, pg.size() - 1})
    for (DType t : {DType::f32, DType::i64, DType::bf16, DType::boolean}) {
      Tensor x = rank == src ? make_input(t, {2, 3}, src) : zeros({2, 3}, {.dtype = t});
      pg.broadcast(x, src)->wait();
      for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(kt::at(x, i), input_value(t, src, i)) << dtype_name(t) << " from " << src;
    }
  pg.broadcast(empty({0, 4}), 0)->wait();
}

void all_gather_uneven(ProcessGroup& pg, int rank) {
  const std::vector<int64_t> counts = uneven_counts(pg.size());
  int64_t total = 0, first = 0;
  for (int r = 0; r < pg.size(); ++r) {
    if (r < rank) first += counts[static_cast<size_t>(r)];
    total += counts[static_cast<size_t>(r)];
  }
  for (DType t : kt::kAllDTypes) {
    // Row k of the output is global row k: rank r's rows carry its own values at their global index.
    Tensor in = make_input(t, {counts[static_cast<size_t>(rank)], 2}, rank, first * 2);
    Tensor out = full({total, 2}, 1, {.dtype = t});
    pg.all_gather(in, out, counts)->wait();
    int64_t row = 0;
    for (int r = 0; r < pg.size(); ++r)
      for (int64_t k = 0; k < counts[static_cast<size_t>(r)]; ++k, ++row)
        for (int64_t c = 0; c < 2; ++c)
          EXPECT_EQ(kt::at(out, row * 2 + c), input_value(t, r, row * 2 + c)) << dtype_name(t) << " row " << row;
  }
  // The conveniences: equal rows, and sizes learned first.
  Tensor equal = pg.all_gather(full({2, 3}, rank, {.dtype = DType::i32}));
  ASSERT_EQ(equal.shape(), Dims({2 * pg.size(), 3}));
  for (int r = 0; r < pg.size(); ++r) EXPECT_EQ(kt::at(equal, r * 6 + 5), r);
  Tensor uneven = pg.all_gather_uneven(full({rank, 1}, rank + 0.5));  // rank r has r rows
  ASSERT_EQ(uneven.size(0), pg.size() * (pg.size() - 1) / 2);
  EXPECT_EQ(kt::at(uneven, uneven.size(0) - 1), pg.size() - 0.5);
}

void reduce_scatter_uneven(ProcessGroup& pg, int rank) {
  const std::vector<int64_t> counts = uneven_counts(pg.size());
  int64_t total = 0, first = 0;
  for (int r = 0; r < pg.size(); ++r) {
    if (r < rank) first += counts[static_cast<size_t>(r)];
    total += counts[static_cast<size_t>(r)];
  }
  for (DType t : {DType::f32, DType::bf16, DType::i32, DType::u8})
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
      Tensor in = make_input(t, {total, 2}, rank);
      Tensor out = empty({counts[static_cast<size_t>(rank)], 2}, {.dtype = t});
      pg.reduce_scatter(in, out, counts, op)->wait();
      for (int64_t i = 0; i < out.numel(); ++i) {
        std::vector<double> xs;
        for (int r = 0; r < pg.size(); ++r) xs.push_back(input_value(t, r, first * 2 + i));
        expect_value(kt::at(out, i), reference(op, t, xs), t, std::string(dtype_name(t)) + " " + to_string(op));
      }
      // The input is left as it was.
      EXPECT_EQ(kt::at(in, 0), input_value(t, rank, 0));
    }
  Tensor piece = pg.reduce_scatter(full({pg.size(), 2}, 1.0));  // equal pieces of one row
  ASSERT_EQ(piece.shape(), Dims({1, 2}));
  EXPECT_EQ(kt::at(piece, 1), pg.size());
}

void send_recv_and_barrier(ProcessGroup& pg, int rank) {
  const int n = pg.size();
  const int next = (rank + 1) % n, prev = (rank + n - 1) % n;
  // Everyone sends first, then receives: the sends must not wait for their recvs to start.
  Tensor out = full({3}, rank * 10.0);
  Tensor in = zeros({3});
  WorkPtr s = pg.send(out, next, 7);
  WorkPtr r = pg.recv(in, prev, 7);
  s->wait();
  r->wait();
  EXPECT_EQ(kt::at(in, 2), prev * 10.0);
  // Two tags between one pair, received in the other order.
  if (rank == 0) {
    pg.send(full({2}, 1, {.dtype = DType::i64}), 1, 1);
    pg.send(full({5}, 2, {.dtype = DType::i64}), 1, 2)->wait();
  } else if (rank == 1) {
    Tensor two = zeros({5}, {.dtype = DType::i64}), one = zeros({2}, {.dtype = DType::i64});
    pg.recv(two, 0, 2)->wait();
    pg.recv(one, 0, 1)->wait();
    EXPECT_EQ(kt::at(two, 4), 2);
    EXPECT_EQ(kt::at(one, 1), 1);
  }
  // barrier: nobody leaves before the last rank arrives. Rank 0 arrives 200 ms late; each rank
  // compares when it left with when rank 0 arrived (one machine, one wall clock). Measuring each
  // rank's own wait instead would count the ranks' skew before the barrier.
  const auto ns_now = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  if (rank == 0) std::this_thread::sleep_for(milliseconds(200));
  Tensor arrived = full({1}, rank == 0 ? ns_now() : int64_t{0}, {.dtype = DType::i64});
  pg.barrier()->wait();
  const int64_t left = ns_now();
  pg.broadcast(arrived, 0)->wait();
  EXPECT_GE(left, arrived.data_ptr<int64_t>()[0]);
}

void every_collective(ProcessGroup& pg, int rank) {
  EXPECT_EQ(pg.backend(), "gloo");
  all_reduce_every_dtype(pg, rank);
  broadcast_from_each_source(pg, rank);
  all_gather_uneven(pg, rank);
  reduce_scatter_uneven(pg, rank);
  send_recv_and_barrier(pg, rank);
}

TEST(Collectives, TwoRanks) { mp::run_ranks(2, every_collective); }
TEST(Collectives, ThreeRanks) { mp::run_ranks(3, every_collective); }
TEST(Collectives, FourRanks) { mp::run_ranks(4, every_collective); }

TEST(Collectives, WithoutAgreementChecks) {
  mp::RunOptions options;
  options.group.check_agreement = false;
  mp::run_ranks(3, [](ProcessGroup& pg, int rank) {
    Tensor x = full({5}, rank + 1.0);
    pg.all_reduce(x)->wait();
    EXPECT_EQ(kt::at(x, 4), 6.0);
    pg.barrier()->wait();
  }, options);
}

TEST(ReduceOp, Names) {
  EXPECT_STREQ(to_string(ReduceOp::sum), "sum");
  EXPECT_STREQ(to_string(ReduceOp::avg), "avg");
  EXPECT_STREQ(to_string(ReduceOp::max), "max");
  EXPECT_STREQ(to_string(ReduceOp::min), "min");
}

}  // namespace
}  // namespace kiln::dist
