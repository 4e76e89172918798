// Geometry of a query-stationary CTA (forward, dQ): its multi-dimensional query tile, the box of
// key positions its queries can see, the key/value tiles that cover that box, and the per-CTA
// tables (windows of the tile's positions per dim; token offsets of key tile rows) that keep
// index math out of the main loop.
#pragma once

#include <cstdint>

#include "mask.h"
#include "params.h"
#include "smem_tile.h"
#include "tile_scheduler.h"

namespace jax_na {
namespace fused {

struct QueryCta {
  CtaCoord cta;
  int Lg[3];      // extent of the CTA's dilation group, per dim
  int qb[3];      // first query position of the tile
  int qe[3];      // one past the last valid query position (clamped to Lg)
  int kb[3];      // key box: union of the tile's windows
  int ke[3];
  int nk[3];      // key/value tiles per dim covering the box
  int n_kv;       // key/value tiles in all
};

// False when the tile lies past the end of its (smaller) dilation group: nothing to do.
FUSED_HD bool setup_query_cta(const KernelParams& p, const CtaCoord& cta, QueryCta& c) {
  c.cta = cta;
  bool ok = true;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    c.Lg[i] = group_extent(p.L[i], p.dil[i], c.cta.grp[i]);
    c.qb[i] = c.cta.tile[i] << p.ts.qlog[i];
    ok = ok && c.qb[i] < c.Lg[i];
  }
  if (!ok) return false;
  c.n_kv = 1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    c.qe[i] = na_min(c.qb[i] + (1 << p.ts.qlog[i]), c.Lg[i]);
    const Window r = tile_key_range(c.qb[i], c.qe[i], c.Lg[i], p.ker[i], p.str[i], p.causal[i] != 0);
    c.kb[i] = r.start;
    c.ke[i] = r.end;
    c.nk[i] = (r.end - r.start + (1 << p.ts.klog[i]) - 1) >> p.ts.klog[i];
    c.n_kv *= c.nk[i];
  }
  return true;
}

#if defined(__CUDACC__)
__device__ __forceinline__ bool setup_query_cta(const KernelParams& p, QueryCta& c) {
  return setup_query_cta(p, decode_cta(p, p.fd_heads), c);
}
#endif

// Row index (in rows of head_dim elements) of query tile row `row` for head `head`, or -1 past
// the group's end.
FUSED_HD int64_t query_row_index(const KernelParams& p, const QueryCta& c, int row, int head) {
  int t[3], x[3];
  split_row(row, p.ts.qlog, t);
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int pos = c.qb[i] + t[i];
    if (pos >= c.qe[i]) return -1;
    x[i] = pos * p.dil[i] + c.cta.grp[i];
  }
  return token_row(p, c.cta.b, x, head, p.heads);
}

// query_row_index of every row of the CTA's tile, from one RowMap (TileRows).
FUSED_HD TileRows query_tile_rows(const KernelParams& p, const QueryCta& c, int head) {
  return TileRows{row_map(p, c.cta.b, c.cta.grp, c.qb, head, p.heads),
                  {c.qe[0] - c.qb[0], c.qe[1] - c.qb[1], c.qe[2] - c.qb[2]}};
}

// First key position of the key/value tile at walk position t.
FUSED_HD void kv_tile_at(const KernelParams& p, const QueryCta& c, const int (&t)[3],
                         int (&tb)[3]) {
#pragma unroll
  for (int i = 0; i < 3; ++i) tb[i] = c.kb[i] + (t[i] << p.ts.klog[i]);
}

// The walk over a query CTA's key/value tiles: reset to the first tile (its first position in tb).
FUSED_HD void first_kv_tile(const KernelParams& p, const QueryCta& c, TileWalker& walk,
                            int (&tb)[3]) {
  walk.reset();
  kv_tile_at(p, c, walk.t, tb);
}

// Tile j + 1 of the walk (tile j at tb): true with its first position in tn, or false with
// tn = tb past the last tile.
FUSED_HD bool next_kv_tile(const KernelParams& p, const QueryCta& c, TileWalker& walk, int j,
                           const int (&tb)[3], int (&tn)[3]) {
  tn[0] = tb[0], tn[1] = tb[1], tn[2] = tb[2];
  if (j + 1 >= c.n_kv) return false;
  walk.next(c.nk);
  kv_tile_at(p, c, walk.t, tn);
  return true;
}

// First key position of key/value tile j (row-major over nk).
FUSED_HD void kv_tile_begin(const KernelParams& p, const QueryCta& c, int j, int (&tb)[3]) {
  const int t[3] = {j / (c.nk[1] * c.nk[2]), (j / c.nk[2]) % c.nk[1], j % c.nk[2]};
  kv_tile_at(p, c, t, tb);
}

// Row index of key tile row `row` (tile starting at tb) for key/value head kvh, or -1 outside
// the key box.
FUSED_HD int64_t key_row_index(const KernelParams& p, const QueryCta& c, const int (&tb)[3],
                               int row, int kvh) {
  int t[3], x[3];
  split_row(row, p.ts.klog, t);
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int pos = tb[i] + t[i];
    if (pos >= c.ke[i]) return -1;
    x[i] = pos * p.dil[i] + c.cta.grp[i];
  }
  return token_row(p, c.cta.b, x, kvh, p.heads_kv);
}

