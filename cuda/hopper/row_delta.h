// RD: delta = rowsum(dout * out) - dlse of the dQ kernel's rows, formed in that kernel from its
// dO tile and an out tile loaded beside it (shared memory) instead of by a reduction before the
// backward; the kernel writes it for the dK/dV kernel, which then runs after it (api.cu bwd_rd).
// Where that pays: rd_rule.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "../fused/arch.h"
#include "../fused/params.h"

namespace jax_na {
namespace hopper {

// Two 16-bit elements of a 32-bit word as floats.
template <typename T>
__device__ __forceinline__ float2 unpack2(uint32_t w) {
  if constexpr (std::is_same_v<T, __half>) {
    return __half22float2(*reinterpret_cast<const __half2*>(&w));
  } else {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w));
  }
}

// row_stats (fused/query_tile.h) with delta formed here: the thread's rows row0 + g and
// row0 + g + 8 (g = lane / 4), their indices in rows[] (the CTA's row table; negative past the
// group's end): lse2 = lse * log2(e), dl = delta (both 0 past the end). The 4 lanes of a row
// each take a quarter of head_dim from the dO and out tiles (sdO, sO: Tile layout, zero-filled
// past the end) and sum across each other; lane 4g writes the row's delta to p.delta_out.
template <typename T, int D, typename Tile>
__device__ __forceinline__ void row_lse_delta(const fused::KernelParams& p, const int64_t* rows,
                                              uint32_t sdO, uint32_t sO, int row0, int lane,
                                              float (&lse2)[2], float (&dl)[2]) {
  static_assert(sizeof(T) == 2 && D % 32 == 0, "16-bit elements, head_dim a multiple of 32");
  constexpr int kPer = D / 32;  // 16-byte chunks per lane
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int row = row0 + (lane >> 2) + 8 * rr;
    float s = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const uint32_t off = Tile::offset(row, (lane & 3) * kPer + i);
      const uint4 a = fused::lds_u128(sO + off), b = fused::lds_u128(sdO + off);
      const uint32_t wa[4] = {a.x, a.y, a.z, a.w}, wb[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const float2 x = unpack2<T>(wa[w]), y = unpack2<T>(wb[w]);
        s = fmaf(x.x, y.x, fmaf(x.y, y.y, s));
      }
    }
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    const int64_t r = rows[row];
    lse2[rr] = r >= 0 ? p.lse_in[r] * fused::kLog2e : 0.f;
    dl[rr] = r >= 0 ? s - p.dlse[r] : 0.f;
    if (r >= 0 && (lane & 3) == 0) p.delta_out[r] = dl[rr];
  }
}

}  // namespace hopper
}  // namespace jax_na
