// CPU neighborhood attention (fused, float32 accumulation, multithreaded with std::thread).
// Inputs are a validated Problem (see cuda/ffi/decode.h) and the pointers of one call.
// Both may throw std::bad_alloc / std::system_error; the FFI handler turns that into an error.
#pragma once

#include "../common/problem.h"

namespace jax_na {
namespace cpu {

// out, lse from q, k, v.
void fwd(const Problem& p, const FwdArgs& a);

// dq, dk, dv from q, k, v, dout, lse, delta (workspace unused). Deterministic.
void bwd(const Problem& p, const BwdArgs& a);

}  // namespace cpu
}  // namespace jax_na
