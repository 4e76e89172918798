// Forward kernel of the Hopper family (sm_90a): the multi-dimensional tiling of the fused family
// with the matrix work on warpgroup MMA.
//
// CTA: one warpgroup (4 warps, 128 threads) per query tile of 64 positions (shape 2^qlog per
// dim) of one (batch, head, dilation group). It walks the key/value tiles (64 keys, shape
// 2^klog) covering the box of the tile's windows (every tile of the box meets some query's
// window: the box is the product of the per-dim unions), gathered with cp.async through the
// per-CTA token-offset table into 128-byte-swizzled shared memory, K double- and V
// triple-buffered (V of tile j - 1 is still read while tile j + 1 loads). This kernel serves
// the problems whose tiles are not TMA boxes (tma.h); the others run kernel_fwd_ws.h.
// Software pipeline per tile j:
//   issue S_j = Q K_j^T (wgmma m64n64k16, both from shared memory) and O += P_{j-1} V_{j-1}
//   (wgmma m64nDk16, P from registers); wait for S_j; element masks only in warps whose rows
//   do not all see the whole tile; wait for P_{j-1} V_{j-1} (ptxas places it here); softmax of
//   S_j; rescale O. The SM's other CTAs (kMinBlocks - 1 of them: three at head_dim 32, one at
//   64 and 128, none at 256) overlap the softmax.
// Epilogue as in the fused family (stage O as T, 16-byte stores through a table of the rows'
// indices written in the prologue; lse in natural log).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "../fused/arch.h"
#include "../fused/params.h"
#include "../fused/query_tile.h"
#include "../fused/smem_tile.h"
#include "mainloop.h"
#include "smem_layout.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

using fused::KernelParams;

template <typename T, int D>
struct FwdConfig {
  static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head_dim 32, 64, 128 or 256");
  static constexpr int kThreads = 128;
  static constexpr int kRows = 64;  // queries per CTA (one wgmma M)
  static constexpr int kCols = 64;  // keys per key/value tile (the S wgmma's N)
  static constexpr int kLogRows = 6;
  static constexpr int kLogCols = 6;
  // D = 64 at 3 CTAs (168 registers) spills; D = 256 takes 192 KB of shared memory; D = 32
  // fits four (122 registers).
  static constexpr int kMinBlocks = D == 256 ? 1 : (D == 32 ? 4 : 2);
  using QTile = GmmaTile<kRows, D>;
  using KVTile = GmmaTile<kCols, D>;
  // Q, 2 x K, 3 x V (1024-byte aligned), the window and token-offset tables.
  static constexpr int kK = QTile::kBytes;
  static constexpr int kV = kK + 2 * KVTile::kBytes;
  static constexpr int kTab = kV + 3 * KVTile::kBytes;
  static constexpr int kDelta = kTab + fused::kMaxTableEntries * 8;
  static constexpr int kRowIndex = kDelta + kCols * 4;  // the query rows' indices (RowTable)
  static constexpr int kSmem = kRowIndex + kRows * 8 + 1024;  // + alignment slack
};

