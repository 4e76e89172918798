// Shared tiles in the canonical swizzled layouts of wgmma operands: 128-byte swizzle, or 64-byte
// swizzle at head_dim 32 (rows of 64 bytes).
//
// A ROWS x D tile of 16-bit elements is stored as column blocks of ROWS rows x W bytes (W = 128,
// or 64 at D = 32: one block); inside a block, 16-byte chunk c of row r sits at chunk
// c ^ (r % 8) (128 B) or c ^ ((r / 2) % 4) (64 B): the hardware's swizzles, which TMA writes and
// wgmma reads (tile bases 1024-byte aligned). The same bytes serve as
//   - a K-major operand (Q or K: rows = M/N, columns = K): 8-row groups 8 W bytes apart (SBO),
//     a 16-column k-step is a 32-byte move inside a block, or a jump to the next block;
//   - an MN-major operand (V: rows = K, columns = N): 8-row groups 8 W bytes apart (SBO),
//     column blocks ROWS * W bytes apart (LBO), a 16-row k-step is 16 W bytes.
#pragma once

#include <cstdint>

#include "../fused/arch.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

// Descriptor d advanced by `units` 16-byte units (low word only: see GmmaTile).
__device__ __forceinline__ uint64_t desc_plus(uint64_t d, uint32_t units) {
  return (d & 0xffffffff00000000ull) | uint32_t(uint32_t(d) + units);
}
// The same, computed where it is used: a loop over tiles would otherwise hoist every k-step's
// descriptor of a loop-invariant operand and hold them all (uniform registers) through its body.
__device__ __forceinline__ uint64_t desc_plus_here(uint64_t d, uint32_t units) {
  uint32_t lo = uint32_t(d);
  asm volatile("add.u32 %0, %0, %1;" : "+r"(lo) : "r"(units));
  return (d & 0xffffffff00000000ull) | lo;
}

template <int ROWS, int D>
struct GmmaTile {
  static_assert(D == 32 || D % 64 == 0, "column blocks of 64 16-bit elements, or one of 32");
  static_assert(ROWS % 8 == 0, "whole 8-row swizzle atoms");
  static constexpr int kSwizzle = D == 32 ? 64 : 128;  // bytes per row of a column block
  static constexpr int kBlockCols = kSwizzle / 2;      // elements per row of a column block
  static constexpr int kChunks = D / 8;                // 16-byte chunks per row
  static constexpr int kBlockBytes = ROWS * kSwizzle;  // one column block
  static constexpr int kBytes = ROWS * D * 2;

  static __device__ __forceinline__ uint32_t offset(int row, int chunk) {
    constexpr int kLogC = kSwizzle == 128 ? 3 : 2;  // log2 of the chunks per block row
    const int sw = kSwizzle == 128 ? (row & 7) : ((row >> 1) & 3);
    return uint32_t((chunk >> kLogC) * kBlockBytes + row * kSwizzle +
                    (((chunk & ((1 << kLogC) - 1)) ^ sw) << 4));
  }
  // Descriptors: desc(base) once, then plus a compile-time step per k-slice (a 16-byte-unit
  // add to the start address, which stays below 2^18 bytes, so no carry leaves its field).
  // K-major operand (rows = M or N, columns = K): 8-row groups 8 W bytes apart.
  static __device__ __forceinline__ uint64_t k_major(uint32_t base) {
    return swizzled_desc<kSwizzle>(base, 16, 8 * kSwizzle);
  }
  // Columns [16 ks, 16 ks + 16) of a K-major operand.
  static __host__ __device__ constexpr uint32_t k_step(int ks) {
    constexpr int kSteps = kBlockCols / 16;  // k-steps per column block
    return uint32_t(((ks / kSteps) * kBlockBytes + (ks % kSteps) * 32) >> 4);
  }
  // MN-major operand (rows = K, columns = N): column blocks kBlockBytes apart.
  static __device__ __forceinline__ uint64_t mn_major(uint32_t base) {
    return swizzled_desc<kSwizzle>(base, kBlockBytes, 8 * kSwizzle);
  }
  // Rows [16 kk, 16 kk + 16) of an MN-major operand.
  static __host__ __device__ constexpr uint32_t mn_step(int kk) {
    return uint32_t(kk * 16 * kSwizzle >> 4);
  }
};

// The B operand of masks by the tensor core (Consumer kBias): 128 keys (rows) x 32 slots, K-major
// (64-byte swizzle): slot j < 16 is one where the key's dim-2 coordinate in its tile is j, slot
// 16 + j where its dim-1 coordinate is j (tiles at most 16 along each: 8x16 or 16x8). So S += A B
// over one k-step of 16 slots adds to each row's score of a key the row's A value at that key's
// column (or row): -2^126 where the row's window excludes it, else 0.
struct BiasTile {
  using Tile = GmmaTile<128, 32>;
  static constexpr int kBytes = Tile::kBytes;  // 8 KB
  template <typename T>
  static __device__ __forceinline__ void fill(char* tile, const int (&klog)[3], int tid,
                                              int nthreads) {
    for (int e = tid; e < 128 * 4; e += nthreads) {  // 16-byte chunk c (8 slots) of key n
      const int n = e >> 2, c = e & 3;
      const int c2 = n & ((1 << klog[2]) - 1), c1 = (n >> klog[2]) & ((1 << klog[1]) - 1);
      uint32_t w[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int j = 8 * c + 2 * q;
        auto one = [&](int jj) { return (jj < 16 ? jj == c2 : jj - 16 == c1) ? 1.f : 0.f; };
        w[q] = fused::pack2<T>(one(j), one(j + 1));
      }
      *reinterpret_cast<uint4*>(tile + Tile::offset(n, c)) = make_uint4(w[0], w[1], w[2], w[3]);
    }
    fence_proxy_async();
  }
};

}  // namespace hopper
}  // namespace jax_na
