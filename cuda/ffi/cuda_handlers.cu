// XLA FFI handlers of the CUDA families: decode + validate (signatures.h, shared with the CPU
// handlers), then launch the family's fwd/bwd on XLA's stream. One template per direction,
// instantiated per family; a family is compiled in only if its sources exist
// (JAX_NA_HAS_<FAMILY>, set by CMake), so cuda_handlers() lists exactly what can run.
// Traits: left default (not command-buffer compatible): bwd allocates scratch at run time.
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "../common/families.h"
#include "handlers.h"
#include "signatures.h"

namespace jax_na {
namespace {

namespace ffi = ::xla::ffi;
using ffi_decode::Span64;

ffi::Error cuda_failure(const char* op, const char* family, cudaError_t err) {
  std::string msg = std::string("jax_na ") + op + " (cuda-" + family + "): ";
  if (err == cudaErrorNotSupported) msg += "this kernel family does not support the problem: ";
  return ffi::Error::Internal(msg + cudaGetErrorString(err));
}

template <class F>
ffi::Error FwdCuda(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                   Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  Problem p;
  FwdArgs a;
  if (auto e = ffi_sig::decode_fwd(q, k, v, out, lse, kernel_size, stride, dilation, is_causal,
                                   scale, &p, &a);
      e.failure())
    return e;
  const cudaError_t err = F::fwd(p, a, stream);
  return err == cudaSuccess ? ffi::Error::Success() : cuda_failure("fwd", F::kName, err);
}

template <class F>
ffi::Error BwdCuda(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q,
                   ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer dout, ffi::AnyBuffer lse,
                   ffi::AnyBuffer delta, ffi::Result<ffi::AnyBuffer> dq,
                   ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv,
                   Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  Problem p;
  BwdArgs a;
  if (auto e = ffi_sig::decode_bwd(q, k, v, dout, lse, delta, dq, dk, dv, kernel_size, stride,
                                   dilation, is_causal, scale, &p, &a);
      e.failure())
    return e;
  if (const size_t bytes = F::workspace_bytes(p); bytes > 0) {
    const auto mem = scratch.Allocate(bytes, 256);
    if (!mem.has_value())
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        std::string("jax_na bwd (cuda-") + F::kName + "): could not allocate " +
                            std::to_string(bytes) + " bytes of workspace");
    a.workspace = *mem;
  }
  const cudaError_t err = F::bwd(p, a, stream);
  return err == cudaSuccess ? ffi::Error::Success() : cuda_failure("bwd", F::kName, err);
}

auto fwd_binding() {
  return ffi_sig::bind_fwd(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>());
}

auto bwd_binding() {
  return ffi_sig::bind_bwd(
      ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>().Ctx<ffi::ScratchAllocator>());
}

// Adapts a family namespace to a type the templates above take, and defines its two handlers.
#define JAX_NA_CUDA_FAMILY(ns)                                                                 \
  struct ns##_ops {                                                                            \
    static constexpr const char* kName = #ns;                                                  \
    static cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t s) {               \
      return ::jax_na::ns::fwd(p, a, s);                                                       \
    }                                                                                          \
    static size_t workspace_bytes(const Problem& p) { return ::jax_na::ns::bwd_workspace_bytes(p); } \
    static cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t s) {               \
      return ::jax_na::ns::bwd(p, a, s);                                                       \
    }                                                                                          \
  };                                                                                           \
  XLA_FFI_DEFINE_HANDLER(kFwd_##ns, FwdCuda<ns##_ops>, fwd_binding());                         \
  XLA_FFI_DEFINE_HANDLER(kBwd_##ns, BwdCuda<ns##_ops>, bwd_binding());

#if JAX_NA_HAS_NAIVE
JAX_NA_CUDA_FAMILY(naive)
#endif
#if JAX_NA_HAS_GEMM
JAX_NA_CUDA_FAMILY(gemm)
#endif
#if JAX_NA_HAS_FUSED
JAX_NA_CUDA_FAMILY(fused)
#endif

#undef JAX_NA_CUDA_FAMILY

}  // namespace

HandlerTable cuda_handlers() {
  HandlerTable t;
#if JAX_NA_HAS_NAIVE
  t.push_back({"jax_na_fwd_cuda_naive", kFwd_naive});
  t.push_back({"jax_na_bwd_cuda_naive", kBwd_naive});
#endif
#if JAX_NA_HAS_GEMM
  t.push_back({"jax_na_fwd_cuda_gemm", kFwd_gemm});
  t.push_back({"jax_na_bwd_cuda_gemm", kBwd_gemm});
#endif
#if JAX_NA_HAS_FUSED
  t.push_back({"jax_na_fwd_cuda_fused", kFwd_fused});
  t.push_back({"jax_na_bwd_cuda_fused", kBwd_fused});
#endif
  return t;
}

}  // namespace jax_na
