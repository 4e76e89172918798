// XLA FFI handlers of the CUDA families: decode + validate (signatures.h, shared with the CPU
// handlers), then launch the family's fwd/bwd on XLA's stream. One template per direction,
// instantiated per family; a family is compiled in only if its sources exist
// (JAX_NA_HAS_<FAMILY>, set by CMake), so cuda_handlers() lists exactly what can run.
//
// Errors: every failure returns an ffi::Error (never aborts) whose message starts with the
// target name (e.g. "jax_na_fwd_cuda_fused: ") and says why: the decoder's rule, "does not
// support this problem (...)", "unsupported GPU", the CUDA error of a failed launch, or a
// failed scratch allocation.
//
// Non-finite inputs: every CUDA handler has one more result than the CPU ones, a uint32[3] flag
// buffer that Python's lowering adds and drops (jax_na/primitives.py). The tiled families use
// its first word to repair what tiles do to NaN/Inf operands (cuda/repair/repair.h): arm, run,
// repair; the other two are the forward's tile counter (FwdArgs::tile_counter: the Hopper
// forward's persistent CTAs). The pairwise naive family is exact as it is and leaves the buffer
// unused; the Hopper forward repairs its own results and zeroes only what it uses (a 1-D
// forward uses none of it: no memset comes between it and the kernel before it).
//
// The Hopper family has a second backward handler, jax_na_bwd_cuda_hopper_rd (RD: its dQ kernel
// forms delta, cuda/hopper/row_delta.h), which takes out and dlse in place of delta and has one
// more result before the flag: the float32 delta (lse's shape) that its dQ kernel writes for its
// dK/dV kernel, also added and dropped by the lowering, which picks this handler where
// cuda/hopper/rd_rule.h says it pays.
//
// Traits: the handlers are command-buffer (CUDA graph) compatible: they only launch kernels and
// memsets on XLA's stream, never synchronise or query it, and allocate nothing (every family's
// bwd_workspace_bytes() is 0). A family whose backward needs scratch must be defined with
// JAX_NA_CUDA_FAMILY_BWD_SCRATCH (bwd not compatible): scratch from the FFI allocator is freed
// when the handler returns, so a CUDA graph replay would use memory it no longer owns. As a
// guard, a backward that needs scratch while the stream is being captured returns an error.
//
// Tests only: JAX_NA_TEST_BWD_WORKSPACE_BYTES=N (read once) makes every backward ask for N
// bytes of scratch, to exercise the allocation-failure path; cuda_call_counts() says how many
// handler calls ran under stream capture, to check that command buffers are used.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <string>
#include <utility>

#include "../common/families.h"
#include "../repair/repair.h"
#include "handlers.h"
#include "signatures.h"

namespace jax_na {
namespace {

namespace ffi = ::xla::ffi;
using ffi_decode::Span64;

std::atomic<int64_t> g_calls{0}, g_captured_calls{0};

// True while XLA records this stream into a command buffer (CUDA graph).
bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &st) != cudaSuccess) {
    (void)cudaGetLastError();  // not ours to report; must not look like a launch failure later
    return false;
  }
  return st == cudaStreamCaptureStatusActive;
}

bool count_call(cudaStream_t stream) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  const bool cap = capturing(stream);
  if (cap) g_captured_calls.fetch_add(1, std::memory_order_relaxed);
  return cap;
}

size_t test_workspace_bytes() {
  static const size_t bytes = [] {
    const char* s = std::getenv("JAX_NA_TEST_BWD_WORKSPACE_BYTES");
    return s ? size_t(std::strtoull(s, nullptr, 10)) : size_t(0);
  }();
  return bytes;
}

const char* dtype_str(DType t) {
  return t == DType::kF32 ? "float32" : (t == DType::kF16 ? "float16" : "bfloat16");
}

std::string problem_str(const Problem& p) {
  std::string spatial, kernel;
  for (int i = 3 - p.rank; i < 3; ++i) {
    const char* sep = i > 3 - p.rank ? ", " : "";
    spatial += sep + std::to_string(p.dim[i].extent);
    kernel += sep + std::to_string(p.dim[i].kernel);
  }
  return std::string(dtype_str(p.dtype)) + ", head_dim " + std::to_string(p.head_dim) +
         ", batch " + std::to_string(p.batch) + ", spatial [" + spatial + "], kernel [" + kernel +
         "], heads " + std::to_string(p.heads) + "/" + std::to_string(p.heads_kv) + " (q/kv)";
}

