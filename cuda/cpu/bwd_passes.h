// The two passes of the CPU backward (see bwd.cc); internal to cuda/cpu.
#pragma once

#include "../common/problem.h"

namespace jax_na {
namespace cpu {

// dq only (query-stationary).
void bwd_dq(const Problem& p, const BwdArgs& a);
// dk and dv only (key-stationary).
void bwd_dkdv(const Problem& p, const BwdArgs& a);

}  // namespace cpu
}  // namespace jax_na
