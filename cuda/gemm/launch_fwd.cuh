// Forward launcher of the GEMM family (instantiated in fwd_<dtype>.cu).
#pragma once

#include "fwd_kernel.cuh"
#include "launch_impl.cuh"

namespace jax_na {
namespace gemm {

template <typename T, int D>
cudaError_t launch_fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream) {
  const TileGrid tg = make_tile_grid(p, kRows);
  const unsigned blocks = grid_blocks(p, tg, p.heads);
  if (blocks == 0) return cudaErrorNotSupported;
  constexpr size_t smem = FwdLayout<T, D>::bytes;
  if (cudaError_t e = prepare_smem(fwd_kernel<T, D>, smem); e != cudaSuccess) return e;
  fwd_kernel<T, D><<<blocks, kThreads, smem, stream>>>(
      p, tg, static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
      static_cast<T*>(a.out), a.lse, a.nonfinite);
  return cudaGetLastError();
}

}  // namespace gemm
}  // namespace jax_na
