// Fused forward, bf16: instantiations for head_dim 32, 64, 128.
#include "kernel_fwd.h"
#include "instantiate.h"

JAX_NA_FUSED_INSTANTIATE(launch_fwd, FwdConfig, fused_fwd_kernel, __nv_bfloat16, kQuery)
