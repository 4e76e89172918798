// The one parameter block every fused kernel receives (by value), and the host/device
// geometry helpers around it: row <-> multi-dimensional tile coordinates, token offsets and the
// 64-bit column masks of a row against a tile.
//
// Vocabulary. The stationary operand of a CTA is one multi-dimensional tile of positions inside
// one dilation group (per dim: positions p, coordinate x = p * dil + g). Tile extents are powers
// of two chosen at run time (TileShape, log2 per dim; an extent-1 dimension gets extent 1), so
// the spatial rank is a run-time value and rows map to coordinates with shifts and masks.
// Row r of a tile of log-extents lg has coordinates
//   c2 = r & (2^lg2 - 1),  c1 = (r >> lg2) & (2^lg1 - 1),  c0 = r >> (lg1 + lg2).
#pragma once

#include <cstdint>

#include "fast_div.h"
#include "window.h"

#if defined(__CUDACC__)
#define FUSED_HD __host__ __device__ __forceinline__
#else
#define FUSED_HD inline
#endif

namespace jax_na {
namespace fused {

// CTAs per SM that a 128-thread head_dim-64 kernel asks __launch_bounds__ for: 3 (168
// registers) fits without spills on sm_90a; sm_80 code needs a few more registers there.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
constexpr int kMinBlocksD64 = 2;
#else
constexpr int kMinBlocksD64 = 3;
#endif

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;

// Log2 extents of the query tile (qlog) and of the key/value tile (klog), per dim.
struct TileShape {
  int qlog[3];
  int klog[3];
};

struct KernelParams {
  // Geometry (padded to 3 dims; dim 2 is the contiguous one).
  int L[3], dil[3], ker[3], str[3], causal[3];
  int64_t batch, tokens;
  int heads, heads_kv, group_size;
  // Grid: CTA id = ((b * nheads + head) * groups + group) * tiles + tile, tile row-major over
  // ntiles[3] stationary tiles (sized by the largest dilation group) with the dims taken in
  // tile_order (slowest first), plus cta_offset.
  int ntiles[3];
  int tile_order[3] = {0, 1, 2};
  // A head's tile t is its tile |t - tile_flip|: tiles - 1 runs them backwards (longest first in
  // causal query-stationary grids, whose last tiles see the most keys), 0 forwards.
  int64_t tile_flip = 0;
  int groups;
  int64_t tiles;
  // The grid decode's divisors (decode_cta): set with the counts (make_kernel_params, set_grid).
  FastDiv fd_tiles, fd_groups, fd_heads, fd_heads_kv, fd_ntiles[3], fd_dil[3];
  int64_t cta_offset;
  TileShape ts;
  // Replication constants of the gather tiles' 64-bit row masks (column_mask) for query and key
  // tiles.
  uint64_t rep_q12, rep_q2, rep_k12, rep_k2;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e)
  // Tensors (layouts in problem.h).
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse_in;
  const float* delta;
  void* out;
  float* lse_out;
  void* dq;
  void* dk;
  void* dv;
  unsigned* nonfinite;     // raised by a store of a NaN or an Inf (FwdArgs::nonfinite)
  unsigned* tile_counter;  // the next tile and the CTAs done (FwdArgs::tile_counter), or null
  // The Hopper backward that forms delta in its dQ kernel (DeltaArgs; else unused): out and
  // dlse in, delta out (`delta` then points to it too, for the dK/dV kernel). Last, so that the
  // fields above and the Hopper kernels' TmaMaps parameter keep their offsets.
  const void* o_in;
  const float* dlse;
  float* delta_out;
};

// A 1-D problem: dims 0 and 1 of extent 1 (the tokens lie along dim 2).
FUSED_HD bool one_dim(const KernelParams& p) { return p.L[0] == 1 && p.L[1] == 1; }

// The outermost dim of extent > 1 of a tile of log extents lg (dim 2 if none).
FUSED_HD int outer_dim(const int (&lg)[3]) { return lg[0] > 0 ? 0 : (lg[1] > 0 ? 1 : 2); }

// Log extents of the halves of a tile of log extents lg cut across outer_dim: the first half
// holds the tile's first 2^(sum h) positions in row-major order, the second the rest.
FUSED_HD void half_tile(const int (&lg)[3], int (&h)[3]) {
  const int d = outer_dim(lg);
#pragma unroll
  for (int i = 0; i < 3; ++i) h[i] = lg[i] - (i == d);
}

FUSED_HD void split_row(int r, const int (&lg)[3], int (&c)[3]) {
  c[2] = r & ((1 << lg[2]) - 1);
  c[1] = (r >> lg[2]) & ((1 << lg[1]) - 1);
  c[0] = r >> (lg[1] + lg[2]);
}

// Row index of the token at spatial coordinates x, head `head` of `nheads` (in units of rows of
// head_dim elements). The rows of one batch element fit 32 bits (make_kernel_params: tokens *
// heads < 2^32), so only the batch's offset is 64-bit math, which kernels hoist (one b a CTA).
FUSED_HD int64_t token_row(const KernelParams& p, int64_t b, const int (&x)[3], int head,
                           int nheads) {
  const uint32_t tok = (uint32_t(x[0]) * uint32_t(p.L[1]) + uint32_t(x[1])) * uint32_t(p.L[2]) +
                       uint32_t(x[2]);
  return b * p.tokens * nheads + int64_t(tok * uint32_t(nheads) + uint32_t(head));
}

// Token rows are linear in a dilation group's positions: the row of the token t[] positions past
// pos0 (t >= 0 per dim) is origin + t[0] step[0] + t[1] step[1] + t[2] step[2], the sum below a
// batch element's tokens * heads < 2^32. Loaders place many rows from one map (three
// multiply-adds a row) instead of calling token_row per row.
struct RowMap {
  int64_t origin;
  uint32_t step[3];
  FUSED_HD int64_t at(const int (&t)[3]) const {
    return origin + int64_t(uint32_t(t[0]) * step[0] + uint32_t(t[1]) * step[1] + uint32_t(t[2]) * step[2]);
  }
};

// The map of batch element b, dilation group grp, from positions pos0, head `head` of `nheads`.
FUSED_HD RowMap row_map(const KernelParams& p, int64_t b, const int (&grp)[3], const int (&pos0)[3],
                        int head, int nheads) {
  int x[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) x[i] = pos0[i] * p.dil[i] + grp[i];
  const uint32_t h = uint32_t(nheads);
  return RowMap{token_row(p, b, x, head, nheads),
                {uint32_t(p.dil[0]) * uint32_t(p.L[1]) * uint32_t(p.L[2]) * h,
                 uint32_t(p.dil[1]) * uint32_t(p.L[2]) * h, uint32_t(p.dil[2]) * h}};
}

// The row indices of a CTA's own tile of log extents lg (query_row_index, own_key_row_index)
// from one RowMap: the loaders' and row tables' form (split_row, three compares and three
// multiply-adds a row).
struct TileRows {
  RowMap map;  // from the tile's first position
  int n[3];    // valid positions per dim (the tile may pass its group's end)
  // Row `row`'s index, -1 past the group's end.
  FUSED_HD int64_t operator()(const int (&lg)[3], int row) const {
    int t[3];
    split_row(row, lg, t);
    return t[0] < n[0] && t[1] < n[1] && t[2] < n[2] ? map.at(t) : -1;
  }
  // Its byte offset in a tensor of row_bytes rows, -1 past the group's end.
  FUSED_HD int64_t offset(const int (&lg)[3], int row, int64_t row_bytes) const {
    const int64_t r = (*this)(lg, row);
    return r < 0 ? -1 : r * row_bytes;
  }
};

// Token-index offset of row `row` of a tile of log extents lg from the tile's first token
// (positions advance by the dilation in each dim).
FUSED_HD int tile_row_delta(const KernelParams& p, const int (&lg)[3], int row) {
  int t[3];
  split_row(row, lg, t);
  return (t[0] * p.dil[0] * p.L[1] + t[1] * p.dil[1]) * p.L[2] + t[2] * p.dil[2];
}

// Token index of the tile's first position tb in dilation group grp.
FUSED_HD int64_t tile_base_token(const KernelParams& p, const int (&grp)[3], const int (&tb)[3]) {
  return (int64_t(tb[0] * p.dil[0] + grp[0]) * p.L[1] + (tb[1] * p.dil[1] + grp[1])) * p.L[2] +
         (tb[2] * p.dil[2] + grp[2]);
}

// Row-major walk over n[0] x n[1] x n[2] tiles without divisions.
struct TileWalker {
  int t[3];
  FUSED_HD void reset() { t[0] = t[1] = t[2] = 0; }
  FUSED_HD void next(const int (&n)[3]) {
    if (++t[2] == n[2]) {
      t[2] = 0;
      if (++t[1] == n[1]) {
        t[1] = 0;
        ++t[0];
      }
    }
  }
  // Walk step of a head-outer walk: true when the walk wrapped to the next head.
  FUSED_HD bool next_wraps(const int (&n)[3]) {
    next(n);
    if (t[0] == n[0]) {
      t[0] = 0;
      return true;
    }
    return false;
  }
};

// a[i] for a run-time i without indexing (keeps small arrays in registers).
FUSED_HD int pick3(const int (&a)[3], int i) { return i == 0 ? a[0] : (i == 1 ? a[1] : a[2]); }

// Window along dim i for a run-time i.
FUSED_HD Window dim_window_rt(const KernelParams& p, int i, int pos, int Lg) {
  return window_positions(pos, Lg, pick3(p.ker, i), pick3(p.str, i), pick3(p.causal, i) != 0);
}

FUSED_HD Window dim_window(const KernelParams& p, int i, int pos, int Lg) {
  return window_positions(pos, Lg, p.ker[i], p.str[i], p.causal[i] != 0);
}

// ---- 64-bit tile masks ---------------------------------------------------------------------
// A tile of at most 64 positions; bit c says whether its position c lies inside a box [lo, hi)
// (the gather tiles' valid rows: query_tile.h, key_tile.h; the score fragments' element masks
// are mask.h's mask_word). Per dim the box is one interval, so the mask is the AND of three
// interval patterns: dim 0 is one contiguous run, dim 1 a run repeated every 2^(lg1+lg2)
// positions, dim 2 a run repeated every 2^lg2 positions. Replication is a carry-free multiply.

FUSED_HD uint64_t low_bits(int n) { return n >= 64 ? ~0ull : ((1ull << n) - 1ull); }
FUSED_HD uint64_t range_bits(int a, int b) { return low_bits(b) & ~low_bits(a); }
// sum_j 2^(j * period) over the 64 bits (period a power of two).
FUSED_HD uint64_t repeat_every(int period) {
  return period >= 64 ? 1ull : (~0ull / low_bits(period));
}

// Box [lo_i, hi_i) in absolute positions; tile starts at tb with log extents lg.
FUSED_HD uint64_t column_mask(const int (&lo)[3], const int (&hi)[3], const int (&tb)[3],
                              const int (&lg)[3], uint64_t rep12, uint64_t rep2) {
  int a[3], b[3];
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const int e = 1 << lg[i];
    a[i] = na_min(na_max(lo[i] - tb[i], 0), e);
    b[i] = na_min(na_max(hi[i] - tb[i], 0), e);
  }
  const int s12 = lg[1] + lg[2];
  const uint64_t m0 = range_bits(a[0] << s12, b[0] << s12);
  const uint64_t m1 = range_bits(a[1] << lg[2], b[1] << lg[2]) * rep12;
  const uint64_t m2 = range_bits(a[2], b[2]) * rep2;
  return m0 & m1 & m2;
}

}  // namespace fused
}  // namespace jax_na
