// Portable 8-lane float vectors (GCC/Clang vector extensions): on plain x86-64 each op becomes
// two SSE2 instructions, in the AVX2/FMA clone one AVX instruction. No intrinsics, so the same
// source compiles for every target of JAX_NA_CPU_CLONES.
#pragma once

#include <cstdint>
#include <cstring>

// Hot kernels are compiled twice, for x86-64-v3 (AVX2+FMA) and baseline x86-64, and picked at
// load time (ifunc), so the wheel runs on any x86-64 and uses AVX2 where present.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define JAX_NA_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define JAX_NA_CPU_CLONES
#endif
#define JAX_NA_INLINE inline __attribute__((always_inline))

namespace jax_na {
namespace cpu {

typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
typedef int32_t V8i __attribute__((vector_size(32)));

JAX_NA_INLINE V8 ld8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

JAX_NA_INLINE void st8(float* p, V8 v) { std::memcpy(p, &v, sizeof(v)); }

JAX_NA_INLINE V8 splat8(float x) { return V8{x, x, x, x, x, x, x, x}; }

#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define JAX_NA_HAS_SHUFFLEVECTOR 1
#endif

// Lane sums of four vectors: {sum(a0), sum(a1), sum(a2), sum(a3)}, by transposing adds.
JAX_NA_INLINE V4 hsum4(V8 a0, V8 a1, V8 a2, V8 a3) {
#if JAX_NA_HAS_SHUFFLEVECTOR
  const V8 u = __builtin_shufflevector(a0, a1, 0, 8, 1, 9, 4, 12, 5, 13) +
               __builtin_shufflevector(a0, a1, 2, 10, 3, 11, 6, 14, 7, 15);
  const V8 w = __builtin_shufflevector(a2, a3, 0, 8, 1, 9, 4, 12, 5, 13) +
               __builtin_shufflevector(a2, a3, 2, 10, 3, 11, 6, 14, 7, 15);
  const V8 x = __builtin_shufflevector(u, w, 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(u, w, 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(x, x, 0, 1, 2, 3) + __builtin_shufflevector(x, x, 4, 5, 6, 7);
#else  // older compilers: plain lane sums
  V4 r;
  const V8* a[4] = {&a0, &a1, &a2, &a3};
  for (int j = 0; j < 4; ++j) {
    float t = 0.f;
    for (int i = 0; i < 8; ++i) t += (*a[j])[i];
    r[j] = t;
  }
  return r;
#endif
}

JAX_NA_INLINE float hsum(V8 a) {
#if JAX_NA_HAS_SHUFFLEVECTOR
  const V4 h = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (h[0] + h[2]) + (h[1] + h[3]);
#else
  float t = 0.f;
  for (int i = 0; i < 8; ++i) t += a[i];
  return t;
#endif
}

// exp(x) for 8 lanes, relative error ~2 ulp (Cody-Waite reduction + Cephes expf polynomial).
// Underflow (x < -87.3) gives 0; callers only pass x <= ~0 (scores minus max or lse).
JAX_NA_INLINE V8 exp8(V8 x) {
  const V8 lo = splat8(-87.33654f), hi = splat8(88.0f);
  const V8i under = x < lo;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  const V8 magic = splat8(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  V8 n = x * splat8(1.44269504088896341f) + magic;
  n = n - magic;
  const V8 r = x - n * splat8(0.693359375f) - n * splat8(-2.12194440e-4f);
  V8 y = splat8(1.9875691500e-4f);
  y = y * r + splat8(1.3981999507e-3f);
  y = y * r + splat8(8.3334519073e-3f);
  y = y * r + splat8(4.1665795894e-2f);
  y = y * r + splat8(1.6666665459e-1f);
  y = y * r + splat8(5.0000001201e-1f);
  y = y * (r * r) + r + splat8(1.0f);
  const V8i e = (__builtin_convertvector(n, V8i) + 127) << 23;  // 2^n as float bits
  // n in [-126, 127], so 2^n is a normal float; lanes that underflowed become 0.
  return (V8)((V8i)(y * (V8)e) & ~under);
}

// Buffers of scores are processed 8 at a time: pad8 fills x[n .. round_up(n, 8)) with `fill`
// (the caller's buffer has room) and returns the rounded count.
JAX_NA_INLINE int64_t pad8(float* x, int64_t n, float fill) {
  const int64_t n8 = (n + 7) & ~int64_t(7);
  for (int64_t i = n; i < n8; ++i) x[i] = fill;
  return n8;
}

// Largest of x[0 .. n8), n8 a multiple of 8.
JAX_NA_INLINE float max8(const float* x, int64_t n8) {
  V8 m = splat8(-__builtin_inff());
  for (int64_t i = 0; i < n8; i += 8) {
    const V8 v = ld8(x + i);
    m = v > m ? v : m;
  }
  float r = m[0];
  for (int i = 1; i < 8; ++i) r = r > m[i] ? r : m[i];
  return r;
}

// x = exp(x - shift) over x[0 .. n8), returning the sum.
JAX_NA_INLINE float exp_shift_sum(float* x, int64_t n8, float shift) {
  V8 sum = splat8(0.f);
  for (int64_t i = 0; i < n8; i += 8) {
    const V8 e = exp8(ld8(x + i) - shift);
    st8(x + i, e);
    sum += e;
  }
  return hsum(sum);
}

// Backward weights over [0 .. n8): p = exp(s - shift) into s, dS = p * (dp - delta) into dp.
JAX_NA_INLINE void probs_and_grads(float* s, float* dp, int64_t n8, float shift, float delta) {
  for (int64_t i = 0; i < n8; i += 8) {
    const V8 p = exp8(ld8(s + i) - shift);
    st8(s + i, p);
    st8(dp + i, p * (ld8(dp + i) - delta));
  }
}

}  // namespace cpu
}  // namespace jax_na
