// Host launchers of the GEMM family, one instantiation per (dtype, head_dim); defined in
// launch_impl.cuh and instantiated in fwd_<dtype>.cu / bwd_<dtype>.cu (parallel compile).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../common/problem.h"

namespace jax_na {
namespace gemm {

template <typename T, int D>
cudaError_t launch_fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream);

template <typename T, int D>
cudaError_t launch_bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream);

#define JAX_NA_GEMM_INSTANTIATE(which, T)                                                     \
  template cudaError_t launch_##which<T, 32>(const Problem&, const which##_args_t&, cudaStream_t); \
  template cudaError_t launch_##which<T, 64>(const Problem&, const which##_args_t&, cudaStream_t); \
  template cudaError_t launch_##which<T, 128>(const Problem&, const which##_args_t&, cudaStream_t);

using fwd_args_t = FwdArgs;
using bwd_args_t = BwdArgs;

}  // namespace gemm
}  // namespace jax_na
