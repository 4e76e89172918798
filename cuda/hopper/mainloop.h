// The consumer side of the Hopper forward, shared by both kernels: one warpgroup's 64 query rows
// against a stream of BN-key tiles (64, or 128 for 1-D tiles). It holds O, the online softmax,
// the previous tile's P (as wgmma A fragments) and the rows' windows, and issues the two MMAs of
// a tile:
//   S = Q K^T : wgmma m64nBNk16, Q and K from shared memory (K-major descriptors);
//   O += P V  : wgmma m64nDk16, P from registers, V from shared memory (MN-major).
// The kernels issue S_j with P_{j-1} V_{j-1} and own the loads and synchronisation. (ptxas
// schedules the wait for P_{j-1} V_{j-1} before S_j's softmax: the softmax overlaps other
// warps' MMAs, not this warpgroup's own P V; NOTES.md h16.)
#pragma once

#include <cmath>
#include <cstdint>

#include "../fused/arch.h"
#include "../fused/epilogue.h"
#include "../fused/mask.h"
#include "../fused/params.h"
#include "../fused/query_tile.h"
#include "../fused/softmax.h"
#include "smem_layout.h"
#include "warpgroup_gemm.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

template <typename T, int D, int QROWS, int BN = 64>
struct Consumer {
  static_assert(BN == 64 || BN == 128, "64- or 128-key tiles");
  static constexpr int NT = BN / 8;  // accumulator column blocks of S
  static constexpr int ND = D / 8;   // output column blocks
  static constexpr int KK = BN / 16;  // k-steps of P V
  using QT = GmmaTile<QROWS, D>;
  using KV = GmmaTile<BN, D>;

  // The head_dim-32 kernel (four CTAs per SM, 128 registers) keeps its rows' windows as
  // table references and reads them per masked tile: held in registers they spilled.
  static constexpr bool kRowRefs = D == 32;
  static_assert(!kRowRefs || BN == 64, "table references are read for 64-key tiles only");

  float o[ND][4];
  fused::OnlineSoftmax<NT, ND> sm;
  uint32_t pa[KK][4];  // P of the previous computed tile
  fused::RowPartners rp;  // the rows' windows (kRowRefs: unused)
  fused::RowRefs rf;      // kRowRefs: their entries in the window table tab
  const Window* tab;
  fused::WarpTileTest wt;  // the warp's 16 rows: tiles they all see need no masks
  uint64_t dq;             // descriptor of the warpgroup's 64 rows of Q

  // q_rows: shared address of the warpgroup's first Q row (an aligned 64-row slice).
  __device__ __forceinline__ void init(const fused::KernelParams& p, const fused::QueryCta& c,
                                       const Window* tab, uint32_t q_rows, int row0,
                                       int lane) {
#pragma unroll
    for (int d = 0; d < ND; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    sm.init();
    if constexpr (kRowRefs) {
      fused::query_row_refs(p, row0, lane, rf);
      this->tab = tab;
    } else {
      fused::query_row_partners(p, tab, row0, lane, rp);
    }
    fused::query_warp_test(p, c, tab, row0, 16, wt);
    dq = QT::k_major(q_rows);
  }

  __device__ __forceinline__ void issue_s(float (&s)[NT][4], uint32_t k_tile) const {
    gemm_ss_abt<T, BN, D, QT, KV, true>(s, dq, KV::k_major(k_tile));
    wgmma_commit();
  }

  // Masks by the tensor core (kernel kBias, bf16, 2-D 128-key tiles at most 16 along each dim):
  // S, then for each dim the warpgroup's rows cut (wcut: WarpTileTest::cut_dims of its 64 rows,
  // warpgroup-uniform) one k-step S += A BiasTile with A -2^126 at the slots (key coordinates)
  // the thread's rows do not see, 0 elsewhere; then commit. Masked scores are then -2^126
  // (ex2 of them scaled is 0), and no select touches S.
  static constexpr uint32_t kNegBig = 0xFE80u;  // bf16 -2^126 (two of them stay finite in fp32)
  // Bits 0 and 1 of out (two slots; set: masked) as a packed bf16 pair of -2^126 or 0.
  static __device__ __forceinline__ uint32_t bias_pair(uint32_t out) {
    out &= 3u;
    return ((out | (out << 15)) & 0x10001u) * kNegBig;
  }
  // The A fragment of dim d's k-step: for the thread's two rows, the slots (tile coordinates
  // 0-15 along d) outside the row's window [lo, hi) there, at the columns the fragment holds.
  __device__ __forceinline__ void bias_a(int d, const int (&tb)[3], int lane,
                                         uint32_t (&a)[4]) const {
    const int t2 = 2 * (lane & 3);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int lo = na_min(na_max(rp.lo[rr][d] - tb[d], 0), 16);
      const int hi = na_min(na_max(rp.hi[rr][d] - tb[d], 0), 16);
      const uint32_t out = ~fused::bit_run(lo, hi);
      a[rr] = bias_pair(out >> t2);
      a[2 + rr] = bias_pair(out >> (t2 + 8));
    }
  }
  __device__ __forceinline__ void issue_s_bias(float (&s)[NT][4], uint32_t k_tile,
                                               uint32_t bias_tile, int wcut, const int (&tb)[3],
                                               int lane) const {
    static_assert(BN == 128, "128-key tiles");
    gemm_ss_abt<T, BN, D, QT, KV, true>(s, dq, KV::k_major(k_tile));
    const uint64_t dbias = BiasTile::Tile::k_major(bias_tile);
#pragma unroll
    for (int d = 2; d >= 1; --d) {  // BiasTile k-step 0: dim 2's slots, 1: dim 1's
      if (wcut & (1 << d)) {
        uint32_t a[4];
        bias_a(d, tb, lane, a);
        wgmma_fence();  // a was written after the warpgroup's last fence
        wgmma_rs<T, BN, false>(s, a, desc_plus(dbias, BiasTile::Tile::k_step(2 - d)), 1);
      }
    }
    wgmma_commit();
  }

