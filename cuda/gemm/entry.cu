// Entry points of the GEMM family (families.h): dispatch on dtype and head_dim. Head dims other
// than 32, 64 and 128 are not supported (Python routes them to the naive family).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../common/dtype_dispatch.cuh"
#include "../common/families.h"
#include "launch.h"

namespace jax_na {
namespace gemm {
namespace {

template <typename T>
cudaError_t fwd_d(const Problem& p, const FwdArgs& a, cudaStream_t s) {
  switch (p.head_dim) {
    case 32: return launch_fwd<T, 32>(p, a, s);
    case 64: return launch_fwd<T, 64>(p, a, s);
    case 128: return launch_fwd<T, 128>(p, a, s);
    default: return cudaErrorNotSupported;
  }
}

template <typename T>
cudaError_t bwd_d(const Problem& p, const BwdArgs& a, cudaStream_t s) {
  switch (p.head_dim) {
    case 32: return launch_bwd<T, 32>(p, a, s);
    case 64: return launch_bwd<T, 64>(p, a, s);
    case 128: return launch_bwd<T, 128>(p, a, s);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace

cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream) {
  if (!a.nonfinite) return cudaErrorInvalidValue;
  return dispatch_dtype(p, [&](auto t) { return fwd_d<typename decltype(t)::type>(p, a, stream); });
}

size_t bwd_workspace_bytes(const Problem&) { return 0; }

cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream) {
  if (!a.nonfinite) return cudaErrorInvalidValue;
  return dispatch_dtype(p, [&](auto t) { return bwd_d<typename decltype(t)::type>(p, a, stream); });
}

}  // namespace gemm
}  // namespace jax_na
