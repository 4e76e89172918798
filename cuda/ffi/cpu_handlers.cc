// XLA FFI handlers of the CPU family: decode + validate, then run the CPU kernels.
// They keep no state between calls and allocate per call, so concurrent calls are safe
// (XLA's FFI has no trait to declare that; command-buffer traits are GPU-only).
#include <exception>
#include <string>
#include <utility>

#include "../cpu/cpu_na.h"
#include "decode.h"
#include "handlers.h"

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
    return ffi::Error::Internal(std::string("jax_na ") + op + " (cpu): " + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error FwdCpu(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                  ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                  Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  Problem p;
  if (auto e = ffi_decode::decode_problem("fwd", q, k, v, kernel_size, stride, dilation, is_causal, scale, &p);
      e.failure())
    return e;
  if (auto e = ffi_decode::check_fwd_results("fwd", q, *out, *lse); e.failure()) return e;
  FwdArgs a{q.untyped_data(), k.untyped_data(), v.untyped_data(), out->untyped_data(),
            static_cast<float*>(lse->untyped_data())};
  return guarded("fwd", [&] { cpu::fwd(p, a); });
}

ffi::Error BwdCpu(ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer dout,
                  ffi::AnyBuffer lse, ffi::AnyBuffer delta, ffi::Result<ffi::AnyBuffer> dq,
                  ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                  Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  Problem p;
  if (auto e = ffi_decode::decode_problem("bwd", q, k, v, kernel_size, stride, dilation, is_causal, scale, &p);
      e.failure())
    return e;
  if (auto e = ffi_decode::check_bwd_buffers("bwd", q, k, dout, lse, delta, *dq, *dk, *dv); e.failure())
    return e;
  BwdArgs a{q.untyped_data(), k.untyped_data(), v.untyped_data(), dout.untyped_data(),
            static_cast<const float*>(lse.untyped_data()), static_cast<const float*>(delta.untyped_data()),
            dq->untyped_data(), dk->untyped_data(), dv->untyped_data(), nullptr};
  return guarded("bwd", [&] { cpu::bwd(p, a); });
}

template <class B>
auto with_attrs(B&& binding) {
  return std::move(binding)
      .template Attr<Span64>("kernel_size")
      .template Attr<Span64>("stride")
      .template Attr<Span64>("dilation")
      .template Attr<Span64>("is_causal")
      .template Attr<float>("scale");
}

XLA_FFI_DEFINE_HANDLER(kFwdCpu, FwdCpu,
                       with_attrs(ffi::Ffi::Bind()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Ret<ffi::AnyBuffer>()
                                      .Ret<ffi::AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER(kBwdCpu, BwdCpu,
                       with_attrs(ffi::Ffi::Bind()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Arg<ffi::AnyBuffer>()
                                      .Ret<ffi::AnyBuffer>()
                                      .Ret<ffi::AnyBuffer>()
                                      .Ret<ffi::AnyBuffer>()));

}  // namespace

HandlerTable cpu_handlers() { return {{"jax_na_fwd_cpu", kFwdCpu}, {"jax_na_bwd_cpu", kBwdCpu}}; }

}  // namespace jax_na
