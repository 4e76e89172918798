// Forward kernel (FlashAttention-2 style, multi-dimensional tiles), fp16/bf16 on mma.sync.
//
// CTA: 4 warps, a query tile of 64 * MT positions (shape 2^qlog per dim) of one (batch, head,
// dilation group); each warp owns MT blocks of 16 query rows (MT = 1: Q fragments in registers;
// MT = 2: Q read from shared memory per k-step, each K/V fragment feeding both blocks). Loop over
// the key/value tiles (BN keys, shape 2^klog) covering the box of the tile's windows,
// double-buffered with cp.async (gathered rows through a per-CTA token-offset table, no index
// math in the loop): S = Q K^T, per-warp skip of tiles its queries cannot see, mask-free path
// for tiles inside every window of the warp, column masks otherwise, online softmax, O += P V.
// Epilogue writes O (staged through shared memory, 16-byte stores) and lse (natural log).
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

template <typename T, int D, int MT = 1, int BN = 64>
struct FwdConfig {
  static_assert(MT == 1 || MT == 2, "one or two 16-row blocks per warp");
  static_assert(BN == 32 || BN == 64, "key/value tiles of 32 or 64 keys");
  static constexpr int kThreads = 128;
  static constexpr int kRows = 64 * MT;  // queries per CTA
  static constexpr int kCols = BN;       // keys per key/value tile
  static constexpr int kLogRows = MT == 2 ? 7 : 6;
  static constexpr int kLogCols = BN == 64 ? 6 : 5;
  static constexpr int kMinBlocks =
      MT == 2 ? 2 : (D >= 128 ? (BN == 32 ? 3 : 2) : (D >= 64 ? kMinBlocksD64 : 4));
  // Two row blocks per warp, or head_dim >= 64 (registers short: the D = 64 kernel runs three
  // CTAs per SM), keep their rows' windows as table references.
  static constexpr bool kRowRefs = MT == 2 || D >= 64;
  // Q fragments live in registers unless registers are short (then read per k-step).
  static constexpr bool kQInRegs = MT == 1 && !(D >= 128 && BN == 32);
  static constexpr int kQTile = SmemTile<D>::bytes(kRows);
  static constexpr int kKVTile = SmemTile<D>::bytes(BN);
  static constexpr int kTabOffset = kQTile + 4 * kKVTile;  // Q, 2 x K, 2 x V, then the tables
  static constexpr int kDeltaOffset = kTabOffset + kMaxTableEntries * 8;
  static constexpr int kSmem = kDeltaOffset + kCols * 4;
};

