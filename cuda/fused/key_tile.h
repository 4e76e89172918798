// Geometry of a key-stationary CTA (backward dK/dV): its multi-dimensional key tile, the box of
// query positions whose windows meet it (inverse neighbourhood), the query tiles covering that
// box (iterated once per query head of the GQA group), and the per-CTA tables (inverse
// neighbourhood of the tile's key positions per dim; token offsets of query tile rows).
#pragma once

#include <cstdint>

#include "mask.h"
#include "params.h"
#include "query_tile.h"
#include "smem_tile.h"
#include "tile_scheduler.h"

namespace jax_na {
namespace fused {

struct KeyCta {
  CtaCoord cta;   // head = key/value head
  int Lg[3];
  int kb[3];      // first key position of the tile
  int ke[3];      // one past the last valid key position (clamped to Lg)
  int qb[3];      // query box: queries whose windows meet the tile
  int qe[3];
  int nq[3];      // query tiles per dim covering the box
  int n_q;        // query tiles per head
};

FUSED_HD bool setup_key_cta(const KernelParams& p, const CtaCoord& cta, KeyCta& c) {
  c.cta = cta;
  bool ok = true;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    c.Lg[i] = group_extent(p.L[i], p.dil[i], c.cta.grp[i]);
    c.kb[i] = c.cta.tile[i] << p.ts.klog[i];
    ok = ok && c.kb[i] < c.Lg[i];
  }
  if (!ok) return false;
  c.n_q = 1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    c.ke[i] = na_min(c.kb[i] + (1 << p.ts.klog[i]), c.Lg[i]);
    const Window r =
        key_tile_query_range(c.kb[i], c.ke[i], c.Lg[i], p.ker[i], p.str[i], p.causal[i] != 0);
    c.qb[i] = r.start;
    c.qe[i] = r.end;
    c.nq[i] = r.end > r.start ? (r.end - r.start + (1 << p.ts.qlog[i]) - 1) >> p.ts.qlog[i] : 0;
    c.n_q *= c.nq[i];
  }
  return true;
}

#if defined(__CUDACC__)
__device__ __forceinline__ bool setup_key_cta(const KernelParams& p, KeyCta& c) {
  return setup_key_cta(p, decode_cta(p, p.fd_heads_kv), c);
}
#endif

// Row index of key tile row `row`, or -1 past the group's end: the definition; the kernels use
// key_tile_rows (below), which tiling_check checks against it.
FUSED_HD int64_t own_key_row_index(const KernelParams& p, const KeyCta& c, int row) {
  int t[3], x[3];
  split_row(row, p.ts.klog, t);
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int pos = c.kb[i] + t[i];
    if (pos >= c.ke[i]) return -1;
    x[i] = pos * p.dil[i] + c.cta.grp[i];
  }
  return token_row(p, c.cta.b, x, c.cta.head, p.heads_kv);
}

// own_key_row_index of every row of the CTA's tile, from one RowMap (TileRows).
FUSED_HD TileRows key_tile_rows(const KernelParams& p, const KeyCta& c) {
  return TileRows{row_map(p, c.cta.b, c.cta.grp, c.kb, c.cta.head, p.heads_kv),
                  {c.ke[0] - c.kb[0], c.ke[1] - c.kb[1], c.ke[2] - c.kb[2]}};
}

// First query position of the query tile at walk position t.
FUSED_HD void q_tile_at(const KernelParams& p, const KeyCta& c, const int (&t)[3], int (&tb)[3]) {
#pragma unroll
  for (int i = 0; i < 3; ++i) tb[i] = c.qb[i] + (t[i] << p.ts.qlog[i]);
}

// Query tile qt (row-major over nq): first query position.
FUSED_HD void q_tile_begin(const KernelParams& p, const KeyCta& c, int qt, int (&tb)[3]) {
  const int t[3] = {qt / (c.nq[1] * c.nq[2]), (qt / c.nq[2]) % c.nq[1], qt % c.nq[2]};
  q_tile_at(p, c, t, tb);
}

// Row index of query tile row `row` (tile at tb) for query head `head`, or -1 past the group.
FUSED_HD int64_t q_row_index(const KernelParams& p, const KeyCta& c, const int (&tb)[3], int row,
                             int head) {
  int t[3], x[3];
  split_row(row, p.ts.qlog, t);
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int pos = tb[i] + t[i];
    if (pos >= c.Lg[i]) return -1;
    x[i] = pos * p.dil[i] + c.cta.grp[i];
  }
  return token_row(p, c.cta.b, x, head, p.heads);
}

