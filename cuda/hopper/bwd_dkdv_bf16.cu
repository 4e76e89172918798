// Hopper backward dK/dV, bf16: instantiations for head_dim 32, 64, 128 and 256.
#include "kernel_bwd_dkdv.h"
#include "instantiate_bwd.h"

JAX_NA_HOPPER_INSTANTIATE_BWD(launch_bwd_dkdv, BwdDkdvConfig, hopper_bwd_dkdv_kernel, __nv_bfloat16, kKey, make_qdo_maps, false)
