// Host side of the fused family: per-(direction, dtype) launchers (one .cu each, for parallel
// compilation) and the shared launch helper.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../common/pdl.cuh"
#include "params.h"
#include "problem.h"
#include "tile_scheduler.h"

namespace jax_na {
namespace fused {

// Problem -> kernel parameters without tensors (geometry, scale): cudaSuccess,
// cudaErrorNotSupported (dtype, more than 2^31 - 1 tokens) or cudaErrorInvalidValue; each
// family checks the head dims it supports itself.
cudaError_t make_kernel_params(const Problem& pr, KernelParams& p);
// ... plus the forward's tensors (cudaErrorInvalidValue if one is null on a nonempty batch).
cudaError_t make_fwd_params(const Problem& pr, const FwdArgs& a, KernelParams& p);
// ... plus the backward's tensors (the same rule).
cudaError_t make_bwd_params(const Problem& pr, const BwdArgs& a, KernelParams& p);

// Tensor-core paths (T = __half or __nv_bfloat16); head_dim 32, 64 or 128.
template <typename T>
cudaError_t launch_fwd(KernelParams p, int head_dim, cudaStream_t stream);
template <typename T>
cudaError_t launch_bwd_dq(KernelParams p, int head_dim, cudaStream_t stream);
template <typename T>
cudaError_t launch_bwd_dkdv(KernelParams p, int head_dim, cudaStream_t stream);
// Defined in fwd_{f16,bf16}.cu, bwd_dq_{f16,bf16}.cu, bwd_dkdv_{f16,bf16}.cu.
#define JAX_NA_FUSED_DECLARE(T)                                                   \
  template <> cudaError_t launch_fwd<T>(KernelParams, int, cudaStream_t);         \
  template <> cudaError_t launch_bwd_dq<T>(KernelParams, int, cudaStream_t);      \
  template <> cudaError_t launch_bwd_dkdv<T>(KernelParams, int, cudaStream_t);
JAX_NA_FUSED_DECLARE(__half)
JAX_NA_FUSED_DECLARE(__nv_bfloat16)
#undef JAX_NA_FUSED_DECLARE

// float32 SIMT paths.
cudaError_t launch_simt_f32_fwd(const KernelParams& p, int head_dim, cudaStream_t stream);
cudaError_t launch_simt_f32_bwd(const KernelParams& p, int head_dim, cudaStream_t stream);

// Set the column-mask replication constants for the chosen tile shapes.
inline void set_mask_constants(KernelParams& p) {
  p.rep_q12 = repeat_every(1 << (p.ts.qlog[1] + p.ts.qlog[2]));
  p.rep_q2 = repeat_every(1 << p.ts.qlog[2]);
  p.rep_k12 = repeat_every(1 << (p.ts.klog[1] + p.ts.klog[2]));
  p.rep_k2 = repeat_every(1 << p.ts.klog[2]);
}

// Launch `ctas` CTAs of `kernel` (1-D grid, split into launches of at most 2^31 - 1 CTAs);
// `more` follows the parameter block in the kernel's arguments. kDependent (sm_90 kernels only):
// programmatic dependent launch (common/pdl.cuh), for a kernel that reads nothing the kernel
// before it writes and calls wait_for_primary() before it exits.
template <bool kDependent = false, typename Kernel, typename... More>
cudaError_t launch_ctas(Kernel kernel, KernelParams p, int64_t ctas, int threads, int smem,
                        cudaStream_t stream, const More&... more) {
  if (ctas <= 0) return cudaSuccess;
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
  }
  constexpr int64_t kMaxGrid = 0x7fffffff;
  for (int64_t off = 0; off < ctas; off += kMaxGrid) {
    p.cta_offset = off;
    const int64_t n = ctas - off < kMaxGrid ? ctas - off : kMaxGrid;
    if constexpr (kDependent) {
      const cudaError_t e = launch_maybe_dependent(kernel, dim3(unsigned(n)), dim3(threads),
                                                   size_t(smem), stream, true, p, more...);
      if (e != cudaSuccess) return e;
    } else {
      kernel<<<dim3(unsigned(n)), dim3(threads), smem, stream>>>(p, more...);
      const cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess) return e;
    }
  }
  return cudaSuccess;
}

}  // namespace fused
}  // namespace jax_na
