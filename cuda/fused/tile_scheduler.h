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
// Tile `id` of the grid's order. I: int64_t, or uint32_t where the tile count fits (persistent
// kernels decode once per tile inside their loop; a 64-bit division is a call). kOrdered: the
// tile dims in p.tile_order (order_tiles_for_l2), else row-major (kernels whose planner does
// not order them; the ordered decode's selects cost registers, and the fused forward spilled
// with it).
template <typename I, bool kOrdered = false>
__device__ __forceinline__ CtaCoord decode_cta(const KernelParams& p, int nheads, I id) {
  CtaCoord c;
  I t = id % I(p.tiles);
  t = t >= I(p.tile_flip) ? t - I(p.tile_flip) : I(p.tile_flip) - t;
  id /= I(p.tiles);
  // Without dilation (one group) the group decode divides by nothing.
  const bool one_group = p.groups == 1;
  int g = one_group ? 0 : int(id % I(p.groups));
  if (!one_group) id /= I(p.groups);
  c.head = int(id % I(nheads));
  c.b = int64_t(id / I(nheads));
  if constexpr (kOrdered) {
    const int o1 = p.tile_order[1], o2 = p.tile_order[2];
    const I n2 = I(pick3(p.ntiles, o2)), n1 = I(pick3(p.ntiles, o1));
    const int t2 = int(t % n2);
    t /= n2;
    const int t1 = int(t % n1), t0 = int(t / n1);
#pragma unroll
    for (int i = 0; i < 3; ++i) c.tile[i] = i == o2 ? t2 : (i == o1 ? t1 : t0);
  } else {
    c.tile[2] = int(t % I(p.ntiles[2]));
    t /= I(p.ntiles[2]);
    c.tile[1] = int(t % I(p.ntiles[1]));
    c.tile[0] = int(t / I(p.ntiles[1]));
  }
  if (one_group) {
    c.grp[0] = c.grp[1] = c.grp[2] = 0;
  } else {
    c.grp[2] = g % p.dil[2];
    g /= p.dil[2];
    c.grp[1] = g % p.dil[1];
    c.grp[0] = g / p.dil[1];
  }
  return c;
}
__device__ __forceinline__ CtaCoord decode_cta(const KernelParams& p, int nheads) {
  const int64_t id = p.cta_offset + blockIdx.x;
  // A 64-bit division is a long subroutine (three of them were a sixth of a small-window CTA's
  // prologue): 32-bit whenever the grid's ids fit, as they nearly always do.
  if (p.batch * nheads * p.groups * p.tiles <= int64_t(UINT32_MAX))
    return decode_cta<uint32_t>(p, nheads, uint32_t(id));
  return decode_cta<int64_t>(p, nheads, id);
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
