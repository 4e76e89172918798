// Programmatic dependent launch (sm_90+; no-ops on older GPUs): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start once every CTA of the kernel
// before it has called launch_dependents(), and waits in wait_for_primary() until that kernel
// has finished and its writes are visible. The tiled kernels allow it at their start, so the
// non-finite repair launch (cuda/repair/) is ready when they end instead of launching then.
// launch_maybe_dependent is the one host-side launch with that attribute (the repair, the
// Hopper dQ kernel after dK/dV, and the Hopper forward, which waits before touching global
// memory and lets its own dependents launch at its start).
#pragma once

#include <cuda_runtime.h>

namespace jax_na {

__device__ __forceinline__ void launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_primary() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Host: launch kernel(args...) on `stream`, as a programmatic dependent launch of the kernel
// before it when `dependent` (sm_90+ only), else as a plain launch.
template <typename... Params, typename... Args>
cudaError_t launch_maybe_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                   cudaStream_t stream, bool dependent, const Args&... args) {
  cudaLaunchAttribute pdl;
  pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  pdl.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = &pdl;
  cfg.numAttrs = dependent ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

}  // namespace jax_na
