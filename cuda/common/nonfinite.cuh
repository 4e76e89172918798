// The bit test behind the non-finite repair (cuda/repair/): does a 16-byte chunk of T hold a NaN
// or an Inf? The tiled kernels run it on every chunk they store and raise the call's flag; the
// repair kernel runs it to find the chunks to recompute.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace jax_na {

// All exponent bits set: NaN or +-Inf.
template <typename T>
__device__ __forceinline__ bool nonfinite16(const uint4& v) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  bool bad = false;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (sizeof(T) == 4) {
      bad |= (w[i] & 0x7f800000u) == 0x7f800000u;
    } else {
      constexpr uint32_t e = std::is_same_v<T, __half> ? 0x7c00u : 0x7f80u;
      bad |= (w[i] & e) == e || (w[i] & (e << 16)) == (e << 16);
    }
  }
  return bad;
}

// Raise *flag when the stored chunk v is not finite (every writer stores the same value).
template <typename T>
__device__ __forceinline__ void flag_nonfinite(const uint4& v, unsigned* flag) {
  if (nonfinite16<T>(v)) *flag = 1u;
}

}  // namespace jax_na
