// One 16-byte chunk of out, dq, dk or dv recomputed pair by pair over the neighbourhood, exactly
// as the semantics define it (the naive family's arithmetic): what the repair kernel stores over
// a chunk that a tiled kernel left non-finite.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "../common/neighbourhood.cuh"
#include "../common/problem.h"

namespace jax_na {
namespace repair {

enum class Quantity { kOut, kDq, kDk, kDv };

template <typename T>
__device__ __forceinline__ float dot(const T* __restrict__ a, const T* __restrict__ b, int D) {
  float s = 0.f;
#pragma unroll 1  // a cold path: few registers, not speed
  for (int c = 0; c < D; ++c) s = fmaf(nbhd::to_f32(a[c]), nbhd::to_f32(b[c]), s);
  return s;
}

// Elements [c0, c0 + N) of row `row` of quantity `what` (rows of out/dq: [batch, tokens, heads];
// of dk/dv: [batch, tokens, heads_kv]). `a` holds the tensors the formulas read, of element type
// T (the forward's only q, k and v).
template <typename T, int N>
__device__ __forceinline__ void exact_chunk(const Problem& p, const BwdArgs& a, Quantity what,
                                            int64_t row, int c0, float (&acc)[N]) {
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* dout = static_cast<const T*>(a.dout);
  const int D = int(p.head_dim);
  const bool key_rows = what == Quantity::kDk || what == Quantity::kDv;
  const nbhd::RowPos rp = nbhd::row_pos(p, row, key_rows ? p.heads_kv : p.heads);
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = 0.f;

  if (key_rows) {  // the queries whose window holds the key, times the GQA group's heads
    const nbhd::Box box = nbhd::attending_box(p, rp.x);
    for (int j = 0; j < box.count * int(p.group_size()); ++j) {
      const int64_t qr = nbhd::query_row(p, box, rp.b, j, rp.head);
      const float pr = expf(dot(k + row * D, q + qr * D, D) * p.scale - a.lse[qr]);
      const T* src = dout + qr * D;
      float w = pr;
      if (what == Quantity::kDk) {
        w = pr * (dot(v + row * D, dout + qr * D, D) - a.delta[qr]) * p.scale;
        src = q + qr * D;
      }
#pragma unroll
      for (int i = 0; i < N; ++i) acc[i] = fmaf(w, nbhd::to_f32(src[c0 + i]), acc[i]);
    }
    return;
  }

  const nbhd::Box box = nbhd::neighbour_box(p, rp.x);
  const int hk = int(rp.head / p.group_size());
  auto key = [&](int j) { return nbhd::key_row(p, box, rp.b, j, hk) * D; };
  const T* qr = q + row * D;
  if (what == Quantity::kDq) {
    for (int j = 0; j < box.count; ++j) {
      const int64_t kr = key(j);
      const float pr = expf(dot(qr, k + kr, D) * p.scale - a.lse[row]);
      const float ds = pr * (dot(dout + row * D, v + kr, D) - a.delta[row]) * p.scale;
#pragma unroll
      for (int i = 0; i < N; ++i) acc[i] = fmaf(ds, nbhd::to_f32(k[kr + c0 + i]), acc[i]);
    }
    return;
  }
  // Forward: max, then the weighted sum. fmaxf skips a NaN score; exp(NaN - m) then makes the
  // entry NaN, as the semantics do.
  float m = -INFINITY, l = 0.f;
  for (int j = 0; j < box.count; ++j) m = fmaxf(m, dot(qr, k + key(j), D) * p.scale);
  for (int j = 0; j < box.count; ++j) {
    const int64_t kr = key(j);
    const float e = expf(dot(qr, k + kr, D) * p.scale - m);
    l += e;
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = fmaf(e, nbhd::to_f32(v[kr + c0 + i]), acc[i]);
  }
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] /= l;
}

// The 16-byte chunk at `at`, elements [c0, c0 + 16 / sizeof(T)) of row `row` of `what`,
// recomputed by exact_chunk and stored over itself as T.
template <typename T>
__device__ __forceinline__ void store_exact_chunk(const Problem& p, const BwdArgs& a, Quantity what,
                                                  int64_t row, int c0, uint4* at) {
  constexpr int kN = 16 / sizeof(T);
  float acc[kN];
  exact_chunk<T, kN>(p, a, what, row, c0, acc);
  uint4 v;
  T* o = reinterpret_cast<T*>(&v);
#pragma unroll
  for (int i = 0; i < kN; ++i) o[i] = nbhd::from_f32<T>(acc[i]);
  *at = v;
}

}  // namespace repair
}  // namespace jax_na
