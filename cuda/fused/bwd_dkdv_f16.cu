// Fused backward dK/dV, f16: instantiations for head_dim 32, 64, 128.
#include "kernel_bwd_dkdv.h"
#include "instantiate.h"

JAX_NA_FUSED_INSTANTIATE(launch_bwd_dkdv, DkdvConfig, fused_bwd_dkdv_kernel, __half, kKey)
