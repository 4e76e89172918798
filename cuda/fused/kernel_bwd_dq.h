// Backward dQ kernel: query-stationary, deterministic (no atomics), recomputes S.
//
// Same tiling as the forward. Per key/value tile: S = Q K^T, dP = dO V^T, P = exp(S - lse)
// (masked like the forward), dS = P (dP - delta), dQ += dS K. Q and dO stay in shared memory
// and are read per k-step. Epilogue: dQ * scale, staged, 16-byte stores.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "arch.h"
#include "epilogue.h"
#include "mask.h"
#include "params.h"
#include "query_tile.h"
#include "smem_tile.h"
#include "softmax.h"
#include "warp_gemm.h"

namespace jax_na {
namespace fused {

template <typename T, int D>
struct DqConfig {
  static constexpr int kThreads = 128;
  static constexpr int kRows = 64;
  static constexpr int kCols = 64;
  static constexpr int kLogRows = 6;
  static constexpr int kLogCols = 6;
  static constexpr int kMinBlocks = D >= 128 ? 2 : (D >= 64 ? kMinBlocksD64 : 3);
  static constexpr int kTile = SmemTile<D>::bytes(64);
  static constexpr int kTabOffset = 6 * kTile;  // Q, dO, 2 x K, 2 x V, then the tables
  static constexpr int kDeltaOffset = kTabOffset + kMaxTableEntries * 8;
  static constexpr int kRowIndex = kDeltaOffset + kCols * 4;  // the query rows' indices
  static constexpr int kSmem = kRowIndex + kRows * 8;
};

template <typename T, int D>
__global__ void __launch_bounds__(128, DqConfig<T, D>::kMinBlocks)
    fused_bwd_dq_kernel(const KernelParams p) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using Cfg = DqConfig<T, D>;
  constexpr int NT = Cfg::kCols / 8;
  constexpr int ND = D / 8;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  QueryCta c;
  if (!setup_query_cta(p, c)) return;
  const int head = c.cta.head;
  const int kvh = head / p.group_size;

  const uint32_t sQ = smem_u32(smem);
  const uint32_t sdO = sQ + Cfg::kTile;
  const uint32_t sK = sQ + 2 * Cfg::kTile;  // stage s at sK + s * kTile
  const uint32_t sV = sQ + 4 * Cfg::kTile;
  Window* tab = reinterpret_cast<Window*>(smem + Cfg::kTabOffset);
  int* delta = reinterpret_cast<int*>(smem + Cfg::kDeltaOffset);

  const TileRows qr = query_tile_rows(p, c, head);
  auto q_off = [&](int row) { return qr.offset(p.ts.qlog, row, kRowBytes); };
  {
    const char* src[2] = {static_cast<const char*>(p.q), static_cast<const char*>(p.dout)};
    const uint32_t dst[2] = {sQ, sdO};
    load_rows_async<64, D, 128>(src, dst, q_off, tid);
  }
  cp_async_commit();

  for (int e = tid; e < table_entries(p.ts.qlog); e += 128) tab[e] = query_window_entry(p, c, e);
  if (tid < Cfg::kCols) delta[tid] = tile_row_delta(p, p.ts.klog, tid);
  // Each row's index once, for the rows' lse and delta and the epilogue's stores (RowTable).
  int64_t* const rows = reinterpret_cast<int64_t*>(smem + Cfg::kRowIndex);
  if (tid < Cfg::kRows) rows[tid] = qr(p.ts.qlog, tid);
  __syncthreads();

  const char* const kv_src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
  auto load_kv = [&](const int (&tb)[3], int stage) {
    const GatherTile g = kv_gather(p, c, tb, kvh, kRowBytes);
    const uint32_t dst[2] = {sK + stage * Cfg::kTile, sV + stage * Cfg::kTile};
    load_gather_async<64, D, 128>(kv_src, dst, delta, g, tid);
  };
  TileWalker walk;
  int tb[3];
  first_kv_tile(p, c, walk, tb);
  if (c.n_kv > 0) load_kv(tb, 0);
  cp_async_commit();

  RowPartners rp;
  WarpTileTest wt;
  query_rows(p, c, tab, warp, lane, rp, wt);
  float lse2[2], dl[2];
  row_stats(p, rows, 16 * warp, lane, lse2, dl);

  float dq[ND][4];
#pragma unroll
  for (int d = 0; d < ND; ++d) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.f;

  for (int j = 0; j < c.n_kv; ++j) {
    const int st = j & 1;
    int tn[3];
    if (next_kv_tile(p, c, walk, j, tb, tn)) load_kv(tn, st ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (wt.meets(tb, p.ts.klog)) {
      float s[NT][4], dp[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
        dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
      }
      gemm_abt_sa2<T, D, 64>(s, sQ, sK + st * Cfg::kTile, dp, sdO, sV + st * Cfg::kTile,
                             16 * warp, lane);
      if (const int cut = wt.cut_dims(tb, p.ts.klog))
        mask_tile(s, rp, cut, tb, p.ts.klog, lane, -INFINITY);
      softmax_bwd_rows(s, dp, p.scale_log2, lse2, dl);
      gemm_pv<T, D, 64>(dq, s, sK + st * Cfg::kTile, lane);
    }
    __syncthreads();
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }

  const float mul[2] = {p.scale, p.scale};
  cp_async_wait<0>();  // nothing may still land in the staging tile
  __syncthreads();
  stage_rows<T, D>(dq, mul, sQ, 16 * warp, lane);
  __syncthreads();
  store_rows<T, 64, D, 128>(static_cast<char*>(p.dq), sQ, RowTable{rows, kRowBytes}, tid,
                            p.nonfinite);
}

}  // namespace fused
}  // namespace jax_na