// The error of a family's fwd/bwd, named and explained.
ffi::Error cuda_failure(const std::string& target, const char* family, const Problem& p,
                        cudaError_t err) {
  const std::string cuda = std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ")";
  if (err == cudaErrorNotSupported)
    return ffi::Error(ffi::ErrorCode::kUnimplemented,
                      target + ": cuda-" + family + " does not support this problem (" +
                          problem_str(p) + "): " + cuda);
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction ||
      err == cudaErrorUnsupportedPtxVersion || err == cudaErrorInsufficientDriver) {
    int dev = -1, major = 0, minor = 0;
    (void)cudaGetDevice(&dev);
    (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    (void)cudaGetLastError();
    return ffi::Error(ffi::ErrorCode::kFailedPrecondition,
                      target + ": unsupported GPU: cuda-" + family + " has no kernels for device " +
                          std::to_string(dev) + " (sm_" + std::to_string(major) +
                          std::to_string(minor) + "; this build targets sm_80 and sm_90a): " + cuda);
  }
  return ffi::Error::Internal(target + ": CUDA error from cuda-" + family + " (" + problem_str(p) +
                              "): " + cuda);
}

using Flag = ffi::Result<ffi::Buffer<ffi::U32>>;

ffi::Error check_flag(const char* target, Flag& flag) {
  if (flag->element_count() >= repair::kFlagWords) return ffi::Error::Success();
  return ffi::Error::InvalidArgument(
      std::string(target) + ": the flag result must hold " + std::to_string(repair::kFlagWords) +
      " uint32 (the non-finite flag, the tile counter)");
}

// Arm the flag, run the family, repair (families that compute each pair alone skip all three;
// a run that leaves its results exact itself, `exact`, arms what it uses itself and needs no
// repair launch).
template <class F, class Args, class Run, class Fix>
cudaError_t run_repaired(const Problem& p, Args& a, unsigned* flag, cudaStream_t stream,
                         bool exact, const Run& run, const Fix& fix) {
  if (F::kPairwise) return run(p, a, stream);
  a.nonfinite = flag;
  if (exact) return run(p, a, stream);
  if (cudaError_t e = repair::arm(flag, stream); e != cudaSuccess) return e;
  if (cudaError_t e = run(p, a, stream); e != cudaSuccess) return e;
  return fix(p, a, stream);
}

template <class Fn>
ffi::Error guarded(const char* target, const Fn& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string(target) + ": " + e.what());
  } catch (...) {
    return ffi::Error::Internal(std::string(target) + ": unknown C++ exception");
  }
}

template <class F>
ffi::Error FwdCuda(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse, Flag flag,
                   Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  const char* target = F::kFwdTarget;
  return guarded(target, [&]() -> ffi::Error {
    Problem p;
    FwdArgs a;
    if (auto e = ffi_sig::decode_fwd(q, k, v, out, lse, kernel_size, stride, dilation, is_causal,
                                     scale, &p, &a);
        e.failure())
      return ffi_decode::with_target(target, e);
    if (auto e = check_flag(target, flag); e.failure()) return e;
    count_call(stream);
    a.tile_counter = flag->typed_data() + 1;
    const cudaError_t err =
        run_repaired<F>(p, a, flag->typed_data(), stream, F::kExactFwd, F::fwd, repair::fwd);
    return err == cudaSuccess ? ffi::Error::Success() : cuda_failure(target, F::kName, p, err);
  });
}

