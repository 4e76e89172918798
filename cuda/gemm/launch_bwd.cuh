// Backward launcher of the GEMM family (instantiated in bwd_<dtype>.cu): the query-stationary
// dQ kernel, then the key-stationary dK/dV kernel, on the same stream. No workspace.
#pragma once

#include "dkdv_kernel.cuh"
#include "dq_kernel.cuh"
#include "launch_impl.cuh"

namespace jax_na {
namespace gemm {

template <typename T, int D>
cudaError_t launch_bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream) {
  const TileGrid tg = make_tile_grid(p, kRows);
  const unsigned blocks_q = grid_blocks(p, tg, p.heads);
  const unsigned blocks_kv = grid_blocks(p, tg, p.heads_kv);
  if (blocks_q == 0 || blocks_kv == 0) return cudaErrorNotSupported;
  constexpr size_t smem_q = DqLayout<T, D>::bytes, smem_kv = DkvLayout<T, D>::bytes;
  if (cudaError_t e = prepare_smem(dq_kernel<T, D>, smem_q); e != cudaSuccess) return e;
  if (cudaError_t e = prepare_smem(dkdv_kernel<T, D>, smem_kv); e != cudaSuccess) return e;

  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* dout = static_cast<const T*>(a.dout);
  dq_kernel<T, D><<<blocks_q, kThreads, smem_q, stream>>>(p, tg, q, k, v, dout, a.lse, a.delta,
                                                          static_cast<T*>(a.dq), a.nonfinite);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  dkdv_kernel<T, D><<<blocks_kv, kThreads, smem_kv, stream>>>(
      p, tg, q, k, v, dout, a.lse, a.delta, static_cast<T*>(a.dk), static_cast<T*>(a.dv),
      a.nonfinite);
  return cudaGetLastError();
}

}  // namespace gemm
}  // namespace jax_na