  __device__ __forceinline__ void issue_pv(uint32_t v_tile) {
    gemm_rs_ab<T, D, KK, KV>(o, pa, KV::mn_major(v_tile));
  }

  // The element masks of the tile at tb (none where every row sees it whole). They depend only
  // on the tile and the rows' windows, so the kernels build them while the tile's S is still in
  // flight: only their application waits for S.
  struct TileMask {
    uint32_t w[BN / 64];  // mask_word of each 64-column half
    int cut;              // WarpTileTest::cut_dims of the tile (0: no masks)
  };
  // kMasks false: the planner found no tile of the problem cut (fused::tiles_never_cut).
  template <bool kMasks = true>
  __device__ __forceinline__ TileMask tile_mask(const fused::KernelParams& p, const int (&tb)[3],
                                                int lane) const {
    TileMask m;
    m.cut = kMasks ? wt.cut_dims(tb, p.ts.klog) : 0;
    if (m.cut) {
      if constexpr (kRowRefs) {
        fused::RowPartners r;
        fused::unpack_partners(rf, tab, r);
        m.w[0] = fused::mask_word(r, m.cut, tb, p.ts.klog, lane);
      } else if constexpr (BN == 64) {
        m.w[0] = fused::mask_word(rp, m.cut, tb, p.ts.klog, lane);
      } else if (fused::one_dim(p)) {  // only dim 2 can cut a 1-D tile
        half_masks<2>(p, tb, m, lane);
      } else {
        half_masks<0>(p, tb, m, lane);
      }
    }
    return m;
  }

