// Tensor Memory Accelerator (TMA) loads and shared-memory mbarriers for the Hopper family.
//
// The key/value tiles are multi-dimensional boxes of the [batch * L0, L1, L2, heads_kv, D]
// tensors (rank 5, D fastest; dilation as the box's element stride), so one TMA per column
// block of D (64 columns, or all 32 at head_dim 32) brings a whole tile into the swizzled layout
// of smem_layout.h, with zeros outside the tensor. One thread issues the copies; every thread
// waits on the tile's mbarrier.
#pragma once

#include <cstdint>

#include <cuda.h>  // CUtensorMap (a 128-byte opaque descriptor)

#include "../fused/params.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

// The descriptors of K and V (or, in the backward's dK/dV kernel, of Q and dO), passed by value
// as a __grid_constant__ kernel parameter.
struct TmaMaps {
  CUtensorMap k;
  CUtensorMap v;
  CUtensorMap q;  // the forward's Q, in boxes of one warpgroup's half of a query tile
};

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#if JAX_NA_WGMMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}

// Make the initialised barriers visible to the async proxy (then a CTA barrier).
__device__ __forceinline__ void mbar_init_fence() {
#if JAX_NA_WGMMA
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// One arrival that also announces `bytes` of incoming TMA traffic for the current phase.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if JAX_NA_WGMMA
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#endif
}

// One plain arrival (consumers releasing a slot).
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if JAX_NA_WGMMA
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}

// Block until the barrier's phase with parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if JAX_NA_WGMMA
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
#endif
}

// Box at coordinates c (fastest dim first) of `map` -> shared memory at dst; completes on bar.
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                            int c0, int c1, int c2, int c3, int c4) {
#if JAX_NA_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6, %7}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
      : "memory");
#endif
}

// The tile at first position tb (of batch element b, dilation group grp, head `head`) of the
// tensor behind `map` -> the Tile at dst (one box per column block); completes on bar.
template <typename Tile, int D>
__device__ __forceinline__ void tma_load_tile(const CUtensorMap* map, uint32_t dst, uint32_t bar,
                                              const fused::KernelParams& p, int64_t b,
                                              const int (&grp)[3], const int (&tb)[3], int head) {
  const int x2 = tb[2] * p.dil[2] + grp[2], x1 = tb[1] * p.dil[1] + grp[1];
  const int x0 = int(b) * p.L[0] + tb[0] * p.dil[0] + grp[0];
#pragma unroll
  for (int blk = 0; blk < D / Tile::kBlockCols; ++blk)
    tma_load_5d(dst + blk * Tile::kBlockBytes, map, bar, Tile::kBlockCols * blk, head, x2, x1, x0);
}

// Host: descriptors of K and V for the tile shapes in p.ts (klog) and the problem's dilation;
// false when TMA cannot express the tiles (dilation > 8, a box over 256 elements per dim, a
// 3-D box that would run past one batch element into the next, unaligned tensors, or no
// driver entry point), and the kernel then gathers with cp.async instead.
bool make_kv_maps(const fused::KernelParams& p, int head_dim, bool bf16, TmaMaps& maps);
// ... of Q and dO (in maps.k, maps.v) for the query tiles (qlog) of the dK/dV kernel.
bool make_qdo_maps(const fused::KernelParams& p, int head_dim, bool bf16, TmaMaps& maps);
// ... of Q (in maps.q) for boxes of 2^lg positions; such a box may run past a batch element's
// last position into the next (those query rows are never stored).
bool make_q_map(const fused::KernelParams& p, const int (&lg)[3], int head_dim, bool bf16,
                TmaMaps& maps);

}  // namespace hopper
}  // namespace jax_na
