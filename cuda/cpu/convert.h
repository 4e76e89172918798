// float16 / bfloat16 <-> float32 conversions (round to nearest even) and row load/store.
// Written with integer bit tricks so they need no F16C/AVX512 and run on any x86-64.
#pragma once

#include <cstdint>
#include <cstring>

#include "../common/problem.h"

namespace jax_na {
namespace cpu {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float
    const float f = float(man) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));  // inf / nan
  return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t float_to_half(float f) {
  uint32_t x = f32_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return uint16_t(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (x < 0x38800000u) {
    // Below the smallest normal: adding 0.5 makes the FPU round to a multiple of 2^-24 (RNE).
    const float r = bits_f32(x) + 0.5f;
    return uint16_t(sign | (f32_bits(r) - 0x3f000000u));
  }
  x += 0xc8000fffu + ((x >> 13) & 1u);  // rebias exponent 127 -> 15, round to nearest even
  return uint16_t(sign | (x >> 13));
}

inline float bf16_to_float(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Row `n` elements at element offset `off` of `base` as float32. For float32 input the data
// pointer itself is returned (no copy); otherwise `buf` is filled and returned.
inline const float* load_row(const void* base, DType t, int64_t off, int64_t n, float* buf) {
  if (t == DType::kF32) return static_cast<const float*>(base) + off;
  const uint16_t* src = static_cast<const uint16_t*>(base) + off;
  if (t == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) buf[i] = half_to_float(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) buf[i] = bf16_to_float(src[i]);
  }
  return buf;
}

// Row as float32 padded with zeros to `padded` >= n floats: the data pointer itself for float32
// input that needs no padding, else `buf` (padded floats) filled and returned.
inline const float* load_padded(const void* base, DType t, int64_t off, int64_t n, int64_t padded,
                                float* buf) {
  if (t == DType::kF32 && n == padded) return static_cast<const float*>(base) + off;
  const float* r = load_row(base, t, off, n, buf);
  if (r != buf) std::memcpy(buf, r, size_t(n) * sizeof(float));
  for (int64_t i = n; i < padded; ++i) buf[i] = 0.f;
  return buf;
}

// dst[off + i] = src[i] * mul, converted to the element type.
inline void store_row(void* base, DType t, int64_t off, int64_t n, const float* src, float mul) {
  if (t == DType::kF32) {
    float* d = static_cast<float*>(base) + off;
    for (int64_t i = 0; i < n; ++i) d[i] = src[i] * mul;
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(base) + off;
  if (t == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_half(src[i] * mul);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i] * mul);
  }
}

}  // namespace cpu
}  // namespace jax_na
