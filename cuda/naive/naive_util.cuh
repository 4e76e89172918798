// Device helpers of the naive family: dtype conversion, warp reductions, token indexing and
// the neighbourhood of one token as a box of positions. Window math comes from window.h only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../common/problem.h"
#include "../common/window.h"

namespace jax_na {
namespace naive {
namespace detail {

// Neighbours (or, for dK/dV, attending queries) are visited in chunks of this many per warp.
constexpr int kChunk = 128;
constexpr int kMaxWarpsPerBlock = 8;
constexpr int kSmemBudget = 48 * 1024;  // per block, no opt-in needed

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

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

// Spatial coordinates of token index t (row-major [X0, X1, X2]).
__device__ __forceinline__ void token_coords(const Problem& p, int64_t t, int x[3]) {
  x[2] = int(t % p.dim[2].extent);
  t /= p.dim[2].extent;
  x[1] = int(t % p.dim[1].extent);
  x[0] = int(t / p.dim[1].extent);
}

__device__ __forceinline__ int64_t token_index(const Problem& p, int64_t b, const int x[3]) {
  return ((b * p.dim[0].extent + x[0]) * p.dim[1].extent + x[1]) * int64_t(p.dim[2].extent) + x[2];
}

// A box of positions in one dilation group: coordinate along dim i of box element (j0, j1, j2)
// is (start[i] + j_i) * dil[i] + grp[i].
struct Box {
  int start[3], size[3], dil[3], grp[3];
  int count;
};

__device__ __forceinline__ void box_coords(const Box& b, int j, int x[3]) {
  const int j2 = j % b.size[2];
  j /= b.size[2];
  const int j1 = j % b.size[1];
  const int j0 = j / b.size[1];
  x[0] = (b.start[0] + j0) * b.dil[0] + b.grp[0];
  x[1] = (b.start[1] + j1) * b.dil[1] + b.grp[1];
  x[2] = (b.start[2] + j2) * b.dil[2] + b.grp[2];
}

// The neighbours (keys) of the query at coordinates x.
__device__ __forceinline__ Box neighbour_box(const Problem& p, const int x[3]) {
  Box b;
  b.count = 1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const Window w = window_of(x[i], p.dim[i]);
    b.start[i] = w.start;
    b.size[i] = w.end - w.start;
    b.dil[i] = p.dim[i].dilation;
    b.grp[i] = x[i] % p.dim[i].dilation;
    b.count *= b.size[i];
  }
  return b;
}

// The queries whose neighbourhood holds the key at coordinates x (inverse neighbourhood).
__device__ __forceinline__ Box attending_box(const Problem& p, const int x[3]) {
  Box b;
  b.count = 1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const DimParams& dp = p.dim[i];
    const int g = x[i] % dp.dilation, kp = x[i] / dp.dilation;
    const int lg = group_extent(dp.extent, dp.dilation, g);
    const Window w = key_tile_query_range(kp, kp + 1, lg, dp.kernel, dp.stride, dp.causal);
    b.start[i] = w.start;
    b.size[i] = w.end - w.start;
    b.dil[i] = dp.dilation;
    b.grp[i] = g;
    b.count *= b.size[i];
  }
  return b;
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
