// Fused backward dK/dV, f16: instantiations for head_dim 32, 64, 128.
#include "kernel_bwd_dkdv.h"
#include "launch.h"

namespace jax_na {
namespace fused {
namespace {

template <int D>
cudaError_t run(KernelParams p, cudaStream_t stream) {
  using Cfg = DkdvConfig<__half, D>;
  p.ts = choose_key_stationary(p, Cfg::kLogRows, Cfg::kLogCols);
  set_mask_constants(p);
  set_grid(p, p.ts.klog);
  const int64_t ctas = p.batch * p.heads_kv * p.groups * p.tiles;
  return launch_ctas(fused_bwd_dkdv_kernel<__half, D>, p, ctas, Cfg::kThreads, Cfg::kSmem, stream);
}

}  // namespace

template <>
cudaError_t launch_bwd_dkdv<__half>(KernelParams p, int head_dim, cudaStream_t stream) {
  switch (head_dim) {
    case 32: return run<32>(p, stream);
    case 64: return run<64>(p, stream);
    case 128: return run<128>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace fused
}  // namespace jax_na
