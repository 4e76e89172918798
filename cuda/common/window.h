// Neighborhood window math: the ONE copy used by every kernel (CPU and CUDA).
// Semantics: ../shared/na-semantics.md (NATTEN 0.21). Python twin: jax_na/reference.py
// (tested against an independent dense-mask oracle in tests/).
//
// Coordinates: a spatial coordinate x in [0, L) belongs to dilation group g = x % d at
// position p = x / d. Queries only see keys of their own group. Windows are expressed in
// positions; coordinate of position p' in group g is p' * d + g.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NA_HD __host__ __device__ __forceinline__
#else
#define NA_HD inline
#endif

namespace jax_na {

// Parameters of one spatial dimension.
struct DimParams {
  int extent;    // L
  int kernel;    // k
  int stride;    // s
  int dilation;  // d
  bool causal;
};

NA_HD int na_min(int a, int b) { return a < b ? a : b; }
NA_HD int na_max(int a, int b) { return a > b ? a : b; }

// Number of coordinates x < L with x % d == g (no division without dilation: every CTA's
// prologue computes it per dim).
NA_HD int group_extent(int L, int d, int g) { return d == 1 ? L : (L - g + d - 1) / d; }

// Half-open window [start, end) of key positions for query position p in a group of
// extent Lg. Non-causal windows always hold exactly k positions; causal ones may hold fewer.
struct Window {
  int start;
  int end;
};

NA_HD Window window_positions(int p, int Lg, int k, int s, bool causal) {
  const int first = s == 1 ? p : (p / s) * s;  // of p's stride group (no division at stride 1)
  if (causal) {
    const int leader = na_min(first + s - 1, Lg - 1);
    return Window{na_max(leader - k + 1, 0), p + 1};
  }
  const int leader = na_min(first + s / 2, Lg - 1);
  const int left = k / 2;
  const int right = k / 2 + (k % 2) - 1;
  const int centre = na_max(left, na_min(leader, Lg - 1 - right));
  return Window{centre - left, centre + right + 1};
}

// Window of query coordinate x along one dimension, in key positions of x's group.
NA_HD Window window_of(int x, const DimParams& dp) {
  const int g = x % dp.dilation;
  const int Lg = group_extent(dp.extent, dp.dilation, g);
  return window_positions(x / dp.dilation, Lg, dp.kernel, dp.stride, dp.causal);
}

// Key positions touched by any query position in [p_begin, p_end) of one group: the union of
// their windows. Window starts and ends are non-decreasing in p, so the union is one interval.
NA_HD Window tile_key_range(int p_begin, int p_end, int Lg, int k, int s, bool causal) {
  const Window first = window_positions(p_begin, Lg, k, s, causal);
  const Window last = window_positions(p_end - 1, Lg, k, s, causal);
  return Window{first.start, last.end};
}

// True if every query position in [p_begin, p_end) sees every key position in
// [kp_begin, kp_end): such a key tile needs no mask along this dimension.
NA_HD bool tile_fully_inside(int p_begin, int p_end, int kp_begin, int kp_end, int Lg, int k,
                             int s, bool causal) {
  // The intersection of windows is [start of last query, end of first query).
  const Window first = window_positions(p_begin, Lg, k, s, causal);
  const Window last = window_positions(p_end - 1, Lg, k, s, causal);
  return kp_begin >= last.start && kp_end <= first.end;
}

// Inverse neighbourhood, for key-stationary kernels (backward dK/dV): the query positions
// [begin, end) of one group whose windows intersect key positions [kp_begin, kp_end), with
// kp_begin < kp_end <= Lg. Window starts and ends are non-decreasing in p, so the answer is one
// interval: from the first p with end(p) > kp_begin to the first p with start(p) >= kp_end.
// Every window holds its own query and at most k positions (1 <= s <= k <= Lg: na-semantics.md),
// so end(p) lies in (p, p + k] and start(p) in [p - k + 1, p]: the first search needs only
// p in [kp_begin - k + 1, kp_begin], the second p in [kp_end, kp_end + k - 1] (binary searches
// over k positions, not Lg: the dK/dV kernels run them in every CTA's prologue). At stride 1
// the windows have closed forms (start(p) = clamp(p - k/2, 0, Lg - k), causal max(p - k + 1, 0);
// end = start + k, causal p + 1), and so has the interval: the searches start at their answer.
NA_HD Window key_tile_query_range(int kp_begin, int kp_end, int Lg, int k, int s, bool causal) {
  int lo = na_max(kp_begin - k + 1, 0), hi = kp_begin;  // first p with window end > kp_begin
  if (s == 1) lo = hi = causal ? kp_begin : (kp_begin < k ? 0 : kp_begin - k + k / 2 + 1);
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (window_positions(mid, Lg, k, s, causal).end > kp_begin) hi = mid; else lo = mid + 1;
  }
  const int begin = lo;
  lo = kp_end;
  hi = na_min(kp_end + k - 1, Lg);  // first p with window start >= kp_end (Lg: none)
  if (s == 1) lo = hi = causal ? hi : (kp_end > Lg - k ? Lg : kp_end + k / 2);
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (window_positions(mid, Lg, k, s, causal).start >= kp_end) hi = mid; else lo = mid + 1;
  }
  return Window{begin, lo};
}

}  // namespace jax_na
