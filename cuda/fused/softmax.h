// Online softmax over the columns of a warp's 16-row score fragment, in fp32 registers.
// Scores are kept raw; m is the running row maximum in log2 units (max(S) * scale * log2 e),
// l the thread-partial running sum (the 4 lanes of a row are summed once, at the end).
#pragma once

#include <cmath>

#include "arch.h"

namespace jax_na {
namespace fused {

// v[i] = op(v[i], v[i + W]) for i < W, then the same with W / 2, ..., 1: a balanced tree with
// short dependency chains, unrolled at compile time at every width.
template <int W, int N, typename Op>
__device__ __forceinline__ void tree_fold(float (&v)[N], Op op) {
#pragma unroll
  for (int i = 0; i < W; ++i) v[i] = op(v[i], v[i + W]);
  if constexpr (W > 1) tree_fold<W / 2>(v, op);
}

// Max / sum over the 2 * NT values of row half rr.
template <int NT>
__device__ __forceinline__ float tree_max(const float (&s)[NT][4], int rr) {
  float v[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) v[nt] = fmaxf(s[nt][2 * rr], s[nt][2 * rr + 1]);
  if constexpr (NT > 1) tree_fold<NT / 2>(v, [](float a, float b) { return fmaxf(a, b); });
  return v[0];
}

template <int NT>
__device__ __forceinline__ float tree_sum(const float (&s)[NT][4], int rr) {
  float v[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) v[nt] = s[nt][2 * rr] + s[nt][2 * rr + 1];
  if constexpr (NT > 1) tree_fold<NT / 2>(v, [](float a, float b) { return a + b; });
  return v[0];
}

template <int NT, int NO>
struct OnlineSoftmax {
  float m[2];
  float l[2];

  __device__ __forceinline__ void init() {
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.f;
  }

  // s: raw scores of one tile (masked entries -inf) -> probabilities (unnormalised, relative
  // to the new running max); o: output accumulators rescaled to the new max.
  __device__ __forceinline__ void step(float (&s)[NT][4], float (&o)[NO][4], float scale_log2) {
    float alpha[2];
    scores(s, scale_log2, alpha);
    rescale(o, alpha);
  }