  // Masks of the two 64-column halves of a 128-key tile at tb, each a tile of 64 keys
  // (fused::half_tile); dims below kFirstDim are inside every window.
  template <int kFirstDim>
  __device__ __forceinline__ void half_masks(const fused::KernelParams& p, const int (&tb)[3],
                                             TileMask& m, int lane) const {
    int lg[3];
    fused::half_tile(p.ts.klog, lg);
    const int d = fused::outer_dim(p.ts.klog);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int th[3];
#pragma unroll
      for (int i = 0; i < 3; ++i) th[i] = tb[i] + (h > 0 && i == d ? 1 << lg[i] : 0);
      m.w[h] = fused::mask_word<kFirstDim>(rp, wt.cut_dims(th, lg), th, lg, lane);
    }
  }

  // S of the tile has landed: its masks.
  __device__ __forceinline__ void masked(const TileMask& m, float (&s)[NT][4]) const {
    fence_acc(s);
    if (m.cut) {
      fused::apply_mask_word<0>(s, m.w[0], -INFINITY);
      if constexpr (BN == 128) fused::apply_mask_word<8>(s, m.w[1], -INFINITY);
    }
  }

  // S of the tile has landed: its masks, then the softmax's scores half.
  __device__ __forceinline__ void scores(const fused::KernelParams& p, const TileMask& m,
                                         float (&s)[NT][4], float (&alpha)[2]) {
    masked(m, s);
    sm.scores(s, p.scale_log2, alpha);
  }

  // The masked S of a tile once the previous tile's P V has finished (its P fragments are
  // free, O final for now): this tile's P into them, against the running maxima where they
  // hold (scores_at_max), else after the exact update, with O rescaled.
  __device__ __forceinline__ void next_p(const fused::KernelParams& p, float (&s)[NT][4]) {
    const bool kept = sm.scores_at_max(
        s, p.scale_log2, [&](int nt, const float (&q)[4]) { pack_a_block<T, KK>(nt, q, pa); });
    if (kept) return;
    float alpha[2];
    sm.template scores<true>(s, p.scale_log2, alpha);
    sm.rescale(o, alpha);
    pack_a<T, KK>(s, pa);
  }

  // P of this tile, as the A operand of its P V.
  __device__ __forceinline__ void keep_p(const float (&s)[NT][4]) { pack_a<T, KK>(s, pa); }

  // The last P V of a stream (nothing left to overlap it with).
  __device__ __forceinline__ void last_pv(uint32_t v_tile) {
    wgmma_fence();
    issue_pv(v_tile);
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc(o);
  }

  // Normalised O of the warp's rows as T straight from registers to their global rows, lse to
  // global. The 4 lanes of a row swap words (a 4 x 4 transpose per 4 column blocks), so each
  // lane stores 16 contiguous bytes. Nothing is staged in shared memory: no barrier with any
  // other warp. Returns whether a chunk this thread stored holds a NaN or an Inf (cuda/repair/).
  __device__ __forceinline__ bool store(const fused::KernelParams& p, const fused::QueryCta& c,
                                        int row0, int lane) {
    float inv[2], lse[2];
    sm.finish(inv, lse);
    bool bad = false;
    char* const out = static_cast<char*>(p.out);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int64_t r = fused::query_row_index(p, c, row0 + (lane >> 2) + 8 * rr, c.cta.head);
      if ((lane & 3) == 0 && r >= 0) p.lse_out[r] = lse[rr];
#pragma unroll
      for (int d0 = 0; d0 < ND; d0 += 4) {
        uint32_t w[4];
#pragma unroll
        for (int k = 0; k < 4; ++k)
          w[k] = fused::pack2<T>(o[d0 + k][2 * rr] * inv[rr], o[d0 + k][2 * rr + 1] * inv[rr]);
        transpose_row_words(w, lane);
        const uint4 v = make_uint4(w[0], w[1], w[2], w[3]);
        if (r >= 0) {
          *reinterpret_cast<uint4*>(out + r * int64_t(D * sizeof(T)) + (d0 + (lane & 3)) * 16) = v;
          bad |= nonfinite16<T>(v);
        }
      }
    }
    return bad;
  }

  // Lane q of each group of 4 lanes holds words w[k] of column blocks k; afterwards it holds
  // block q's words from lanes 0..3, in order: two butterfly steps (lanes q ^ 1, q ^ 2), each
  // swapping the words whose index bit differs from the lane's.
  static __device__ __forceinline__ void transpose_row_words(uint32_t (&w)[4], int lane) {
#pragma unroll
    for (int m = 1; m <= 2; m <<= 1) {
      const bool hi = lane & m;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        if (k & m) continue;
        const uint32_t got = __shfl_xor_sync(0xffffffffu, hi ? w[k] : w[k ^ m], m);
        if (hi) {
          w[k] = got;
        } else {
          w[k ^ m] = got;
        }
      }
    }
  }

  // Byte offset of row row0 + row of the query tile in out (negative: not stored).
  static __device__ __forceinline__ auto row_offset(const fused::KernelParams& p,
                                                    const fused::QueryCta& c, int row0) {
    return [&p, &c, row0](int row) {
      const int64_t r = fused::query_row_index(p, c, row0 + row, c.cta.head);
      return r < 0 ? int64_t(-1) : r * int64_t(D * sizeof(T));
    };
  }

  // Normalised O of the warp's rows as T into the staging tile (fused layout), lse to global;
  // rows: each tile row's row index (query_row_index, -1 past the group).
  __device__ __forceinline__ void stage(const fused::KernelParams& p, const int64_t* rows,
                                        uint32_t staging, int row0, int lane) {
    float inv[2], lse[2];
    sm.finish(inv, lse);
    fused::stage_rows<T, D>(o, inv, staging, row0, lane);
    if ((lane & 3) == 0) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int64_t r = rows[row0 + (lane >> 2) + 8 * rr];
        if (r >= 0) p.lse_out[r] = lse[rr];
      }
    }
  }
};

}  // namespace hopper
}  // namespace jax_na
