// Element masks of a warp's 16 x NCOLS score fragment.
//
// Each thread holds two rows (g and g+8) of the C fragments; for each it keeps the interval of
// partner positions per dim (the row's window for query rows; its inverse neighbourhood for key
// rows). Against a tile of columns this becomes one 64-bit mask per row (params.h,
// column_mask); an element is then one bit test and one select. Tiles that every row sees
// entirely (tile_fully_inside) skip this.
#pragma once

#include <cstdint>

#include "params.h"

namespace jax_na {
namespace fused {

struct RowPartners {
  int lo[2][3];  // [row g / g+8][dim], absolute positions, half-open
  int hi[2][3];
};

// Set masked elements of s to `fill`. m0/m1: column masks of rows g and g+8 for the (up to) 64
// columns of blocks [NT0, NT0 + 8) (NT0 = 8 h: the h-th 64 columns of a wider fragment).
template <int NT0 = 0, int NT>
FUSED_HD void apply_column_masks(float (&s)[NT][4], uint64_t m0, uint64_t m1,
                                                   int lane, float fill) {
  constexpr int kBlocks = NT < 8 ? NT : 8;
  const int sh = 2 * (lane & 3);
  m0 >>= sh;
  m1 >>= sh;
#pragma unroll
  for (int nt = 0; nt < kBlocks; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (!((m0 >> (8 * nt + e)) & 1ull)) s[NT0 + nt][e] = fill;
      if (!((m1 >> (8 * nt + e)) & 1ull)) s[NT0 + nt][2 + e] = fill;
    }
  }
}

// The thread's two rows as packed window-table indices (8 bits per dim; see query_tile.h),
// for kernels that cannot keep RowPartners in registers.
struct RowRefs {
  uint32_t idx[2];
};

FUSED_HD void unpack_partners(const RowRefs& rf, const Window* tab, RowPartners& rp) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const Window w = tab[(rf.idx[rr] >> (8 * i)) & 0xffu];
      rp.lo[rr][i] = w.start;
      rp.hi[rr][i] = w.end;
    }
  }
}

template <int NT>
FUSED_HD void mask_tile(float (&s)[NT][4], const RowPartners& rp,
                                          const int (&tb)[3], const int (&lg)[3], uint64_t rep12,
                                          uint64_t rep2, int lane, float fill) {
  const uint64_t m0 = column_mask(rp.lo[0], rp.hi[0], tb, lg, rep12, rep2);
  const uint64_t m1 = column_mask(rp.lo[1], rp.hi[1], tb, lg, rep12, rep2);
  apply_column_masks(s, m0, m1, lane, fill);
}

// Per dim, is the tile [tb, tb + 2^lg) inside [in_lo, in_hi) (seen by all rows of the warp),
// and does it meet [any_lo, any_hi) (seen by some row)?
struct WarpTileTest {
  int any_lo[3], any_hi[3];  // union of the warp's partner intervals
  int in_lo[3], in_hi[3];    // intersection of the warp's partner intervals
  bool active;               // the warp has at least one valid row

  FUSED_HD bool meets(const int (&tb)[3], const int (&lg)[3]) const {
    bool ok = active;
#pragma unroll
    for (int i = 0; i < 3; ++i) ok = ok && tb[i] < any_hi[i] && tb[i] + (1 << lg[i]) > any_lo[i];
    return ok;
  }
  FUSED_HD bool inside(const int (&tb)[3], const int (&lg)[3]) const {
    bool ok = true;
#pragma unroll
    for (int i = 0; i < 3; ++i) ok = ok && tb[i] >= in_lo[i] && tb[i] + (1 << lg[i]) <= in_hi[i];
    return ok;
  }
};

}  // namespace fused
}  // namespace jax_na
