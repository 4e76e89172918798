// Moving rows between global and shared memory in the GEMM family: gathers of rows given by
// element offsets (16-byte vectors, zero rows where the offset is -1), accumulator fragments
// to shared memory, and a warp's 16 staged rows back to global memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../common/nonfinite.cuh"

namespace jax_na {
namespace gemm {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Gather NROWS rows of D elements: s[r][:] = g[off[r] : off[r] + D], or zeros if off[r] < 0.
template <typename T, int D, int NROWS, int NTHREADS>
__device__ __forceinline__ void gather_rows(T* s, int lds, const T* __restrict__ g,
                                            const int64_t* off, int tid) {
  constexpr int kV = 16 / sizeof(T);
  constexpr int kVpr = D / kV;
  static_assert(D % kV == 0, "rows must be whole 16-byte vectors");
#pragma unroll 4
  for (int i = tid; i < NROWS * kVpr; i += NTHREADS) {
    const int r = i / kVpr, c = (i % kVpr) * kV;
    const int64_t o = off[r];
    uint4 val = make_uint4(0u, 0u, 0u, 0u);
    if (o >= 0) val = __ldg(reinterpret_cast<const uint4*>(g + o + c));
    *reinterpret_cast<uint4*>(s + r * lds + c) = val;
  }
}

__device__ __forceinline__ void store_pair(float* p, float a, float b) {
  *reinterpret_cast<float2*>(p) = make_float2(a, b);
}
__device__ __forceinline__ void store_pair(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}
__device__ __forceinline__ void store_pair(__nv_bfloat16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}

// A warp's accumulator fragment (16 x 8*NT, layout of warp_mma.cuh) into shared memory rows
// s[0..16) (converted to T), each value multiplied by mul.
template <typename T, int NT>
__device__ __forceinline__ void acc_to_smem(const float (&acc)[NT][4], T* s, int lds, int lane,
                                            float mul = 1.f) {
  const int r = lane >> 2, c = 2 * (lane & 3);
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    store_pair(s + r * lds + n * 8 + c, acc[n][0] * mul, acc[n][1] * mul);
    store_pair(s + (r + 8) * lds + n * 8 + c, acc[n][2] * mul, acc[n][3] * mul);
  }
}

// A warp's 16 staged rows s[0..16) to global rows g + off[r] (skipped where off[r] < 0). A
// stored chunk holding a NaN or an Inf raises *nonfinite: a masked pair's 0 * x may have put it
// there (cuda/repair/).
template <typename T, int D>
__device__ __forceinline__ void warp_store_rows(const T* s, int lds, T* __restrict__ g,
                                                const int64_t* off, int lane, unsigned* nonfinite) {
  constexpr int kV = 16 / sizeof(T);
  constexpr int kVpr = D / kV;
#pragma unroll
  for (int i = lane; i < 16 * kVpr; i += 32) {
    const int r = i / kVpr, c = (i % kVpr) * kV;
    const int64_t o = off[r];
    if (o >= 0) {
      const uint4 v = *reinterpret_cast<const uint4*>(s + r * lds + c);
      *reinterpret_cast<uint4*>(g + o + c) = v;
      flag_nonfinite<T>(v, nonfinite);
    }
  }
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace gemm
}  // namespace jax_na
