// Hand-written f32 products for skinny shapes, where M or N is at most kSmallMatmulDim: register
// tiles of out, vectorised along out's columns, in portable C++ (omp simd) that GCC vectorises for
// whatever -march the library is built with. Not here: when to use it (matmul.cpp).
#include "kernels/cpu/small_matmul.h"

#include <algorithm>
#include <type_traits>
#include <utility>
#include <vector>

#include "tensor/error.h"
#include "tensor/parallel.h"

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]
namespace {

// Note [Skinny products]: oneDNN 2.6's brgemm matmul blocks for large products; when M or N is a
// few elements it runs at a fraction of its large-product speed (40 GFLOP/s at N = 8 on one Ice
// Lake core, against 100 for M = N = K = 512). Here out is cut into tiles of R rows x C columns; a
// tile keeps its R*C sums in registers and, for each k, broadcasts a(i, k) for its R rows and
// multiplies it into one row b(k, j0..j0+C) read as C-wide vectors. b is read through a panel that
// is row-major with C readable columns in every tile (b itself when its columns are contiguous,
// else a packed copy), so the inner loop is a fixed-size vector FMA. Rows past M repeat the last
// row of a and are not stored. Tiles, not k, are split over threads, so each element is one sum in
// k order for any thread count. Small N: tiles of 8 x 8, one column of tiles. Small M: one row of
// tiles, R = M exactly, 32 columns. What was measured, and where oneDNN stays faster, is in
// matmul.cpp (small_matmul_wins) and bench/bench_matmul.cpp.

// b as the tiles read it: row-major with leading dimension ld. Tiles starting at or after column
// tail_j0 read `tail` instead, a zero-padded K x C copy of b's last columns, so no tile reads past
// b's columns.
struct Panel {
  const float* data;
  int64_t ld;
  const float* tail;
  int64_t tail_j0;
};

struct Epilogue {
  float* out;
  int64_t ldo;
  StridedF32 bias;  // data == nullptr: no bias
  float beta, alpha;
};

// out(i0 + r, j0 + j) = alpha * acc[r][j] + beta * bias(i0 + r, j0 + j) for r < rows, j < cols.
template <int R, int C, class Rows, class Cols>
void store(const float (&acc)[R][C], Rows rows, Cols cols, int64_t i0, int64_t j0, const Epilogue& e) {
  for (int r = 0; r < rows; ++r) {
    float* o = e.out + (i0 + r) * e.ldo + j0;
    if (!e.bias.data) {
      for (int j = 0; j < cols; ++j) o[j] = e.alpha * acc[r][j];
    } else {
      const float* bias = e.bias.data + (i0 + r) * e.bias.rs + j0 * e.bias.cs;
      for (int j = 0; j < cols; ++j) o[j] = e.alpha * acc[r][j] + e.beta * bias[j * e.bias.cs];
    }
  }
}

// One tile: out(i0.., j0..) for `rows` <= R rows and `cols` <= C columns; bk points at b(0, j0)
// in a panel with leading dimension ldb.
template <int R, int C>
void tile(const StridedF32& a, int64_t i0, int rows, const float* bk, int64_t ldb, int64_t K, int64_t j0, int cols,
          const Epilogue& e) {
  const float* arow[R];
  for (int r = 0; r < R; ++r) arow[r] = a.data + (i0 + std::min(r, rows - 1)) * a.rs;
  float acc[R][C] = {};
  for (int64_t k = 0; k < K; ++k, bk += ldb) {
    const int64_t ak = k * a.cs;
    for (int r = 0; r < R; ++r) {
      const float av = arow[r][ak];
#pragma omp simd
      for (int j = 0; j < C; ++j) acc[r][j] += av * bk[j];
    }
  }
  // acc must only be indexed by constants, or GCC keeps it in memory instead of registers: a full
  // tile stores from it with compile-time bounds, a partial one through a copy. With K ~ 10 these
  // stores are a good part of the work.
  if (rows == R && cols == C)
    return store(acc, std::integral_constant<int, R>{}, std::integral_constant<int, C>{}, i0, j0, e);
  float part[R][C];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) part[r][j] = acc[r][j];
  store(part, rows, cols, i0, j0, e);
}

