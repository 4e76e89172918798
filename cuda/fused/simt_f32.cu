// Fused float32 (SIMT, exact fp32) forward and backward: instantiations for head_dim 32, 64, 128.
#include "kernel_simt_f32.h"
#include "instantiate.h"

namespace jax_na {
namespace fused {
namespace {

int64_t warp_grid(int64_t rows) {
  const int64_t ctas = (rows + 3) / 4;
  return ctas < 0x7fffffff ? ctas : 0x7fffffff;  // kernels loop over the rest
}

template <typename Kernel>
cudaError_t launch_rows(Kernel k, const KernelParams& p, int64_t rows, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  k<<<dim3(unsigned(warp_grid(rows))), dim3(128), 0, stream>>>(p);
  return cudaGetLastError();
}

template <int NC>
cudaError_t fwd_nc(const KernelParams& p, cudaStream_t stream) {
  return launch_rows(simt_f32_fwd_kernel<NC>, p, p.batch * p.tokens * p.heads, stream);
}

template <int NC>
cudaError_t bwd_nc(const KernelParams& p, cudaStream_t stream) {
  cudaError_t e = launch_rows(simt_f32_dkdv_kernel<NC>, p, p.batch * p.tokens * p.heads_kv, stream);
  if (e != cudaSuccess) return e;
  return launch_rows(simt_f32_dq_kernel<NC>, p, p.batch * p.tokens * p.heads, stream);
}

}  // namespace

cudaError_t launch_simt_f32_fwd(const KernelParams& p, int head_dim, cudaStream_t stream) {
  return dispatch_head_dim(
      head_dim, [&](auto d) { return fwd_nc<decltype(d)::value / 32>(p, stream); });
}

cudaError_t launch_simt_f32_bwd(const KernelParams& p, int head_dim, cudaStream_t stream) {
  return dispatch_head_dim(
      head_dim, [&](auto d) { return bwd_nc<decltype(d)::value / 32>(p, stream); });
}

}  // namespace fused
}  // namespace jax_na
