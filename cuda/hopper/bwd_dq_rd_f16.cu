// Hopper backward dQ that forms delta (RD, row_delta.h), f16: head_dim 32, 64, 128 and 256.
#include "kernel_bwd_dq.h"
#include "instantiate_bwd.h"

JAX_NA_HOPPER_INSTANTIATE_BWD(launch_bwd_dq_rd, BwdDqConfig, hopper_bwd_dq_rd_kernel, __half, kQuery, make_kv_maps, false)