// A backward call once decoded (both signatures): check the flag, get the scratch, run(p, a,
// stream) between the arm and the repair.
template <class F, class Run>
ffi::Error run_bwd(const char* target, cudaStream_t stream, ffi::ScratchAllocator& scratch,
                   const Problem& p, BwdArgs& a, Flag& flag, const Run& run) {
  if (auto e = check_flag(target, flag); e.failure()) return e;
  const bool captured = count_call(stream);
  size_t bytes = F::workspace_bytes(p);
  if (const size_t forced = test_workspace_bytes(); forced > 0) bytes = forced;
  if (bytes > 0) {
    if (captured)
      return ffi::Error(ffi::ErrorCode::kFailedPrecondition,
                        std::string(target) + ": needs " + std::to_string(bytes) +
                            " bytes of scratch, which cannot be allocated while XLA records a "
                            "command buffer (CUDA graph); turn command buffers off for custom "
                            "calls: XLA_FLAGS=--xla_gpu_enable_command_buffer=-CUSTOM_CALL");
    const auto mem = scratch.Allocate(bytes, 256);
    if (!mem.has_value())
      return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                        std::string(target) + ": scratch allocation failed: could not allocate " +
                            std::to_string(bytes) + " bytes of workspace for cuda-" + F::kName);
    a.workspace = *mem;
  }
  const cudaError_t err = run_repaired<F>(p, a, flag->typed_data(), stream, false, run, repair::bwd);
  return err == cudaSuccess ? ffi::Error::Success() : cuda_failure(target, F::kName, p, err);
}

template <class F>
ffi::Error BwdCuda(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q,
                   ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer dout, ffi::AnyBuffer lse,
                   ffi::AnyBuffer delta, ffi::Result<ffi::AnyBuffer> dq,
                   ffi::Result<ffi::AnyBuffer> dk, ffi::Result<ffi::AnyBuffer> dv, Flag flag,
                   Span64 kernel_size, Span64 stride, Span64 dilation, Span64 is_causal, float scale) {
  const char* target = F::kBwdTarget;
  return guarded(target, [&]() -> ffi::Error {
    Problem p;
    BwdArgs a;
    if (auto e = ffi_sig::decode_bwd(q, k, v, dout, lse, delta, dq, dk, dv, kernel_size, stride,
                                     dilation, is_causal, scale, &p, &a);
        e.failure())
      return ffi_decode::with_target(target, e);
    return run_bwd<F>(target, stream, scratch, p, a, flag, F::bwd);
  });
}

auto fwd_binding() {
  return ffi_sig::with_attrs(
      ffi_sig::fwd_buffers(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>())
          .Ret<ffi::Buffer<ffi::U32>>());
}

auto bwd_binding() {
  return ffi_sig::with_attrs(
      ffi_sig::bwd_buffers(
          ffi::Ffi::Bind().Ctx<ffi::PlatformStream<cudaStream_t>>().Ctx<ffi::ScratchAllocator>())
          .Ret<ffi::Buffer<ffi::U32>>());
}

using TraitList = std::initializer_list<ffi::Traits>;

// Adapts a family namespace to a type the templates above take, and defines its two handlers;
// bwd_cmd_buffer: whether the bwd handler is declared command-buffer compatible (see the top);
// pairwise: the family computes each (query, key) pair alone, so needs no non-finite repair;
// exact_fwd: the family's fwd repairs what its tiles did itself and zeroes the flag words it uses
// (no arm before it, no repair launch after it).
#define JAX_NA_CUDA_FAMILY(ns) JAX_NA_CUDA_FAMILY_IMPL(ns, true, false, false)
#define JAX_NA_CUDA_PAIRWISE_FAMILY(ns) JAX_NA_CUDA_FAMILY_IMPL(ns, true, true, false)
#define JAX_NA_CUDA_FAMILY_EXACT_FWD(ns) JAX_NA_CUDA_FAMILY_IMPL(ns, true, false, true)
#define JAX_NA_CUDA_FAMILY_BWD_SCRATCH(ns) JAX_NA_CUDA_FAMILY_IMPL(ns, false, false, false)
#define JAX_NA_CUDA_FAMILY_IMPL(ns, bwd_cmd_buffer, pairwise, exact_fwd)                       \
  struct ns##_ops {                                                                            \
    static constexpr const char* kName = #ns;                                                  \
    static constexpr bool kPairwise = pairwise;                                                \
    static constexpr bool kExactFwd = exact_fwd;                                               \
    static constexpr const char* kFwdTarget = "jax_na_fwd_cuda_" #ns;                          \
    static constexpr const char* kBwdTarget = "jax_na_bwd_cuda_" #ns;                          \
    static cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t s) {               \
      return ::jax_na::ns::fwd(p, a, s);                                                       \
    }                                                                                          \
    static size_t workspace_bytes(const Problem& p) { return ::jax_na::ns::bwd_workspace_bytes(p); } \
    static cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t s) {               \
      return ::jax_na::ns::bwd(p, a, s);                                                       \
    }                                                                                          \
  };                                                                                           \
  XLA_FFI_DEFINE_HANDLER(kFwd_##ns, FwdCuda<ns##_ops>, fwd_binding(),                          \
                         TraitList{ffi::Traits::kCmdBufferCompatible});                        \
  XLA_FFI_DEFINE_HANDLER(kBwd_##ns, BwdCuda<ns##_ops>, bwd_binding(),                          \
                         (bwd_cmd_buffer) ? TraitList{ffi::Traits::kCmdBufferCompatible}       \
                                          : TraitList{});

