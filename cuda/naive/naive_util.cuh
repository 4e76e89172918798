// Device helpers of the naive family: warp reductions, 16-byte row dot products and launch
// geometry. Conversions, token indexing and neighbourhood boxes: common/neighbourhood.cuh.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/problem.h"
#include "../common/neighbourhood.cuh"
#include "../common/window.h"

namespace jax_na {
namespace naive {
namespace detail {

using namespace nbhd;  // conversions, token and box helpers

// Neighbours (or, for dK/dV, attending queries) are visited in chunks of this many per warp.
constexpr int kChunk = 128;
constexpr int kMaxWarpsPerBlock = 8;
constexpr int kSmemBudget = 48 * 1024;  // per block, no opt-in needed

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// 16 bytes of a row, widened to float.
template <typename T> struct Vec16;
template <> struct Vec16<float> {
  static constexpr int kN = 4;
  __device__ __forceinline__ static void load(const float* p, float* o) {
    const float4 x = __ldg(reinterpret_cast<const float4*>(p));
    o[0] = x.x, o[1] = x.y, o[2] = x.z, o[3] = x.w;
  }
};
template <typename T> struct Vec16Half {
  static constexpr int kN = 8;
  __device__ __forceinline__ static void load(const T* p, float* o) {
    const uint4 x = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&x);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = to_f32(e[i]);
  }
};
template <> struct Vec16<__half> : Vec16Half<__half> {};
template <> struct Vec16<__nv_bfloat16> : Vec16Half<__nv_bfloat16> {};

// <a, row> with `a` in shared memory (float) and `row` a global row of D elements. Rows are
// 16-byte aligned when D * sizeof(T) is a multiple of 16 (XLA buffers are 16-byte aligned).
template <typename T>
__device__ __forceinline__ float dot_row(const float* a, const T* __restrict__ row, int D) {
  constexpr int kN = Vec16<T>::kN;
  float acc = 0.f;
  if (D % kN == 0) {
    for (int c = 0; c < D; c += kN) {
      float x[kN];
      Vec16<T>::load(row + c, x);
#pragma unroll
      for (int i = 0; i < kN; ++i) acc = fmaf(a[c + i], x[i], acc);
    }
  } else {
    for (int c = 0; c < D; ++c) acc = fmaf(a[c], to_f32(row[c]), acc);
  }
  return acc;
}

// Warps per block so that `per_warp` bytes of shared memory each fit the budget; 0 if none.
inline int warps_per_block(size_t per_warp) {
  const size_t w = kSmemBudget / per_warp;
  return int(w < size_t(kMaxWarpsPerBlock) ? w : size_t(kMaxWarpsPerBlock));
}

inline size_t align16(size_t x) { return (x + 15) & ~size_t(15); }

}  // namespace detail
}  // namespace naive
}  // namespace jax_na
