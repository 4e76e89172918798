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

// Bit 15 of a 16-bit lane is set if that lane of the word w is a NaN or an Inf (all exponent
// bits e set), or if the lane below it is one (a borrow): exact for "is any lane one". The
// lanes of y = (w & e) ^ e are zero exactly there, and below 2^15, so a zero lane is the only
// way for y - 1 to set bit 15 of a lane without a borrow.
template <uint32_t e>
__host__ __device__ __forceinline__ uint32_t nonfinite_lanes16(uint32_t w) {
  constexpr uint32_t e2 = e | (e << 16);
  const uint32_t y = (w & e2) ^ e2;
  return (y - 0x00010001u) & ~y & 0x80008000u;
}

// All exponent bits set: NaN or +-Inf.
template <typename T>
__device__ __forceinline__ bool nonfinite16(const uint4& v) {
  if constexpr (sizeof(T) == 4) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
    bool bad = false;
#pragma unroll
    for (int i = 0; i < 4; ++i) bad |= (w[i] & 0x7f800000u) == 0x7f800000u;
    return bad;
  } else {
    constexpr uint32_t e = std::is_same_v<T, __half> ? 0x7c00u : 0x7f80u;
    return (nonfinite_lanes16<e>(v.x) | nonfinite_lanes16<e>(v.y) | nonfinite_lanes16<e>(v.z) |
            nonfinite_lanes16<e>(v.w)) != 0u;
  }
}

// Raise *flag when the stored chunk v is not finite (every writer stores the same value).
template <typename T>
__device__ __forceinline__ void flag_nonfinite(const uint4& v, unsigned* flag) {
  if (nonfinite16<T>(v)) *flag = 1u;
}

}  // namespace jax_na