template <typename T, int D>
__global__ void __launch_bounds__(128, FwdConfig<T, D>::kMinBlocks)
    hopper_fwd_kernel(const KernelParams p) {
#if JAX_NA_WGMMA
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using namespace fused;
  using Cfg = FwdConfig<T, D>;
  using KV = typename Cfg::KVTile;
  constexpr int NT = Consumer<T, D, 64>::NT;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023u) & ~1023u;  // swizzle atoms need 1024-byte alignment
  char* const smem = smem_raw + (sQ - raw);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int row0 = 16 * warp;

  QueryCta c;
  if (!setup_query_cta(p, c)) return;
  const int kvh = c.cta.head / p.group_size;
  const uint32_t sK = sQ + Cfg::kK, sV = sQ + Cfg::kV;
  Window* tab = reinterpret_cast<Window*>(smem + Cfg::kTab);
  int* delta = reinterpret_cast<int*>(smem + Cfg::kDelta);

  const TileRows qr = query_tile_rows(p, c, c.cta.head);
  auto q_off = [&](int row) { return qr.offset(p.ts.qlog, row, kRowBytes); };
  {
    const char* src[1] = {static_cast<const char*>(p.q)};
    const uint32_t dst[1] = {sQ};
    load_rows_async<Cfg::kRows, D, 128, typename Cfg::QTile>(src, dst, q_off, tid);
  }
  cp_async_commit();
  for (int e = tid; e < table_entries(p.ts.qlog); e += 128) tab[e] = query_window_entry(p, c, e);
  if (tid < Cfg::kCols) delta[tid] = tile_row_delta(p, p.ts.klog, tid);
  // The epilogue stores through these, so the CTA's coordinates need not live through the loop
  // (at head_dim 32, four CTAs per SM at 128 registers, they spilled).
  int64_t* const rows = reinterpret_cast<int64_t*>(smem + Cfg::kRowIndex);
  if (tid < Cfg::kRows) rows[tid] = qr(p.ts.qlog, tid);
  __syncthreads();

  // Tile j: K in slot j % 2, V in slot j % 3.
  auto k_slot = [&](int j) { return sK + (j & 1) * KV::kBytes; };
  auto v_slot = [&](int j) { return sV + (j % 3) * KV::kBytes; };
  const char* const kv_src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
  auto load_kv = [&](const int (&tb)[3], int j) {
    const GatherTile g = kv_gather(p, c, tb, kvh, kRowBytes);
    const uint32_t dst[2] = {k_slot(j), v_slot(j)};
    load_gather_async<Cfg::kCols, D, 128, KV>(kv_src, dst, delta, g, tid);
  };
  TileWalker walk;
  int tb[3];
  first_kv_tile(p, c, walk, tb);
  if (c.n_kv > 0) load_kv(tb, 0);
  cp_async_commit();

  Consumer<T, D, 64> cs;
  cs.init(p, c, tab, sQ, row0, lane);

  // Start tile j: load tile j + 1 into the slots of tiles j - 1 (K) and j - 2 (V), whose MMAs
  // have finished; wait until tile j has landed and is visible to wgmma.
  auto begin_tile = [&](int j, int (&tn)[3]) {
    if (next_kv_tile(p, c, walk, j, tb, tn)) load_kv(tn, j + 1);
    cp_async_commit();
    cp_async_wait<1>();
    fence_proxy_async();
    __syncthreads();
  };

  if (c.n_kv > 0) {  // tile 0: no P V to overlap yet (O is still zero)
    int tn[3];
    begin_tile(0, tn);
    float s[NT][4], alpha[2];
    wgmma_fence();
    cs.issue_s(s, k_slot(0));
    const auto mask = cs.tile_mask(p, tb, lane);
    wgmma_wait<0>();
    cs.scores(p, mask, s, alpha);
    cs.keep_p(s);
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }
  for (int j = 1; j < c.n_kv; ++j) {
    int tn[3];
    begin_tile(j, tn);
    float s[NT][4], alpha[2];
    wgmma_fence();
    cs.issue_s(s, k_slot(j));
    cs.issue_pv(v_slot(j - 1));
    wgmma_commit();
    const auto mask = cs.tile_mask(p, tb, lane);
    wgmma_wait<1>();  // S_j is ready; P_{j-1} V_{j-1} may still run
    cs.scores(p, mask, s, alpha);
    wgmma_wait<0>();
    fence_acc(cs.o);
    cs.sm.rescale(cs.o, alpha);
    cs.keep_p(s);
    tb[0] = tn[0], tb[1] = tn[1], tb[2] = tn[2];
  }
  if (c.n_kv > 0) cs.last_pv(v_slot(c.n_kv - 1));

  cp_async_wait<0>();  // nothing may still land in the staging tile
  __syncthreads();
  cs.stage(p, rows, sQ, row0, lane);
  __syncthreads();
  store_rows<T, Cfg::kRows, D, 128>(static_cast<char*>(p.out), sQ, RowTable{rows, kRowBytes}, tid,
                                    p.nonfinite);
#else
  __trap();  // built for sm_90a only; the host side never launches it elsewhere
#endif
}

}  // namespace hopper
}  // namespace jax_na
