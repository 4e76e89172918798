// Decoding of the FFI call (buffers + attributes) into one jax_na::Problem, with every rule
// re-checked: Python validates first, but a custom call can be reached directly (jax.ffi), and
// a kernel must never read or write out of bounds because of a bad shape or attribute.
// Shared by the CPU and CUDA handlers (header-only, compiles under g++ and nvcc).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "xla/ffi/api/ffi.h"

#include "../common/problem.h"

namespace jax_na {
namespace ffi_decode {

namespace ffi = ::xla::ffi;
using Span64 = ffi::Span<const int64_t>;

inline std::string dims_str(ffi::AnyBuffer::Dimensions d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

inline std::string dtype_name(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F32: return "float32";
    case ffi::DataType::F16: return "float16";
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::F64: return "float64";
    case ffi::DataType::S32: return "int32";
    case ffi::DataType::S64: return "int64";
    default: return "dtype code " + std::to_string(int(t));
  }
}

inline ffi::Error invalid(const std::string& op, const std::string& msg) {
  return ffi::Error::InvalidArgument("jax_na " + op + ": " + msg);
}

// ffi::Error::errc() is an ErrorCode or an optional one, depending on the XLA version.
template <class C>
ffi::ErrorCode error_code(const C& c) {
  if constexpr (std::is_same_v<C, ffi::ErrorCode>) {
    return c;
  } else {
    return c.value_or(ffi::ErrorCode::kInternal);
  }
}

// `e` with the FFI target's name in front ("jax_na_fwd_cuda_fused: jax_na fwd: <rule>").
inline ffi::Error with_target(const std::string& target, const ffi::Error& e) {
  return ffi::Error(error_code(e.errc()), target + ": " + e.message());
}

inline bool same_dims(ffi::AnyBuffer::Dimensions a, ffi::AnyBuffer::Dimensions b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// `a` must equal `b` with its last `drop` dims removed (lse [B,*S,H] vs q [B,*S,H,D]).
inline bool prefix_dims(ffi::AnyBuffer::Dimensions a, ffi::AnyBuffer::Dimensions b, size_t drop) {
  if (a.size() + drop != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

inline bool to_dtype(ffi::DataType t, DType* out) {
  switch (t) {
    case ffi::DataType::F32: *out = DType::kF32; return true;
    case ffi::DataType::F16: *out = DType::kF16; return true;
    case ffi::DataType::BF16: *out = DType::kBF16; return true;
    default: return false;
  }
}

// Buffers of the element type of q (checked by name), or lse-like float32 buffers.
inline ffi::Error expect_like(const std::string& op, const char* name, const ffi::AnyBuffer& b,
                              ffi::DataType want, ffi::AnyBuffer::Dimensions want_dims) {
  if (b.element_type() != want)
    return invalid(op, std::string(name) + " has dtype " + dtype_name(b.element_type()) +
                           ", expected " + dtype_name(want));
  if (!same_dims(b.dimensions(), want_dims))
    return invalid(op, std::string(name) + " has shape " + dims_str(b.dimensions()) +
                           ", expected " + dims_str(want_dims));
  return ffi::Error::Success();
}

inline ffi::Error expect_stats(const std::string& op, const char* name, const ffi::AnyBuffer& b,
                               ffi::AnyBuffer::Dimensions q_dims) {
  if (b.element_type() != ffi::DataType::F32)
    return invalid(op, std::string(name) + " must be float32");
  if (!prefix_dims(b.dimensions(), q_dims, 1))
    return invalid(op, std::string(name) + " has shape " + dims_str(b.dimensions()) +
                           ", expected query shape without head_dim " + dims_str(q_dims));
  return ffi::Error::Success();
}

// q, k, v and the attributes -> Problem. Checks everything the kernels rely on.
inline ffi::Error decode_problem(const std::string& op, const ffi::AnyBuffer& q,
                                 const ffi::AnyBuffer& k, const ffi::AnyBuffer& v,
                                 Span64 kernel_size, Span64 stride, Span64 dilation,
                                 Span64 is_causal, float scale, Problem* p) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  const int64_t ndim = int64_t(qd.size());
  if (ndim < 4 || ndim > 6)
    return invalid(op, "query must be [batch, *spatial, heads, head_dim] with 1-3 spatial dims, "
                       "got shape " + dims_str(qd));
  const int rank = int(ndim - 3);
  if (kd.size() != qd.size() || vd.size() != qd.size())
    return invalid(op, "key " + dims_str(kd) + " and value " + dims_str(vd) +
                           " must have the rank of query " + dims_str(qd));
  for (int i = 0; i <= rank; ++i)
    if (kd[i] != qd[i] || vd[i] != qd[i])
      return invalid(op, "key " + dims_str(kd) + " and value " + dims_str(vd) +
                             " must match query " + dims_str(qd) + " in batch and spatial extents");
  if (!same_dims(kd, vd))
    return invalid(op, "key " + dims_str(kd) + " and value " + dims_str(vd) + " must have one shape");
  const int64_t heads = qd[ndim - 2], heads_kv = kd[ndim - 2], head_dim = qd[ndim - 1];
  if (kd[ndim - 1] != head_dim)
    return invalid(op, "key head_dim must equal query head_dim, got " + dims_str(kd) + " vs " + dims_str(qd));
  if (heads < 1 || heads_kv < 1 || heads % heads_kv != 0)
    return invalid(op, "query heads (" + std::to_string(heads) + ") must be a positive multiple of "
                       "key/value heads (" + std::to_string(heads_kv) + ")");
  if (head_dim < 1 || qd[0] < 1) return invalid(op, "batch and head_dim must be >= 1, got " + dims_str(qd));

  DType dt;
  if (!to_dtype(q.element_type(), &dt))
    return invalid(op, "query dtype must be float32, float16 or bfloat16, got " + dtype_name(q.element_type()));
  if (k.element_type() != q.element_type() || v.element_type() != q.element_type())
    return invalid(op, "query, key and value must share one dtype");

  const Span64* attrs[4] = {&kernel_size, &stride, &dilation, &is_causal};
  const char* names[4] = {"kernel_size", "stride", "dilation", "is_causal"};
  for (int a = 0; a < 4; ++a)
    if (int64_t(attrs[a]->size()) != rank)
      return invalid(op, std::string(names[a]) + " must have one entry per spatial dimension (" +
                             std::to_string(rank) + "), got " + std::to_string(attrs[a]->size()));
  if (!std::isfinite(scale)) return invalid(op, "scale must be finite");

  // Per-dimension window math is 32-bit in every kernel (positions, window ends, leaders, tile
  // ends reach about twice the extent), so each extent stays below 2^30. Flat offsets (batch,
  // token, head, channel) are 64-bit: tensors may hold far more than 2^31 elements.
  constexpr int64_t kMaxExtent = (int64_t(1) << 30) - 1;
  Problem r;
  r.rank = rank;
  r.batch = qd[0];
  r.heads = heads;
  r.heads_kv = heads_kv;
  r.head_dim = head_dim;
  r.scale = scale;
  r.dtype = dt;
  const int pad = 3 - rank;  // pad at the front: dim[2] is the innermost spatial dimension
  for (int i = 0; i < pad; ++i) r.dim[i] = DimParams{1, 1, 1, 1, false};
  for (int i = 0; i < rank; ++i) {
    const int64_t L = qd[1 + i], ks = kernel_size[i], s = stride[i], d = dilation[i], c = is_causal[i];
    const std::string where = " in spatial dimension " + std::to_string(i);
    if (L < 1 || L > kMaxExtent)
      return invalid(op, "spatial extent must be in [1, 2^30 - 1]" + where + ", got " + std::to_string(L));
    if (ks < 2) return invalid(op, "kernel_size must be >= 2" + where + ", got " + std::to_string(ks));
    if (d < 1) return invalid(op, "dilation must be >= 1" + where + ", got " + std::to_string(d));
    if (ks > L || d > L || ks * d > L)  // first two guard the product against overflow
      return invalid(op, "kernel_size * dilation must not exceed the extent" + where + ": " +
                             std::to_string(ks) + " * " + std::to_string(d) + " > " + std::to_string(L));
    if (s < 1 || s > ks)
      return invalid(op, "stride must satisfy 1 <= stride <= kernel_size" + where + ", got " + std::to_string(s));
    if (c != 0 && c != 1) return invalid(op, "is_causal must be 0 or 1" + where);
    r.dim[pad + i] = DimParams{int(L), int(ks), int(s), int(d), c == 1};
  }
  // Flat indices are int64 in every kernel; refuse sizes whose element count would overflow it.
  double elems = double(r.batch) * double(r.tokens()) * double(heads) * double(head_dim);
  if (elems > 9.0e18) return invalid(op, "problem too large");
  *p = r;
  return ffi::Error::Success();
}

inline ffi::Error check_fwd_results(const std::string& op, const ffi::AnyBuffer& q,
                                    const ffi::AnyBuffer& out, const ffi::AnyBuffer& lse) {
  if (auto e = expect_like(op, "out", out, q.element_type(), q.dimensions()); e.failure()) return e;
  return expect_stats(op, "lse", lse, q.dimensions());
}

// The buffers both backward signatures have (the one with delta, and the one with out and dlse
// in its place: signatures.h).
inline ffi::Error check_bwd_buffers(const std::string& op, const ffi::AnyBuffer& q,
                                    const ffi::AnyBuffer& k, const ffi::AnyBuffer& dout,
                                    const ffi::AnyBuffer& lse, const ffi::AnyBuffer& dq,
                                    const ffi::AnyBuffer& dk, const ffi::AnyBuffer& dv) {
  const auto t = q.element_type();
  if (auto e = expect_like(op, "dout", dout, t, q.dimensions()); e.failure()) return e;
  if (auto e = expect_stats(op, "lse", lse, q.dimensions()); e.failure()) return e;
  if (auto e = expect_like(op, "dq", dq, t, q.dimensions()); e.failure()) return e;
  if (auto e = expect_like(op, "dk", dk, t, k.dimensions()); e.failure()) return e;
  return expect_like(op, "dv", dv, t, k.dimensions());
}

}  // namespace ffi_decode
}  // namespace jax_na