// dst (K x ld, row-major) = b's columns [j0, j0 + cols), zero-padded to ld columns.
void pack(const StridedF32& b, int64_t K, int64_t j0, int64_t cols, int64_t ld, float* dst) {
  std::fill(dst, dst + K * ld, 0.0f);
  if (b.cs == 1 || b.rs > b.cs) {  // read along b's rows
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < cols; ++j) dst[k * ld + j] = b.data[k * b.rs + (j0 + j) * b.cs];
  } else {  // read along b's columns (b column-major)
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t k = 0; k < K; ++k) dst[k * ld + j] = b.data[k * b.rs + (j0 + j) * b.cs];
  }
}

// Packed panels live in a per-thread buffer that only grows: the caller's thread packs them before
// the tiles run, and the tiles only read them.
float* panel_buffer(int64_t floats) {
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) buf.resize(static_cast<size_t>(floats));
  return buf.data();
}

// Below this many flops a thread's share of tiles is not worth waking another thread for.
constexpr int64_t kFlopsPerThread = int64_t{1} << 17;

template <int R, int C>
void run_tiles(const StridedF32& a, const StridedF32& b, const Epilogue& e, int64_t M, int64_t K, int64_t N) {
  const int64_t row_tiles = (M + R - 1) / R, col_tiles = (N + C - 1) / C;
  Panel p{b.data, b.rs, nullptr, N};
  if (b.cs != 1 && N > 1) {  // columns not contiguous: pack all of b
    const int64_t ld = col_tiles * C;
    float* buf = panel_buffer(K * ld);
    pack(b, K, 0, N, ld, buf);
    p = {buf, ld, nullptr, ld};
  } else if (N % C != 0) {  // b read in place but for its last, partial column tile
    const int64_t j0 = N / C * C;
    float* buf = panel_buffer(K * C);
    pack(b, K, j0, N - j0, C, buf);
    p = {b.data, b.rs, buf, j0};
  }
  const int64_t grain = std::max<int64_t>(1, kFlopsPerThread / (2 * R * C * K));
  parallel_for(row_tiles * col_tiles, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t / col_tiles * R, j0 = t % col_tiles * C;
      const int rows = static_cast<int>(std::min<int64_t>(R, M - i0));
      const int cols = static_cast<int>(std::min<int64_t>(C, N - j0));
      const bool in_tail = j0 >= p.tail_j0;
      const float* bk = in_tail ? p.tail : p.data + j0;
      tile<R, C>(a, i0, rows, bk, in_tail ? C : p.ld, K, j0, cols, e);
    }
  });
}

// Small M: one row of tiles holding all of M (R = M exactly, so no row is computed twice).
template <int... Rs>
void run_small_m(std::integer_sequence<int, Rs...>, const StridedF32& a, const StridedF32& b, const Epilogue& e,
                 int64_t M, int64_t K, int64_t N) {
  ((M == Rs + 1 ? run_tiles<Rs + 1, 32>(a, b, e, M, K, N) : void()), ...);
}

}  // namespace

void small_matmul_f32(StridedF32 a, StridedF32 b, StridedF32 bias, float beta, float alpha, float* out, int64_t ldo,
                      int64_t M, int64_t K, int64_t N) {
  KILN_ASSERT(K > 0 && std::min(M, N) <= kSmallMatmulDim, "small_matmul_f32 called on M=", M, " K=", K, " N=", N);
  if (M == 0 || N == 0) return;
  if (beta == 0.0f) bias.data = nullptr;
  const Epilogue e{out, ldo, bias, beta, alpha};
  if (N <= kSmallMatmulDim) run_tiles<8, kSmallMatmulDim>(a, b, e, M, K, N);  // one column of tiles
  else run_small_m(std::make_integer_sequence<int, kSmallMatmulDim>{}, a, b, e, M, K, N);
}

}  // namespace kiln::cpu
