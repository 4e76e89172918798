// Entry points every CUDA kernel family implements. The FFI handlers (cuda/ffi/) decode and
// validate a Problem, then call these on XLA's stream. Each returns cudaSuccess or the error of
// its launch; a family that cannot run a problem returns cudaErrorNotSupported and the handler
// reports it.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "problem.h"

namespace jax_na {

#define JAX_NA_DECLARE_FAMILY(name)                                                        \
  namespace name {                                                                         \
  cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream);                \
  size_t bwd_workspace_bytes(const Problem& p);                                            \
  cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream);                \
  }

JAX_NA_DECLARE_FAMILY(naive)
JAX_NA_DECLARE_FAMILY(gemm)
JAX_NA_DECLARE_FAMILY(fused)
JAX_NA_DECLARE_FAMILY(hopper)  // sm_90a wgmma forward and backward

#undef JAX_NA_DECLARE_FAMILY

namespace hopper {
// RD: the backward with delta = rowsum(dout * out) - dlse formed by its dQ kernel from d.out and
// d.dlse into d.delta, which its dK/dV kernel reads after it (cuda/hopper/row_delta.h); the
// handler passes the same buffer as a.delta to the repair launch after both. Where it pays:
// cuda/hopper/rd_rule.h.
cudaError_t bwd_rd(const Problem& p, const BwdArgs& a, const DeltaArgs& d, cudaStream_t stream);
}  // namespace hopper

}  // namespace jax_na
