// Fused backward dQ, bf16: instantiations for head_dim 32, 64, 128.
#include "kernel_bwd_dq.h"
#include "instantiate.h"

JAX_NA_FUSED_INSTANTIATE(launch_bwd_dq, DqConfig, fused_bwd_dq_kernel, __nv_bfloat16, kQuery)
