// float32 path of the fused family: exact fp32 (SIMT, no tensor cores), one warp per row.
//
// Forward and dQ: a warp per query walks its window (window_of per dim) with an online softmax;
// lane l holds head-dim elements l, l+32, ... (coalesced row loads), dot products by shuffles.
// dK/dV: a warp per key walks its inverse neighbourhood (key_tile_query_range of the single key,
// per dim: exactly the queries that see it) for every query head of its GQA group. Deterministic.
#pragma once

#include <cmath>
#include <cstdint>

#include "params.h"

namespace jax_na {
namespace fused {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Row index of the token at coordinates (x0, x1, x2), head `head` of `nheads`.
__device__ __forceinline__ int64_t simt_token_row(const KernelParams& p, int64_t b, int x0, int x1,
                                                  int x2, int head, int nheads) {
  return (b * p.tokens + (int64_t(x0) * p.L[1] + x1) * p.L[2] + x2) * nheads + head;
}

struct SimtRow {
  int64_t b;
  int head;
  int x[3];
};

__device__ __forceinline__ SimtRow simt_row(const KernelParams& p, int64_t row, int nheads) {
  SimtRow r;
  r.head = int(row % nheads);
  const int64_t t = row / nheads;
  const int64_t tok = t % p.tokens;
  r.b = t / p.tokens;
  r.x[2] = int(tok % p.L[2]);
  r.x[1] = int((tok / p.L[2]) % p.L[1]);
  r.x[0] = int(tok / (int64_t(p.L[2]) * p.L[1]));
  return r;
}

__device__ __forceinline__ DimParams dim_params(const KernelParams& p, int i) {
  return DimParams{p.L[i], p.ker[i], p.str[i], p.dil[i], p.causal[i] != 0};
}

// CTAs per SM that the kernels ask __launch_bounds__ for (at most 72 registers). With no hint
// ptxas stops at 48-64 registers and spills (dK/dV at head_dim 32, dQ at 128 on sm_90a, the
// forward at 128 on sm_80); 7 fits every head_dim spill-free.
constexpr int kSimtMinBlocks = 7;

template <int NC>
__global__ void __launch_bounds__(128, kSimtMinBlocks) simt_f32_fwd_kernel(const KernelParams p) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t total = p.batch * p.tokens * p.heads;
  constexpr int D = 32 * NC;
  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  float* out = static_cast<float*>(p.out);
  for (int64_t row = int64_t(blockIdx.x) * 4 + warp; row < total; row += int64_t(gridDim.x) * 4) {
    const SimtRow r = simt_row(p, row, p.heads);
    const int kvh = r.head / p.group_size;
    Window w[3];
    int g[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      w[i] = window_of(r.x[i], dim_params(p, i));
      g[i] = r.x[i] % p.dil[i];
    }
    float qv[NC], o[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      qv[c] = q[row * D + lane + 32 * c];
      o[c] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int p0 = w[0].start; p0 < w[0].end; ++p0)
      for (int p1 = w[1].start; p1 < w[1].end; ++p1)
        for (int p2 = w[2].start; p2 < w[2].end; ++p2) {
          const int64_t kr = simt_token_row(p, r.b, p0 * p.dil[0] + g[0], p1 * p.dil[1] + g[1],
                                            p2 * p.dil[2] + g[2], kvh, p.heads_kv) * D;
          float dot = 0.f;
#pragma unroll
          for (int c = 0; c < NC; ++c) dot = fmaf(qv[c], k[kr + lane + 32 * c], dot);
          const float s = warp_sum(dot) * p.scale;
          const float m_new = fmaxf(m, s);
          const float alpha = expf(m - m_new);
          const float e = expf(s - m_new);
          l = l * alpha + e;
#pragma unroll
          for (int c = 0; c < NC; ++c) o[c] = fmaf(o[c], alpha, e * v[kr + lane + 32 * c]);
          m = m_new;
        }
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int c = 0; c < NC; ++c) out[row * D + lane + 32 * c] = o[c] * inv;
    if (lane == 0) p.lse_out[row] = l > 0.f ? m + logf(l) : -INFINITY;
  }
}

