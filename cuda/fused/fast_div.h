// Division by a divisor the host fixed at launch (tile, head and group counts of the CTA grid):
// a multiply-high and a shift instead of the ~15-instruction integer division, for the CTA
// decode every kernel runs in its prologue. Exact for dividends below 2^31 (Granlund and
// Montgomery: with l = ceil(log2 d) and mul = ceil(2^(31 + l) / d), n * mul / 2^(31 + l) is
// n / d plus less than 1 / d).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FAST_DIV_HD __host__ __device__ __forceinline__
#else
#define FAST_DIV_HD inline
#endif

namespace jax_na {
namespace fused {

struct FastDiv {
  uint32_t d = 1, mul = 0, shift = 0;  // d == 1: the identity (mul, shift unused)

  static FastDiv of(uint32_t divisor) {
    FastDiv f;
    f.d = divisor;
    if (divisor > 1) {
      int l = 0;
      while ((uint64_t(1) << l) < divisor) ++l;
      f.mul = uint32_t(((uint64_t(1) << (31 + l)) + divisor - 1) / divisor);
      f.shift = uint32_t(l - 1);
    }
    return f;
  }
  // n / d for n < 2^31.
  FAST_DIV_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t hi = __umulhi(n, mul);
#else
    const uint32_t hi = uint32_t((uint64_t(n) * mul) >> 32);
#endif
    return d == 1 ? n : hi >> shift;
  }
  // q = n / d and n % d.
  FAST_DIV_HD uint32_t divmod(uint32_t n, uint32_t& rem) const {
    const uint32_t q = div(n);
    rem = n - q * d;
    return q;
  }
};

// a / n for 0 <= a < 2^20 and 0 < n < 2^20 that differ per CTA (box extents): on the device by
// an approximate reciprocal (MUFU.RCP and a multiply, ~5 instructions against ~20). Exact: the
// quotient (a + 0.5) / n lies at least 1 / (2 n) from an integer, and __fdividef's error (2 ulp,
// 2^-22 relative) moves it by less than (a + 0.5) / n * 2^-22 < 1 / (2 n). tiling_check checks
// the bound's premise with the error at both signs.
FAST_DIV_HD int small_div(int a, int n) {
#if defined(__CUDA_ARCH__)
  return int(__fdividef(float(a) + 0.5f, float(n)));
#else
  return int((float(a) + 0.5f) / float(n));
#endif
}

}  // namespace fused
}  // namespace jax_na
