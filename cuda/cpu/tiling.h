// Tiles of the spatial grid for the CPU kernels. A tile is a box of positions inside one
// dilation group per dimension, so its queries (or keys) share one contiguous key (or query)
// box that the task gathers once into float32 scratch. All window math is common/window.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../common/problem.h"
#include "../common/window.h"
#include "convert.h"

namespace jax_na {
namespace cpu {

struct Range {
  int begin = 0, end = 0;
  int size() const { return end > begin ? end - begin : 0; }
};

// Positions [pos[i].begin, pos[i].end) of dilation group g[i] (group extent Lg[i]) per dim.
struct Tile {
  int g[3];
  int Lg[3];
  Range pos[3];
};

// Tile extents in positions: about 128 positions per tile spread over the dims that have more
// than one position, so the gathered box (tile + kernel - 1 per dim) stays cache-sized.
inline void choose_tile(const Problem& p, int tile[3]) {
  int active = 0;
  for (int i = 0; i < 3; ++i) active += group_extent(p.dim[i].extent, p.dim[i].dilation, 0) > 1;
  const int side = active <= 1 ? 128 : active == 2 ? 12 : 5;
  for (int i = 0; i < 3; ++i) {
    const int m = group_extent(p.dim[i].extent, p.dim[i].dilation, 0);  // largest group
    tile[i] = m > 1 ? na_min(m, side) : 1;
  }
}

// All non-empty tiles: every coordinate of the grid lies in exactly one tile.
inline std::vector<Tile> make_tiles(const Problem& p, const int tile[3]) {
  std::vector<Tile> tiles;
  const DimParams* d = p.dim;
  for (int g0 = 0; g0 < d[0].dilation; ++g0)
    for (int g1 = 0; g1 < d[1].dilation; ++g1)
      for (int g2 = 0; g2 < d[2].dilation; ++g2) {
        const int g[3] = {g0, g1, g2};
        int Lg[3];
        for (int i = 0; i < 3; ++i) Lg[i] = group_extent(d[i].extent, d[i].dilation, g[i]);
        for (int a = 0; a < Lg[0]; a += tile[0])
          for (int b = 0; b < Lg[1]; b += tile[1])
            for (int c = 0; c < Lg[2]; c += tile[2]) {
              Tile t;
              const int start[3] = {a, b, c};
              for (int i = 0; i < 3; ++i) {
                t.g[i] = g[i];
                t.Lg[i] = Lg[i];
                t.pos[i] = Range{start[i], na_min(start[i] + tile[i], Lg[i])};
              }
              tiles.push_back(t);
            }
      }
  return tiles;
}

inline Range window_range(int pos, int Lg, const DimParams& d) {
  const Window w = window_positions(pos, Lg, d.kernel, d.stride, d.causal);
  return Range{w.start, w.end};
}

// Key positions seen by the queries of `t` along dim i.
inline Range key_box(const Tile& t, int i, const DimParams& d) {
  const Window w = tile_key_range(t.pos[i].begin, t.pos[i].end, t.Lg[i], d.kernel, d.stride, d.causal);
  return Range{w.start, w.end};
}

// Query positions whose window meets key positions `keys` along one dim (one interval).
inline Range query_box(Range keys, int Lg, const DimParams& d) {
  const Window w = key_tile_query_range(keys.begin, keys.end, Lg, d.kernel, d.stride, d.causal);
  return Range{w.start, w.end};
}

// Row-major flat token index of the grid coordinate of positions (p0, p1, p2) in tile groups.
inline int64_t token_of(const Problem& p, const Tile& t, int p0, int p1, int p2) {
  const int x0 = p0 * p.dim[0].dilation + t.g[0];
  const int x1 = p1 * p.dim[1].dilation + t.g[1];
  const int x2 = p2 * p.dim[2].dilation + t.g[2];
  return (int64_t(x0) * p.dim[1].extent + x1) * p.dim[2].extent + x2;
}

// Gathers rows [b, token, head + 0 .. head + nheads - 1, :] for every position of the box `r`
// (in the groups of `t`) into dst as float32 rows of `padded` floats (zero tail), row-major
// over (box position, head).
inline void gather_box(const Problem& p, const void* src, int64_t heads, int64_t b, int64_t head,
                       int64_t nheads, const Tile& t, const Range r[3], int64_t padded, float* dst) {
  const int64_t D = p.head_dim;
  const int64_t T = p.tokens();
  for (int a = r[0].begin; a < r[0].end; ++a)
    for (int c = r[1].begin; c < r[1].end; ++c)
      for (int e = r[2].begin; e < r[2].end; ++e) {
        const int64_t row = (b * T + token_of(p, t, a, c, e)) * heads + head;
        for (int64_t h = 0; h < nheads; ++h, dst += padded) {
          const float* x = load_padded(src, p.dtype, (row + h) * D, D, padded, dst);
          if (x != dst) std::memcpy(dst, x, size_t(D) * sizeof(float));
        }
      }
}

// Gathers float32 statistics [b, token, head + 0 .. nheads - 1] (lse, delta) of the box `r`.
inline void gather_stats(const Problem& p, const float* src, int64_t b, int64_t head, int64_t nheads,
                         const Tile& t, const Range r[3], float* dst) {
  const int64_t T = p.tokens();
  for (int a = r[0].begin; a < r[0].end; ++a)
    for (int c = r[1].begin; c < r[1].end; ++c)
      for (int e = r[2].begin; e < r[2].end; ++e) {
        const float* x = src + (b * T + token_of(p, t, a, c, e)) * p.heads + head;
        for (int64_t h = 0; h < nheads; ++h) *dst++ = x[h];
      }
}

inline int64_t volume(const Range r[3]) { return int64_t(r[0].size()) * r[1].size() * r[2].size(); }

// The key positions seen by the queries of a tile (key_box per dim), gathered row-major as one
// padded row per position: row(a0, a1, a2) is the box row of key position (a0, a1, a2).
struct KeyBox {
  Range r[3];
  int64_t n1, n2;
  KeyBox(const Problem& p, const Tile& t) {
    for (int i = 0; i < 3; ++i) r[i] = key_box(t, i, p.dim[i]);
    n1 = r[1].size();
    n2 = r[2].size();
  }
  int64_t row(int a0, int a1, int a2) const {
    return ((a0 - r[0].begin) * n1 + (a1 - r[1].begin)) * n2 + (a2 - r[2].begin);
  }
};

// Rows of the largest key box over `tiles` (at least 1).
inline int64_t max_key_box(const Problem& p, const std::vector<Tile>& tiles) {
  int64_t max_box = 1;
  for (const Tile& t : tiles) {
    Range r[3];
    for (int i = 0; i < 3; ++i) r[i] = key_box(t, i, p.dim[i]);
    max_box = std::max(max_box, volume(r));
  }
  return max_box;
}

}  // namespace cpu
}  // namespace jax_na