template <int NC>
__global__ void __launch_bounds__(128, kSimtMinBlocks)
    simt_f32_dq_kernel(const KernelParams p) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t total = p.batch * p.tokens * p.heads;
  constexpr int D = 32 * NC;
  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  const float* dout = static_cast<const float*>(p.dout);
  float* dq = static_cast<float*>(p.dq);
  for (int64_t row = int64_t(blockIdx.x) * 4 + warp; row < total; row += int64_t(gridDim.x) * 4) {
    const SimtRow r = simt_row(p, row, p.heads);
    const int kvh = r.head / p.group_size;
    Window w[3];
    int g[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      w[i] = window_of(r.x[i], dim_params(p, i));
      g[i] = r.x[i] % p.dil[i];
    }
    float qv[NC], dov[NC], acc[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      qv[c] = q[row * D + lane + 32 * c];
      dov[c] = dout[row * D + lane + 32 * c];
      acc[c] = 0.f;
    }
    const float lse = p.lse_in[row], delta = p.delta[row];
    for (int p0 = w[0].start; p0 < w[0].end; ++p0)
      for (int p1 = w[1].start; p1 < w[1].end; ++p1)
        for (int p2 = w[2].start; p2 < w[2].end; ++p2) {
          const int64_t kr = simt_token_row(p, r.b, p0 * p.dil[0] + g[0], p1 * p.dil[1] + g[1],
                                            p2 * p.dil[2] + g[2], kvh, p.heads_kv) * D;
          float sd = 0.f, dd = 0.f;
#pragma unroll
          for (int c = 0; c < NC; ++c) {
            sd = fmaf(qv[c], k[kr + lane + 32 * c], sd);
            dd = fmaf(dov[c], v[kr + lane + 32 * c], dd);
          }
          const float s = warp_sum(sd) * p.scale;
          const float dp = warp_sum(dd);
          const float ds = expf(s - lse) * (dp - delta);
#pragma unroll
          for (int c = 0; c < NC; ++c) acc[c] = fmaf(ds, k[kr + lane + 32 * c], acc[c]);
        }
#pragma unroll
    for (int c = 0; c < NC; ++c) dq[row * D + lane + 32 * c] = acc[c] * p.scale;
  }
}

template <int NC>
__global__ void __launch_bounds__(128, kSimtMinBlocks)
    simt_f32_dkdv_kernel(const KernelParams p) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t total = p.batch * p.tokens * p.heads_kv;
  constexpr int D = 32 * NC;
  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  const float* dout = static_cast<const float*>(p.dout);
  float* dk = static_cast<float*>(p.dk);
  float* dv = static_cast<float*>(p.dv);
  for (int64_t row = int64_t(blockIdx.x) * 4 + warp; row < total; row += int64_t(gridDim.x) * 4) {
    const SimtRow r = simt_row(p, row, p.heads_kv);
    Window w[3];
    int g[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      g[i] = r.x[i] % p.dil[i];
      const int Lg = group_extent(p.L[i], p.dil[i], g[i]);
      const int kp = r.x[i] / p.dil[i];
      w[i] = key_tile_query_range(kp, kp + 1, Lg, p.ker[i], p.str[i], p.causal[i] != 0);
    }
    float kv[NC], vv[NC], adk[NC], adv[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      kv[c] = k[row * D + lane + 32 * c];
      vv[c] = v[row * D + lane + 32 * c];
      adk[c] = adv[c] = 0.f;
    }
    for (int j = 0; j < p.group_size; ++j) {
      const int head = r.head * p.group_size + j;
      for (int p0 = w[0].start; p0 < w[0].end; ++p0)
        for (int p1 = w[1].start; p1 < w[1].end; ++p1)
          for (int p2 = w[2].start; p2 < w[2].end; ++p2) {
            const int64_t qr = simt_token_row(p, r.b, p0 * p.dil[0] + g[0], p1 * p.dil[1] + g[1],
                                              p2 * p.dil[2] + g[2], head, p.heads);
            float sd = 0.f, dd = 0.f;
            float qv[NC], dov[NC];
#pragma unroll
            for (int c = 0; c < NC; ++c) {
              qv[c] = q[qr * D + lane + 32 * c];
              dov[c] = dout[qr * D + lane + 32 * c];
              sd = fmaf(qv[c], kv[c], sd);
              dd = fmaf(dov[c], vv[c], dd);
            }
            const float s = warp_sum(sd) * p.scale;
            const float dp = warp_sum(dd);
            const float pr = expf(s - p.lse_in[qr]);
            const float ds = pr * (dp - p.delta[qr]);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
              adv[c] = fmaf(pr, dov[c], adv[c]);
              adk[c] = fmaf(ds, qv[c], adk[c]);
            }
          }
    }
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      dk[row * D + lane + 32 * c] = adk[c] * p.scale;
      dv[row * D + lane + 32 * c] = adv[c];
    }
  }
}

}  // namespace fused
}  // namespace jax_na
