// XLA FFI handlers of the CPU family: decode + validate, then run the CPU kernels.
// They keep no state between calls and allocate per call, so concurrent calls are safe
// (XLA's FFI has no trait to declare that; command-buffer traits are GPU-only).
#include <exception>
#include <string>
#include <utility>

#include "../cpu/cpu_na.h"
#include "handlers.h"
#include "signatures.h"

namespace jax_na {
namespace {

namespace ffi = ::xla::ffi;
using ffi_decode::Span64;

// Runs a kernel, turning C++ exceptions (allocation or thread failures) into FFI errors.
template <class Fn>
ffi::Error guarded(const char* op, const Fn& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jax_na_") + op + "_cpu: jax_na " + op + " (cpu): " + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error FwdCpu(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                  ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                  Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  Problem p;
  FwdArgs a;
  if (auto e = ffi_sig::decode_fwd(q, k, v, out, lse, kernel_size, stride, dilation, is_causal,
                                   scale, &p, &a);
      e.failure())
    return ffi_decode::with_target("jax_na_fwd_cpu", e);
  return guarded("fwd", [&] { cpu::fwd(p, a); });
}

ffi::Error BwdCpu(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer dout,
                  ffi::AnyBuffer lse, ffi::AnyBuffer delta, ffi::Result<ffi::AnyBuffer> dq,
                  ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                  Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  Problem p;
  BwdArgs a;
  if (auto e = ffi_sig::decode_bwd(q, k, v, dout, lse, delta, dq, dk, dv, kernel_size, stride,
                                   dilation, is_causal, scale, &p, &a);
      e.failure())
    return ffi_decode::with_target("jax_na_bwd_cpu", e);
  return guarded("bwd", [&] { cpu::bwd(p, a); });
}

XLA_FFI_DEFINE_HANDLER(kFwdCpu, FwdCpu, ffi_sig::with_attrs(ffi_sig::fwd_buffers(ffi::Ffi::Bind())));
XLA_FFI_DEFINE_HANDLER(kBwdCpu, BwdCpu, ffi_sig::with_attrs(ffi_sig::bwd_buffers(ffi::Ffi::Bind())));

}  // namespace

HandlerTable cpu_handlers() { return {{"jax_na_fwd_cpu", kFwdCpu}, {"jax_na_bwd_cpu", kBwdCpu}}; }

}  // namespace jax_na
