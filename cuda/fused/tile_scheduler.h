// Tile scheduler: which CTA owns which stationary tile, and (host) which tile shapes to use.
//
// One CTA per (batch, head, dilation group, multi-dimensional stationary tile). The grid is
// one-dimensional with the tile index fastest, so CTAs that run together work on neighbouring
// tiles of the same head and share their key/value rows in L2; which dim of the tile grid runs
// fastest is p.tile_order (order_tiles_for_l2).
#pragma once

#include <cstdint>

#include "params.h"
#include "problem.h"

namespace jax_na {
namespace fused {

struct CtaCoord {
  int64_t b;
  int head;     // query head (query-stationary kernels) or key/value head (key-stationary)
  int grp[3];   // dilation group per dim
  int tile[3];  // stationary tile index per dim
};

#if defined(__CUDACC__)
// n / f.d (and n % f.d in rem): a multiply-high for 32-bit ids (FastDiv: ids < 2^31), a 64-bit
// division otherwise.
template <typename I>
__device__ __forceinline__ I grid_divmod(I n, const FastDiv& f, I& rem) {
  if constexpr (sizeof(I) == 4) {
    uint32_t r;
    const I q = f.divmod(n, r);
    rem = r;
    return q;
  } else {
    rem = n % I(f.d);
    return n / I(f.d);
  }
}

__device__ __forceinline__ const FastDiv& pick_div(const FastDiv (&a)[3], int i) {
  return i == 0 ? a[0] : (i == 1 ? a[1] : a[2]);
}

// Tile `id` of the grid's order, with nheads = p.heads (fh = p.fd_heads) or p.heads_kv. I:
// int64_t, or uint32_t where the grid's ids are below 2^31 (persistent kernels decode once per
// tile inside their loop; a 64-bit division is a call). kOrdered: the tile dims in p.tile_order
// (order_tiles_for_l2), else row-major (kernels whose planner does not order them; the ordered
// decode's selects cost registers, and the fused forward spilled with it).
template <typename I, bool kOrdered = false>
__device__ __forceinline__ CtaCoord decode_cta(const KernelParams& p, const FastDiv& fh, I id) {
  CtaCoord c;
  I t, g, h;
  id = grid_divmod(id, p.fd_tiles, t);
  t = t >= I(p.tile_flip) ? t - I(p.tile_flip) : I(p.tile_flip) - t;
  id = grid_divmod(id, p.fd_groups, g);
  c.b = int64_t(grid_divmod(id, fh, h));
  c.head = int(h);
  if constexpr (kOrdered) {
    const int o1 = p.tile_order[1], o2 = p.tile_order[2];
    I t1, t2;
    t = grid_divmod(t, pick_div(p.fd_ntiles, o2), t2);
    t = grid_divmod(t, pick_div(p.fd_ntiles, o1), t1);
#pragma unroll
    for (int i = 0; i < 3; ++i) c.tile[i] = int(i == o2 ? t2 : (i == o1 ? t1 : t));
  } else {
    I t1, t2;
    t = grid_divmod(t, p.fd_ntiles[2], t2);
    c.tile[0] = int(grid_divmod(t, p.fd_ntiles[1], t1));
    c.tile[1] = int(t1), c.tile[2] = int(t2);
  }
  I g1, g2;
  g = grid_divmod(g, p.fd_dil[2], g2);
  c.grp[0] = int(grid_divmod(g, p.fd_dil[1], g1));
  c.grp[1] = int(g1), c.grp[2] = int(g2);
  return c;
}
__device__ __forceinline__ CtaCoord decode_cta(const KernelParams& p, const FastDiv& fh) {
  const int64_t id = p.cta_offset + blockIdx.x;
  // 32-bit whenever the grid's ids fit FastDiv, as they nearly always do.
  if (p.batch * int64_t(fh.d) * p.groups * p.tiles <= int64_t(INT32_MAX))
    return decode_cta<uint32_t>(p, fh, uint32_t(id));
  return decode_cta<int64_t>(p, fh, id);
}
#endif

// Host: tile shapes for a query-stationary kernel (forward, dQ) with 2^log_rows queries per CTA
// and 2^log_cols keys per key/value tile; fills p.ts. Minimises the number of (CTA, KV tile)
// iterations over the whole problem (a separable per-dim count, sampled on long dims), with a
// small per-CTA overhead. Cached per geometry.
TileShape choose_query_stationary(const KernelParams& p, int log_rows, int log_cols);

// Host: the (query tile, key tile) iterations of query-stationary tiles ts over one dilation
// group of the problem, counted as choose_query_stationary counts them.
double query_stationary_iterations(const KernelParams& p, const TileShape& ts);

// Host: whether no key/value tile of the query-stationary tiling p.ts is ever cut by a window:
// along every dim the queries of each stationary tile share one window, a whole number of key
// tiles long, so every tile a query tile computes lies inside all its rows' windows (blocked
// and tile-aligned strided problems: A1b, A2s, A3s). Kernels may then leave masks out.
bool tiles_never_cut(const KernelParams& p);

// Host: query-stationary tiles of 2^(log_rows + 1) queries for kernels whose two warpgroups
// take half each (the Hopper forward): the best 2^log_rows tile doubled along the dim that adds
// the fewest key tiles (the outermost of extent > 1 unless another is 2% better: A3s doubles
// 1x8x8 along dim 0, inside its stride groups, not along dim 1 across two), and whether that
// tiling is never cut (tiles_never_cut). Cached per geometry.
struct DoubledTiles {
  TileShape ts;
  bool never_cut;
};
DoubledTiles choose_query_stationary_doubled(const KernelParams& p, int log_rows, int log_cols);

// Host: tile shapes for the key-stationary kernel (dK/dV) with 2^log_rows keys per CTA and
// 2^log_cols queries per iterated query tile. klog is the stationary key tile.
TileShape choose_key_stationary(const KernelParams& p, int log_rows, int log_cols);

// Host: fill the grid fields (ntiles, tiles, groups) for stationary tiles of log extents lg,
// tiles in row-major order.
void set_grid(KernelParams& p, const int (&lg)[3]);

// Host: the tile order (p.tile_order) whose first `wave` tiles, the ones resident together,
// need the smallest box of keys (per dim the key range of their query range, multiplied), so
// that more of their key/value rows stay in L2. After set_grid, for query-stationary tiles.
void order_tiles_for_l2(KernelParams& p, int wave);

}  // namespace fused
}  // namespace jax_na
