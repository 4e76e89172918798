// GEMM family: fwd instantiations for float (head_dim 32, 64, 128).
#include "launch_fwd.cuh"

namespace jax_na {
namespace gemm {
JAX_NA_GEMM_INSTANTIATE(fwd, float)
}  // namespace gemm
}  // namespace jax_na
