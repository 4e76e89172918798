// Multi-dimensional tiles of the GEMM family. A tile is a box of up to kRows (64) positions of
// ONE dilation group (query tiles for the forward and dQ kernels, key tiles for dK/dV). Its
// partner box (the keys a query tile touches, or the queries that touch a key tile) comes from
// window.h: tile_key_range / key_tile_query_range. All window math is window.h's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/problem.h"
#include "../common/window.h"

namespace jax_na {
namespace gemm {

// How positions of every dilation group are cut into tiles (chosen on the host).
struct TileGrid {
  int tile[3];    // tile extent per dim, in positions; product <= kRows
  int ntile[3];   // tiles per dim in the largest group: ceil(ceil(L / d) / tile)
  int rows;       // tile[0] * tile[1] * tile[2]
  int64_t count;  // tiles per (batch, head): prod(dilation) * prod(ntile)
};

// Grow the tile by doubling the dim that still needs the most tiles, up to max_rows positions.
inline TileGrid make_tile_grid(const Problem& p, int max_rows) {
  TileGrid g;
  int lg[3];
  for (int i = 0; i < 3; ++i) {
    lg[i] = (p.dim[i].extent + p.dim[i].dilation - 1) / p.dim[i].dilation;
    g.tile[i] = 1;
  }
  for (;;) {
    int best = -1, best_n = 1;
    for (int i = 0; i < 3; ++i) {
      const int n = (lg[i] + g.tile[i] - 1) / g.tile[i];
      if (n > best_n) best = i, best_n = n;
    }
    if (best < 0 || g.tile[0] * g.tile[1] * g.tile[2] * 2 > max_rows) break;
    g.tile[best] *= 2;
  }
  g.rows = g.tile[0] * g.tile[1] * g.tile[2];
  g.count = 1;
  for (int i = 0; i < 3; ++i) {
    g.ntile[i] = (lg[i] + g.tile[i] - 1) / g.tile[i];
    g.count *= int64_t(g.ntile[i]) * p.dim[i].dilation;
  }
  return g;
}

// One tile: its dilation group, its position range [pb, pe) per dim, and the group's extents.
struct TileCtx {
  int g[3], pb[3], pe[3], lg[3];
};

// Tile number t in [0, grid.count) -> TileCtx; false if the tile is empty (outside its group).
__device__ __forceinline__ bool tile_ctx(const Problem& p, const TileGrid& tg, int64_t t,
                                         TileCtx& c) {
  int idx[3];
  idx[2] = int(t % tg.ntile[2]);
  t /= tg.ntile[2];
  idx[1] = int(t % tg.ntile[1]);
  t /= tg.ntile[1];
  idx[0] = int(t % tg.ntile[0]);
  t /= tg.ntile[0];
  c.g[2] = int(t % p.dim[2].dilation);
  t /= p.dim[2].dilation;
  c.g[1] = int(t % p.dim[1].dilation);
  c.g[0] = int(t / p.dim[1].dilation);
  bool ok = true;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    c.lg[i] = group_extent(p.dim[i].extent, p.dim[i].dilation, c.g[i]);
    c.pb[i] = idx[i] * tg.tile[i];
    c.pe[i] = na_min(c.pb[i] + tg.tile[i], c.lg[i]);
    ok = ok && c.pb[i] < c.pe[i];
  }
  return ok;
}

// Positions of tile row r; false if the row lies outside the tile's valid part.
__device__ __forceinline__ bool tile_row_pos(const TileGrid& tg, const TileCtx& c, int r,
                                             int pos[3]) {
  if (r >= tg.rows) return false;
  pos[2] = c.pb[2] + r % tg.tile[2];
  pos[1] = c.pb[1] + (r / tg.tile[2]) % tg.tile[1];
  pos[0] = c.pb[0] + r / (tg.tile[2] * tg.tile[1]);
  return pos[0] < c.pe[0] && pos[1] < c.pe[1] && pos[2] < c.pe[2];
}

// Flat token index of positions `pos` of group c.g in batch b.
__device__ __forceinline__ int64_t token_of(const Problem& p, const TileCtx& c, int64_t b,
                                            const int pos[3]) {
  const int x0 = pos[0] * p.dim[0].dilation + c.g[0];
  const int x1 = pos[1] * p.dim[1].dilation + c.g[1];
  const int x2 = pos[2] * p.dim[2].dilation + c.g[2];
  return ((b * p.dim[0].extent + x0) * p.dim[1].extent + x1) * int64_t(p.dim[2].extent) + x2;
}

// A box of positions (same group as the tile), linearised with dim 2 fastest.
struct Box {
  int start[3], size[3];
  int count;
};

__device__ __forceinline__ void box_pos(const Box& b, int j, int pos[3]) {
  pos[2] = b.start[2] + j % b.size[2];
  j /= b.size[2];
  pos[1] = b.start[1] + j % b.size[1];
  pos[0] = b.start[0] + j / b.size[1];
}

// Keys touched by any query of the tile (the bounding box of their windows).
__device__ __forceinline__ Box key_box(const Problem& p, const TileCtx& c) {
  Box b;
  b.count = 1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const DimParams& d = p.dim[i];
    const Window w = tile_key_range(c.pb[i], c.pe[i], c.lg[i], d.kernel, d.stride, d.causal);
    b.start[i] = w.start;
    b.size[i] = w.end - w.start;
    b.count *= b.size[i];
  }
  return b;
}

// Queries whose windows intersect the key tile (inverse neighbourhood).
__device__ __forceinline__ Box query_box(const Problem& p, const TileCtx& c) {
  Box b;
  b.count = 1;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const DimParams& d = p.dim[i];
    const Window w = key_tile_query_range(c.pb[i], c.pe[i], c.lg[i], d.kernel, d.stride, d.causal);
    b.start[i] = w.start;
    b.size[i] = na_max(w.end - w.start, 0);
    b.count *= b.size[i];
  }
  return b;
}

// A query's window as start and length per dim; contains() is one unsigned compare per dim
// (an invalid key position -1 or an empty window never matches).
struct RowWindow {
  int start[3], len[3];
  __device__ __forceinline__ bool contains(int k0, int k1, int k2) const {
    return unsigned(k0 - start[0]) < unsigned(len[0]) && unsigned(k1 - start[1]) < unsigned(len[1]) &&
           unsigned(k2 - start[2]) < unsigned(len[2]);
  }
};

__device__ __forceinline__ RowWindow empty_window() {
  RowWindow w;
#pragma unroll
  for (int i = 0; i < 3; ++i) w.start[i] = 0, w.len[i] = 0;
  return w;
}

__device__ __forceinline__ RowWindow query_window(const Problem& p, const TileCtx& c,
                                                  const int pos[3]) {
  RowWindow w;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const DimParams& d = p.dim[i];
    const Window x = window_positions(pos[i], c.lg[i], d.kernel, d.stride, d.causal);
    w.start[i] = x.start;
    w.len[i] = x.end - x.start;
  }
  return w;
}

}  // namespace gemm
}  // namespace jax_na
