// GEMM family: bwd instantiations for __half (head_dim 32, 64, 128).
#include "launch_bwd.cuh"

namespace jax_na {
namespace gemm {
JAX_NA_GEMM_INSTANTIATE(bwd, __half)
}  // namespace gemm
}  // namespace jax_na
