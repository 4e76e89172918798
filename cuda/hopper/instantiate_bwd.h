// Shared body of bwd_{dq,dkdv}[_rd]_{f16,bf16}.cu: the backward launchers for head_dim 32 to
// 256. Each of those files includes its kernel header, then this one, and invokes
// JAX_NA_HOPPER_INSTANTIATE_BWD once.
#pragma once

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "../fused/instantiate.h"
#include "../fused/params.h"
#include "launch.h"
#include "tma.h"

namespace jax_na {
namespace hopper {

// Plan Cfg's tiles (stationary side S), then launch KERNEL<T, D, true> with the tensor maps of
// the loaded tiles where make_maps can express them as TMA boxes, else KERNEL<T, D, false>
// (cp.async gathers). kDependent: a programmatic dependent launch of the kernel before it. The
// second kernel of a backward is: the dQ kernel (query-stationary) after dK/dV, since it reads
// nothing dK/dV writes: its CTAs fill the SMs that dK/dV's last wave leaves, and it waits for
// dK/dV only before it exits; RD's dK/dV kernel after dQ, whose delta it waits for.
template <typename Cfg, fused::Stationary S, bool kDependent, typename Kernel, typename MakeMaps>
cudaError_t launch_bwd_tiles(Kernel kernel_tma, Kernel kernel_gather, fused::KernelParams p,
                             int head_dim, bool bf16, MakeMaps make_maps, cudaStream_t stream) {
  const int64_t ctas = fused::plan_grid<Cfg, S>(p);
  TmaMaps maps{};
  const Kernel kernel = make_maps(p, head_dim, bf16, maps) ? kernel_tma : kernel_gather;
  return fused::launch_ctas<kDependent>(kernel, p, ctas, Cfg::kThreads, Cfg::kSmem, stream, maps);
}

}  // namespace hopper
}  // namespace jax_na

// Define hopper::LAUNCH<T> (declared in launch.h) for head_dim 32 to 256: CONFIG<T, D> gives the
// tile configuration, KERNEL<T, D, kTma> the kernel, STATIONARY (kQuery or kKey) the stationary
// side, MAKE_MAPS the tensor maps of the tiles it loads, DEPENDENT (true or false) whether it is
// launched dependent on the kernel before it.
#define JAX_NA_HOPPER_INSTANTIATE_BWD(LAUNCH, CONFIG, KERNEL, T, STATIONARY, MAKE_MAPS,       \
                                      DEPENDENT)                                             \
  namespace jax_na {                                                                         \
  namespace hopper {                                                                         \
  template <>                                                                                \
  cudaError_t LAUNCH<T>(fused::KernelParams p, int head_dim, cudaStream_t stream) {          \
    constexpr bool bf16 = std::is_same<T, __nv_bfloat16>::value;                             \
    constexpr auto S = fused::Stationary::STATIONARY;                                        \
    return fused::dispatch_head_dim_among<32, 64, 128, 256>(head_dim, [&](auto d) {          \
      constexpr int D = decltype(d)::value;                                                  \
      return launch_bwd_tiles<CONFIG<T, D>, S, DEPENDENT>(KERNEL<T, D, true>,                 \
                                                          KERNEL<T, D, false>, p, D, bf16,   \
                                                          MAKE_MAPS, stream);                \
    });                                                                                      \
  }                                                                                          \
  }                                                                                          \
  }
