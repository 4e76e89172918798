// CPU backward in two race-free passes, each exact and deterministic (every output row is
// written by one task and accumulated in a fixed order, whatever the thread count):
//   bwd_dq.cc   query-stationary, like the forward: dq = scale * sum_j dS_j k_j;
//   bwd_dkdv.cc key-stationary: each key visits the queries that see it (inverse window),
//               dv = sum_i P_i dout_i, dk = scale * sum_i dS_i q_i.
// P = exp(scale q.k - lse), dS = P (dout.v - delta); scores are recomputed in each pass.
#include "bwd_passes.h"
#include "cpu_na.h"

namespace jax_na {
namespace cpu {

void bwd(const Problem& p, const BwdArgs& a) {
  bwd_dq(p, a);
  bwd_dkdv(p, a);
}

}  // namespace cpu
}  // namespace jax_na
