// Shared body of fwd_{f16,bf16}.cu: the forward launcher for head_dim 32, 64, 128 and 256. Each of
// those files includes kernel_fwd.h, then this one, and invokes JAX_NA_HOPPER_INSTANTIATE_FWD
// once.
#pragma once

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "../common/pdl.cuh"
#include "../common/problem.h"
#include "../fused/instantiate.h"
#include "../fused/launch.h"
#include "../fused/params.h"
#include "../fused/tile_scheduler.h"
#include "../repair/repair.h"
#include "launch.h"
#include "tma.h"

namespace jax_na {
namespace hopper {

// The warp-specialised kernel's tiles: the best 64-query tile for one warpgroup (its work),
// doubled along the dim that adds the fewest key tiles (fused::choose_query_stationary_doubled);
// the warpgroups split the outermost dim of extent > 1 (SplitWalk; shared loads). In the order
// whose first wave (one CTA per SM) shares the most keys. never_cut: no tile is ever cut.
inline int64_t plan_ws_tiles(fused::KernelParams& p, int log_cols, int sms, bool& never_cut) {
  const fused::DoubledTiles d = fused::choose_query_stationary_doubled(p, 6, log_cols);
  p.ts = d.ts;
  never_cut = d.never_cut;
  const int64_t ctas = fused::grid_ctas<fused::Stationary::kQuery>(p);
  fused::order_tiles_for_l2(p, sms);
  return ctas;
}

// Launch a persistent kernel: one CTA per SM (or per tile, if fewer), which take the tiles from
// p.tile_counter (zeroed here first), or round robin (p.tile_counter null); its last argument
// is the number of tiles, below 2^31. A programmatic dependent launch (the kernel waits for the
// one before it before touching global memory).
template <typename Kernel>
cudaError_t launch_persistent(Kernel kernel, const fused::KernelParams& p, int64_t ctas,
                              int sms, int threads, int smem, cudaStream_t stream,
                              const TmaMaps& maps, const Problem& pr) {
  if (ctas <= 0) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e == cudaSuccess && p.tile_counter)
    e = cudaMemsetAsync(p.tile_counter, 0, 2 * sizeof(unsigned), stream);
  if (e != cudaSuccess) return e;
  const int64_t grid = sms < ctas ? sms : ctas;
  return launch_maybe_dependent(kernel, dim3(unsigned(grid)), dim3(threads), size_t(smem), stream,
                                true, p, maps, uint32_t(ctas), pr);
}

// Whether the warp-specialised kernel takes 128-key tiles (else 64): for 1-D problems (h5); for
// 2-D/3-D ones where they compute no more keys than 64-key tiles (strided windows that fill
// them: A2s, A3s -12%) or, in 2-D with windows at least 4 wide tiles across (mostly interior
// tiles), where they cost less counting a tile as its keys plus ~18 keys of fixed work (A2 -5%).
// Not otherwise: masked tiles dominate small windows (2-D k7/k13 +8..18%, K31 +3%), and a 3-D
// wide tile that no query sees whole is masked everywhere (A3 +4.5%). NOTES.md h8.
inline bool wide_kv_tiles(const fused::KernelParams& p) {
  if (fused::one_dim(p)) return true;
  constexpr double kTileKeys = 18.0;  // a tile's fixed work, in keys (fit over K31, A2, A2s, A3s)
  const fused::TileShape narrow = fused::choose_query_stationary(p, 6, 6);
  const fused::TileShape wide = fused::choose_query_stationary(p, 6, 7);
  const double n64 = fused::query_stationary_iterations(p, narrow);
  const double n128 = fused::query_stationary_iterations(p, wide);
  if (n128 * 128 <= 1.01 * n64 * 64) return true;  // no more keys
  bool large = p.L[0] == 1;  // 2-D
  for (int i = 1; i < 3; ++i) large = large && p.ker[i] >= (4 << wide.klog[i]);
  return large && n128 * (128 + kTileKeys) < 0.96 * n64 * (64 + kTileKeys);
}

// Launch the warp-specialised kernel with BN-key tiles if its tiles are TMA boxes (the launch's
// status in err); false, with nothing launched, otherwise.
template <typename T, int D, int BN>
bool try_launch_ws(const Problem& pr, fused::KernelParams p, int sms, cudaStream_t stream,
                   cudaError_t& err) {
  using Ws = WsConfig<T, D, BN>;
  bool never_cut = false;
  const int64_t ctas = plan_ws_tiles(p, Ws::kLogCols, sms, never_cut);
  if (ctas > 0x7fffffff) return false;  // the kernel's tile ids are 32-bit
  // Q comes in boxes of one warpgroup's half (SplitWalk splits the outermost dim of extent > 1).
  int half[3] = {p.ts.qlog[0], p.ts.qlog[1], p.ts.qlog[2]};
  --half[split_dim(half)];
  constexpr bool bf16 = std::is_same<T, __nv_bfloat16>::value;
  TmaMaps maps{};
  if (!make_kv_maps(p, D, bf16, maps) || !make_q_map(p, half, D, bf16, maps)) return false;
  // Non-causal 1-D query tiles (which take 128-key tiles: wide_kv_tiles) all cost the same, so
  // the CTAs take them round robin: no tile counter, hence no memset between this launch and the
  // kernel before it (h10, NOTES.md: A1s -3%). Multi-dimensional or causal tiles differ in cost
  // and go to whichever CTA frees first (h6; causal 1-D round robin: A1c +4%).
  // Where no tile is ever cut (blocked and tile-aligned strided problems, which take 128-key
  // tiles), a kernel without mask code.
  auto launch = [&](auto kernel, int smem = Ws::kSmem) {
    err = launch_persistent(kernel, p, ctas, sms, Ws::kThreads, smem, stream, maps, pr);
    return true;
  };
  if constexpr (BN == 128) {
    if (fused::one_dim(p) && !pr.any_causal()) {
      p.tile_counter = nullptr;
      return never_cut ? launch(hopper_fwd_ws_kernel<T, D, BN, true, false>)
                       : launch(hopper_fwd_ws_kernel<T, D, BN, true>);
    }
    if (never_cut) return launch(hopper_fwd_ws_kernel<T, D, BN, false, false>);
    // Masks by the tensor core (A2 -6% sustained: NOTES.md, session 21): bf16 (-2^126 is a
    // bf16 A operand; float16 has nothing near it), head_dim 128, 2-D (dim 0 never cut), key
    // tiles at most 16 along each dim (the BiasTile's slots), and a scale that takes a masked
    // score below -2^66 in log2 units, where its exponential is 0 beside any key the row sees.
    if constexpr (bf16 && D == 128) {
      if (p.L[0] == 1 && p.ts.klog[0] == 0 && p.ts.klog[1] <= 4 && p.ts.klog[2] <= 4 &&
          p.scale_log2 >= 0x1p-60f)
        return launch(hopper_fwd_ws_kernel<T, D, BN, false, true, true>,
                      WsConfig<T, D, BN, true>::kSmem);
    }
  }
  return launch(hopper_fwd_ws_kernel<T, D, BN, false>);
}

// The warp-specialised TMA kernel where its tiles are TMA boxes (128-key tiles where
// wide_kv_tiles says they pay: half the per-tile overhead; it repairs non-finite chunks
// itself), else the single-warpgroup cp.async kernel between the flag's arm and the repair
// launch (the handler arms nothing for this family: cuda_handlers.cu).
template <typename T, int D>
cudaError_t launch_fwd_impl(const Problem& pr, const FwdArgs& a, fused::KernelParams p, int sms,
                            cudaStream_t stream) {
  cudaError_t err = cudaSuccess;
  // At head_dim 32, where a tile's softmax is the work, the cp.async kernel's four CTAs per SM
  // beat the warp-specialised kernel's two consumer warpgroups everywhere measured (NOTES.md).
  if constexpr (D > 32) {
    if constexpr (D <= 128) {  // 128-key tiles leave too few registers at head_dim 256
      if (wide_kv_tiles(p) && try_launch_ws<T, D, 128>(pr, p, sms, stream, err)) return err;
    }
    if (try_launch_ws<T, D, 64>(pr, p, sms, stream, err)) return err;
  }
  using Cfg = FwdConfig<T, D>;
  const int64_t ctas = fused::plan_grid<Cfg, fused::Stationary::kQuery>(p);
  if ((err = repair::arm(a.nonfinite, stream)) != cudaSuccess) return err;
  err = fused::launch_ctas(hopper_fwd_kernel<T, D>, p, ctas, Cfg::kThreads, Cfg::kSmem, stream);
  return err != cudaSuccess ? err : repair::fwd(pr, a, stream);
}

}  // namespace hopper
}  // namespace jax_na

#define JAX_NA_HOPPER_INSTANTIATE_FWD(T)                                                       \
  namespace jax_na {                                                                           \
  namespace hopper {                                                                           \
  template <>                                                                                  \
  cudaError_t launch_fwd<T>(const Problem& pr, const FwdArgs& a, fused::KernelParams p,        \
                            int head_dim, int sms, cudaStream_t stream) {                      \
    return fused::dispatch_head_dim_among<32, 64, 128, 256>(head_dim, [&](auto d) {            \
      return launch_fwd_impl<T, decltype(d)::value>(pr, a, p, sms, stream);                    \
    });                                                                                        \
  }                                                                                            \
  }                                                                                            \
  }
