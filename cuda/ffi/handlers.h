// The FFI handlers this library exports, by target name. bindings.cc wraps them in capsules;
// jax_na/_native.py registers them. Target names: jax_na_{fwd,bwd}_<family>.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "xla/ffi/api/c_api.h"

namespace jax_na {

using HandlerTable = std::vector<std::pair<const char*, XLA_FFI_Handler*>>;

// jax_na_fwd_cpu, jax_na_bwd_cpu.
HandlerTable cpu_handlers();

// jax_na_{fwd,bwd}_cuda_{naive,gemm,fused,hopper} for the families compiled in, and with hopper
// jax_na_bwd_cuda_hopper_rd (its backward that forms delta itself); empty without CUDA.
HandlerTable cuda_handlers();

// (calls, captured): CUDA handler calls that got past decoding since the module loaded, and how
// many of them ran while XLA was capturing the stream into a command buffer (CUDA graph); a
// replayed command buffer does not call the handler. For tests. Only built with CUDA.
std::pair<int64_t, int64_t> cuda_call_counts();

}  // namespace jax_na
