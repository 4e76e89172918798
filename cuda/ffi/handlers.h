// The FFI handlers this library exports, by target name. bindings.cc wraps them in capsules;
// jax_na/_native.py registers them. Target names: jax_na_{fwd,bwd}_<family>.
#pragma once

#include <utility>
#include <vector>

#include "xla/ffi/api/c_api.h"

namespace jax_na {

using HandlerTable = std::vector<std::pair<const char*, XLA_FFI_Handler*>>;

// jax_na_fwd_cpu, jax_na_bwd_cpu.
HandlerTable cpu_handlers();

// jax_na_{fwd,bwd}_cuda_{naive,gemm,fused} for the families compiled in (empty without CUDA).
HandlerTable cuda_handlers();

}  // namespace jax_na
