// Shared body of the per-(direction, dtype) launcher files fwd_*.cu, bwd_dq_*.cu, bwd_dkdv_*.cu
// and simt_f32.cu. Each of those .cu files stays separate so they compile in parallel; it
// includes its kernel header, then this one, and invokes JAX_NA_FUSED_INSTANTIATE once.
#pragma once

#include <cstdint>
#include <type_traits>

#include <cuda_runtime.h>

#include "launch.h"
#include "params.h"
#include "resident_box.h"
#include "tile_scheduler.h"

namespace jax_na {
namespace fused {

// Call f(std::integral_constant<int, D>{}) for head_dim == D, one of the head dims Ds that a
// family is built for; cudaErrorNotSupported otherwise.
template <int... Ds, typename F>
cudaError_t dispatch_head_dim_among(int head_dim, F&& f) {
  cudaError_t err = cudaErrorNotSupported;
  (void)(((head_dim == Ds) && ((err = f(std::integral_constant<int, Ds>{})), true)) || ...);
  return err;
}

// The fused family's head dims: 32, 64, 128.
template <typename F>
cudaError_t dispatch_head_dim(int head_dim, F&& f) {
  return dispatch_head_dim_among<32, 64, 128>(head_dim, f);
}

// Which side a tensor-core kernel keeps stationary: queries (forward, dQ; one CTA per query
// head) or keys (dK/dV; one CTA per key/value head).
enum class Stationary { kQuery, kKey };

// With p.ts chosen: set the mask constants and the grid over the stationary tiles; the number of
// CTAs (one per (batch, head, group, tile)). Longest first: along a causal dim, query tiles
// see more keys the later they are, so causal query-stationary grids run each head's tiles
// backwards (the lightest then fill the last wave); key tiles see fewer queries the later they
// are, so key-stationary grids already run longest first.
template <Stationary S>
int64_t grid_ctas(KernelParams& p) {
  set_mask_constants(p);
  set_grid(p, S == Stationary::kKey ? p.ts.klog : p.ts.qlog);
  const bool causal = p.causal[0] || p.causal[1] || p.causal[2];
  p.tile_flip = S == Stationary::kQuery && causal ? p.tiles - 1 : 0;
  const int heads = S == Stationary::kKey ? p.heads_kv : p.heads;
  return p.batch * heads * p.groups * p.tiles;
}

// Choose tile shapes for Cfg (kLogRows, kLogCols), set the grid and mask constants; the number
// of CTAs.
template <typename Cfg, Stationary S>
int64_t plan_grid(KernelParams& p) {
  p.ts = S == Stationary::kKey ? choose_key_stationary(p, Cfg::kLogRows, Cfg::kLogCols)
                               : choose_query_stationary(p, Cfg::kLogRows, Cfg::kLogCols);
  return grid_ctas<S>(p);
}

// plan_grid, then launch its CTAs of Cfg::kThreads threads / Cfg::kSmem bytes.
template <typename Cfg, Stationary S, typename Kernel>
cudaError_t launch_tiles(Kernel kernel, KernelParams p, cudaStream_t stream) {
  const int64_t ctas = plan_grid<Cfg, S>(p);
  return launch_ctas(kernel, p, ctas, Cfg::kThreads, Cfg::kSmem, stream);
}

// The resident-box kernel (BoxCfg, box_kernel; query-stationary) where plan_resident_box takes
// the problem, else the tiled one (launch_tiles).
template <typename Cfg, typename BoxCfg, typename Kernel, typename BoxKernel>
cudaError_t launch_box_or_tiles(Kernel kernel, BoxKernel box_kernel, KernelParams p,
                                cudaStream_t stream) {
  int rows = 0;
  if (!plan_resident_box(p, BoxCfg::kSmem, rows))
    return launch_tiles<Cfg, Stationary::kQuery>(kernel, p, stream);
  const int64_t ctas = grid_ctas<Stationary::kQuery>(p);
  return launch_ctas(box_kernel, p, ctas, BoxCfg::kThreads, BoxCfg::kSmem.bytes(rows), stream);
}

}  // namespace fused
}  // namespace jax_na

// Define LAUNCH<T> (declared in launch.h) for head_dim 32, 64, 128; the lambda body (...) sees D.
#define JAX_NA_FUSED_DEFINE_LAUNCH(LAUNCH, T, ...)                                     \
  namespace jax_na {                                                                  \
  namespace fused {                                                                   \
  template <>                                                                         \
  cudaError_t LAUNCH<T>(KernelParams p, int head_dim, cudaStream_t stream) {          \
    return dispatch_head_dim(head_dim, [&](auto d) {                                  \
      constexpr int D = decltype(d)::value;                                           \
      __VA_ARGS__                                                                     \
    });                                                                               \
  }                                                                                   \
  }                                                                                   \
  }

// CONFIG<T, D> gives the tile configuration, KERNEL<T, D> the kernel, STATIONARY (kQuery or
// kKey) the stationary side.
#define JAX_NA_FUSED_INSTANTIATE(LAUNCH, CONFIG, KERNEL, T, STATIONARY) \
  JAX_NA_FUSED_DEFINE_LAUNCH(LAUNCH, T,                                 \
      return launch_tiles<CONFIG<T, D>, Stationary::STATIONARY>(KERNEL<T, D>, p, stream);)

// ... and BOX_CONFIG / BOX_KERNEL the resident-box kernel, tried first at head_dim 32 and 64.
#define JAX_NA_FUSED_INSTANTIATE_BOX(LAUNCH, CONFIG, KERNEL, BOX_CONFIG, BOX_KERNEL, T)      \
  JAX_NA_FUSED_DEFINE_LAUNCH(LAUNCH, T, if constexpr (D <= 64) {                            \
    return launch_box_or_tiles<CONFIG<T, D>, BOX_CONFIG<T, D>>(KERNEL<T, D>, BOX_KERNEL<T, D>, \
                                                               p, stream);                  \
  } else {                                                                                  \
    return launch_tiles<CONFIG<T, D>, Stationary::kQuery>(KERNEL<T, D>, p, stream);          \
  })
