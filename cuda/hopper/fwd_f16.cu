// Hopper forward, f16: instantiations for head_dim 32, 64, 128 and 256.
#include "kernel_fwd.h"
#include "kernel_fwd_ws.h"
#include "instantiate.h"

JAX_NA_HOPPER_INSTANTIATE_FWD(__half)
