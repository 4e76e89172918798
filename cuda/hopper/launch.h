// Host side of the Hopper family: the per-dtype launchers (forward in fwd_{f16,bf16}.cu through
// instantiate.h; backward in bwd_{dq,dkdv}[_rd]_{f16,bf16}.cu through instantiate_bwd.h; one
// file each for parallel compilation).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../common/problem.h"
#include "../fused/params.h"

namespace jax_na {
namespace hopper {

// head_dim 32, 64, 128 or 256 (else cudaErrorNotSupported); T = __half or __nv_bfloat16; sms: the
// device's SM count (the persistent kernel's grid). Leaves out exact: non-finite chunks
// repaired in the kernel, or by a repair launch after it (cuda/repair/).
template <typename T>
cudaError_t launch_fwd(const Problem& pr, const FwdArgs& a, fused::KernelParams p, int head_dim,
                       int sms, cudaStream_t stream);
template <> cudaError_t launch_fwd<__half>(const Problem&, const FwdArgs&, fused::KernelParams, int,
                                           int, cudaStream_t);
template <> cudaError_t launch_fwd<__nv_bfloat16>(const Problem&, const FwdArgs&,
                                                  fused::KernelParams, int, int, cudaStream_t);
// Backward, the same head dims and types: dK/dV (key-stationary), then dQ (query-stationary);
// RD (row_delta.h): dQ forming delta, then dK/dV reading it (the _rd launchers).
#define JAX_NA_HOPPER_DECLARE_BWD(LAUNCH)                                           \
  template <typename T>                                                             \
  cudaError_t LAUNCH(fused::KernelParams p, int head_dim, cudaStream_t stream);     \
  template <> cudaError_t LAUNCH<__half>(fused::KernelParams, int, cudaStream_t);   \
  template <> cudaError_t LAUNCH<__nv_bfloat16>(fused::KernelParams, int, cudaStream_t);
JAX_NA_HOPPER_DECLARE_BWD(launch_bwd_dkdv)
JAX_NA_HOPPER_DECLARE_BWD(launch_bwd_dq)
JAX_NA_HOPPER_DECLARE_BWD(launch_bwd_dq_rd)
JAX_NA_HOPPER_DECLARE_BWD(launch_bwd_dkdv_rd)
#undef JAX_NA_HOPPER_DECLARE_BWD

}  // namespace hopper
}  // namespace jax_na
