// GEMM-family forward: one block per (query tile, head, batch).
// The tile's key neighbourhood (bounding box from tile_key_range) is gathered into shared
// memory chunk by chunk; per chunk S = Q K^T is a tile GEMM on tensor cores (FMA for float32),
// elements outside each query's window are masked, the attention weights P = exp(S - m) are
// materialised in shared memory (running max/sum over chunks), and O += P V is a second GEMM.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "../common/problem.h"
#include "config.cuh"
#include "smem_io.cuh"
#include "tile_geometry.cuh"
#include "warp_mma.cuh"

namespace jax_na {
namespace gemm {

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, Cfg<T, D>::kFwdMinBlocks)
    fwd_kernel(const Problem p, const TileGrid tg, const T* __restrict__ q,
               const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
               float* __restrict__ lse, unsigned* nonfinite) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using L = FwdLayout<T, D>;
  constexpr int BN = L::kChunk, LD = L::kLd, LDP = L::kLdP, NTS = BN / 8, NTO = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem + L::q);
  T* sK = reinterpret_cast<T*>(smem + L::k);
  T* sV = reinterpret_cast<T*>(smem + L::v);
  T* sP = reinterpret_cast<T*>(smem + L::p);
  int64_t* s_qoff = reinterpret_cast<int64_t*>(smem + L::qoff);
  int64_t* s_koff = reinterpret_cast<int64_t*>(smem + L::koff);
  int* s_kpos = reinterpret_cast<int*>(smem + L::kpos);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  int64_t blk = blockIdx.x;
  const int64_t tile = blk % tg.count;
  blk /= tg.count;
  const int h = int(blk % p.heads);
  const int64_t b = blk / p.heads;
  TileCtx tc;
  if (!tile_ctx(p, tg, tile, tc)) return;  // uniform over the block
  const int hk = int(h / p.group_size());

  if (tid < kRows) {
    int pos[3];
    s_qoff[tid] = tile_row_pos(tg, tc, tid, pos) ? (token_of(p, tc, b, pos) * p.heads + h) * D : -1;
  }
  RowWindow win[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int pos[3];
    const int row = warp * 16 + (lane >> 2) + 8 * rr;
    win[rr] = tile_row_pos(tg, tc, row, pos) ? query_window(p, tc, pos) : empty_window();
  }
  const Box box = key_box(p, tc);
  __syncthreads();
  gather_rows<T, D, kRows, kThreads>(sQ, LD, q, s_qoff, tid);

  float o[NTO][4];
#pragma unroll
  for (int n = 0; n < NTO; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float sl2 = p.scale * kLog2e;
  const T* sQw = sQ + warp * 16 * LD;
  T* sPw = sP + warp * 16 * LDP;

  for (int j0 = 0; j0 < box.count; j0 += BN) {
    if (tid < BN) {
      const int j = j0 + tid;
      int pos[3] = {-1, -1, -1};
      int64_t off = -1;
      if (j < box.count) {
        box_pos(box, j, pos);
        off = (token_of(p, tc, b, pos) * p.heads_kv + hk) * D;
      }
      s_koff[tid] = off;
      s_kpos[tid] = pos[0];
      s_kpos[BN + tid] = pos[1];
      s_kpos[2 * BN + tid] = pos[2];
    }
    __syncthreads();
    gather_rows<T, D, BN, kThreads>(sK, LD, k, s_koff, tid);
    gather_rows<T, D, BN, kThreads>(sV, LD, v, s_koff, tid);
    __syncthreads();

    float s[NTS][4];
#pragma unroll
    for (int n = 0; n < NTS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
    warp_gemm_nt<T, NTS, D>(s, sQw, LD, sK, LD, lane);

    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < NTS; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + 2 * (lane & 3) + (e & 1);
        const bool ok = win[e >> 1].contains(s_kpos[col], s_kpos[BN + col], s_kpos[2 * BN + col]);
        s[n][e] = ok ? s[n][e] * sl2 : -INFINITY;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    }
    float alpha[2], mu[2], sum[2] = {0.f, 0.f};
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float m_new = fmaxf(m[rr], quad_max(mx[rr]));
      mu[rr] = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing seen yet stays at 0
      alpha[rr] = exp2f(m[rr] - mu[rr]);
      m[rr] = m_new;
    }
#pragma unroll
    for (int n = 0; n < NTS; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - mu[e >> 1]);
        sum[e >> 1] += s[n][e];
      }
    }
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) l[rr] = l[rr] * alpha[rr] + sum[rr];  // per-thread partial
#pragma unroll
    for (int n = 0; n < NTO; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    acc_to_smem<T, NTS>(s, sPw, LDP, lane);
    __syncwarp();
    warp_gemm_nn<T, NTO, BN>(o, sPw, LDP, sV, LD, lane);
    __syncthreads();  // sK / sV / offsets are rewritten next chunk
  }

  __syncthreads();  // also when the loop ran zero times: the gathers above are done
  float inv[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    l[rr] = quad_sum(l[rr]);
    inv[rr] = l[rr] > 0.f ? 1.f / l[rr] : 0.f;
  }
#pragma unroll
  for (int n = 0; n < NTO; ++n) {
    o[n][0] *= inv[0];
    o[n][1] *= inv[0];
    o[n][2] *= inv[1];
    o[n][3] *= inv[1];
  }
  // Stage through this warp's own Q rows (only this warp reads them), then 16-byte stores.
  T* sOw = sQ + warp * 16 * LD;
  acc_to_smem<T, NTO>(o, sOw, LD, lane);
  __syncwarp();
  warp_store_rows<T, D>(sOw, LD, out, s_qoff + warp * 16, lane, nonfinite);
  if ((lane & 3) == 0) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int64_t off = s_qoff[warp * 16 + (lane >> 2) + 8 * rr];
      if (off >= 0) lse[off / D] = (m[rr] + log2f(l[rr])) * kLn2;
    }
  }
}

}  // namespace gemm
}  // namespace jax_na
