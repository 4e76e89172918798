// Backward dK/dV kernel of the Hopper family (sm_90a): the fused family's key-stationary dK/dV
// (cuda/fused/kernel_bwd_dkdv.h) with the matrix work on warpgroup MMA. Deterministic (the GQA
// group is looped inside the CTA; no atomics).
//
// CTA: one warpgroup (4 warps, 128 threads) per key tile of 64 positions (shape 2^klog) of one
// (batch, kv head, dilation group); warp w owns key rows 16w..16w+15. At head_dim 256 two
// warpgroups, both computing S^T and dP^T, warpgroup g accumulating columns [128 g, 128 g + 128)
// of dK and dV (bwd_loads.h). K and V stay in shared memory. Loop over the G query heads of the
// group and, per head, over the 64-query tiles (shape 2^qlog) covering the tile's inverse
// neighbourhood, double-buffered (Q and dO as TMA boxes (kTma) or cp.async gathers into swizzled
// tiles; lse and delta by cp.async).
// Per query tile:
//   S^T = K Q^T and dP^T = V dO^T  (wgmma m64n64k16, every operand from shared memory);
//   P^T = exp(S^T - lse), masked by each key row's query intervals;
//   dV += P^T dO  (wgmma m64nDk16, P^T from registers, dO MN-major), issued at once, so it runs
//   under dS^T = P^T (dP^T - delta);  dK += dS^T Q  (the same form). Up to head_dim 128 (the
//   TMA kernel at 128) dK runs on under the next tile's start, whose S^T and dP^T are issued
//   before the last tile's slots are refilled (kDeferDk); otherwise each warp waits for dK at
//   the end of the tile, and the loop needs one CTA barrier a tile instead of two.
// Two CTAs per SM (three at head_dim 32, one at 256). Epilogue: dK * scale and dV, staged as T,
// 16-byte stores through a table of the key rows' indices written in the prologue (RowTable).
// RD (hopper_bwd_dkdv_rd_kernel): launched dependent on the dQ kernel, which writes delta
// (row_delta.h); every CTA waits for it before its first delta load, or before it exits.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "../fused/arch.h"
#include "../fused/epilogue.h"
#include "../fused/key_tile.h"
#include "../fused/mask.h"
#include "../fused/params.h"
#include "../fused/smem_tile.h"
#include "bwd_loads.h"
#include "smem_layout.h"
#include "tma.h"
#include "warpgroup_gemm.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

// Rows: keys per CTA; columns: queries per iterated tile.
template <typename T, int D>
struct BwdDkdvConfig : BwdTiles<D> {
  using typename BwdTiles<D>::Tile;
  using BwdTiles<D>::kCols;
  // K, V, 2 x Q, 2 x dO (1024-byte aligned), 2 x (lse, delta), then the tables.
  static constexpr int kV = Tile::kBytes;
  static constexpr int kQ = 2 * Tile::kBytes;
  static constexpr int kDO = kQ + 2 * Tile::kBytes;
  static constexpr int kStats = kCols * 4;
  static constexpr int kL = kDO + 2 * Tile::kBytes;
  static constexpr int kDl = kL + 2 * kStats;
  static constexpr int kTab = kDl + 2 * kStats;
  static constexpr int kDelta = kTab + fused::kMaxTableEntries * 8;
  static constexpr int kRowIndex = kDelta + kCols * 4;      // the key rows' indices (RowTable)
  static constexpr int kBar = kRowIndex + 64 * 8;           // 2 mbarriers (TMA loads)
  static constexpr int kSmem = kBar + 2 * 8 + 1024;         // + alignment slack
};

