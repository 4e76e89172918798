// Backward dK/dV kernel: key-stationary, deterministic, no atomics.
//
// CTA: 4 warps, a key tile of 64 positions (shape 2^klog) of one (batch, kv head, dilation
// group); each warp owns 16 key rows. K and V stay in shared memory. Loop over the G query heads
// of the GQA group and, per head, over the query tiles (kCols queries, shape 2^qlog) covering
// the tile's inverse neighbourhood, double-buffered (Q, dO, lse, delta): S^T = K Q^T,
// dP^T = V dO^T, P^T = exp(S^T - lse) (masked by each key row's query intervals), dV += P^T dO,
// dS^T = P^T (dP^T - delta), dK += dS^T Q. Epilogue: dK * scale and dV, 16-byte stores.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "arch.h"
#include "epilogue.h"
#include "key_tile.h"
#include "mask.h"
#include "params.h"
#include "smem_tile.h"
#include "warp_gemm.h"

namespace jax_na {
namespace fused {

template <typename T, int D>
struct DkdvConfig {
  static constexpr int kThreads = 128;
  static constexpr int kRows = 64;                 // keys per CTA
  static constexpr int kCols = D >= 128 ? 32 : 64;  // queries per iterated tile
  static constexpr int kLogRows = 6;
  static constexpr int kLogCols = D >= 128 ? 5 : 6;
  static constexpr int kMinBlocks = D >= 64 ? 2 : 3;
  static constexpr int kTile = SmemTile<D>::bytes(kRows);
  static constexpr int kQTile = SmemTile<D>::bytes(kCols);
  static constexpr int kStats = kCols * 4;
  // K, V, 2 x (Q, dO), 2 x (lse, delta), then the tables
  static constexpr int kTabOffset = 2 * kTile + 4 * kQTile + 4 * kStats;
  static constexpr int kDeltaOffset = kTabOffset + kMaxTableEntries * 8;
  static constexpr int kRowsOffset = kDeltaOffset + kCols * 4;  // key row indices (RowTable)
  static constexpr int kSmem = kRowsOffset + kRows * 8;
};

template <typename T, int D>
__global__ void __launch_bounds__(128, DkdvConfig<T, D>::kMinBlocks)
    fused_bwd_dkdv_kernel(const KernelParams p) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using Cfg = DkdvConfig<T, D>;
  constexpr int NC = Cfg::kCols;
  constexpr int NT = NC / 8;
  constexpr int ND = D / 8;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  KeyCta c;
  if (!setup_key_cta(p, c)) return;
  const int kvh = c.cta.head;
  const int n_it = p.group_size * c.n_q;

  const uint32_t sK = smem_u32(smem);
  const uint32_t sV = sK + Cfg::kTile;
  const uint32_t sQ = sK + 2 * Cfg::kTile;                  // stage s at sQ + s * kQTile
  const uint32_t sdO = sQ + 2 * Cfg::kQTile;                // stage s at sdO + s * kQTile
  const uint32_t sL = sQ + 4 * Cfg::kQTile;                 // stage s at sL + s * kStats
  const uint32_t sDl = sL + 2 * Cfg::kStats;                // stage s at sDl + s * kStats

  Window* tab = reinterpret_cast<Window*>(smem + Cfg::kTabOffset);
  int* delta = reinterpret_cast<int*>(smem + Cfg::kDeltaOffset);

  const TileRows kr = key_tile_rows(p, c);
  auto k_off = [&](int row) { return kr.offset(p.ts.klog, row, kRowBytes); };
  {
    const char* src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
    const uint32_t dst[2] = {sK, sV};
    load_rows_async<64, D, 128>(src, dst, k_off, tid);
  }
  cp_async_commit();

  // Per-CTA tables: inverse neighbourhoods of the tile's key positions, token offsets of query
  // tile rows.
  for (int e = tid; e < table_entries(p.ts.klog); e += 128) tab[e] = key_inverse_entry(p, c, e);
  if (tid < NC) delta[tid] = tile_row_delta(p, p.ts.qlog, tid);
  int64_t* const rows = reinterpret_cast<int64_t*>(smem + Cfg::kRowsOffset);
  if (tid < Cfg::kRows) rows[tid] = kr(p.ts.klog, tid);
  __syncthreads();

