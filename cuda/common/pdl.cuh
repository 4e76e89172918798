// Programmatic dependent launch (sm_90+; no-ops on older GPUs): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start once every CTA of the kernel
// before it has called launch_dependents(), and waits in wait_for_primary() until that kernel
// has finished and its writes are visible. The tiled kernels allow it at their start, so the
// non-finite repair launch (cuda/repair/) is ready when they end instead of launching then.
#pragma once

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

}  // namespace jax_na
