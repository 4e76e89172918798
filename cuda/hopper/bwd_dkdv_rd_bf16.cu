// Hopper backward dK/dV after the dQ kernel that forms delta (RD, row_delta.h), bf16: head_dim
// 32, 64, 128 and 256.
#include "kernel_bwd_dkdv.h"
#include "instantiate_bwd.h"

JAX_NA_HOPPER_INSTANTIATE_BWD(launch_bwd_dkdv_rd, BwdDkdvConfig, hopper_bwd_dkdv_rd_kernel, __nv_bfloat16, kKey, make_qdo_maps, true)
