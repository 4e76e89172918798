// Host side of the Hopper family: the per-dtype forward launchers (defined in fwd_{f16,bf16}.cu,
// one each for parallel compilation, through instantiate.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../fused/params.h"

namespace jax_na {
namespace hopper {

// head_dim 64 or 128 (else cudaErrorNotSupported); T = __half or __nv_bfloat16.
template <typename T>
cudaError_t launch_fwd(fused::KernelParams p, int head_dim, cudaStream_t stream);
template <> cudaError_t launch_fwd<__half>(fused::KernelParams, int, cudaStream_t);
template <> cudaError_t launch_fwd<__nv_bfloat16>(fused::KernelParams, int, cudaStream_t);

}  // namespace hopper
}  // namespace jax_na
