// Whole-tile warpgroup GEMMs over the swizzled shared tiles of smem_layout.h: the k-loops of
// wgmma instructions that the forward's consumer and the backward kernels issue (no commit, no
// wait: the kernels order those), and the packing of an fp32 accumulator into A fragments.
#pragma once

#include <cstdint>

#include "../fused/arch.h"
#include "smem_layout.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

// acc (=) A B^T over K = D: A the 64 x D K-major tile at descriptor da (layout ATile), B the
// N x D K-major tile at db (layout BTile). The first k-step overwrites acc. kStepAHere: A's
// k-step descriptors are computed at each use (desc_plus_here), for an A that stays put across
// an outer loop of a persistent kernel.
template <typename T, int N, int D, typename ATile, typename BTile, bool kStepAHere = false>
__device__ __forceinline__ void gemm_ss_abt(float (&acc)[N / 8][4], uint64_t da, uint64_t db) {
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    const uint32_t sa = ATile::k_step(ks);
    const uint64_t a = kStepAHere ? desc_plus_here(da, sa) : desc_plus(da, sa);
    wgmma_ss<T, N>(acc, a, desc_plus(db, BTile::k_step(ks)), ks > 0);
  }
}

// acc += A B over K = 16 KK (acc = A B when !accumulate): A (64 x 16 KK) from registers
// (pack_a), B the MN-major tile at db (its rows are the K dimension; layout BTile). Kernels that
// keep an accumulator's MMA in flight across iterations start it with !accumulate instead of
// zeroing it: ptxas serialises wgmma when plain instructions define its accumulator there.
// N = 256 (head_dim 256) runs as two m64n128k16 halves: columns [128 h, 128 h + 128) of B are
// its column blocks 2h and 2h + 1.
template <typename T, int N, int KK, typename BTile>
__device__ __forceinline__ void gemm_rs_ab(float (&acc)[N / 8][4], const uint32_t (&a)[KK][4],
                                           uint64_t db, bool accumulate = true) {
  constexpr int kHalves = N == 256 ? 2 : 1, NH = N / kHalves;
#pragma unroll
  for (int kk = 0; kk < KK; ++kk) {
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      constexpr uint32_t kHalfStep = uint32_t(2 * BTile::kBlockBytes) >> 4;
      wgmma_rs<T, NH>(*reinterpret_cast<float(*)[NH / 8][4]>(&acc[h * NH / 8]), a[kk],
                      desc_plus(db, BTile::mn_step(kk) + h * kHalfStep), kk > 0 || accumulate);
    }
  }
}

// acc = 0 (an accumulator whose first MMA never ran).
template <int NB>
__device__ __forceinline__ void zero_acc(float (&acc)[NB][4]) {
#pragma unroll
  for (int i = 0; i < NB; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
}

// Column block nt (its 4 values q) of a 64 x 16 KK fp32 accumulator into wgmma A fragments of
// T (the mma.sync A-fragment layout): k-step nt / 2, registers 2 (nt % 2) and 2 (nt % 2) + 1.
template <typename T, int KK>
__device__ __forceinline__ void pack_a_block(int nt, const float (&q)[4], uint32_t (&a)[KK][4]) {
  a[nt / 2][2 * (nt % 2)] = fused::pack2<T>(q[0], q[1]);
  a[nt / 2][2 * (nt % 2) + 1] = fused::pack2<T>(q[2], q[3]);
}

// The whole accumulator as A fragments.
template <typename T, int KK>
__device__ __forceinline__ void pack_a(const float (&s)[2 * KK][4], uint32_t (&a)[KK][4]) {
#pragma unroll
  for (int nt = 0; nt < 2 * KK; ++nt) pack_a_block<T, KK>(nt, s[nt], a);
}

// Shared memory of a kernel whose tiles need 1024-byte alignment (the 128-byte swizzle atom):
// the aligned base as a shared address and as a pointer (the launch adds 1024 bytes of slack).
struct AlignedSmem {
  uint32_t addr;
  char* ptr;
};
__device__ __forceinline__ AlignedSmem align_smem_1024(char* raw) {
  const uint32_t a = fused::smem_u32(raw);
  const uint32_t aligned = (a + 1023u) & ~1023u;
  return AlignedSmem{aligned, raw + (aligned - a)};
}

}  // namespace hopper
}  // namespace jax_na
