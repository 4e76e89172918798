// Shared body of bwd_{dq,dkdv}_{f16,bf16}.cu: the backward launchers for head_dim 64 and 128.
// Each of those files includes its kernel header, then this one, and invokes
// JAX_NA_HOPPER_INSTANTIATE_BWD once.
#pragma once

#include <cuda_runtime.h>

#include "../fused/instantiate.h"
#include "../fused/params.h"
#include "launch.h"

// Define hopper::LAUNCH<T> (declared in launch.h) for head_dim 64 and 128: CONFIG<T, D> gives the
// tile configuration, KERNEL<T, D> the kernel, STATIONARY (kQuery or kKey) the stationary side.
#define JAX_NA_HOPPER_INSTANTIATE_BWD(LAUNCH, CONFIG, KERNEL, T, STATIONARY)                  \
  namespace jax_na {                                                                         \
  namespace hopper {                                                                         \
  template <>                                                                                \
  cudaError_t LAUNCH<T>(fused::KernelParams p, int head_dim, cudaStream_t stream) {          \
    using fused::Stationary;                                                                 \
    if (head_dim == 64)                                                                      \
      return fused::launch_tiles<CONFIG<T, 64>, Stationary::STATIONARY>(KERNEL<T, 64>, p,    \
                                                                        stream);             \
    if (head_dim == 128)                                                                     \
      return fused::launch_tiles<CONFIG<T, 128>, Stationary::STATIONARY>(KERNEL<T, 128>, p,  \
                                                                         stream);            \
    return cudaErrorNotSupported;                                                            \
  }                                                                                          \
  }                                                                                          \
  }
