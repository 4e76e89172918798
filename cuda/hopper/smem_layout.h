// Shared tiles in the canonical 128-byte-swizzled layout of wgmma operands.
//
// A ROWS x D tile of 16-bit elements is stored as D/64 column blocks of ROWS rows x 128 bytes;
// inside a block, 16-byte chunk c of row r sits at chunk c ^ (r % 8) (the hardware's 128-byte
// swizzle, so tile bases must be 1024-byte aligned). The same bytes serve as
//   - a K-major operand (Q or K: rows = M/N, columns = K): 8-row groups 1024 bytes apart (SBO),
//     a 16-column k-step is a 32-byte move inside a block, or a jump to the next block;
//   - an MN-major operand (V: rows = K, columns = N): 8-row groups 1024 bytes apart (SBO),
//     column blocks ROWS * 128 bytes apart (LBO), a 16-row k-step is 2048 bytes.
#pragma once

#include <cstdint>

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
  static_assert(D % 64 == 0, "column blocks of 64 16-bit elements");
  static_assert(ROWS % 8 == 0, "whole 8-row swizzle atoms");
  static constexpr int kChunks = D / 8;            // 16-byte chunks per row
  static constexpr int kBlockBytes = ROWS * 128;   // one 64-column block
  static constexpr int kBytes = ROWS * D * 2;

  static __device__ __forceinline__ uint32_t offset(int row, int chunk) {
    return uint32_t((chunk >> 3) * kBlockBytes + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
  }
  // Descriptors: desc(base) once, then plus a compile-time step per k-slice (a 16-byte-unit
  // add to the start address, which stays below 2^18 bytes, so no carry leaves its field).
  // K-major operand (rows = M or N, columns = K): 8-row groups 1024 bytes apart.
  static __device__ __forceinline__ uint64_t k_major(uint32_t base) { return sw128_desc(base, 16, 1024); }
  // Columns [16 ks, 16 ks + 16) of a K-major operand.
  static __host__ __device__ constexpr uint32_t k_step(int ks) { return uint32_t(((ks >> 2) * kBlockBytes + (ks & 3) * 32) >> 4); }
  // MN-major operand (rows = K, columns = N): column blocks kBlockBytes apart.
  static __device__ __forceinline__ uint64_t mn_major(uint32_t base) {
    return sw128_desc(base, kBlockBytes, 1024);
  }
  // Rows [16 kk, 16 kk + 16) of an MN-major operand.
  static __host__ __device__ constexpr uint32_t mn_step(int kk) { return uint32_t(kk * 2048 >> 4); }
};

}  // namespace hopper
}  // namespace jax_na
