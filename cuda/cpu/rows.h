// A head_dim row as vectors of 8 floats, and the few operations the kernels need on it.
// Row<C> (C = 1, 2, 4, 8, 16) has C vectors, a compile-time size so loops unroll and the row
// lives in registers; Row<0> is the fallback for head_dim > 128 (runtime size, heap storage).
// Gathered rows are padded with zeros to `padded_dim` floats, so padding never changes a
// result.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace jax_na {
namespace cpu {

template <int C>
struct Row {
  V8 c[C];
  explicit Row(int /*chunks*/) {}
  JAX_NA_INLINE int chunks() const { return C; }
};

// Heap rows are plain floats accessed through an unaligned vector type (a std::vector<V8>
// would need 32-byte aligned allocation, which the allocator does not promise here).
typedef float V8u __attribute__((vector_size(32), aligned(4)));

template <>
struct Row<0> {
  std::vector<float> storage;
  V8u* c;
  explicit Row(int chunks) : storage(size_t(chunks) * 8), c(reinterpret_cast<V8u*>(storage.data())) {}
  Row(const Row&) = delete;
  int chunks() const { return int(storage.size() / 8); }
};

template <int C>
JAX_NA_INLINE void zero(Row<C>& r) {
  for (int i = 0; i < r.chunks(); ++i) r.c[i] = splat8(0.f);
}

// r = p[0 : 8 * chunks] * mul
template <int C>
JAX_NA_INLINE void load(Row<C>& r, const float* p, float mul = 1.f) {
  for (int i = 0; i < r.chunks(); ++i) r.c[i] = ld8(p + 8 * i) * mul;
}

template <int C>
JAX_NA_INLINE void store(const Row<C>& r, float* p) {
  for (int i = 0; i < r.chunks(); ++i) st8(p + 8 * i, r.c[i]);
}

// acc += a * y
template <int C>
JAX_NA_INLINE void axpy(Row<C>& acc, float a, const float* y) {
  const V8 av = splat8(a);
  for (int i = 0; i < acc.chunks(); ++i) acc.c[i] += av * ld8(y + 8 * i);
}

// acc += sum_j w[j] * y_j over n consecutive rows. (One accumulator: splitting the add chain
// over two measured slower, the second row does not stay in registers.)
template <int C>
JAX_NA_INLINE void axpy_rows(Row<C>& acc, const float* w, const float* y, int64_t n) {
  const int64_t stride = 8 * int64_t(acc.chunks());
  for (int64_t j = 0; j < n; ++j) axpy(acc, w[j], y + j * stride);
}

// out[j] = x . y_j for n consecutive rows y_j = y + j * 8 * chunks, four rows at a time.
template <int C>
JAX_NA_INLINE void dots(const Row<C>& x, const float* y, int64_t n, float* out) {
  const int K = x.chunks();
  const int64_t stride = 8 * int64_t(K);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4, y += 4 * stride) {
    V8 a0 = splat8(0.f), a1 = a0, a2 = a0, a3 = a0;
    for (int i = 0; i < K; ++i) {
      const V8 xi = x.c[i];
      a0 += xi * ld8(y + 8 * i);
      a1 += xi * ld8(y + stride + 8 * i);
      a2 += xi * ld8(y + 2 * stride + 8 * i);
      a3 += xi * ld8(y + 3 * stride + 8 * i);
    }
    const V4 s = hsum4(a0, a1, a2, a3);
    std::memcpy(out + j, &s, sizeof(s));
  }
  for (; j < n; ++j, y += stride) {
    V8 a = splat8(0.f);
    for (int i = 0; i < K; ++i) a += x.c[i] * ld8(y + 8 * i);
    out[j] = hsum(a);
  }
}

// Chunk count a head_dim is padded to: the smallest of 1, 2, 4, 8, 16 that fits, else exact.
inline int row_chunks(int64_t head_dim) {
  const int need = int((head_dim + 7) / 8);
  for (int c : {1, 2, 4, 8, 16})
    if (need <= c) return c;
  return need;
}

// Calls fn(std::integral_constant<int, C>) with the Row parameter C for `chunks` (row_chunks).
template <class Fn>
void with_row_type(int chunks, const Fn& fn) {
  switch (chunks) {
    case 1: return fn(std::integral_constant<int, 1>());
    case 2: return fn(std::integral_constant<int, 2>());
    case 4: return fn(std::integral_constant<int, 4>());
    case 8: return fn(std::integral_constant<int, 8>());
    case 16: return fn(std::integral_constant<int, 16>());
    default: return fn(std::integral_constant<int, 0>());
  }
}

}  // namespace cpu
}  // namespace jax_na
