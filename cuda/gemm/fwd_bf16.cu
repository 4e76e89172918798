// GEMM family: fwd instantiations for __nv_bfloat16 (head_dim 32, 64, 128).
#include "launch_fwd.cuh"

namespace jax_na {
namespace gemm {
JAX_NA_GEMM_INSTANTIATE(fwd, __nv_bfloat16)
}  // namespace gemm
}  // namespace jax_na
