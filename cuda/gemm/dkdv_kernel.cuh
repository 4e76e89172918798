// GEMM-family backward, key-stationary part: one block per (key tile, kv head, batch).
// The queries that can see the tile (inverse neighbourhood, key_tile_query_range) times the
// query heads of the GQA group are visited chunk by chunk: S^T = K Q^T and dP^T = V dO^T (tile
// GEMMs), P^T = exp(S^T - lse) where the key is in the query's window (0 elsewhere),
// dS^T = P^T (dP^T - delta), then dV += P^T dO and dK += dS^T Q. Each key's gradient is owned
// by one block: deterministic, no atomics.
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
__global__ void __launch_bounds__(kThreads, Cfg<T, D>::kKvMinBlocks)
    dkdv_kernel(const Problem p, const TileGrid tg, const T* __restrict__ q,
                const T* __restrict__ k, const T* __restrict__ v, const T* __restrict__ dout,
                const float* __restrict__ lse, const float* __restrict__ delta,
                T* __restrict__ dk, T* __restrict__ dv, unsigned* nonfinite) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using L = DkvLayout<T, D>;
  constexpr int BQ = L::kChunk, LD = L::kLd, LDP = L::kLdP, NTS = BQ / 8, NTO = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sK = reinterpret_cast<T*>(smem + L::k);
  T* sV = reinterpret_cast<T*>(smem + L::v);
  T* sQ = reinterpret_cast<T*>(smem + L::q);
  T* sDO = reinterpret_cast<T*>(smem + L::dout);
  T* sP = reinterpret_cast<T*>(smem + L::p);
  T* sDS = reinterpret_cast<T*>(smem + L::ds);
  int64_t* s_koff = reinterpret_cast<int64_t*>(smem + L::koff);
  int64_t* s_qoff = reinterpret_cast<int64_t*>(smem + L::qoff);
  float* s_lse = reinterpret_cast<float*>(smem + L::lse);
  float* s_dlt = reinterpret_cast<float*>(smem + L::delta);
  int* s_qwin = reinterpret_cast<int*>(smem + L::qwin);  // start[3][BQ], len[3][BQ]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  int64_t blk = blockIdx.x;
  const int64_t tile = blk % tg.count;
  blk /= tg.count;
  const int hk = int(blk % p.heads_kv);
  const int64_t b = blk / p.heads_kv;
  TileCtx tc;
  if (!tile_ctx(p, tg, tile, tc)) return;
  const int G = int(p.group_size());

  if (tid < kRows) {
    int pos[3];
    s_koff[tid] = tile_row_pos(tg, tc, tid, pos) ? (token_of(p, tc, b, pos) * p.heads_kv + hk) * D : -1;
  }
  int kpos[2][3];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int pos[3];
    const int row = warp * 16 + (lane >> 2) + 8 * rr;
    const bool valid = tile_row_pos(tg, tc, row, pos);
#pragma unroll
    for (int i = 0; i < 3; ++i) kpos[rr][i] = valid ? pos[i] : -1;
  }
  const Box box = query_box(p, tc);
  __syncthreads();
  gather_rows<T, D, kRows, kThreads>(sK, LD, k, s_koff, tid);
  gather_rows<T, D, kRows, kThreads>(sV, LD, v, s_koff, tid);

  float dk_acc[NTO][4], dv_acc[NTO][4];
#pragma unroll
  for (int n = 0; n < NTO; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.f;
  const float sl2 = p.scale * kLog2e;
  const T* sKw = sK + warp * 16 * LD;
  const T* sVw = sV + warp * 16 * LD;
  T* sPw = sP + warp * 16 * LDP;
  T* sDSw = sDS + warp * 16 * LDP;

  for (int gi = 0; gi < G; ++gi) {
    const int64_t h = int64_t(hk) * G + gi;
    for (int j0 = 0; j0 < box.count; j0 += BQ) {
      if (tid < BQ) {
        const int j = j0 + tid;
        int64_t off = -1;
        float row_lse = 0.f, row_dlt = 0.f;
        RowWindow w = empty_window();
        if (j < box.count) {
          int pos[3];
          box_pos(box, j, pos);
          const int64_t r = token_of(p, tc, b, pos) * p.heads + h;
          off = r * D;
          row_lse = lse[r] * kLog2e;
          row_dlt = delta[r];
          w = query_window(p, tc, pos);
        }
        s_qoff[tid] = off;
        s_lse[tid] = row_lse;
        s_dlt[tid] = row_dlt;
#pragma unroll
        for (int i = 0; i < 3; ++i) {
          s_qwin[i * BQ + tid] = w.start[i];
          s_qwin[(3 + i) * BQ + tid] = w.len[i];
        }
      }
      __syncthreads();
      gather_rows<T, D, BQ, kThreads>(sQ, LD, q, s_qoff, tid);
      gather_rows<T, D, BQ, kThreads>(sDO, LD, dout, s_qoff, tid);
      __syncthreads();

      float s[NTS][4];
#pragma unroll
      for (int n = 0; n < NTS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      warp_gemm_nt<T, NTS, D>(s, sKw, LD, sQ, LD, lane);
#pragma unroll
      for (int n = 0; n < NTS; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n * 8 + 2 * (lane & 3) + (e & 1), rr = e >> 1;
          RowWindow w;
#pragma unroll
          for (int i = 0; i < 3; ++i) {
            w.start[i] = s_qwin[i * BQ + col];
            w.len[i] = s_qwin[(3 + i) * BQ + col];
          }
          const bool ok = w.contains(kpos[rr][0], kpos[rr][1], kpos[rr][2]);
          s[n][e] = ok ? exp2f(s[n][e] * sl2 - s_lse[col]) : 0.f;
        }
      }
      acc_to_smem<T, NTS>(s, sPw, LDP, lane);
      __syncwarp();
      warp_gemm_nn<T, NTO, BQ>(dv_acc, sPw, LDP, sDO, LD, lane);

      float dp[NTS][4];
#pragma unroll
      for (int n = 0; n < NTS; ++n) dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
      warp_gemm_nt<T, NTS, D>(dp, sVw, LD, sDO, LD, lane);
#pragma unroll
      for (int n = 0; n < NTS; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = n * 8 + 2 * (lane & 3) + (e & 1);
          s[n][e] = s[n][e] * (dp[n][e] - s_dlt[col]);
        }
      }
      acc_to_smem<T, NTS>(s, sDSw, LDP, lane);
      __syncwarp();
      warp_gemm_nn<T, NTO, BQ>(dk_acc, sDSw, LDP, sQ, LD, lane);
      __syncthreads();  // sQ / sDO / per-query data are rewritten next chunk
    }
  }

  __syncthreads();  // also when the loop ran zero times: the gathers above are done
  // Stage through this warp's own K and V rows (only this warp reads them).
  T* sKo = sK + warp * 16 * LD;
  T* sVo = sV + warp * 16 * LD;
  acc_to_smem<T, NTO>(dk_acc, sKo, LD, lane, p.scale);
  acc_to_smem<T, NTO>(dv_acc, sVo, LD, lane);
  __syncwarp();
  warp_store_rows<T, D>(sKo, LD, dk, s_koff + warp * 16, lane, nonfinite);
  warp_store_rows<T, D>(sVo, LD, dv, s_koff + warp * 16, lane, nonfinite);
}

}  // namespace gemm
}  // namespace jax_na
