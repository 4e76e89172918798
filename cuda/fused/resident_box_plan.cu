// Host planning of the resident-box kernels (resident_box.h): tile shapes and box sizes.
#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "resident_box.h"
#include "tile_scheduler.h"

namespace jax_na {
namespace fused {
namespace {

constexpr int kMaxWarpTiles = 4;  // 64-key tiles per warp (a window of <= 256 keys)

// The longest union of the windows of an aligned block of e query positions along dim i, over
// both extents a dilation group can have (exact: every block is visited).
int max_union_uncached(const KernelParams& p, int i, int e) {
  const int d = p.dil[i];
  const int ext[2] = {group_extent(p.L[i], d, 0), group_extent(p.L[i], d, d - 1)};
  int best = 0;
  for (int v = 0; v < 2 && (v == 0 || ext[1] != ext[0]); ++v) {
    const int Lg = ext[v];
    for (int b = 0; b < Lg; b += e) {
      const int en = b + e < Lg ? b + e : Lg;
      const Window r = tile_key_range(b, en, Lg, p.ker[i], p.str[i], p.causal[i] != 0);
      if (r.end - r.start > best) best = r.end - r.start;
    }
  }
  return best;
}

// Cached per (dim geometry, e): the scan is O(extent) and runs once per geometry.
int max_union(const KernelParams& p, int i, int e) {
  using Key = std::array<int, 6>;
  static std::mutex mu;
  static std::vector<std::pair<Key, int>> cache;
  const Key key{p.L[i], p.ker[i], p.str[i], p.dil[i], p.causal[i], e};
  {
    std::lock_guard<std::mutex> lock(mu);
    for (const auto& c : cache)
      if (c.first == key) return c.second;
  }
  const int u = max_union_uncached(p, i, e);
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() >= 256) cache.erase(cache.begin());
  cache.emplace_back(key, u);
  return u;
}

bool disabled_by_env() {
  const char* s = std::getenv("JAX_NA_FUSED_RESIDENT_BOX");
  return s != nullptr && std::strcmp(s, "0") == 0;
}

}  // namespace

bool plan_resident_box(KernelParams& p, const BoxSmem& sm, int& box_rows) {
  // A window alone wider than the warp's tile budget: never (and no scan for large windows).
  int64_t window = 1;
  for (int i = 0; i < 3; ++i) window *= p.ker[i];
  if (window > kMaxWarpTiles * 64 || disabled_by_env()) return false;

  const TileShape ts = choose_query_stationary(p, 6, 6);
  const int* st = ts.qlog;
  // A warp's 16 rows: the innermost 4 bits of the 64-query tile.
  int wl[3];
  int left = 4;
  for (int i = 2; i >= 0; --i) {
    wl[i] = st[i] < left ? st[i] : left;
    left -= wl[i];
  }
  int uw[3], uc[3];  // largest union of a warp's / a CTA's windows, per dim
  int64_t rows = 1;
  for (int i = 0; i < 3; ++i) {
    uw[i] = max_union(p, i, 1 << wl[i]);
    uc[i] = max_union(p, i, 1 << st[i]);
    rows *= uc[i];
  }
  if (rows > sm.max_rows()) return false;

  // Key tile (64 columns): the fewest tiles over the largest warp union; ties go to the longer
  // innermost extent (contiguous rows in the box).
  int best[3] = {0, 0, 6};
  int64_t best_n = -1;
  for (int c0 = 0; c0 <= 6; ++c0)
    for (int c1 = 0; c0 + c1 <= 6; ++c1) {
      const int c[3] = {c0, c1, 6 - c0 - c1};
      int64_t n = 1;
      for (int i = 0; i < 3; ++i) n *= (uw[i] + (1 << c[i]) - 1) >> c[i];
      if (best_n < 0 || n < best_n || (n == best_n && c[2] > best[2])) {
        best_n = n;
        best[0] = c[0], best[1] = c[1], best[2] = c[2];
      }
    }
  if (best_n > kMaxWarpTiles) return false;
  // Worth it only where a warp walks at most half the tiles the tiled kernel's CTA does (its
  // tiles on the grid of the CTA's box; all 4 warps wait for each): the box costs a longer
  // prologue and a load that nothing overlaps (measured before this rule: V2's 7x7 groups, 1
  // tile either way, box 24% slower; 1-D k63, 2 either way, 38% slower; V1, 4 against 2, 11%
  // faster; NOTES.md).
  int64_t tiled_n = 1;
  for (int i = 0; i < 3; ++i) tiled_n *= (uc[i] + (1 << ts.klog[i]) - 1) >> ts.klog[i];
  if (2 * best_n > tiled_n) return false;

  p.ts = ts;
  for (int i = 0; i < 3; ++i) p.ts.klog[i] = best[i];
  box_rows = int(rows);
  return true;
}

}  // namespace fused
}  // namespace jax_na
