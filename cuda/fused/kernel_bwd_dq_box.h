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
#include "warp_gemm.h"

namespace jax_na {
namespace fused {

template <typename T, int D>
struct DqBoxConfig {
  static_assert(D == 32 || D == 64, "resident-box kernels: head_dim 32 or 64");
  static constexpr int kThreads = 128;
  static constexpr int kMinBlocks = D >= 64 ? 2 : 3;
  static constexpr BoxSmem kSmem = query_box_smem<D>(2);
};

template <typename T, int D>
__global__ void __launch_bounds__(128, DqBoxConfig<T, D>::kMinBlocks)
    fused_bwd_dq_box_kernel(const KernelParams p) {
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  constexpr int NT = 4;  // 8-key blocks of a half tile
  constexpr int ND = D / 8;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ __align__(128) char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  QueryCta c;
  if (!setup_query_cta(p, c)) return;
  const int head = c.cta.head;
  const int kvh = head / p.group_size;

  Window* tab = reinterpret_cast<Window*>(smem);
  const uint32_t sQ = smem_u32(smem) + kTableBytes;
  const uint32_t sdO = sQ + SmemTile<D>::bytes(64);
  const ResidentBox bx = resident_box(c.kb, c.ke);
  const uint32_t sK = sdO + SmemTile<D>::bytes(64);
  const uint32_t sV = sK + SmemTile<D>::bytes(bx.rows());

  auto q_off = [&](int row) -> int64_t {
    const int64_t r = query_row_index(p, c, row, head);
    return r < 0 ? -1 : r * kRowBytes;
  };
  {
    const char* src[2] = {static_cast<const char*>(p.q), static_cast<const char*>(p.dout)};
    const uint32_t dst[2] = {sQ, sdO};
    load_rows_async<64, D, 128>(src, dst, q_off, tid);
  }
  {
    const char* src[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
    const uint32_t dst[2] = {sK, sV};
    load_box_async<D, 128>(src, dst, bx, [&](const int (&pos)[3]) -> int64_t {
      const int x[3] = {pos[0] * p.dil[0] + c.cta.grp[0], pos[1] * p.dil[1] + c.cta.grp[1],
                        pos[2] * p.dil[2] + c.cta.grp[2]};
      return token_row(p, c.cta.b, x, kvh, p.heads_kv) * kRowBytes;
    }, tid);
  }
  cp_async_commit();
  for (int e = tid; e < table_entries(p.ts.qlog); e += 128) tab[e] = query_window_entry(p, c, e);
  cp_async_wait<0>();
  __syncthreads();

  RowPartners rp;
  WarpTileTest wt;
  query_rows(p, c, tab, warp, lane, rp, wt);
  WarpBoxWalk walk(wt, p.ts.klog);
  if (walk.n > 0) {
    float lse2[2], dl[2];
    query_row_stats(p, c, 16 * warp, lane, head, lse2, dl);
    uint32_t qf[D / 16][4], df[D / 16][4];
    lds_a_all<D>(qf, sQ, 16 * warp, lane);
    lds_a_all<D>(df, sdO, 16 * warp, lane);
    float dq[ND][4];
#pragma unroll
    for (int d = 0; d < ND; ++d) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.f;
    for (int j = 0; j < walk.n; ++j, walk.next()) {
      int tb[3];
      walk.tile(p.ts.klog, tb);
      const LaneRows rows = lane_rows(bx, tb, p.ts.klog, lane);
      const bool masked = !wt.inside(tb, p.ts.klog);
      uint64_t m0 = ~0ull, m1 = ~0ull;
      if (masked) {
        m0 = column_mask(rp.lo[0], rp.hi[0], tb, p.ts.klog, p.rep_k12, p.rep_k2);
        m1 = column_mask(rp.lo[1], rp.hi[1], tb, p.ts.klog, p.rep_k12, p.rep_k2);
      }
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
        gemm_abt_rows<T, D, 32>(s, qf, sK, hr, lane);
        gemm_abt_rows<T, D, 32>(dp, df, sV, hr, lane);
        if (masked) apply_column_masks(s, m0 >> (32 * h), m1 >> (32 * h), lane, -INFINITY);
#pragma unroll
        for (int n = 0; n < NT; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int rr = e >> 1;
            const float pv = ex2(fmaf(s[n][e], p.scale_log2, -lse2[rr]));
            s[n][e] = pv * (dp[n][e] - dl[rr]);
          }
        }
        gemm_pv_rows<T, D, 32>(dq, s, sK, hr, lane);
      }
    }
    const float mul[2] = {p.scale, p.scale};
    stage_rows<T, D>(dq, mul, sQ, 16 * warp, lane);  // the warp's own Q rows
  }
  __syncthreads();
  store_rows<T, 64, D, 128>(static_cast<char*>(p.dq), sQ, q_off, tid, p.nonfinite);
}

}  // namespace fused
}  // namespace jax_na