template <typename T, int D, int MT = 1, int BN = 64>
__global__ void __launch_bounds__(128, FwdConfig<T, D, MT, BN>::kMinBlocks)
    fused_fwd_kernel(const KernelParams p) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using Cfg = FwdConfig<T, D, MT, BN>;
  constexpr int NT = BN / 8;
  constexpr int ND = D / 8;
  constexpr int kRows = Cfg::kRows;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int row0 = 16 * MT * warp;  // the warp's first query row

  QueryCta c;
  if (!setup_query_cta(p, c)) return;
  const int head = c.cta.head;
  const int kvh = head / p.group_size;

  const uint32_t sQ = smem_u32(smem);
  const uint32_t sK = sQ + Cfg::kQTile;                 // stage s at sK + s * kKVTile
  const uint32_t sV = sQ + Cfg::kQTile + 2 * Cfg::kKVTile;
  Window* tab = reinterpret_cast<Window*>(smem + Cfg::kTabOffset);
  int* delta = reinterpret_cast<int*>(smem + Cfg::kDeltaOffset);

  const TileRows qr = query_tile_rows(p, c, head);
  auto q_off = [&](int row) { return qr.offset(p.ts.qlog, row, kRowBytes); };
  {
    const char* src[1] = {static_cast<const char*>(p.q)};
    const uint32_t dst[1] = {sQ};
    load_rows_async<kRows, D, 128>(src, dst, q_off, tid);
  }
  cp_async_commit();

  // Per-CTA tables: windows of the tile's positions, token offsets of key tile rows.
  for (int e = tid; e < table_entries(p.ts.qlog); e += 128) tab[e] = query_window_entry(p, c, e);
  if (tid < BN) delta[tid] = tile_row_delta(p, p.ts.klog, tid);
  __syncthreads();

  const char* const kv_src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
  auto load_kv = [&](const int (&tb)[3], int stage) {
    const GatherTile g = kv_gather(p, c, tb, kvh, kRowBytes);
    const uint32_t dst[2] = {sK + stage * Cfg::kKVTile, sV + stage * Cfg::kKVTile};
    load_gather_async<BN, D, 128>(kv_src, dst, delta, g, tid);
  };
  TileWalker walk;
  int tb[3];
  first_kv_tile(p, c, walk, tb);
  if (c.n_kv > 0) load_kv(tb, 0);
  cp_async_commit();

  RowPartners rp[Cfg::kRowRefs ? 1 : MT];
  RowRefs rf[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    if constexpr (Cfg::kRowRefs) {
      query_row_refs(p, row0 + 16 * mt, lane, rf[mt]);
    } else {
      query_row_partners(p, tab, row0 + 16 * mt, lane, rp[mt]);
    }
  }
  WarpTileTest wt;
  query_warp_test(p, c, tab, row0, 16 * MT, wt);

  cp_async_wait<1>();
  __syncthreads();
  uint32_t qf[Cfg::kQInRegs ? D / 16 : 1][4];
  if constexpr (Cfg::kQInRegs) lds_a_all<D>(qf, sQ, row0, lane);

  float o[MT][ND][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int d = 0; d < ND; ++d) o[mt][d][0] = o[mt][d][1] = o[mt][d][2] = o[mt][d][3] = 0.f;
  OnlineSoftmax<NT, ND> sm[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) sm[mt].init();

  for (int j = 0; j < c.n_kv; ++j) {
    const int st = j & 1;
    int tn[3];
    if (next_kv_tile(p, c, walk, j, tb, tn)) load_kv(tn, st ^ 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (wt.meets(tb, p.ts.klog)) {
      float s[MT][NT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int n = 0; n < NT; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
      if constexpr (Cfg::kQInRegs) {
        gemm_abt<T, D, BN>(s[0], qf, sK + st * Cfg::kKVTile, lane);
      } else {
        gemm_abt_mt<T, D, BN, MT>(s, sQ, row0, sK + st * Cfg::kKVTile, lane);
      }
      if (!wt.inside(tb, p.ts.klog)) {
        const int cut = wt.cut_dims(tb, p.ts.klog);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if constexpr (Cfg::kRowRefs) {
            RowPartners r;
            unpack_partners(rf[mt], tab, r);
            mask_tile(s[mt], r, cut, tb, p.ts.klog, lane, -INFINITY);
          } else {
            mask_tile(s[mt], rp[mt], cut, tb, p.ts.klog, lane, -INFINITY);
          }
        }
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) sm[mt].step(s[mt], o[mt], p.scale_log2);
      gemm_pv_mt<T, D, BN, MT>(o, s, sV + st * Cfg::kKVTile, lane);
    }
    __syncthreads();
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }

  cp_async_wait<0>();  // nothing may still land in the staging tile
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    float inv[2], lse[2];
    sm[mt].finish(inv, lse);
    stage_rows<T, D>(o[mt], inv, sQ, row0 + 16 * mt, lane);
    if ((lane & 3) == 0) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int64_t r = query_row_index(p, c, row0 + 16 * mt + (lane >> 2) + 8 * rr, head);
        if (r >= 0) p.lse_out[r] = lse[rr];
      }
    }
  }
  __syncthreads();
  store_rows<T, kRows, D, 128>(static_cast<char*>(p.out), sQ, q_off, tid, p.nonfinite);
}

}  // namespace fused
}  // namespace jax_na
