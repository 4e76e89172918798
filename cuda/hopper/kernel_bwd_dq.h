// Backward dQ kernel of the Hopper family (sm_90a): the fused family's query-stationary dQ
// (cuda/fused/kernel_bwd_dq.h) with the matrix work on warpgroup MMA. Deterministic (no
// atomics); recomputes S.
//
// CTA: one warpgroup (4 warps, 128 threads) per query tile of 64 positions (shape 2^qlog) of one
// (batch, head, dilation group); at head_dim 256 two, both computing S and dP, warpgroup g
// accumulating columns [128 g, 128 g + 128) of dQ (bwd_loads.h). Q and dO stay in shared
// memory; the CTA walks the key/value tiles (64 keys, shape 2^klog) covering the box of the
// tile's windows, loaded as TMA boxes (kTma) or gathered with cp.async into swizzled tiles,
// double-buffered; dQ += dS K of a tile runs under the next tile's start, whose S and dP are
// issued before the slots of the last tile are refilled. Per tile:
//   S = Q K^T and dP = dO V^T  (wgmma m64n64k16, every operand from shared memory);
//   P = exp(S - lse), masked like the forward (only in warps whose rows do not all see the tile);
//   dS = P (dP - delta);  dQ += dS K  (wgmma m64nDk16, dS from registers, K MN-major).
// Two or more CTAs per SM (one at head_dim 256): one's elementwise work runs under the others'
// MMAs. The rows' indices are computed once, into a table (for their lse and delta and the
// epilogue's stores). Epilogue: dQ * scale, staged as T, 16-byte stores. Launched dependent on
// the dK/dV kernel (programmatic dependent launch, which needs nothing that kernel writes):
// every CTA waits for it before exiting.
// RD (hopper_bwd_dq_rd_kernel): the kernel forms its rows' delta from dO and out tiles
// (row_delta.h) and writes it; it runs first, the dK/dV kernel dependent on it (api.cu bwd_rd).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "../fused/arch.h"
#include "../fused/epilogue.h"
#include "../fused/mask.h"
#include "../fused/params.h"
#include "../fused/query_tile.h"
#include "../fused/smem_tile.h"
#include "../fused/softmax.h"
#include "bwd_loads.h"
#include "row_delta.h"
#include "smem_layout.h"
#include "tma.h"
#include "warpgroup_gemm.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

// Rows: queries per CTA; columns: keys per key/value tile.
template <typename T, int D>
struct BwdDqConfig : BwdTiles<D> {
  using typename BwdTiles<D>::Tile;
  using BwdTiles<D>::kCols;
  // CTAs per SM: three up to head_dim 64 (157-164 registers, 0 spills), four for the TMA kernel
  // at 32 (128 registers; the cp.async one spills there).
  template <bool kTma>
  static constexpr int min_blocks() {
    return kTma && D == 32 ? 4 : (D <= 64 ? 3 : BwdTiles<D>::kMinBlocks);
  }
  // Q, dO, 2 x K, 2 x V (1024-byte aligned), then the window and token-offset tables.
  static constexpr int kDO = Tile::kBytes;
  static constexpr int kK = 2 * Tile::kBytes;
  static constexpr int kV = kK + 2 * Tile::kBytes;
  static constexpr int kO = kV + Tile::kBytes;  // RD: out, in V's second slot
  static constexpr int kTab = kV + 2 * Tile::kBytes;
  static constexpr int kDelta = kTab + fused::kMaxTableEntries * 8;
  static constexpr int kRowIndex = kDelta + kCols * 4;      // the query rows' indices (RowTable)
  static constexpr int kBar = kRowIndex + 64 * 8;           // 2 mbarriers (TMA loads)
  static constexpr int kSmem = kBar + 2 * 8 + 1024;         // + alignment slack
};

