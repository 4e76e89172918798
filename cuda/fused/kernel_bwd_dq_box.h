// Backward dQ kernel, resident-box variant for small windows (resident_box.h): query-stationary,
// deterministic, head_dim 32 or 64.
//
// As the tiled dQ kernel (kernel_bwd_dq.h), with the CTA's whole key/value box in shared memory
// and each warp walking its own 64-key tiles: S = Q K^T, dP = dO V^T, P = exp(S - lse) (masked),
// dS = P (dP - delta), dQ += dS K. Q and dO fragments stay in registers.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "arch.h"
#include "epilogue.h"
#include "mask.h"
#include "params.h"
#include "query_tile.h"
#include "resident_box.h"
#include "smem_tile.h"
#include "softmax.h"
#include "warp_gemm.h"

namespace jax_na {
namespace fused {

template <typename T, int D>
using DqBoxConfig = QueryBoxConfig<D, 2>;  // Q and dO

template <typename T, int D>
__global__ void __launch_bounds__(128, DqBoxConfig<T, D>::kMinBlocks)
    fused_bwd_dq_box_kernel(const KernelParams p) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  constexpr int NT = 4;  // 8-key blocks of a half tile
  constexpr int ND = D / 8;
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  QueryBoxCta<D, 2> q;
  if (!q.setup(p, smem)) return;
  {
    const char* src[2] = {static_cast<const char*>(p.q), static_cast<const char*>(p.dout)};
    q.load(p, smem, src, tid);
  }
  const QueryCta& c = q.c;
  const Window* tab = reinterpret_cast<const Window*>(smem);
  const int64_t* const row_ids = q.rows(smem);
  const uint32_t sdO = q.sq + SmemTile<D>::bytes(64);

  RowPartners rp;
  WarpTileTest wt;
  query_rows(p, c, tab, warp, lane, rp, wt);
  WarpBoxWalk walk(wt, p.ts.klog);
  if (walk.n > 0) {
    float lse2[2], dl[2];
    row_stats(p, row_ids, 16 * warp, lane, lse2, dl);
    uint32_t qf[D / 16][4], df[D / 16][4];
    lds_a_all<D>(qf, q.sq, 16 * warp, lane);
    lds_a_all<D>(df, sdO, 16 * warp, lane);
    float dq[ND][4];
#pragma unroll
    for (int d = 0; d < ND; ++d) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.f;
    for (int j = 0; j < walk.n; ++j, walk.next()) {
      int tb[3];
      walk.tile(p.ts.klog, tb);
      const LaneRows rows = lane_rows(q.bx, tb, p.ts.klog, lane);
      const int cut = wt.cut_dims(tb, p.ts.klog);
      const uint32_t m = cut ? mask_word(rp, cut, tb, p.ts.klog, lane) : ~0u;
      // Two halves of 32 keys: half the S and dP accumulators live at a time.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const HalfRows hr{rows, h};
        float s[NT][4], dp[NT][4];
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
          dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
        }
        gemm_abt_rows<T, D, 32>(s, qf, q.sk, hr, lane);
        gemm_abt_rows<T, D, 32>(dp, df, q.sv, hr, lane);
        if (cut) apply_mask_word(s, m >> (4 * h), -INFINITY);  // blocks [4 h, 4 h + 4)
        softmax_bwd_rows(s, dp, p.scale_log2, lse2, dl);
        gemm_pv_rows<T, D, 32>(dq, s, q.sk, hr, lane);
      }
    }
    const float mul[2] = {p.scale, p.scale};
    stage_rows<T, D>(dq, mul, q.sq, 16 * warp, lane);  // the warp's own Q rows
  }
  __syncthreads();
  store_rows<T, 64, D, 128>(static_cast<char*>(p.dq), q.sq,
                            RowTable{row_ids, SmemTile<D>::kRowBytes}, tid, p.nonfinite);
}

}  // namespace fused
}  // namespace jax_na
