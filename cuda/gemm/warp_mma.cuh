// Warp-level tile GEMMs of the GEMM family: one warp computes a 16-row slab of C (float32
// accumulators) from shared-memory operands.
//   f16/bf16: ldmatrix + mma.sync.m16n8k16 (tensor cores, float32 accumulation);
//   float32:  exact FMA path with the SAME accumulator layout, so the softmax, masking and
//             epilogue code is shared by every dtype.
// Accumulator layout (mma m16n8 C fragment): acc[n][0..1] = C[g][n*8 + 2t + {0,1}],
// acc[n][2..3] = C[g + 8][n*8 + 2t + {0,1}], with g = lane / 4 and t = lane % 4.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace jax_na {
namespace gemm {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                        const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_u32(p))
               : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                              uint32_t& r3, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(smem_u32(p))
               : "memory");
}

template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma16816: f16 or bf16");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// acc[16 x 8*NT] += A[16 x KD] * B[8*NT x KD]^T. A and B row-major in shared memory (KD
// contiguous), leading dimensions lda/ldb in elements. A points at the warp's first row.
template <typename T, int NT, int KD>
__device__ __forceinline__ void warp_gemm_nt(float (&acc)[NT][4], const T* A, int lda,
                                             const T* B, int ldb, int lane) {
  if constexpr (std::is_same_v<T, float>) {
    static_assert(KD % 4 == 0, "KD");
    const int g = lane >> 2, t = lane & 3;
#pragma unroll 2
    for (int kk = 0; kk < KD; kk += 4) {
      const float4 a0 = *reinterpret_cast<const float4*>(A + g * lda + kk);
      const float4 a1 = *reinterpret_cast<const float4*>(A + (g + 8) * lda + kk);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const float4 b0 = *reinterpret_cast<const float4*>(B + (n * 8 + 2 * t) * ldb + kk);
        const float4 b1 = *reinterpret_cast<const float4*>(B + (n * 8 + 2 * t + 1) * ldb + kk);
        acc[n][0] = fmaf(a0.w, b0.w, fmaf(a0.z, b0.z, fmaf(a0.y, b0.y, fmaf(a0.x, b0.x, acc[n][0]))));
        acc[n][1] = fmaf(a0.w, b1.w, fmaf(a0.z, b1.z, fmaf(a0.y, b1.y, fmaf(a0.x, b1.x, acc[n][1]))));
        acc[n][2] = fmaf(a1.w, b0.w, fmaf(a1.z, b0.z, fmaf(a1.y, b0.y, fmaf(a1.x, b0.x, acc[n][2]))));
        acc[n][3] = fmaf(a1.w, b1.w, fmaf(a1.z, b1.z, fmaf(a1.y, b1.y, fmaf(a1.x, b1.x, acc[n][3]))));
      }
    }
  } else {
    static_assert(KD % 16 == 0 && NT % 2 == 0, "KD, NT");
#pragma unroll
    for (int kk = 0; kk < KD; kk += 16) {
      uint32_t a[4];
      ldsm_x4(a[0], a[1], a[2], a[3], A + (lane & 15) * lda + kk + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4(b0, b1, b2, b3,
                B + (np * 16 + (lane & 7) + (lane >> 4) * 8) * ldb + kk + ((lane >> 3) & 1) * 8);
        mma16816<T>(acc[2 * np], a, b0, b1);
        mma16816<T>(acc[2 * np + 1], a, b2, b3);
      }
    }
  }
}

// acc[16 x 8*NT] += A[16 x KD] * B[KD x 8*NT]. A row-major (KD contiguous), B row-major
// (8*NT contiguous), both in shared memory. A points at the warp's first row.
template <typename T, int NT, int KD>
__device__ __forceinline__ void warp_gemm_nn(float (&acc)[NT][4], const T* A, int lda,
                                             const T* B, int ldb, int lane) {
  if constexpr (std::is_same_v<T, float>) {
    static_assert(KD % 4 == 0, "KD");
    const int g = lane >> 2, t = lane & 3;
#pragma unroll 2
    for (int kk = 0; kk < KD; kk += 4) {
      const float4 a0v = *reinterpret_cast<const float4*>(A + g * lda + kk);
      const float4 a1v = *reinterpret_cast<const float4*>(A + (g + 8) * lda + kk);
      const float a0[4] = {a0v.x, a0v.y, a0v.z, a0v.w};
      const float a1[4] = {a1v.x, a1v.y, a1v.z, a1v.w};
#pragma unroll
      for (int j = 0; j < 4; ++j) {
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          const float2 b = *reinterpret_cast<const float2*>(B + (kk + j) * ldb + n * 8 + 2 * t);
          acc[n][0] = fmaf(a0[j], b.x, acc[n][0]);
          acc[n][1] = fmaf(a0[j], b.y, acc[n][1]);
          acc[n][2] = fmaf(a1[j], b.x, acc[n][2]);
          acc[n][3] = fmaf(a1[j], b.y, acc[n][3]);
        }
      }
    }
  } else {
    static_assert(KD % 16 == 0 && NT % 2 == 0, "KD, NT");
#pragma unroll
    for (int kk = 0; kk < KD; kk += 16) {
      uint32_t a[4];
      ldsm_x4(a[0], a[1], a[2], a[3], A + (lane & 15) * lda + kk + (lane >> 4) * 8);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t b0, b1, b2, b3;
        ldsm_x4_trans(b0, b1, b2, b3,
                      B + (kk + (lane & 7) + ((lane >> 3) & 1) * 8) * ldb + np * 16 + (lane >> 4) * 8);
        mma16816<T>(acc[2 * np], a, b0, b1);
        mma16816<T>(acc[2 * np + 1], a, b2, b3);
      }
    }
  }
}

}  // namespace gemm
}  // namespace jax_na
