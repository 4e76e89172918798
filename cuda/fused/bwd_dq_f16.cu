// Fused backward dQ, f16: instantiations for head_dim 32, 64, 128 (and the resident-box dQ at
// 32 and 64).
#include "kernel_bwd_dq.h"
#include "kernel_bwd_dq_box.h"
#include "instantiate.h"

JAX_NA_FUSED_INSTANTIATE_BOX(launch_bwd_dq, DqConfig, fused_bwd_dq_kernel, DqBoxConfig,
                             fused_bwd_dq_box_kernel, __half)