  // The scores half of step: s -> probabilities, running max and sum updated; alpha[rr] is the
  // factor the output rows must be rescaled by (kernels that overlap the previous tile's P V
  // with this apply it once that MMA has finished).
  // Lazy max (FlashAttention-4's conditional rescale): the warp keeps its rows' maxima unless
  // one grew by more than kLazyMax, so after the first tiles alpha is 1 and rescale() is skipped.
  // The probabilities are then relative to a max at most 2^kLazyMax below the true one (P <=
  // 256) and finish() divides by sums taken against the same max: exact, lse unchanged.
  // kExact: update the maxima whenever a row's grew (after scores_at_max turned a tile down).
  static constexpr float kLazyMax = 8.f;  // log2 units
  template <bool kExact = false>
  __device__ __forceinline__ void scores(float (&s)[NT][4], float scale_log2, float (&alpha)[2]) {
    float mx[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      mx[rr] = tree_max<NT>(s, rr);
      mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 1));
      mx[rr] = fmaxf(mx[rr], __shfl_xor_sync(0xffffffffu, mx[rr], 2)) * scale_log2;
    }
    // A row with nothing seen yet (m = -inf) grows on its first finite score.
    constexpr float kSlack = kExact ? 0.f : kLazyMax;
    const bool update = __any_sync(0xffffffffu, mx[0] > m[0] + kSlack || mx[1] > m[1] + kSlack);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const float m_new = update ? fmaxf(m[rr], mx[rr]) : m[rr];
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // a row with nothing seen yet
      alpha[rr] = update ? ex2(m[rr] - m_use) : 1.f;
      m[rr] = m_new;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) s[nt][2 * rr + e] = ex2(fmaf(s[nt][2 * rr + e], scale_log2, -m_use));
      }
      l[rr] = l[rr] * alpha[rr] + tree_sum<NT>(s, rr);
    }
  }

  // scores() without the rows' maxima, for the tiles that leave them as they stand (nearly all,
  // once the lazy maxima settle): P = 2^(S scale - m), handed to put(nt, q) per column block nt
  // (q: its 4 values, as s[nt]) and the thread's partial row sums into l, kept (true) where
  // every row of the warp has a finite max and each of the thread's partial sums is at most
  // 2^kLazyMax, so that each P is (the bound scores() keeps), and nothing needs rescaling.
  // Otherwise (a max that grew, a row that saw nothing yet, a NaN or an Inf) false with m and l
  // untouched: the caller runs scores<true>() on S, which this leaves as it was, and overwrites
  // what put stored. Its exps start as soon as S lands, not after the row max (64 FMNMX,
  // shuffles, a vote), and each block's P is handed on at once (registers: S stays live).
  template <typename Put>
  __device__ __forceinline__ bool scores_at_max(const float (&s)[NT][4], float scale_log2,
                                                Put put) {
    constexpr float kBound = 1 << int(kLazyMax);
    constexpr int kAcc = NT < 2 ? NT : 2;  // partial sums per row (short add chains)
    float acc[2][kAcc];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      float q[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) q[e] = ex2(fmaf(s[nt][e], scale_log2, -m[e >> 1]));
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float t = q[2 * rr] + q[2 * rr + 1];
        acc[rr][nt % kAcc] = nt < kAcc ? t : acc[rr][nt % kAcc] + t;
      }
      put(nt, q);
    }
    float t[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      if constexpr (kAcc > 1) tree_fold<kAcc / 2>(acc[rr], [](float a, float b) { return a + b; });
      t[rr] = acc[rr][0];
    }
    // NaN fails every comparison; an unseen row's P (against m = -inf) is Inf or NaN anyway.
    const bool kept = __all_sync(0xffffffffu, m[0] > -INFINITY && m[1] > -INFINITY &&
                                                  t[0] <= kBound && t[1] <= kBound);
    if (kept) l[0] += t[0], l[1] += t[1];
    return kept;
  }

  // Once the running maxima settle (lazily: scores()), tiles leave them unchanged: no rescale.
  __device__ __forceinline__ void rescale(float (&o)[NO][4], const float (&alpha)[2]) {
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int d = 0; d < NO; ++d) {
        o[d][0] *= alpha[0];
        o[d][1] *= alpha[0];
        o[d][2] *= alpha[1];
        o[d][3] *= alpha[1];
      }
    }
  }

  // Row sums over the 4 lanes of a row; returns 1/l (0 for a row that saw nothing) and the
  // natural-log logsumexp.
  __device__ __forceinline__ void finish(float (&inv)[2], float (&lse)[2]) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float t = l[rr];
      t += __shfl_xor_sync(0xffffffffu, t, 1);
      t += __shfl_xor_sync(0xffffffffu, t, 2);
      inv[rr] = t > 0.f ? 1.f / t : 0.f;
      lse[rr] = t > 0.f ? (m[rr] + __log2f(t)) * kLn2 : -INFINITY;
    }
  }
};

// Backward through the softmax for a warp's 16 query rows (dQ kernels): S (raw scores, masked
// entries -inf) -> dS = P (dP - delta), with P = exp(S * scale - lse). lse2: each of the thread's
// two rows' lse * log2(e); dl: their delta.
template <int NT>
__device__ __forceinline__ void softmax_bwd_rows(float (&s)[NT][4], const float (&dp)[NT][4],
                                                 float scale_log2, const float (&lse2)[2],
                                                 const float (&dl)[2]) {
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int rr = e >> 1;
      const float pv = ex2(fmaf(s[n][e], scale_log2, -lse2[rr]));
      s[n][e] = pv * (dp[n][e] - dl[rr]);
    }
  }
}

}  // namespace fused
}  // namespace jax_na
