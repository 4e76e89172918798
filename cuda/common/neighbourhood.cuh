// Token indexing, the neighbourhood of one token as a box of positions and float conversions, on
// the device: what the pair-by-pair code walks (the naive family, and the exact recomputation of
// the non-finite repair, cuda/repair/). Window math comes from window.h only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "problem.h"
#include "window.h"

namespace jax_na {
namespace nbhd {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
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

// Row `row` of a [batch, tokens, nheads] tensor: its batch element, head and coordinates.
struct RowPos {
  int64_t b;
  int head;
  int x[3];
};

__device__ __forceinline__ RowPos row_pos(const Problem& p, int64_t row, int64_t nheads) {
  RowPos r;
  r.head = int(row % nheads);
  const int64_t bt = row / nheads;
  r.b = bt / p.tokens();
  token_coords(p, bt % p.tokens(), r.x);
  return r;
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

// Key/value row (head hk of batch element b) of element j of a box of keys.
__device__ __forceinline__ int64_t key_row(const Problem& p, const Box& box, int64_t b, int j,
                                           int hk) {
  int kx[3];
  box_coords(box, j, kx);
  return token_index(p, b, kx) * p.heads_kv + hk;
}

// Query row of pair j of a box of queries times key/value head hk's GQA group (query j / G,
// query head hk * G + j % G).
__device__ __forceinline__ int64_t query_row(const Problem& p, const Box& box, int64_t b, int j,
                                             int hk) {
  const int G = int(p.group_size());
  int qx[3];
  box_coords(box, j / G, qx);
  return token_index(p, b, qx) * p.heads + int64_t(hk) * G + j % G;
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

}  // namespace nbhd
}  // namespace jax_na