// Gather description of the query tile at tb for query head `head`, in units of `unit` bytes
// per (token, head) row (row_bytes for Q/dO, 4 for lse/delta); rows past the group's end are
// invalid.
FUSED_HD GatherTile q_gather(const KernelParams& p, const KeyCta& c, const int (&tb)[3], int head,
                             int64_t unit) {
  GatherTile g;
  g.stride = int64_t(p.heads) * unit;
  g.base = ((c.cta.b * p.tokens + tile_base_token(p, c.cta.grp, tb)) * p.heads + head) * unit;
  const bool full = tb[0] + (1 << p.ts.qlog[0]) <= c.Lg[0] && tb[1] + (1 << p.ts.qlog[1]) <= c.Lg[1] &&
                    tb[2] + (1 << p.ts.qlog[2]) <= c.Lg[2];
  g.valid = full ? ~0ull : column_mask(tb, c.Lg, tb, p.ts.qlog, p.rep_q12, p.rep_q2);
  return g;
}

#if defined(__CUDACC__)
// lse and delta of the query tile rows described by gr (q_gather in row units) -> the stats
// arrays at l_dst and dl_dst (cp.async, 4 bytes a row; thread t < ROWS loads row t). Queries
// past the group's end read as lse = delta = 0 with zero Q and dO rows: their contributions to
// dV and dK are exactly 0 (and they are masked anyway).
template <int ROWS>
__device__ __forceinline__ void load_query_stats(const KernelParams& p, const GatherTile& gr,
                                                 const int* delta, uint32_t l_dst,
                                                 uint32_t dl_dst, int tid) {
  if (tid < ROWS) {
    const bool valid = (gr.valid >> tid) & 1ull;
    const int64_t r = gr.base + int64_t(delta[tid]) * gr.stride;
    cp_async_4(l_dst + 4 * tid, valid ? p.lse_in + r : p.lse_in, valid);
    cp_async_4(dl_dst + 4 * tid, valid ? p.delta + r : p.delta, valid);
  }
}
#endif

// ---- per-CTA inverse-neighbourhood table ---------------------------------------------------
// Entry of dim i, slot t (dim-major, 2^klog[i] slots per dim): the query positions whose
// windows hold key position kb_i + t; empty past the group's end.
FUSED_HD Window key_inverse_entry(const KernelParams& p, const KeyCta& c, int e) {
  int i, t;
  table_slot(p.ts.klog, e, i, t);
  const int kp = pick3(c.kb, i) + t;
  const int Lg = pick3(c.Lg, i);
  if (kp >= Lg) return Window{0, 0};
  return key_tile_query_range(kp, kp + 1, Lg, pick3(p.ker, i), pick3(p.str, i), pick3(p.causal, i) != 0);
}

// The thread's two key rows: their inverse neighbourhoods (query intervals per dim), from the
// inverse table tab.
FUSED_HD void key_row_partners(const KernelParams& p, const Window* tab, int warp, int lane,
                               RowPartners& rp) {
  const int base[3] = {0, 1 << p.ts.klog[0], (1 << p.ts.klog[0]) + (1 << p.ts.klog[1])};
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int t[3];
    split_row(16 * warp + (lane >> 2) + 8 * rr, p.ts.klog, t);
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const Window w = tab[base[i] + t[i]];
      rp.lo[rr][i] = w.start;
      rp.hi[rr][i] = w.end;
    }
  }
}

// key_row_partners, and the warp's union / intersection of its rows' intervals.
FUSED_HD void key_rows(const KernelParams& p, const KeyCta& c, const Window* tab, int warp,
                       int lane, RowPartners& rp, WarpTileTest& wt) {
  key_row_partners(p, tab, warp, lane, rp);
  const int base[3] = {0, 1 << p.ts.klog[0], (1 << p.ts.klog[0]) + (1 << p.ts.klog[1])};
  int ta[3], tz[3];
  split_row(16 * warp, p.ts.klog, ta);
  split_row(16 * warp + 15, p.ts.klog, tz);
  wt.active = true;
  bool all_valid = true;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int b = c.kb[i] + ta[i];
    const int e_unclamped = c.kb[i] + tz[i] + 1;
    const int e = na_min(e_unclamped, c.Lg[i]);  // >= kb + 1
    wt.active = wt.active && b < e;
    all_valid = all_valid && e_unclamped <= c.Lg[i];
  }
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int e = na_min(c.kb[i] + tz[i] + 1, c.Lg[i]);
    // Inverse intervals are non-decreasing in the key position: the union over the warp's keys
    // runs from the first key's start to the last key's end, the intersection from the last
    // key's start to the first key's end.
    const Window first = tab[base[i] + ta[i]];
    const Window last = tab[base[i] + (e - 1 - c.kb[i])];
    wt.any_lo[i] = first.start;
    wt.any_hi[i] = last.end;
    // Queries that see every key of the warp; none when some warp row is past the group's end.
    wt.in_lo[i] = all_valid ? last.start : 0;
    wt.in_hi[i] = all_valid ? first.end : 0;
  }
}

}  // namespace fused
}  // namespace jax_na