// Gather description of the key/value tile at tb (row byte offsets = base + delta[r] * stride,
// delta from tile_row_delta over klog); rows outside the key box are invalid.
FUSED_HD GatherTile kv_gather(const KernelParams& p, const QueryCta& c, const int (&tb)[3],
                              int kvh, int64_t row_bytes) {
  GatherTile g;
  g.stride = int64_t(p.heads_kv) * row_bytes;
  g.base = ((c.cta.b * p.tokens + tile_base_token(p, c.cta.grp, tb)) * p.heads_kv + kvh) * row_bytes;
  const bool full = tb[0] + (1 << p.ts.klog[0]) <= c.ke[0] && tb[1] + (1 << p.ts.klog[1]) <= c.ke[1] &&
                    tb[2] + (1 << p.ts.klog[2]) <= c.ke[2];
  g.valid = full ? ~0ull : column_mask(tb, c.ke, tb, p.ts.klog, p.rep_k12, p.rep_k2);
  return g;
}

// ---- per-CTA window table ----------------------------------------------------------------
// Entry e of dim i (entries laid out dim-major: dim 0 first, 2^qlog[i] entries per dim) is the
// window of query position min(qb_i + t, Lg_i - 1). Rows past the group's end take the last
// valid row's window (they are never stored).
FUSED_HD int table_entries(const int (&lg)[3]) { return (1 << lg[0]) + (1 << lg[1]) + (1 << lg[2]); }
constexpr int kMaxTableEntries = 130;  // 2^7 + 1 + 1

FUSED_HD void table_slot(const int (&lg)[3], int e, int& dim, int& t) {
  const int e0 = 1 << lg[0], e1 = 1 << lg[1];
  dim = e < e0 ? 0 : (e < e0 + e1 ? 1 : 2);
  t = e - (dim == 0 ? 0 : (dim == 1 ? e0 : e0 + e1));
}

FUSED_HD int table_base(const int (&lg)[3], int dim) {
  return dim == 0 ? 0 : (dim == 1 ? (1 << lg[0]) : (1 << lg[0]) + (1 << lg[1]));
}

FUSED_HD Window query_window_entry(const KernelParams& p, const QueryCta& c, int e) {
  int i, t;
  table_slot(p.ts.qlog, e, i, t);
  const int Lg = pick3(c.Lg, i);
  return dim_window_rt(p, i, na_min(pick3(c.qb, i) + t, Lg - 1), Lg);
}

// Windows of the thread's two rows of the 16-row block starting at row0 (rows row0 + g and
// row0 + g + 8). tab: the window table.
FUSED_HD void query_row_partners(const KernelParams& p, const Window* tab, int row0, int lane,
                                 RowPartners& rp) {
  const int base[3] = {0, 1 << p.ts.qlog[0], (1 << p.ts.qlog[0]) + (1 << p.ts.qlog[1])};
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int t[3];
    split_row(row0 + (lane >> 2) + 8 * rr, p.ts.qlog, t);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const Window w = tab[base[i] + t[i]];
      rp.lo[rr][i] = w.start;
      rp.hi[rr][i] = w.end;
    }
  }
}

// Same rows as packed table indices (entries < 256: tables hold at most 130).
FUSED_HD void query_row_refs(const KernelParams& p, int row0, int lane, RowRefs& rf) {
  const int base[3] = {0, 1 << p.ts.qlog[0], (1 << p.ts.qlog[0]) + (1 << p.ts.qlog[1])};
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int t[3];
    split_row(row0 + (lane >> 2) + 8 * rr, p.ts.qlog, t);
    rf.idx[rr] = uint32_t(base[0] + t[0]) | (uint32_t(base[1] + t[1]) << 8) |
                 (uint32_t(base[2] + t[2]) << 16);
  }
}

// Union / intersection of the windows of the valid rows among the warp's rows
// [row0, row0 + nrows) (an aligned power-of-two block, hence a box of positions).
FUSED_HD void query_warp_test(const KernelParams& p, const QueryCta& c, const Window* tab, int row0,
                              int nrows, WarpTileTest& wt) {
  const int base[3] = {0, 1 << p.ts.qlog[0], (1 << p.ts.qlog[0]) + (1 << p.ts.qlog[1])};
  int ta[3], tz[3];
  split_row(row0, p.ts.qlog, ta);
  split_row(row0 + nrows - 1, p.ts.qlog, tz);
  wt.active = true;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int b = c.qb[i] + ta[i];
    const int e = na_min(c.qb[i] + tz[i] + 1, c.Lg[i]);  // >= qb + 1
    wt.active = wt.active && b < e;
    const Window first_w = tab[base[i] + ta[i]];
    const Window last_w = tab[base[i] + (e - 1 - c.qb[i])];
    wt.any_lo[i] = first_w.start;
    wt.any_hi[i] = last_w.end;
    wt.in_lo[i] = last_w.start;
    wt.in_hi[i] = first_w.end;
  }
}

// The backward's per-row inputs of the thread's rows row0 + g, row0 + g + 8 (g = lane / 4):
// lse * log2(e) and delta; 0 past the group's end. rows: the CTA's table of its tile rows'
// indices in the (token, head) rows, negative past the group's end.
FUSED_HD void row_stats(const KernelParams& p, const int64_t* rows, int row0, int lane,
                        float (&lse2)[2], float (&dl)[2]) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t r = rows[row0 + (lane >> 2) + 8 * rr];
    lse2[rr] = r >= 0 ? p.lse_in[r] * kLog2e : 0.f;
    dl[rr] = r >= 0 ? p.delta[r] : 0.f;
  }
}

// 16-row warps: the thread's rows 16w + g, 16w + g + 8 and the warp's test.
FUSED_HD void query_rows(const KernelParams& p, const QueryCta& c, const Window* tab, int warp,
                         int lane, RowPartners& rp, WarpTileTest& wt) {
  query_row_partners(p, tab, 16 * warp, lane, rp);
  query_warp_test(p, c, tab, 16 * warp, 16, wt);
}

}  // namespace fused
}  // namespace jax_na