// The kernels' body. kTma: maps holds the Q and dO tensor maps of the query tiles (tma.h), else
// it is unused. kRD: delta comes from the dQ kernel, this kernel's primary.
template <typename T, int D, bool kTma, bool kRD>
__device__ __forceinline__ void bwd_dkdv(const fused::KernelParams& p, const TmaMaps& maps) {
#if JAX_NA_WGMMA
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using namespace fused;
  using Cfg = BwdDkdvConfig<T, D>;
  using Tile = typename Cfg::Tile;
  constexpr int NC = Cfg::kCols;
  constexpr int NT = NC / 8;
  constexpr int NTH = Cfg::kThreads, DO = Cfg::kOut;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  // dK's MMA runs on into the next tile, whose S^T and dP^T are issued under it. Not in the
  // cp.async kernel at 128, where holding its A fragments spilled 8 bytes (ptxas); at 256 it
  // would fit (255 registers, 0 spills) but is not measured there.
  constexpr bool kDeferDk = D < 128 || (kTma && D == 128);
  extern __shared__ char smem_raw[];
  const AlignedSmem sm = align_smem_1024(smem_raw);
  const uint32_t sK = sm.addr, sV = sK + Cfg::kV, sQ = sK + Cfg::kQ, sdO = sK + Cfg::kDO;
  const uint32_t sL = sK + Cfg::kL, sDl = sK + Cfg::kDl;
  const int tid = threadIdx.x, lane = tid & 31;
  // The warp's row block, and its warpgroup's output columns (bwd_loads.h).
  const int wg = Cfg::warpgroup(tid), warp = (tid >> 5) - 4 * wg;
  const uint32_t out_cols = Cfg::out_desc(wg);

  KeyCta c;
  if (!setup_key_cta(p, c)) {
    if constexpr (kRD) wait_for_primary();  // finish after dQ: what follows may read both
    return;
  }
  const int kvh = c.cta.head;
  const int n_it = p.group_size * c.n_q;
  Window* tab = reinterpret_cast<Window*>(sm.ptr + Cfg::kTab);
  int* delta = reinterpret_cast<int*>(sm.ptr + Cfg::kDelta);

  const TileRows kr = key_tile_rows(p, c);
  auto k_off = [&](int row) { return kr.offset(p.ts.klog, row, kRowBytes); };
  {
    const char* src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
    const uint32_t dst[2] = {sK, sV};
    load_rows_async<64, D, NTH, Tile>(src, dst, k_off, tid);
  }
  cp_async_commit();
  for (int e = tid; e < table_entries(p.ts.klog); e += NTH) tab[e] = key_inverse_entry(p, c, e);
  if (tid < NC) delta[tid] = tile_row_delta(p, p.ts.qlog, tid);
  int64_t* const rows = reinterpret_cast<int64_t*>(sm.ptr + Cfg::kRowIndex);  // the epilogue's
  if (tid < 64) rows[tid] = kr(p.ts.klog, tid);
  SlotBarriers<kTma> bars;
  bars.init(sK + Cfg::kBar, tid);
  __syncthreads();

  const char* const qdo_src[2] = {static_cast<const char*>(p.q), static_cast<const char*>(p.dout)};
  auto load_q = [&](const int (&tb)[3], int head, int slot) {
    const GatherTile gr = q_gather(p, c, tb, head, 1);  // in (token, head) rows
    const uint32_t dst[2] = {sQ + slot * Tile::kBytes, sdO + slot * Tile::kBytes};
    if constexpr (kTma) {
      if (tid == 0) {
        bars.expect(slot, 2 * Tile::kBytes);
        tma_load_tile<Tile, D>(&maps.k, dst[0], bars.at(slot), p, c.cta.b, c.cta.grp, tb, head);
        tma_load_tile<Tile, D>(&maps.v, dst[1], bars.at(slot), p, c.cta.b, c.cta.grp, tb, head);
      }
    } else {
      const GatherTile g{gr.base * kRowBytes, gr.stride * kRowBytes, gr.valid};
      load_gather_async<NC, D, NTH, Tile>(qdo_src, dst, delta, g, tid);
    }
    load_query_stats<NC>(p, gr, delta, sL + slot * Cfg::kStats, sDl + slot * Cfg::kStats, tid);
  };
  TileWalker walk;
  walk.reset();
  int load_head = kvh * p.group_size;
  int tb[3];
  q_tile_at(p, c, walk.t, tb);
  if constexpr (kRD) wait_for_primary();  // delta (load_q reads it) is the dQ kernel's
  if (n_it > 0) load_q(tb, load_head, 0);
  cp_async_commit();

  RowPartners rp;
  WarpTileTest wt;
  key_rows(p, c, tab, warp, lane, rp, wt);
  const uint64_t dk_desc = Tile::k_major(sK), dv_desc = Tile::k_major(sV);

  float dk[DO / 8][4], dv[DO / 8][4];  // set by the first tile's MMAs

  // Query tile it: wait for its slots, issue S^T and dP^T, then wait for dK of tile it - 1
  // (if still running) and refill the other slots.
  for (int it = 0; it < n_it; ++it) {
    const int st = it & 1;
    const uint32_t q_tile = sQ + st * Tile::kBytes, do_tile = sdO + st * Tile::kBytes;
    bars.wait(it);
    __syncthreads();

    float s[NT][4], dp[NT][4];
    wgmma_fence();
    gemm_ss_abt<T, NC, D, Tile, Tile>(s, dk_desc, Tile::k_major(q_tile));
    gemm_ss_abt<T, NC, D, Tile, Tile>(dp, dv_desc, Tile::k_major(do_tile));
    wgmma_commit();
    // The tile's element masks while S^T and dP^T run (they depend only on the tile and the
    // rows). From head_dim 128 the rows' intervals are read again here instead of held through
    // the loop: holding them spilled 24 bytes at 256, and at 128 took the registers that
    // kDeferDk needs (ptxas).
    const int cut = wt.cut_dims(tb, p.ts.qlog);
    uint32_t mask = 0u;
    if (cut) {
      if constexpr (D >= 128) key_row_partners(p, tab, warp, lane, rp);
      mask = mask_word(rp, cut, tb, p.ts.qlog, lane);
    }
    // dK of tile it - 1 is done: every warp then leaves the other slots. Without kDeferDk each
    // warp waited for it before the barrier above.
    wgmma_wait<1>();
    if constexpr (kDeferDk) __syncthreads();
    int tn[3] = {tb[0], tb[1], tb[2]};
    if (it + 1 < n_it) {
      if (walk.next_wraps(c.nq)) ++load_head;  // next query head of the GQA group
      q_tile_at(p, c, walk.t, tn);
      load_q(tn, load_head, st ^ 1);
      cp_async_commit();
    }
    wgmma_wait<0>();
    fence_acc(s);
    fence_acc(dp);
    if (cut) apply_mask_word(s, mask, -INFINITY);
    float dl[NT][2];  // delta of the thread's columns 8n + 2 (lane % 4) + {0, 1}
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const int col = 8 * n + 2 * (lane & 3);
      const float2 lq = lds_f2(sL + st * Cfg::kStats + 4 * col);
      const float2 de = lds_f2(sDl + st * Cfg::kStats + 4 * col);
      dl[n][0] = de.x, dl[n][1] = de.y;
#pragma unroll
      for (int e = 0; e < 4; ++e)
        s[n][e] = ex2(fmaf(s[n][e], p.scale_log2, -((e & 1) ? lq.y : lq.x) * kLog2e));
    }
    uint32_t pa[NT / 2][4];
    pack_a<T, NT / 2>(s, pa);
    wgmma_fence();
    gemm_rs_ab<T, DO, NT / 2, Tile>(dv, pa, desc_plus(Tile::mn_major(do_tile), out_cols), it > 0);
    wgmma_commit();
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[n][e] = s[n][e] * (dp[n][e] - dl[n][e & 1]);
    uint32_t da[NT / 2][4];
    pack_a<T, NT / 2>(dp, da);
    wgmma_fence();
    gemm_rs_ab<T, DO, NT / 2, Tile>(dk, da, desc_plus(Tile::mn_major(q_tile), out_cols), it > 0);
    wgmma_commit();
    // dV is done; with kDeferDk dK runs on into the next tile.
    if constexpr (kDeferDk) {
      wgmma_wait<1>();
    } else {
      wgmma_wait<0>();
    }
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }
  wgmma_wait<0>();
  fence_acc(dv);
  fence_acc(dk);
  if (n_it == 0) {  // no query sees these keys
    zero_acc(dv);
    zero_acc(dk);
  }

  const float one[2] = {1.f, 1.f};
  const float scl[2] = {p.scale, p.scale};
  cp_async_wait<0>();  // nothing may still land in the staging tiles
  __syncthreads();
  stage_rows<T, DO, D>(dk, scl, sK, 16 * warp, lane, Cfg::out_chunk(wg));
  stage_rows<T, DO, D>(dv, one, sV, 16 * warp, lane, Cfg::out_chunk(wg));
  __syncthreads();
  store_rows<T, 64, D, NTH>(static_cast<char*>(p.dk), sK, RowTable{rows, kRowBytes}, tid,
                            p.nonfinite);
  store_rows<T, 64, D, NTH>(static_cast<char*>(p.dv), sV, RowTable{rows, kRowBytes}, tid,
                            p.nonfinite);
#else
  __trap();  // built for sm_90a only; the host side never launches it elsewhere
#endif
}

template <typename T, int D, bool kTma>
__global__ void __launch_bounds__(BwdDkdvConfig<T, D>::kThreads, BwdDkdvConfig<T, D>::kMinBlocks)
    hopper_bwd_dkdv_kernel(const fused::KernelParams p, const __grid_constant__ TmaMaps maps) {
  bwd_dkdv<T, D, kTma, false>(p, maps);
}

template <typename T, int D, bool kTma>
__global__ void __launch_bounds__(BwdDkdvConfig<T, D>::kThreads, BwdDkdvConfig<T, D>::kMinBlocks)
    hopper_bwd_dkdv_rd_kernel(const fused::KernelParams p, const __grid_constant__ TmaMaps maps) {
  bwd_dkdv<T, D, kTma, true>(p, maps);
}

}  // namespace hopper
}  // namespace jax_na