  const char* const qdo_src[2] = {static_cast<const char*>(p.q), static_cast<const char*>(p.dout)};
  auto load_q = [&](const int (&tb)[3], int head, int stage) {
    const GatherTile gr = q_gather(p, c, tb, head, 1);  // in (token, head) rows
    const GatherTile g{gr.base * kRowBytes, gr.stride * kRowBytes, gr.valid};
    const uint32_t dst[2] = {sQ + stage * Cfg::kQTile, sdO + stage * Cfg::kQTile};
    load_gather_async<NC, D, 128>(qdo_src, dst, delta, g, tid);
    load_query_stats<NC>(p, gr, delta, sL + stage * Cfg::kStats, sDl + stage * Cfg::kStats, tid);
  };
  TileWalker walk;
  walk.reset();
  int load_head = kvh * p.group_size;
  int tb[3];
  q_tile_at(p, c, walk.t, tb);
  if (n_it > 0) load_q(tb, load_head, 0);
  cp_async_commit();

  RowPartners rp;
  WarpTileTest wt;
  key_rows(p, c, tab, warp, lane, rp, wt);

  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int d = 0; d < ND; ++d) {
    dk[d][0] = dk[d][1] = dk[d][2] = dk[d][3] = 0.f;
    dv[d][0] = dv[d][1] = dv[d][2] = dv[d][3] = 0.f;
  }

  for (int it = 0; it < n_it; ++it) {
    const int st = it & 1;
    int tn[3] = {tb[0], tb[1], tb[2]};
    if (it + 1 < n_it) {
      if (walk.next_wraps(c.nq)) ++load_head;  // next query head of the GQA group
      q_tile_at(p, c, walk.t, tn);
      load_q(tn, load_head, st ^ 1);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (wt.meets(tb, p.ts.qlog)) {
      const uint32_t q_st = sQ + st * Cfg::kQTile;
      const uint32_t do_st = sdO + st * Cfg::kQTile;
      float s[NT][4], dp[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
      }
      gemm_abt_sa2<T, D, NC>(s, sK, q_st, dp, sV, do_st, 16 * warp, lane);
      if (const int cut = wt.cut_dims(tb, p.ts.qlog))
        mask_tile(s, rp, cut, tb, p.ts.qlog, lane, -INFINITY);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const int col = 8 * n + 2 * (lane & 3);
        const float2 lq = lds_f2(sL + st * Cfg::kStats + 4 * col);
        const float2 dq = lds_f2(sDl + st * Cfg::kStats + 4 * col);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float l2 = ((e & 1) ? lq.y : lq.x) * kLog2e;
          const float de = (e & 1) ? dq.y : dq.x;
          const float pv = ex2(fmaf(s[n][e], p.scale_log2, -l2));
          s[n][e] = pv;
          dp[n][e] = pv * (dp[n][e] - de);
        }
      }
      gemm_pv<T, D, NC>(dv, s, do_st, lane);
      gemm_pv<T, D, NC>(dk, dp, q_st, lane);
    }
    __syncthreads();
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }

  const float one[2] = {1.f, 1.f};
  const float scl[2] = {p.scale, p.scale};
  cp_async_wait<0>();  // nothing may still land in the staging tile
  __syncthreads();
  stage_rows<T, D>(dk, scl, sK, 16 * warp, lane);
  stage_rows<T, D>(dv, one, sV, 16 * warp, lane);
  __syncthreads();
  store_rows<T, 64, D, 128>(static_cast<char*>(p.dk), sK, RowTable{rows, kRowBytes}, tid,
                            p.nonfinite);
  store_rows<T, 64, D, 128>(static_cast<char*>(p.dv), sV, RowTable{rows, kRowBytes}, tid,
                            p.nonfinite);
}

}  // namespace fused
}  // namespace jax_na
