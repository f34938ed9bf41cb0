// The op list: every kernel-backed op, once, with the signature family of its kernels.
// Adding an op: one line here, one kernel per device (KILN_REGISTER_KERNEL in the kernel's file),
// and the op's definition in autograd/ops/<family>.cpp.
#pragma once

// X(name, KernelFamily) — the families are defined in tensor/dispatch.h.
#define KILN_FOR_EACH_OP(X)                                                                  \
  /* data movement and creation */                                                        \
  X(copy, CopyKernel) X(fill, FillKernel) X(arange, RangeKernel) X(linspace, RangeKernel)  \
  X(uniform, RandomKernel) X(normal, RandomKernel) X(randint, RandomKernel)                 \
  X(bernoulli, RandomKernel) X(bernoulli_tensor, RandomLikeKernel)                          \
  /* unary elementwise */                                                                  \
  X(abs, UnaryKernel) X(neg, UnaryKernel) X(exp, UnaryKernel) X(log, UnaryKernel)           \
  X(log1p, UnaryKernel) X(expm1, UnaryKernel) X(sqrt, UnaryKernel) X(rsqrt, UnaryKernel)    \
  X(sin, UnaryKernel) X(cos, UnaryKernel) X(tanh, UnaryKernel) X(sigmoid, UnaryKernel)      \
  X(relu, UnaryKernel) X(gelu_erf, UnaryKernel) X(gelu_tanh, UnaryKernel) X(silu, UnaryKernel) \
  X(erf, UnaryKernel) X(sign, UnaryKernel) X(reciprocal, UnaryKernel)                      \
  X(logical_not, UnaryKernel)                                                             \
  X(softplus, UnaryParamKernel) X(leaky_relu, UnaryParamKernel) X(pow_scalar, UnaryParamKernel) \
  X(clamp, ClampKernel)                                                                    \
  /* binary elementwise (broadcast) */                                                     \
  X(add, BinaryKernel) X(sub, BinaryKernel) X(mul, BinaryKernel) X(div, BinaryKernel)       \
  X(pow, BinaryKernel) X(maximum, BinaryKernel) X(minimum, BinaryKernel)                    \
  X(remainder, BinaryKernel) X(eq, BinaryKernel) X(ne, BinaryKernel) X(lt, BinaryKernel)    \
  X(le, BinaryKernel) X(gt, BinaryKernel) X(ge, BinaryKernel) X(logical_and, BinaryKernel)  \
  X(logical_or, BinaryKernel) X(logical_xor, BinaryKernel) X(where, WhereKernel)            \
  /* activation backward: (gradient, saved input or output) -> gradient */                 \
  X(relu_backward, BinaryKernel) X(silu_backward, BinaryKernel)                              \
  X(gelu_tanh_backward, BinaryKernel) X(gelu_erf_backward, BinaryKernel)                     \
  /* reductions */                                                                         \
  X(sum, ReduceKernel) X(mean, ReduceKernel) X(prod, ReduceKernel) X(amax, ReduceKernel)    \
  X(amin, ReduceKernel) X(var, ReduceKernel) X(norm, ReduceKernel) X(logsumexp, ReduceKernel) \
  X(all, ReduceKernel) X(any, ReduceKernel)                                                \
  X(max_dim, ReduceIndexKernel) X(min_dim, ReduceIndexKernel)                               \
  /* linear algebra */                                                                     \
  X(mm, BinaryKernel) X(bmm, BinaryKernel) X(addmm, AddmmKernel)                            \
  /* along one dim */                                                                      \
  X(softmax, DimKernel) X(log_softmax, DimKernel) X(cumsum, DimKernel)                      \
  X(cross_entropy, CrossEntropyKernel) X(cross_entropy_backward, CrossEntropyBackwardKernel) \
  X(sort, SortKernel) X(topk, TopkKernel) X(tril, TriKernel) X(triu, TriKernel)             \
  /* indexing */                                                                           \
  X(cat, CatKernel) X(gather, IndexKernel) X(index_select, IndexKernel)                     \
  X(scatter, IndexPutKernel) X(scatter_add, IndexPutKernel) X(index_add, IndexPutKernel)       \
  /* neural-net layers, each with its backward (conv2d also runs conv1d and transposed convs) */ \
  X(conv2d, ConvKernel) X(conv2d_backward, ConvBackwardKernel)                                \
  X(max_pool2d, MaxPoolKernel) X(max_pool2d_backward, MaxPoolBackwardKernel)                  \
  X(avg_pool2d, PoolKernel) X(avg_pool2d_backward, PoolBackwardKernel)                        \
  X(adaptive_avg_pool2d, PoolKernel) X(adaptive_avg_pool2d_backward, PoolBackwardKernel)      \
  X(batch_norm, BatchNormKernel) X(batch_norm_backward, NormBackwardKernel)                   \
  X(layer_norm, NormKernel) X(layer_norm_backward, NormBackwardKernel)                        \
  X(rms_norm, NormKernel) X(rms_norm_backward, NormBackwardKernel)                            \
  X(group_norm, NormKernel) X(group_norm_backward, NormBackwardKernel)                        \
  /* optimizer updates, in place */                                                       \
  X(sgd_update, SgdUpdateKernel) X(adam_update, AdamUpdateKernel)                           \
  X(rmsprop_update, RmspropUpdateKernel) X(adagrad_update, AdagradUpdateKernel)
