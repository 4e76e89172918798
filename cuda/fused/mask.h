// Element masks of a warp's 16 x NCOLS score fragment.
//
// Each thread holds two rows (g and g+8) of the C fragments; for each it keeps the interval of
// partner positions per dim (the row's window for query rows; its inverse neighbourhood for key
// rows). Against a tile of at most 64 columns this becomes one 32-bit word per thread
// (mask_word); an element is then one predicate bit and one select. Tiles that every row sees
// entirely (WarpTileTest::inside) skip this.
#pragma once

#include <cstdint>

#include "params.h"

namespace jax_na {
namespace fused {

struct RowPartners {
  int lo[2][3];  // [row g / g+8][dim], absolute positions, half-open
  int hi[2][3];
};

// Per dim i, is the tile [tb, tb + 2^lg) inside [in_lo, in_hi) (seen by all rows of the warp),
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
  // Bit i set: some row of the warp does not see the tile's whole extent along dim i (the
  // dims mask_word must cut along; 0: the tile needs no masks).
  FUSED_HD int cut_dims(const int (&tb)[3], const int (&lg)[3]) const {
    int cut = 0;
#pragma unroll
    for (int i = 0; i < 3; ++i) cut |= int(tb[i] < in_lo[i] || tb[i] + (1 << lg[i]) > in_hi[i]) << i;
    return cut;
  }
  // cut_dims() == 0, as a short-circuit chain (the kernels' loop branches on it every tile).
  FUSED_HD bool inside(const int (&tb)[3], const int (&lg)[3]) const {
    bool ok = true;
#pragma unroll
    for (int i = 0; i < 3; ++i) ok = ok && tb[i] >= in_lo[i] && tb[i] + (1 << lg[i]) <= in_hi[i];
    return ok;
  }
};

// Bits [lo, hi) of a word (0 <= lo <= hi <= 32).
FUSED_HD uint32_t bit_run(int lo, int hi) {
#if defined(__CUDA_ARCH__)
  uint32_t r;
  asm("bmsk.clamp.b32 %0, %1, %2;" : "=r"(r) : "r"(lo), "r"(hi - lo));
  return r;
#else
  return (hi >= 32 ? ~0u : (1u << hi) - 1u) & ~(lo >= 32 ? ~0u : (1u << lo) - 1u);
#endif
}

// The thread's mask word of a tile of up to 64 columns at tb (log extents lg): bit 8 x + n says
// whether element s[n][x] (x = 2 rr + e: row g + 8 rr, column c = 8 n + w, w = 2 (lane % 4) + e)
// is a partner. This bit order is the fragment's element order, which ptxas tests with R2P
// (7 predicates per instruction) instead of one LOP3 per element.
// Dim i's coordinate is bit field [f, f + lg_i) of c (f: the inner dims' log extents), and a
// row's partners along it an interval [a, b) of tile coordinates: the n with
// (8 n + w) mod 2^t in [a 2^f, b 2^f), t = f + lg_i. For t >= 3 that is n mod 2^(t - 3) in
// [(a 2^f - w + 7) / 8, (b 2^f - w + 7) / 8); for t < 3 it does not depend on n, and the same
// formula with w mod 2^t gives the run [0, 1) or none. So per byte: one run of bits (bmsk),
// repeated every 2^(t - 3) bits (at least 1) by a carry-free multiply. Only the dims in `cut`
// (WarpTileTest::cut_dims, warp-uniform) are built, so a 2-D problem never builds dim 0, nor a
// tile cut along one dim the other. kFirstDim: dims below it are never cut (1-D problems: 2),
// so their code is left out.
template <int kFirstDim = 0>
FUSED_HD uint32_t mask_word(const RowPartners& rp, int cut, const int (&tb)[3],
                            const int (&lg)[3], int lane) {
  uint32_t word = ~0u;
  int f = 0;
#pragma unroll
  for (int i = 2; i >= kFirstDim; f += lg[i], --i) {
    if (!((cut >> i) & 1)) continue;
    const int ext = 1 << lg[i], t = f + lg[i];
    uint32_t bytes = 0;
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int a = na_min(na_max(rp.lo[rr][i] - tb[i], 0), ext) << f;
      const int b = na_min(na_max(rp.hi[rr][i] - tb[i], 0), ext) << f;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int c = 7 - ((2 * (lane & 3) + e) & ((1 << t) - 1));
        bytes |= bit_run((a + c) >> 3, (b + c) >> 3) << (16 * rr + 8 * e);
      }
    }
    bytes *= t <= 3 ? 0xffu : (t == 4 ? 0x55u : (t == 5 ? 0x11u : 1u));
    word &= bytes;
  }
  return word;
}

// Set masked elements of s to `fill`: column blocks [NT0, NT0 + min(NT, 8)) of s against mask
// word m (mask_word of their 64 columns).
template <int NT0 = 0, int NT>
FUSED_HD void apply_mask_word(float (&s)[NT][4], uint32_t m, float fill) {
  constexpr int kBlocks = NT < 8 ? NT : 8;
#pragma unroll
  for (int x = 0; x < 4; ++x) {
#pragma unroll
    for (int n = 0; n < kBlocks; ++n)
      if (!((m >> (8 * x + n)) & 1u)) s[NT0 + n][x] = fill;
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
FUSED_HD void mask_tile(float (&s)[NT][4], const RowPartners& rp, int cut, const int (&tb)[3],
                        const int (&lg)[3], int lane, float fill) {
  apply_mask_word(s, mask_word(rp, cut, tb, lg, lane), fill);
}

}  // namespace fused
}  // namespace jax_na