// The kernels' body. kTma: maps holds the K and V tensor maps of the tiles (tma.h), else it is
// unused. kRD: delta formed here (row_delta.h), this kernel the primary of the dK/dV kernel.
template <typename T, int D, bool kTma, bool kRD>
__device__ __forceinline__ void bwd_dq(const fused::KernelParams& p, const TmaMaps& maps) {
#if JAX_NA_WGMMA
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using namespace fused;
  using Cfg = BwdDqConfig<T, D>;
  using Tile = typename Cfg::Tile;
  constexpr int NT = Cfg::kCols / 8;
  constexpr int NTH = Cfg::kThreads, DO = Cfg::kOut;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ char smem_raw[];
  const AlignedSmem sm = align_smem_1024(smem_raw);
  const uint32_t sQ = sm.addr, sdO = sQ + Cfg::kDO, sK = sQ + Cfg::kK, sV = sQ + Cfg::kV;
  const int tid = threadIdx.x, lane = tid & 31;
  // The warp's row block, and its warpgroup's dQ columns (bwd_loads.h).
  const int wg = Cfg::warpgroup(tid), warp = (tid >> 5) - 4 * wg, row0 = 16 * warp;
  const uint32_t out_cols = Cfg::out_desc(wg);

  QueryCta c;
  if (!setup_query_cta(p, c)) {
    if constexpr (!kRD) wait_for_primary();  // dependent on dK/dV: finish after it
    return;
  }
  const int head = c.cta.head;
  const int kvh = head / p.group_size;
  Window* tab = reinterpret_cast<Window*>(sm.ptr + Cfg::kTab);
  int* delta = reinterpret_cast<int*>(sm.ptr + Cfg::kDelta);

  const TileRows qr = query_tile_rows(p, c, head);
  auto q_off = [&](int row) { return qr.offset(p.ts.qlog, row, kRowBytes); };
  {
    // Q and dO; RD: out too (row_delta.h), in V's second slot (free until tile 1).
    const char* src[kRD ? 3 : 2] = {static_cast<const char*>(p.q),
                                    static_cast<const char*>(p.dout)};
    uint32_t dst[kRD ? 3 : 2] = {sQ, sdO};
    if constexpr (kRD) src[2] = static_cast<const char*>(p.o_in), dst[2] = sQ + Cfg::kO;
    load_rows_async<64, D, NTH, Tile>(src, dst, q_off, tid);
  }
  cp_async_commit();
  for (int e = tid; e < table_entries(p.ts.qlog); e += NTH) tab[e] = query_window_entry(p, c, e);
  if (tid < Cfg::kCols) delta[tid] = tile_row_delta(p, p.ts.klog, tid);
  // Each row's index once, for the rows' lse and delta and the epilogue's stores.
  int64_t* const rows = reinterpret_cast<int64_t*>(sm.ptr + Cfg::kRowIndex);
  if (tid < 64) rows[tid] = qr(p.ts.qlog, tid);
  SlotBarriers<kTma> bars;
  bars.init(sQ + Cfg::kBar, tid);
  __syncthreads();

  const char* const kv_src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
  auto load_kv = [&](const int (&tb)[3], int slot) {
    const uint32_t dst[2] = {sK + slot * Tile::kBytes, sV + slot * Tile::kBytes};
    if constexpr (kTma) {
      if (tid == 0) {
        bars.expect(slot, 2 * Tile::kBytes);
        tma_load_tile<Tile, D>(&maps.k, dst[0], bars.at(slot), p, c.cta.b, c.cta.grp, tb, kvh);
        tma_load_tile<Tile, D>(&maps.v, dst[1], bars.at(slot), p, c.cta.b, c.cta.grp, tb, kvh);
      }
    } else {
      const GatherTile g = kv_gather(p, c, tb, kvh, kRowBytes);
      load_gather_async<64, D, NTH, Tile>(kv_src, dst, delta, g, tid);
    }
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
  if constexpr (kRD) {
    cp_async_wait<1>();  // Q, dO and out (the first K/V tile may still be on its way)
    __syncthreads();
    row_lse_delta<T, D, Tile>(p, rows, sdO, sQ + Cfg::kO, row0, lane, lse2, dl);
  } else {
    row_stats(p, rows, row0, lane, lse2, dl);
  }
  const uint64_t dq_desc = Tile::k_major(sQ), ddo_desc = Tile::k_major(sdO);

  float dq[DO / 8][4];  // set by the first tile's dQ MMA

  // Tile j: wait for its slots, issue S_j and dP_j, then wait for dQ_{j-1} (issued last
  // iteration, so it ran under this one's start) and refill its slots with tile j + 1.
  for (int j = 0; j < c.n_kv; ++j) {
    const int st = j & 1;
    const uint32_t k_tile = sK + st * Tile::kBytes, v_tile = sV + st * Tile::kBytes;
    bars.wait(j);
    // The other threads' gathers (TMA: each thread waited for the boxes itself), and before the
    // first tile their Q and dO rows.
    if (!kTma || j == 0) __syncthreads();

    // The tile's element masks (they depend only on the tile and the rows): before its MMAs,
    // off the path from S to dQ, where registers allow (head_dim 32; at 64 holding the word
    // through the MMAs spilled 32 bytes), else once S has landed.
    constexpr bool kMaskFirst = D == 32;
    int cut = 0;
    uint32_t mask = 0u;
    auto build_mask = [&]() {
      cut = wt.cut_dims(tb, p.ts.klog);
      if (cut) mask = mask_word(rp, cut, tb, p.ts.klog, lane);
    };
    if constexpr (kMaskFirst) build_mask();
    float s[NT][4], dp[NT][4];
    wgmma_fence();
    gemm_ss_abt<T, 64, D, Tile, Tile>(s, dq_desc, Tile::k_major(k_tile));
    gemm_ss_abt<T, 64, D, Tile, Tile>(dp, ddo_desc, Tile::k_major(v_tile));
    wgmma_commit();
    wgmma_wait<1>();  // dQ_{j-1} is done: every warp then leaves the other slots
    __syncthreads();
    int tn[3];
    if (next_kv_tile(p, c, walk, j, tb, tn)) {
      load_kv(tn, st ^ 1);
      cp_async_commit();
    }
    wgmma_wait<0>();
    fence_acc(s);
    fence_acc(dp);
    if constexpr (!kMaskFirst) build_mask();
    if (cut) apply_mask_word(s, mask, -INFINITY);
    fused::softmax_bwd_rows(s, dp, p.scale_log2, lse2, dl);
    uint32_t ds[NT / 2][4];
    pack_a<T, NT / 2>(s, ds);
    wgmma_fence();
    gemm_rs_ab<T, DO, NT / 2, Tile>(dq, ds, desc_plus(Tile::mn_major(k_tile), out_cols), j > 0);
    wgmma_commit();
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }
  wgmma_wait<0>();
  fence_acc(dq);
  if (c.n_kv == 0) zero_acc(dq);

  const float mul[2] = {p.scale, p.scale};
  cp_async_wait<0>();  // nothing may still land in the staging tile
  __syncthreads();
  stage_rows<T, DO, D>(dq, mul, sQ, row0, lane, Cfg::out_chunk(wg));
  __syncthreads();
  store_rows<T, 64, D, NTH>(static_cast<char*>(p.dq), sQ, RowTable{rows, kRowBytes}, tid,
                            p.nonfinite);
  // The grid ends after dK/dV's: what follows on the stream may read both.
  if constexpr (!kRD) wait_for_primary();
#else
  __trap();  // built for sm_90a only; the host side never launches it elsewhere
#endif
}

template <typename T, int D, bool kTma>
__global__ void __launch_bounds__(BwdDqConfig<T, D>::kThreads,
                                  BwdDqConfig<T, D>::template min_blocks<kTma>())
    hopper_bwd_dq_kernel(const fused::KernelParams p, const __grid_constant__ TmaMaps maps) {
  bwd_dq<T, D, kTma, false>(p, maps);
}

template <typename T, int D, bool kTma>
__global__ void __launch_bounds__(BwdDqConfig<T, D>::kThreads,
                                  BwdDqConfig<T, D>::template min_blocks<kTma>())
    hopper_bwd_dq_rd_kernel(const fused::KernelParams p, const __grid_constant__ TmaMaps maps) {
  bwd_dq<T, D, kTma, true>(p, maps);
}

}  // namespace hopper
}  // namespace jax_na
