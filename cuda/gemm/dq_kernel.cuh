// GEMM-family backward, query-stationary part: one block per (query tile, head, batch).
// Per chunk of the tile's key box: S = Q K^T and dP = dO V^T (tile GEMMs), P = exp(S - lse)
// inside each query's window (0 outside), dS = P (dP - delta) materialised in shared memory,
// dQ += dS K (third GEMM). dQ = scale * sum; no atomics.
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
__global__ void __launch_bounds__(kThreads, Cfg<T, D>::kDqMinBlocks)
    dq_kernel(const Problem p, const TileGrid tg, const T* __restrict__ q,
              const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
              const float* __restrict__ lse, const float* __restrict__ delta,
              T* __restrict__ dq, unsigned* nonfinite) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using L = DqLayout<T, D>;
  constexpr int BN = L::kChunk, LD = L::kLd, LDP = L::kLdP, NTS = BN / 8, NTO = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem + L::q);
  T* sDO = reinterpret_cast<T*>(smem + L::dout);
  T* sK = reinterpret_cast<T*>(smem + L::k);
  T* sV = reinterpret_cast<T*>(smem + L::v);
  T* sDS = reinterpret_cast<T*>(smem + L::ds);
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
  if (!tile_ctx(p, tg, tile, tc)) return;
  const int hk = int(h / p.group_size());

  if (tid < kRows) {
    int pos[3];
    s_qoff[tid] = tile_row_pos(tg, tc, tid, pos) ? (token_of(p, tc, b, pos) * p.heads + h) * D : -1;
  }
  RowWindow win[2];
  float lse2[2], dlt[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int pos[3];
    const int row = warp * 16 + (lane >> 2) + 8 * rr;
    const bool valid = tile_row_pos(tg, tc, row, pos);
    win[rr] = valid ? query_window(p, tc, pos) : empty_window();
    const int64_t r = valid ? (token_of(p, tc, b, pos) * p.heads + h) : -1;
    lse2[rr] = valid ? lse[r] * kLog2e : 0.f;
    dlt[rr] = valid ? delta[r] : 0.f;
  }
  const Box box = key_box(p, tc);
  __syncthreads();
  gather_rows<T, D, kRows, kThreads>(sQ, LD, q, s_qoff, tid);
  gather_rows<T, D, kRows, kThreads>(sDO, LD, dout, s_qoff, tid);

  float acc[NTO][4];
#pragma unroll
  for (int n = 0; n < NTO; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
  const float sl2 = p.scale * kLog2e;
  const T* sQw = sQ + warp * 16 * LD;
  const T* sDOw = sDO + warp * 16 * LD;
  T* sDSw = sDS + warp * 16 * LDP;

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

    float s[NTS][4], dp[NTS][4];
#pragma unroll
    for (int n = 0; n < NTS; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
    warp_gemm_nt<T, NTS, D>(s, sQw, LD, sK, LD, lane);
    warp_gemm_nt<T, NTS, D>(dp, sDOw, LD, sV, LD, lane);
#pragma unroll
    for (int n = 0; n < NTS; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = n * 8 + 2 * (lane & 3) + (e & 1), rr = e >> 1;
        const bool ok = win[rr].contains(s_kpos[col], s_kpos[BN + col], s_kpos[2 * BN + col]);
        const float pr = ok ? exp2f(s[n][e] * sl2 - lse2[rr]) : 0.f;
        s[n][e] = pr * (dp[n][e] - dlt[rr]);
      }
    }
    acc_to_smem<T, NTS>(s, sDSw, LDP, lane);
    __syncwarp();
    warp_gemm_nn<T, NTO, BN>(acc, sDSw, LDP, sK, LD, lane);
    __syncthreads();
  }

  __syncthreads();  // also when the loop ran zero times: the gathers above are done
  T* sOw = sQ + warp * 16 * LD;  // this warp's own Q rows
  acc_to_smem<T, NTO>(acc, sOw, LD, lane, p.scale);
  __syncwarp();
  warp_store_rows<T, D>(sOw, LD, dq, s_qoff + warp * 16, lane, nonfinite);
}

}  // namespace gemm
}  // namespace jax_na
