// Epilogues: stage a warp's 16 x D fp32 accumulator rows as T into a swizzled shared tile, then
// the CTA copies the tile to its global rows with 16-byte stores (smem_tile.h, store_rows).
#pragma once

#include <cstdint>

#include "arch.h"
#include "smem_tile.h"

namespace jax_na {
namespace fused {

// Rows g and g+8 of the warp's fragment (rows row0 + g, row0 + g + 8), multiplied by mul[rr],
// into columns [8 chunk0, 8 chunk0 + D) of a tile of DT columns.
template <typename T, int D, int DT = D>
__device__ __forceinline__ void stage_rows(const float (&acc)[D / 8][4], const float (&mul)[2],
                                           uint32_t tile, int row0, int lane, int chunk0 = 0) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int row = row0 + (lane >> 2) + 8 * rr;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
      const uint32_t v = pack2<T>(acc[dt][2 * rr] * mul[rr], acc[dt][2 * rr + 1] * mul[rr]);
      sts_u32(tile + SmemTile<DT>::offset(row, chunk0 + dt) + 4 * (lane & 3), v);
    }
  }
}

}  // namespace fused
}  // namespace jax_na