#if JAX_NA_HAS_NAIVE
JAX_NA_CUDA_PAIRWISE_FAMILY(naive)
#endif
#if JAX_NA_HAS_GEMM
JAX_NA_CUDA_FAMILY(gemm)
#endif
#if JAX_NA_HAS_FUSED
JAX_NA_CUDA_FAMILY(fused)
#endif
#if JAX_NA_HAS_HOPPER
JAX_NA_CUDA_FAMILY_EXACT_FWD(hopper)

constexpr const char* kBwdHopperRdTarget = "jax_na_bwd_cuda_hopper_rd";

// RD (see the top): out and dlse in place of delta; `delta` the dQ kernel's, for dK/dV.
ffi::Error BwdCudaHopperRd(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer q,
                           ffi::AnyBuffer k, ffi::AnyBuffer v, ffi::AnyBuffer dout,
                           ffi::AnyBuffer lse, ffi::AnyBuffer out, ffi::AnyBuffer dlse,
                           ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                           ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> delta,
                           Flag flag, Span64 kernel_size, Span64 stride, Span64 dilation,
                           Span64 is_causal, float scale) {
  const char* target = kBwdHopperRdTarget;
  return guarded(target, [&]() -> ffi::Error {
    Problem p;
    BwdArgs a;
    DeltaArgs d;
    if (auto e = ffi_sig::decode_bwd_rd(q, k, v, dout, lse, out, dlse, dq, dk, dv, delta,
                                        kernel_size, stride, dilation, is_causal, scale, &p, &a,
                                        &d);
        e.failure())
      return ffi_decode::with_target(target, e);
    return run_bwd<hopper_ops>(target, stream, scratch, p, a, flag,
                               [&](const Problem& pr, const BwdArgs& ba, cudaStream_t s) {
                                 return hopper::bwd_rd(pr, ba, d, s);
                               });
  });
}

XLA_FFI_DEFINE_HANDLER(kBwd_hopper_rd, BwdCudaHopperRd,
                       ffi_sig::with_attrs(
                           ffi_sig::bwd_rd_buffers(ffi::Ffi::Bind()
                                                       .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                                       .Ctx<ffi::ScratchAllocator>())
                               .Ret<ffi::AnyBuffer>()
                               .Ret<ffi::Buffer<ffi::U32>>()),
                       TraitList{ffi::Traits::kCmdBufferCompatible});
#endif

#undef JAX_NA_CUDA_FAMILY
#undef JAX_NA_CUDA_PAIRWISE_FAMILY
#undef JAX_NA_CUDA_FAMILY_EXACT_FWD
#undef JAX_NA_CUDA_FAMILY_BWD_SCRATCH
#undef JAX_NA_CUDA_FAMILY_IMPL

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
#if JAX_NA_HAS_HOPPER
  t.push_back({"jax_na_fwd_cuda_hopper", kFwd_hopper});
  t.push_back({"jax_na_bwd_cuda_hopper", kBwd_hopper});
  t.push_back({kBwdHopperRdTarget, kBwd_hopper_rd});
#endif
  return t;
}

std::pair<int64_t, int64_t> cuda_call_counts() {
  return {g_calls.load(std::memory_order_relaxed), g_captured_calls.load(std::memory_order_relaxed)};
}

}  // namespace jax_na
