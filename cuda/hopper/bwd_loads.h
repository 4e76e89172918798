// The backward kernels' double-buffered tile loads: with TMA (kTma: the tiles are TMA boxes,
// tma.h) thread 0 issues the boxes, which complete on the slot's mbarrier; otherwise every
// thread gathers with cp.async. Other operands (the stationary tile, lse and delta) always come
// by cp.async.
#pragma once

#include <cstdint>

#include "../fused/arch.h"
#include "smem_layout.h"
#include "tma.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

// The tile shape of both backward kernels: 64 stationary rows (the wgmma M) against iterated
// tiles of 64 rows, in the swizzled layouts of smem_layout.h. Up to head_dim 128 one warpgroup,
// two CTAs per SM (three at head_dim 32, 158-164 registers). At 256 one accumulator of
// 64 x 256 fp32 (128 registers a thread, two in dK/dV) does not fit beside S and dP: two
// warpgroups share the tiles, each computes S and dP in full and owns one 128-column half of
// the accumulated outputs (kOut columns), one CTA per SM.
template <int D>
struct BwdTiles {
  static_assert(D == 32 || D == 64 || D == 128 || D == 256, "head_dim 32, 64, 128 or 256");
  static constexpr int kWarpgroups = D > 128 ? 2 : 1;
  static constexpr int kOut = D / kWarpgroups;
  static constexpr int kThreads = 128 * kWarpgroups;
  static constexpr int kRows = 64;
  static constexpr int kCols = 64;
  static constexpr int kLogRows = 6;
  static constexpr int kLogCols = 6;
  static constexpr int kMinBlocks = D > 128 ? 1 : (D == 32 ? 3 : 2);
  using Tile = GmmaTile<64, D>;

  // The thread's warpgroup, broadcast from lane 0 so that the compiler keeps what derives from
  // it (the output columns' descriptor offset) warp-uniform.
  static __device__ __forceinline__ int warpgroup(int tid) {
    return kWarpgroups > 1 ? __shfl_sync(0xffffffffu, tid >> 7, 0) : 0;
  }
  // Warpgroup wg's first output column, as a descriptor offset into a Tile (16-byte units) and
  // as a 16-byte chunk of a staged row.
  static __device__ __forceinline__ uint32_t out_desc(int wg) {
    return uint32_t(wg * (kOut / 64) * Tile::kBlockBytes) >> 4;
  }
  static __device__ __forceinline__ int out_chunk(int wg) { return wg * kOut / 8; }
};

template <bool kTma>
struct SlotBarriers {
  uint32_t bar;  // two mbarriers (8 bytes each) in shared memory, one per slot

  // Every thread, before the CTA barrier that precedes the first load.
  __device__ __forceinline__ void init(uint32_t addr, int tid) {
    bar = addr;
    if (kTma && tid == 0) {
      mbar_init(bar, 1);
      mbar_init(bar + 8, 1);
      mbar_init_fence();
    }
  }
  __device__ __forceinline__ uint32_t at(int slot) const { return bar + 8 * slot; }
  // Thread 0, before the boxes of a slot: they bring `bytes`.
  __device__ __forceinline__ void expect(int slot, uint32_t bytes) const {
    mbar_arrive_expect_tx(at(slot), bytes);
  }
  // Every thread: the loads of tile `use` (0, 1, ...; slot use % 2) have landed, this thread's
  // cp.async writes are visible to wgmma (a CTA barrier must follow for the others').
  __device__ __forceinline__ void wait(int use) const {
    fused::cp_async_wait<0>();
    if (kTma) mbar_wait(at(use & 1), uint32_t(use >> 1) & 1u);
    if (!kTma || use == 0) fence_proxy_async();  // TMA writes need no proxy fence
  }
};

}  // namespace hopper
}  // namespace jax_na
