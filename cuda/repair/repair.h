// The non-finite repair of the tiled CUDA families (gemm, fused, hopper).
//
// Why: a tiled kernel multiplies whole tiles, so a pair outside a query's window contributes
// 0 * x, and a NaN or Inf operand x then also reaches rows of its tile that do not see it
// (0 * NaN = NaN, 0 * Inf = NaN). Such a stray contribution can only make a value non-finite,
// never change a finite one, and a tile never drops a contribution the semantics ask for. So the
// entries a tile got wrong are among its non-finite ones.
//
// How: the caller zeroes a device word (arm), the tiled kernels raise it when they store a
// 16-byte chunk holding a NaN or an Inf (common/nonfinite.cuh), and one repair launch after them
// returns at once unless the word is raised; if it is, it recomputes every non-finite chunk of
// the results exactly (exact_rows.cuh). A chunk the semantics make non-finite comes out the same.
// Finite inputs cost a 12-byte memset and one early-exit launch, started ahead by programmatic
// dependent launch on sm_90 (common/pdl.cuh); everything stays on the stream, so the handlers
// remain command-buffer (CUDA graph) compatible. The persistent Hopper forward repairs its own
// stores instead (in_tile.cuh): no launch after it.
#pragma once

#include <cuda_runtime.h>

#include "../common/problem.h"

namespace jax_na {
namespace repair {

// A call's flag buffer: the non-finite flag, then FwdArgs::tile_counter (two words).
constexpr int kFlagWords = 3;

// Zero the call's flag buffer (kFlagWords words), before the tiled kernels run.
cudaError_t arm(unsigned* flag, cudaStream_t stream);

// After the forward (backward): if a.nonfinite is raised, recompute exactly every non-finite
// 16-byte chunk of out (dq, dk, dv). cudaErrorNotSupported if a row is not whole 16-byte chunks.
cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream);
cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream);

}  // namespace repair
}  // namespace jax_na
