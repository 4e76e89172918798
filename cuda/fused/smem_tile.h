// Shared-memory tiles of rows of D 16-bit elements, XOR-swizzled in 16-byte chunks so that
// ldmatrix (8 rows, same chunk) and the 16-byte cp.async writes are bank-conflict free, and the
// gathered global -> shared loader (each row is one token's head vector: D contiguous elements;
// consecutive threads take consecutive 16-byte chunks of a row).
#pragma once

#include <cstdint>

#include "../common/nonfinite.cuh"
#include "arch.h"

namespace jax_na {
namespace fused {

template <int D>
struct SmemTile {
  static constexpr int kChunks = D / 8;  // 16-byte chunks per row
  static constexpr int kRowBytes = D * 2;
  static_assert(kChunks == 4 || kChunks == 8 || kChunks == 16 || kChunks == 32,
                "head_dim 32, 64, 128 or 256");

  // Rows of 128 bytes or more: XOR the low 3 chunk bits with row % 8. 64-byte rows (two per
  // 128-byte line): XOR the 2 chunk bits with (row / 2) % 4.
  static constexpr int kSwizzleRows = 8;  // swizzle(row + 8) == swizzle(row)
  static __device__ __forceinline__ int swizzle(int row) {
    if constexpr (kChunks >= 8) {
      return row & 7;
    } else {
      return (row >> 1) & 3;
    }
  }
  static __device__ __forceinline__ uint32_t offset(int row, int chunk) {
    return uint32_t(row * kRowBytes + ((chunk ^ swizzle(row)) << 4));
  }
  static constexpr int bytes(int rows) { return rows * kRowBytes; }
};

// Issue cp.async for a ROWS x D tile. row_offset(row) gives the byte offset of the row in the
// global tensor(s), or a negative value for a row to zero-fill. Up to two tensors with the same
// row offsets (K and V, Q and dO) share the address computation. Layout: the shared tile's
// chunk placement (kChunks, offset(row, chunk)); SmemTile by default.
template <int ROWS, int D, int NTHREADS, typename Layout = SmemTile<D>, int NT, typename RowOffset>
__device__ __forceinline__ void load_rows_async(const char* const (&src)[NT],
                                                const uint32_t (&dst)[NT], RowOffset row_offset,
                                                int tid) {
  using Sm = Layout;
  constexpr int kTotal = ROWS * Sm::kChunks;
  static_assert(kTotal % NTHREADS == 0, "tile chunks must split evenly over the threads");
#pragma unroll
  for (int it = 0; it < kTotal / NTHREADS; ++it) {
    const int i = tid + it * NTHREADS;
    const int row = i / Sm::kChunks, c = i % Sm::kChunks;
    const int64_t off = row_offset(row);
    const bool valid = off >= 0;
    const uint32_t so = Sm::offset(row, c);
#pragma unroll
    for (int t = 0; t < NT; ++t)
      cp_async_16(dst[t] + so, valid ? src[t] + off + c * 16 : src[t], valid);
  }
}

// A gathered tile: row r lives at byte offset base + delta[r] * stride of the global tensor(s)
// when bit r of `valid` is set (else it is zero-filled). delta: per-row token offsets of the
// tile shape, computed once per CTA into shared memory (tile_row_delta).
struct GatherTile {
  int64_t base;
  int64_t stride;
  uint64_t valid;
};

template <int ROWS, int D, int NTHREADS, typename Layout = SmemTile<D>, int NT>
__device__ __forceinline__ void load_gather_async(const char* const (&src)[NT],
                                                  const uint32_t (&dst)[NT], const int* delta,
                                                  const GatherTile& g, int tid) {
  using Sm = Layout;
  constexpr int kTotal = ROWS * Sm::kChunks;
  static_assert(kTotal % NTHREADS == 0, "tile chunks must split evenly over the threads");
#pragma unroll
  for (int it = 0; it < kTotal / NTHREADS; ++it) {
    const int i = tid + it * NTHREADS;
    const int row = i / Sm::kChunks, c = i % Sm::kChunks;
    const bool valid = (g.valid >> row) & 1ull;
    const int64_t off = g.base + int64_t(delta[row]) * g.stride + c * 16;
    const uint32_t so = Sm::offset(row, c);
#pragma unroll
    for (int t = 0; t < NT; ++t) cp_async_16(dst[t] + so, valid ? src[t] + off : src[t], valid);
  }
}

// The epilogue's row offsets from a table of the tile's row indices (-1: no row) that the CTA
// wrote to shared memory in its prologue: its coordinates then need not stay in registers
// through the main loop (where they spilled in the 128- and 168-register kernels).
struct RowTable {
  const int64_t* rows;
  int64_t row_bytes;
  __device__ __forceinline__ int64_t operator()(int row) const {
    const int64_t r = rows[row];
    return r < 0 ? -1 : r * row_bytes;
  }
};

// The 16-byte chunks of a ROWS x D tile that thread tid of NTHREADS copies to its global row
// (rows with a negative offset are skipped): f(row, chunk, byte offset of the row). kUnroll:
// false for cold paths (one copy of f's code).
template <int ROWS, int D, int NTHREADS, bool kUnroll = true, typename RowOffset, typename F>
__device__ __forceinline__ void for_thread_chunks(RowOffset row_offset, int tid, F f) {
  constexpr int kChunks = SmemTile<D>::kChunks, kTotal = ROWS * kChunks;
  static_assert(kTotal % NTHREADS == 0, "tile chunks must split evenly over the threads");
#pragma unroll(kUnroll ? kTotal / NTHREADS : 1)
  for (int it = 0; it < kTotal / NTHREADS; ++it) {
    const int i = tid + it * NTHREADS;
    const int row = i / kChunks, c = i % kChunks;
    const int64_t off = row_offset(row);
    if (off >= 0) f(row, c, off);
  }
}

// Copy a ROWS x D staged tile of T from shared memory to global rows (16-byte stores); rows with
// a negative offset are skipped. Returns whether a chunk this thread stored holds a NaN or an
// Inf (a masked pair's 0 * x may have put it there: cuda/repair/), and raises *nonfinite then,
// unless nonfinite is null.
template <typename T, int ROWS, int D, int NTHREADS, typename RowOffset>
__device__ __forceinline__ bool store_rows(char* dst, uint32_t src, RowOffset row_offset, int tid,
                                           unsigned* nonfinite) {
  bool bad = false;
  for_thread_chunks<ROWS, D, NTHREADS>(row_offset, tid, [&](int row, int c, int64_t off) {
    const uint4 v = lds_u128(src + SmemTile<D>::offset(row, c));
    *reinterpret_cast<uint4*>(dst + off + c * 16) = v;
    bad |= nonfinite16<T>(v);
  });
  if (bad && nonfinite) *nonfinite = 1u;
  return bad;
}

}  // namespace fused
}  // namespace jax_na
