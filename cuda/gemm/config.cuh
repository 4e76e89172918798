// Tile sizes and shared-memory layouts of the GEMM family's three kernels (one table).
// A block is 4 warps; each warp owns 16 rows of the block's 64-row tile. Chunks of the partner
// box (keys for fwd/dq, queries for dk/dv) are gathered into shared memory one at a time.
// Rows are padded by 16 bytes so ldmatrix / float4 accesses are bank-conflict free.
#pragma once

#include <cstddef>
#include <cstdint>

namespace jax_na {
namespace gemm {

constexpr int kRows = 64;
constexpr int kThreads = 128;
template <typename T, int D>
struct Cfg {
  static constexpr bool kF32 = sizeof(T) == 4;
  static constexpr int kPad = 16 / int(sizeof(T));
  static constexpr int kLd = D + kPad;  // row stride of q/k/v/do tiles (elements)
  // Chunk of the partner box per step: keeps registers (accumulators) and shared memory
  // (float32 at D = 128: under 100 KB) in bounds.
  static constexpr int kFwdChunk = (kF32 && D == 128) ? 32 : 64;
  static constexpr int kDqChunk = (kF32 && D == 128) ? 16 : 64;
  static constexpr int kKvChunk = D == 128 ? (kF32 ? 16 : 32) : 64;
  // Blocks per SM each kernel's register allocation must allow (__launch_bounds__): 4 -> 128
  // registers a thread, 3 -> 168, 2 -> 255. The most that leaves the accumulators unspilled
  // (ptxas -v, sm_80 and sm_90a); the float32 FMA path needs 2 throughout.
  static constexpr int kFwdMinBlocks = kF32 ? 2 : (D <= 32 ? 4 : (D <= 64 ? 3 : 2));
  static constexpr int kDqMinBlocks = kF32 ? 2 : (D <= 32 ? 4 : (D <= 64 ? 3 : 2));
  static constexpr int kKvMinBlocks = kF32 ? 2 : (D <= 32 ? 3 : 2);
  static_assert(D % 32 == 0, "head_dim 32, 64 or 128");
};

template <typename T>
constexpr size_t tile_bytes(int rows, int ld) {
  return size_t(rows) * size_t(ld) * sizeof(T);
}

// Forward: Q [64], K, V [chunk], P [64 x chunk], q offsets [64], k offsets [chunk], key positions [3 x chunk].
template <typename T, int D>
struct FwdLayout {
  static constexpr int kChunk = Cfg<T, D>::kFwdChunk, kLd = Cfg<T, D>::kLd,
                       kLdP = kChunk + Cfg<T, D>::kPad;
  static constexpr size_t q = 0;
  static constexpr size_t k = q + tile_bytes<T>(kRows, kLd);
  static constexpr size_t v = k + tile_bytes<T>(kChunk, kLd);
  static constexpr size_t p = v + tile_bytes<T>(kChunk, kLd);
  static constexpr size_t qoff = p + tile_bytes<T>(kRows, kLdP);
  static constexpr size_t koff = qoff + kRows * sizeof(int64_t);
  static constexpr size_t kpos = koff + kChunk * sizeof(int64_t);
  static constexpr size_t bytes = kpos + 3 * kChunk * sizeof(int);
};

// dQ: Q, dO [64], K, V [chunk], dS [64 x chunk], offsets and key positions as in the forward.
template <typename T, int D>
struct DqLayout {
  static constexpr int kChunk = Cfg<T, D>::kDqChunk, kLd = Cfg<T, D>::kLd,
                       kLdP = kChunk + Cfg<T, D>::kPad;
  static constexpr size_t q = 0;
  static constexpr size_t dout = q + tile_bytes<T>(kRows, kLd);
  static constexpr size_t k = dout + tile_bytes<T>(kRows, kLd);
  static constexpr size_t v = k + tile_bytes<T>(kChunk, kLd);
  static constexpr size_t ds = v + tile_bytes<T>(kChunk, kLd);
  static constexpr size_t qoff = ds + tile_bytes<T>(kRows, kLdP);
  static constexpr size_t koff = qoff + kRows * sizeof(int64_t);
  static constexpr size_t kpos = koff + kChunk * sizeof(int64_t);
  static constexpr size_t bytes = kpos + 3 * kChunk * sizeof(int);
};

// dK/dV: K, V [64 keys], Q, dO [chunk queries], P^T, dS^T [64 x chunk], k offsets [64],
// q offsets [chunk], lse, delta [chunk], query windows [6 x chunk].
template <typename T, int D>
struct DkvLayout {
  static constexpr int kChunk = Cfg<T, D>::kKvChunk, kLd = Cfg<T, D>::kLd,
                       kLdP = kChunk + Cfg<T, D>::kPad;
  static constexpr size_t k = 0;
  static constexpr size_t v = k + tile_bytes<T>(kRows, kLd);
  static constexpr size_t q = v + tile_bytes<T>(kRows, kLd);
  static constexpr size_t dout = q + tile_bytes<T>(kChunk, kLd);
  static constexpr size_t p = dout + tile_bytes<T>(kChunk, kLd);
  static constexpr size_t ds = p + tile_bytes<T>(kRows, kLdP);
  static constexpr size_t koff = ds + tile_bytes<T>(kRows, kLdP);
  static constexpr size_t qoff = koff + kRows * sizeof(int64_t);
  static constexpr size_t lse = qoff + kChunk * sizeof(int64_t);
  static constexpr size_t delta = lse + kChunk * sizeof(float);
  static constexpr size_t qwin = delta + kChunk * sizeof(float);
  static constexpr size_t bytes = qwin + 6 * kChunk * sizeof(int);
};

}  // namespace gemm
}  // namespace jax_na
