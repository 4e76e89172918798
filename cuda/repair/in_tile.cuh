// The non-finite repair inside a kernel (repair.h says why a tiled kernel needs one): after a
// thread's store_rows reported a NaN or an Inf, the same thread recomputes exactly each of its
// stored chunks of out that is not finite. The persistent Hopper forward does this per tile, so
// its calls need no repair launch after them (on A1 that launch cost ~4 us of a ~75 us call).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/nonfinite.cuh"
#include "../common/problem.h"
#include "../fused/smem_tile.h"
#include "exact_rows.cuh"

namespace jax_na {
namespace repair {

// out: the forward's result rows ([batch, tokens, heads] of head_dim T); row_offset, tid: as
// given to the store_rows that stored the tile. A cold path: each chunk costs a pass over its
// row's window.
template <typename T, int ROWS, int D, int NTHREADS, typename RowOffset>
__device__ __forceinline__ void stored_out_chunks(const Problem& pr, const void* q, const void* k,
                                                  const void* v, char* out, RowOffset row_offset,
                                                  int tid) {
  BwdArgs in{};  // the forward's formula reads q, k and v only
  in.q = q, in.k = k, in.v = v;
  fused::for_thread_chunks<ROWS, D, NTHREADS, false>(row_offset, tid, [&](int, int c, int64_t off) {
    uint4* at = reinterpret_cast<uint4*>(out + off + c * 16);
    if (nonfinite16<T>(*at))  // this thread's own store: visible to it
      store_exact_chunk<T>(pr, in, Quantity::kOut, off / (int64_t(D) * sizeof(T)),
                           c * int(16 / sizeof(T)), at);
  });
}

}  // namespace repair
}  // namespace jax_na
