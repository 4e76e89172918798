// Forward kernel, resident-box variant for small windows (resident_box.h), fp16/bf16 on
// mma.sync, head_dim 32 or 64.
//
// CTA: 4 warps, a 64-position query tile (the tiled forward's shape) of one (batch, head,
// dilation group). It loads Q and its whole key/value box, then each warp walks the 64-key tiles
// over its own rows' windows: S = Q K^T (K rows gathered from the box), mask-free when the tile
// lies inside every window of the warp's rows, column masks otherwise, online softmax,
// O += P V. Epilogue as the tiled forward (kernel_fwd.h).
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
using FwdBoxConfig = QueryBoxConfig<D, 1>;  // Q

template <typename T, int D>
__global__ void __launch_bounds__(128, FwdBoxConfig<T, D>::kMinBlocks)
    fused_fwd_box_kernel(const KernelParams p) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  constexpr int NT = 8;
  constexpr int ND = D / 8;
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  QueryBoxCta<D, 1> q;
  if (!q.setup(p, smem)) return;
  {
    const char* src[1] = {static_cast<const char*>(p.q)};
    q.load(p, smem, src, tid);
  }
  const QueryCta& c = q.c;
  const Window* tab = reinterpret_cast<const Window*>(smem);
  const int64_t* const row_ids = q.rows(smem);

  RowPartners rp;
  WarpTileTest wt;
  query_rows(p, c, tab, warp, lane, rp, wt);
  WarpBoxWalk walk(wt, p.ts.klog);
  if (walk.n > 0) {
    uint32_t qf[D / 16][4];
    lds_a_all<D>(qf, q.sq, 16 * warp, lane);
    float o[ND][4];
#pragma unroll
    for (int d = 0; d < ND; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    OnlineSoftmax<NT, ND> sm;
    sm.init();
    for (int j = 0; j < walk.n; ++j, walk.next()) {
      int tb[3];
      walk.tile(p.ts.klog, tb);
      const LaneRows rows = lane_rows(q.bx, tb, p.ts.klog, lane);
      float s[NT][4];
#pragma unroll
      for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      gemm_abt_rows<T, D, 64>(s, qf, q.sk, rows, lane);
      if (const int cut = wt.cut_dims(tb, p.ts.klog))
        mask_tile(s, rp, cut, tb, p.ts.klog, lane, -INFINITY);
      sm.step(s, o, p.scale_log2);
      gemm_pv_rows<T, D, 64>(o, s, q.sv, rows, lane);
    }
    float inv[2], lse[2];
    sm.finish(inv, lse);
    // The warp's own Q rows (already in registers) take its output.
    stage_rows<T, D>(o, inv, q.sq, 16 * warp, lane);
    if ((lane & 3) == 0) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int64_t r = row_ids[16 * warp + (lane >> 2) + 8 * rr];
        if (r >= 0) p.lse_out[r] = lse[rr];
      }
    }
  }
  __syncthreads();
  store_rows<T, 64, D, 128>(static_cast<char*>(p.out), q.sq,
                            RowTable{row_ids, SmemTile<D>::kRowBytes}, tid, p.nonfinite);
}

}  // namespace fused
}  // namespace jax_na
