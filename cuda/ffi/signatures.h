// The FFI signatures of the fwd/bwd handlers, shared by the CPU and CUDA handlers: the buffer
// and attribute bindings, and the decode + validate step that turns one call into a Problem and
// its pointer bundle. Each backend prepends its own context (CUDA: stream, scratch allocator).
// Header-only, compiles under g++ and nvcc.
#pragma once

#include <utility>

#include "xla/ffi/api/ffi.h"

#include "../common/problem.h"
#include "decode.h"

namespace jax_na {
namespace ffi_sig {

namespace ffi = ::xla::ffi;
using ffi_decode::Span64;

// Attributes, in the order the handlers take them after their buffers.
template <class B>
auto with_attrs(B&& binding) {
  return std::move(binding)
      .template Attr<Span64>("kernel_size")
      .template Attr<Span64>("stride")
      .template Attr<Span64>("dilation")
      .template Attr<Span64>("is_causal")
      .template Attr<float>("scale");
}

// fwd buffers: q, k, v -> out, lse. A backend may append results of its own; then with_attrs.
template <class B>
auto fwd_buffers(B&& binding) {
  return std::move(binding)
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>();
}

// `n` >= 1 more buffer arguments (a Binding only moves into what Arg/Ret return).
template <int n, class B>
auto buffer_args(B&& binding) {
  if constexpr (n == 1) {
    return std::move(binding).template Arg<ffi::AnyBuffer>();
  } else {
    return buffer_args<n - 1>(std::move(binding).template Arg<ffi::AnyBuffer>());
  }
}

template <class B>
auto bwd_results(B&& binding) {
  return std::move(binding)
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>();
}

// bwd buffers: q, k, v, dout, lse, delta -> dq, dk, dv (as fwd_buffers).
template <class B>
auto bwd_buffers(B&& binding) {
  return bwd_results(buffer_args<6>(std::move(binding)));
}

// The backward that forms delta itself (the Hopper RD handler): q, k, v, dout, lse, out, dlse
// -> dq, dk, dv (as fwd_buffers).
template <class B>
auto bwd_rd_buffers(B&& binding) {
  return bwd_results(buffer_args<7>(std::move(binding)));
}

// Decode + validate a fwd call into *p and *a.
inline ffi::Error decode_fwd(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                             ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                             Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal,
                             float scale, Problem* p, FwdArgs* a) {
  if (auto e = ffi_decode::decode_problem("fwd", q, k, v, kernel_size, stride, dilation, is_causal,
                                          scale, p);
      e.failure())
    return e;
  if (auto e = ffi_decode::check_fwd_results("fwd", q, *out, *lse); e.failure()) return e;
  *a = FwdArgs{q.untyped_data(), k.untyped_data(), v.untyped_data(), out->untyped_data(),
               static_cast<float*>(lse->untyped_data())};
  return ffi::Error::Success();
}

// What both backward signatures decode: the problem, and *a without delta (a->delta and
// a->workspace null).
inline ffi::Error decode_bwd_common(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                                    ffi::AnyBuffer dout, ffi::AnyBuffer lse,
                                    ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                                    ffi::Result<ffi::AnyBuffer> dv, Span64 kernel_size,
                                    Span64 stride, Span64 dilation, Span64 is_causal, float scale,
                                    Problem* p, BwdArgs* a) {
  if (auto e = ffi_decode::decode_problem("bwd", q, k, v, kernel_size, stride, dilation, is_causal,
                                          scale, p);
      e.failure())
    return e;
  if (auto e = ffi_decode::check_bwd_buffers("bwd", q, k, dout, lse, *dq, *dk, *dv); e.failure())
    return e;
  *a = BwdArgs{q.untyped_data(), k.untyped_data(), v.untyped_data(), dout.untyped_data(),
               static_cast<const float*>(lse.untyped_data()), nullptr,
               dq->untyped_data(), dk->untyped_data(), dv->untyped_data(), nullptr};
  return ffi::Error::Success();
}

// Decode + validate a bwd call into *p and *a (a->workspace = nullptr; the caller may set it).
inline ffi::Error decode_bwd(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                             ffi::AnyBuffer dout, ffi::AnyBuffer lse, ffi::AnyBuffer delta,
                             ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                             ffi::Result<ffi::AnyBuffer> dv, Span64 kernel_size, Span64 stride,
                             Span64 dilation, Span64 is_causal, float scale, Problem* p,
                             BwdArgs* a) {
  if (auto e = decode_bwd_common(q, k, v, dout, lse, dq, dk, dv, kernel_size, stride, dilation,
                                 is_causal, scale, p, a);
      e.failure())
    return e;
  if (auto e = ffi_decode::expect_stats("bwd", "delta", delta, q.dimensions()); e.failure())
    return e;
  a->delta = static_cast<const float*>(delta.untyped_data());
  return ffi::Error::Success();
}

// Decode + validate a bwd_rd call into *p, *a (as decode_bwd) and *d. The delta result is the
// buffer the dQ kernel writes (d->delta) and the dK/dV kernel and the repair launch after both
// read (a->delta).
inline ffi::Error decode_bwd_rd(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                                ffi::AnyBuffer dout, ffi::AnyBuffer lse, ffi::AnyBuffer out,
                                ffi::AnyBuffer dlse, ffi::Result<ffi::AnyBuffer> dq,
                                ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                                ffi::Result<ffi::AnyBuffer> delta, Span64 kernel_size,
                                Span64 stride, Span64 dilation, Span64 is_causal, float scale,
                                Problem* p, BwdArgs* a, DeltaArgs* d) {
  if (auto e = decode_bwd_common(q, k, v, dout, lse, dq, dk, dv, kernel_size, stride, dilation,
                                 is_causal, scale, p, a);
      e.failure())
    return e;
  if (auto e = ffi_decode::expect_like("bwd", "out", out, q.element_type(), q.dimensions());
      e.failure())
    return e;
  if (auto e = ffi_decode::expect_stats("bwd", "dlse", dlse, q.dimensions()); e.failure())
    return e;
  if (auto e = ffi_decode::expect_stats("bwd", "the delta result", *delta, q.dimensions());
      e.failure())
    return e;
  float* const delta_out = static_cast<float*>(delta->untyped_data());
  *d = DeltaArgs{out.untyped_data(), static_cast<const float*>(dlse.untyped_data()), delta_out};
  a->delta = delta_out;
  return ffi::Error::Success();
}

}  // namespace ffi_sig
}  // namespace jax_na
