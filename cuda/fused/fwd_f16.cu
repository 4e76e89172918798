// Fused forward, f16: instantiations for head_dim 32, 64, 128 (and the resident-box forward at
// 32 and 64).
#include "kernel_fwd.h"
#include "kernel_fwd_box.h"
#include "instantiate.h"

JAX_NA_FUSED_INSTANTIATE_BOX(launch_fwd, FwdConfig, fused_fwd_kernel, FwdBoxConfig,
                             fused_fwd_box_kernel, __half)
