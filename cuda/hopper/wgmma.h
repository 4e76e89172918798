// Warpgroup MMA (wgmma, sm_90a) for the Hopper family: shared-memory matrix descriptors and the
// shapes the forward uses, for fp16 and bf16 inputs with fp32 accumulators:
//   S  = Q K^T : m64n{64,128}k16, A and B from shared memory, both K-major;
//   O += P V   : m64n{32,64,128}k16, A (P) from registers, B (V) from shared memory, MN-major.
// The accumulator of m64nNk16 gives each thread the same fragment as N/8 mma.sync m16n8 tiles
// (warp w of the warpgroup owns rows 16w..16w+15), so acc[N/8][4] is shared with the sm_80
// softmax and mask code. Our own wrappers; the PTX forms follow the PTX ISA.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define JAX_NA_WGMMA 1
#else
#define JAX_NA_WGMMA 0
#endif

namespace jax_na {
namespace hopper {

// Descriptor of a swizzled shared tile (PTX "matrix descriptor"): start address, leading and
// stride byte offsets (16-byte units), swizzle mode in bits 62-63 (1: 128 B, 2: 64 B).
template <int kSwizzleBytes>
__device__ __forceinline__ uint64_t swizzled_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  static_assert(kSwizzleBytes == 128 || kSwizzleBytes == 64, "128- or 64-byte swizzle");
  constexpr uint64_t kMode = kSwizzleBytes == 128 ? 1 : 2;
  return uint64_t((addr & 0x3ffff) >> 4) | (uint64_t(lbo >> 4) << 16) |
         (uint64_t(sbo >> 4) << 32) | (kMode << 62);
}

__device__ __forceinline__ void wgmma_fence() {
#if JAX_NA_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if JAX_NA_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if JAX_NA_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Keep the compiler from moving accumulator reads/writes across an in-flight wgmma.
template <int NB>
__device__ __forceinline__ void fence_acc(float (&d)[NB][4]) {
#pragma unroll
  for (int i = 0; i < NB; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

// Generic proxy writes (cp.async, st.shared) -> visible to wgmma's async proxy.
__device__ __forceinline__ void fence_proxy_async() {
#if JAX_NA_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

template <typename T> struct WgmmaType;
template <> struct WgmmaType<__nv_bfloat16> { static constexpr bool kBF16 = true; };
template <> struct WgmmaType<__half> { static constexpr bool kBF16 = false; };

#define JNA_F4(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
// One asm statement per shape; TY is the input type's PTX name ("bf16" or "f16").
#define JNA_WGMMA_SS_N64(TY)                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                    \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "    \
               "%32, %33, p, 1, 1, 0, 0;\n}\n"                                                 \
               : JNA_F4(0), JNA_F4(1), JNA_F4(2), JNA_F4(3), JNA_F4(4), JNA_F4(5), JNA_F4(6), JNA_F4(7)                                                       \
               : "l"(da), "l"(db), "r"(scale_d))
#define JNA_WGMMA_SS_N128(TY)                                                                  \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                   \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "    \
               "%64, %65, p, 1, 1, 0, 0;\n}\n"                                                 \
               : JNA_F4(0), JNA_F4(1), JNA_F4(2), JNA_F4(3), JNA_F4(4), JNA_F4(5), JNA_F4(6), JNA_F4(7), JNA_F4(8), JNA_F4(9), JNA_F4(10), JNA_F4(11), JNA_F4(12), JNA_F4(13), JNA_F4(14), JNA_F4(15)                                                        \
               : "l"(da), "l"(db), "r"(scale_d))
#define JNA_WGMMA_RS_N32(TY)                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " "                    \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "       \
               "{%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}\n"                                  \
               : JNA_F4(0), JNA_F4(1), JNA_F4(2), JNA_F4(3)                                  \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d), "n"(int(kTransB)))
#define JNA_WGMMA_RS_N64(TY)                                                                   \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                    \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "    \
               "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"                                  \
               : JNA_F4(0), JNA_F4(1), JNA_F4(2), JNA_F4(3), JNA_F4(4), JNA_F4(5), JNA_F4(6), JNA_F4(7)                                                       \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d), "n"(int(kTransB)))
#define JNA_WGMMA_RS_N128(TY)                                                                  \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                   \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "    \
               "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"                                  \
               : JNA_F4(0), JNA_F4(1), JNA_F4(2), JNA_F4(3), JNA_F4(4), JNA_F4(5), JNA_F4(6), JNA_F4(7), JNA_F4(8), JNA_F4(9), JNA_F4(10), JNA_F4(11), JNA_F4(12), JNA_F4(13), JNA_F4(14), JNA_F4(15)                                                        \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d), "n"(int(kTransB)))

// d (+)= A B^T, m64nNk16 (N = 64 or 128): A (64 x 16) and B (N x 16) K-major in shared
// memory. scale_d == 0 overwrites d.
template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t da, uint64_t db,
                                         int scale_d) {
  static_assert(N == 64 || N == 128, "m64n64k16 or m64n128k16");
#if JAX_NA_WGMMA
  constexpr bool bf16 = WgmmaType<T>::kBF16;
  if constexpr (N == 64 && bf16) {
    JNA_WGMMA_SS_N64("bf16");
  } else if constexpr (N == 64) {
    JNA_WGMMA_SS_N64("f16");
  } else if constexpr (bf16) {
    JNA_WGMMA_SS_N128("bf16");
  } else {
    JNA_WGMMA_SS_N128("f16");
  }
#endif
}

// d (+)= A B, m64nNk16 (N = 32, 64 or 128): A (64 x 16) in registers as four packed pairs
// (the mma.sync A-fragment layout), B (16 x N) in shared memory, MN-major (kTransB, e.g. V in
// P V) or K-major (B^T rows, e.g. K in Q K^T).
template <typename T, int N, bool kTransB = true>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4],
                                         uint64_t db, int scale_d) {
  static_assert(N == 32 || N == 64 || N == 128, "m64n32k16, m64n64k16 or m64n128k16");
#if JAX_NA_WGMMA
  constexpr bool bf16 = WgmmaType<T>::kBF16;
  if constexpr (N == 32 && bf16) {
    JNA_WGMMA_RS_N32("bf16");
  } else if constexpr (N == 32) {
    JNA_WGMMA_RS_N32("f16");
  } else if constexpr (N == 64 && bf16) {
    JNA_WGMMA_RS_N64("bf16");
  } else if constexpr (N == 64) {
    JNA_WGMMA_RS_N64("f16");
  } else if constexpr (bf16) {
    JNA_WGMMA_RS_N128("bf16");
  } else {
    JNA_WGMMA_RS_N128("f16");
  }
#endif
}

#undef JNA_WGMMA_SS_N64
#undef JNA_WGMMA_SS_N128
#undef JNA_WGMMA_RS_N32
#undef JNA_WGMMA_RS_N64
#undef JNA_WGMMA_RS_N128
#undef JNA_F4

}  // namespace hopper
}  // namespace jax_na
