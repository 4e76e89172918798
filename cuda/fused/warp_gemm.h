// Warp-level GEMM pieces on mma.sync m16n8k16 (fp32 accumulate). Each warp owns 16 rows.
//
// Fragment layouts (PTX ISA, m16n8k16): lane l, g = l / 4, q = l % 4.
//   A (16x16): a0a1 (row g, k 2q..2q+1), a2a3 (row g+8), a4a5 (row g, k+8), a6a7 (row g+8, k+8)
//   B (16x8):  b0b1 (k 2q..2q+1, col g), b2b3 (k+8)
//   C (16x8):  c0c1 (row g, cols 2q..2q+1), c2c3 (row g+8)
// Shared tiles are SmemTile<D> (rows of D elements, swizzled).
#pragma once

#include <cstdint>

#include "arch.h"
#include "params.h"
#include "smem_tile.h"

namespace jax_na {
namespace fused {

// A fragment of rows [row0, row0+16), k-chunk pair (2ks, 2ks+1), from a row-major tile.
template <int D>
__device__ __forceinline__ void lds_a(uint32_t (&a)[4], uint32_t tile, int row0, int ks, int lane) {
  ldsm_x4(tile + SmemTile<D>::offset(row0 + (lane & 15), 2 * ks + (lane >> 4)), a);
}

// B operands are read by ldmatrix.x4 over 16 columns (tile rows) and two 8-element chunks: lane l
// addresses column 16 j + (l % 8) + 8 (l / 16) at chunk c + (l / 8) % 2, so matrices 0 and 1
// are columns 0-7 at chunks c and c + 1, matrices 2 and 3 columns 8-15. The row map gives that
// column's shared-tile row: 16 j + (l % 8) + 8 (l / 16) for a contiguous tile (ContiguousRows),
// any gathered row for kernels whose columns are scattered over a resident box (resident_box.h).
FUSED_HD int lane_column(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
FUSED_HD int lane_chunk(int lane) { return (lane >> 3) & 1; }

struct ContiguousRows {
  int lane;
  __device__ __forceinline__ int operator()(int j) const { return 16 * j + lane_column(lane); }
};

// acc[16 x NROWS] += A[16 x D] * Bt where the tile holds B as NROWS rows of D (B = tile^T):
// S = Q K^T with K rows in shared memory. A given as D/16 register fragments; rows: the row map.
template <typename T, int D, int NROWS, typename Rows>
__device__ __forceinline__ void gemm_abt_rows(float (&acc)[NROWS / 8][4],
                                              const uint32_t (&a)[D / 16][4], uint32_t tile,
                                              Rows rows, int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
    for (int np = 0; np < NROWS / 16; ++np) {
      uint32_t b[4];
      ldsm_x4(tile + SmemTile<D>::offset(rows(np), 2 * ks + lane_chunk(lane)), b);
      Mma<T>::run(acc[2 * np], a[ks], b[0], b[1]);
      Mma<T>::run(acc[2 * np + 1], a[ks], b[2], b[3]);
    }
  }
}

template <typename T, int D, int NROWS>
__device__ __forceinline__ void gemm_abt(float (&acc)[NROWS / 8][4], const uint32_t (&a)[D / 16][4],
                                         uint32_t tile, int lane) {
  gemm_abt_rows<T, D, NROWS>(acc, a, tile, ContiguousRows{lane}, lane);
}

// Same, A read from a shared tile (rows [row0, row0+16)) one k-step at a time.
template <typename T, int D, int NROWS>
__device__ __forceinline__ void gemm_abt_sa(float (&acc)[NROWS / 8][4], uint32_t atile, int row0,
                                            uint32_t tile, int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[4];
    lds_a<D>(a, atile, row0, ks, lane);
#pragma unroll
    for (int np = 0; np < NROWS / 16; ++np) {
      uint32_t b[4];
      ldsm_x4(tile + SmemTile<D>::offset(16 * np + (lane & 7) + ((lane >> 4) << 3),
                                         2 * ks + ((lane >> 3) & 1)),
              b);
      Mma<T>::run(acc[2 * np], a, b[0], b[1]);
      Mma<T>::run(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// Two products sharing the B loop shape: acc0 += A0 * tile0^T and acc1 += A1 * tile1^T, A read
// from shared tiles (used by dK/dV: S^T = K Q^T and dP^T = V dO^T).
template <typename T, int D, int NROWS>
__device__ __forceinline__ void gemm_abt_sa2(float (&acc0)[NROWS / 8][4], uint32_t atile0,
                                             uint32_t tile0, float (&acc1)[NROWS / 8][4],
                                             uint32_t atile1, uint32_t tile1, int row0, int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a0[4], a1[4];
    lds_a<D>(a0, atile0, row0, ks, lane);
    lds_a<D>(a1, atile1, row0, ks, lane);
#pragma unroll
    for (int np = 0; np < NROWS / 16; ++np) {
      const uint32_t o = SmemTile<D>::offset(16 * np + (lane & 7) + ((lane >> 4) << 3),
                                             2 * ks + ((lane >> 3) & 1));
      uint32_t b[4];
      ldsm_x4(tile0 + o, b);
      Mma<T>::run(acc0[2 * np], a0, b[0], b[1]);
      Mma<T>::run(acc0[2 * np + 1], a0, b[2], b[3]);
      ldsm_x4(tile1 + o, b);
      Mma<T>::run(acc1[2 * np], a1, b[0], b[1]);
      Mma<T>::run(acc1[2 * np + 1], a1, b[2], b[3]);
    }
  }
}

// acc[16 x D] += P[16 x KROWS] * tile where the tile holds KROWS rows of D (O += P V); P is the
// fp32 C-fragment array of a previous product, converted to T here (C -> A register reuse).
// rows: the row map (keys 16 kk .. 16 kk + 15 for k-step kk).
template <typename T, int D, int KROWS, typename Rows>
__device__ __forceinline__ void gemm_pv_rows(float (&acc)[D / 8][4],
                                             const float (&pc)[KROWS / 8][4], uint32_t tile,
                                             Rows rows, int lane) {
#pragma unroll
  for (int kk = 0; kk < KROWS / 16; ++kk) {
    const uint32_t a[4] = {pack2<T>(pc[2 * kk][0], pc[2 * kk][1]),
                           pack2<T>(pc[2 * kk][2], pc[2 * kk][3]),
                           pack2<T>(pc[2 * kk + 1][0], pc[2 * kk + 1][1]),
                           pack2<T>(pc[2 * kk + 1][2], pc[2 * kk + 1][3])};
    const int row = rows(kk);
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      ldsm_x4_t(tile + SmemTile<D>::offset(row, 2 * dp + lane_chunk(lane)), b);
      Mma<T>::run(acc[2 * dp], a, b[0], b[2]);
      Mma<T>::run(acc[2 * dp + 1], a, b[1], b[3]);
    }
  }
}

template <typename T, int D, int KROWS>
__device__ __forceinline__ void gemm_pv(float (&acc)[D / 8][4], const float (&pc)[KROWS / 8][4],
                                        uint32_t tile, int lane) {
  gemm_pv_rows<T, D, KROWS>(acc, pc, tile, ContiguousRows{lane}, lane);
}

// MT row blocks of 16 per warp (rows row0 + 16 mt): acc[mt] += A_mt * tile^T, A read from a
// shared tile per k-step; each B fragment feeds MT products.
template <typename T, int D, int NROWS, int MT>
__device__ __forceinline__ void gemm_abt_mt(float (&acc)[MT][NROWS / 8][4], uint32_t atile, int row0,
                                            uint32_t tile, int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) lds_a<D>(a[mt], atile, row0 + 16 * mt, ks, lane);
#pragma unroll
    for (int np = 0; np < NROWS / 16; ++np) {
      uint32_t b[4];
      ldsm_x4(tile + SmemTile<D>::offset(16 * np + (lane & 7) + ((lane >> 4) << 3),
                                         2 * ks + ((lane >> 3) & 1)),
              b);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(acc[mt][2 * np], a[mt], b[0], b[1]);
        Mma<T>::run(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// MT row blocks: acc[mt] += P_mt * tile (tile: KROWS rows of D).
template <typename T, int D, int KROWS, int MT>
__device__ __forceinline__ void gemm_pv_mt(float (&acc)[MT][D / 8][4],
                                           const float (&pc)[MT][KROWS / 8][4], uint32_t tile,
                                           int lane) {
#pragma unroll
  for (int kk = 0; kk < KROWS / 16; ++kk) {
    uint32_t a[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      a[mt][0] = pack2<T>(pc[mt][2 * kk][0], pc[mt][2 * kk][1]);
      a[mt][1] = pack2<T>(pc[mt][2 * kk][2], pc[mt][2 * kk][3]);
      a[mt][2] = pack2<T>(pc[mt][2 * kk + 1][0], pc[mt][2 * kk + 1][1]);
      a[mt][3] = pack2<T>(pc[mt][2 * kk + 1][2], pc[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      ldsm_x4_t(tile + SmemTile<D>::offset(16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3),
                                           2 * dp + (lane >> 4)),
                b);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        Mma<T>::run(acc[mt][2 * dp], a[mt], b[0], b[1]);
        Mma<T>::run(acc[mt][2 * dp + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// Load D/16 A fragments of rows [row0, row0+16) into registers.
template <int D>
__device__ __forceinline__ void lds_a_all(uint32_t (&a)[D / 16][4], uint32_t tile, int row0,
                                          int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) lds_a<D>(a[ks], tile, row0, ks, lane);
}

}  // namespace fused
}  // namespace jax_na
