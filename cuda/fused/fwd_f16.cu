// Fused forward, f16: instantiations for head_dim 32, 64, 128.
#include "kernel_fwd.h"
#include "launch.h"

namespace jax_na {
namespace fused {
namespace {

template <int D>
cudaError_t run(KernelParams p, cudaStream_t stream) {
  using Cfg = FwdConfig<__half, D>;
  p.ts = choose_query_stationary(p, Cfg::kLogRows, Cfg::kLogCols);
  set_mask_constants(p);
  set_grid(p, p.ts.qlog);
  const int64_t ctas = p.batch * p.heads * p.groups * p.tiles;
  return launch_ctas(fused_fwd_kernel<__half, D>, p, ctas, Cfg::kThreads, Cfg::kSmem, stream);
}

}  // namespace

template <>
cudaError_t launch_fwd<__half>(KernelParams p, int head_dim, cudaStream_t stream) {
  switch (head_dim) {
    case 32: return run<32>(p, stream);
    case 64: return run<64>(p, stream);
    case 128: return run<128>(p, stream);
    default: return cudaErrorNotSupported;
  }
}

}  // namespace fused
}  // namespace jax_na
