// f32 products where M or N is small (see Note [Skinny products] in small_matmul.cpp). Internal to
// kernels/cpu: matmul.cpp decides when to call it. Not here: batches, other dtypes, a small K alone.
#pragma once

#include <cstdint>

namespace kiln::cpu::inline KILN_CPU_NS {  // one copy per CPU level: Note [CPU capability levels]

// The largest M or N that counts as small: the register tiles are sized for it. At 9..16 the
// kernel no longer beat oneDNN (see matmul.cpp), so it stops at 8.
inline constexpr int64_t kSmallMatmulDim = 8;

// An f32 matrix with any element strides: element (i, j) at data[i * rs + j * cs].
struct StridedF32 {
  const float* data;
  int64_t rs, cs;
};

// out (M,N), row-major with leading dimension ldo, = alpha * a (M,K) @ b (K,N) + beta * bias (M,N).
// bias.data == nullptr means no bias (beta unused); beta == 0 ignores bias, as addmm does.
// Needs min(M, N) <= kSmallMatmulDim and K > 0. Each output element is one sum in k order, so
// the result does not depend on the thread count.
void small_matmul_f32(StridedF32 a, StridedF32 b, StridedF32 bias, float beta, float alpha, float* out, int64_t ldo,
                      int64_t M, int64_t K, int64_t N);

}  // namespace kiln::cpu
