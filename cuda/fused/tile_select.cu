// Host-side tile-shape selection for the fused family (see tile_scheduler.h).
#include <array>
#include <cmath>
#include <mutex>
#include <utility>
#include <vector>

#include "tile_scheduler.h"

namespace jax_na {
namespace fused {
namespace {

constexpr int kMaxLog = 7;   // tile extents up to 128 per dim
constexpr int kSamples = 48; // stationary tiles sampled per dim for the cost estimate

int max_group_extent(const KernelParams& p, int i) { return group_extent(p.L[i], p.dil[i], 0); }

// cost[a][c]: for stationary tiles of extent 2^a along dim i, the number of iterated tiles of
// extent 2^c summed over the stationary tiles of that dim (group 0), and count[a] the number of
// stationary tiles. key_stationary: stationary = keys, iterated = queries.
struct DimCost {
  double cost[kMaxLog + 1][kMaxLog + 1];
  double count[kMaxLog + 1];
};

// For stationary tiles of extent 2^a along dim i: cost[c] = the iterated tiles of extent 2^c
// summed over them (sampled on long dims), c <= max_c; returns the number of stationary tiles.
int dim_row_cost(const KernelParams& p, int i, bool key_stationary, int a, int max_c,
                 double (&cost)[kMaxLog + 1]) {
  const int Lg = max_group_extent(p, i);
  const int e = 1 << a;
  const int nt = (Lg + e - 1) / e;
  const int ns = nt <= kSamples ? nt : kSamples;
  double acc[kMaxLog + 1] = {};
  for (int j = 0; j < ns; ++j) {
    const int t = nt <= kSamples ? j : int((int64_t(j) * (nt - 1)) / (ns - 1));
    const int b = t * e, en = b + e < Lg ? b + e : Lg;
    const Window r = key_stationary
                         ? key_tile_query_range(b, en, Lg, p.ker[i], p.str[i], p.causal[i] != 0)
                         : tile_key_range(b, en, Lg, p.ker[i], p.str[i], p.causal[i] != 0);
    const int len = r.end > r.start ? r.end - r.start : 0;
    for (int c = 0; c <= max_c; ++c) acc[c] += double((len + (1 << c) - 1) >> c);
  }
  for (int c = 0; c <= max_c; ++c) cost[c] = acc[c] * double(nt) / double(ns);
  return nt;
}

void dim_cost(const KernelParams& p, int i, bool key_stationary, int max_a, int max_c,
              DimCost& out) {
  for (int a = 0; a <= max_a; ++a)
    out.count[a] = dim_row_cost(p, i, key_stationary, a, max_c, out.cost[a]);
}

TileShape choose(const KernelParams& p, int log_rows, int log_cols, bool key_stationary) {
  DimCost dc[3];
  for (int i = 0; i < 3; ++i) dim_cost(p, i, key_stationary, log_rows, log_cols, dc[i]);
  TileShape best{};
  double best_cost = -1.0;
  int best_tie = -1;
  for (int a0 = 0; a0 <= log_rows; ++a0)
    for (int a1 = 0; a0 + a1 <= log_rows; ++a1) {
      const int a2 = log_rows - a0 - a1;
      const double ctas = dc[0].count[a0] * dc[1].count[a1] * dc[2].count[a2];
      for (int c0 = 0; c0 <= log_cols; ++c0)
        for (int c1 = 0; c0 + c1 <= log_cols; ++c1) {
          const int c2 = log_cols - c0 - c1;
          // An iteration costs one unit; a CTA's prologue/epilogue about half of one.
          const double cost = dc[0].cost[a0][c0] * dc[1].cost[a1][c1] * dc[2].cost[a2][c2] +
                              0.5 * ctas;
          // Ties: prefer longer innermost (contiguous) extents.
          const int tie = 16 * (a2 + c2) + c2;
          const bool better = best_cost < 0 || cost < best_cost * (1 - 1e-9) ||
                              (cost <= best_cost * (1 + 1e-9) && tie > best_tie);
          if (better) {
            best_cost = cost;
            best_tie = tie;
            int* rows = key_stationary ? best.klog : best.qlog;
            int* cols = key_stationary ? best.qlog : best.klog;
            rows[0] = a0, rows[1] = a1, rows[2] = a2;
            cols[0] = c0, cols[1] = c1, cols[2] = c2;
          }
        }
    }
  return best;
}

// The geometry (per dim: extent, kernel, stride, dilation, causal) and three more ints.
using Key = std::array<int, 18>;

Key geometry_key(const KernelParams& p, int a, int b, int c) {
  Key key{};
  int n = 0;
  for (int i = 0; i < 3; ++i) {
    key[n++] = p.L[i];
    key[n++] = p.ker[i];
    key[n++] = p.str[i];
    key[n++] = p.dil[i];
    key[n++] = p.causal[i];
  }
  key[n++] = a;
  key[n++] = b;
  key[n++] = c;
  return key;
}

// compute() once per key (the last 256 keys kept): the planners run on every call.
template <typename V, typename F>
V cached(const Key& key, F compute) {
  static std::mutex mu;
  static std::vector<std::pair<Key, V>> entries;  // most recent last
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& e : entries)
      if (e.first == key) return e.second;
  }
  const V v = compute();
  std::lock_guard<std::mutex> lock(mu);
  if (entries.size() >= 256) entries.erase(entries.begin());
  entries.emplace_back(key, v);
  return v;
}

TileShape cached_choice(const KernelParams& p, int log_rows, int log_cols, bool key_stationary) {
  return cached<TileShape>(geometry_key(p, log_rows, log_cols, key_stationary),
                           [&] { return choose(p, log_rows, log_cols, key_stationary); });
}

}  // namespace

TileShape choose_query_stationary(const KernelParams& p, int log_rows, int log_cols) {
  return cached_choice(p, log_rows, log_cols, false);
}

double query_stationary_iterations(const KernelParams& p, const TileShape& ts) {
  double n = 1.0;
  for (int i = 0; i < 3; ++i) {
    double cost[kMaxLog + 1];
    dim_row_cost(p, i, false, ts.qlog[i], ts.klog[i], cost);
    n *= cost[ts.klog[i]];
  }
  return n;
}

bool tiles_never_cut(const KernelParams& p) {
  for (int i = 0; i < 3; ++i) {
    const int eq = 1 << p.ts.qlog[i], ek = 1 << p.ts.klog[i];
    // Dilation groups have two extents at most: the first group's and the last one's.
    for (const int g : {0, p.dil[i] - 1}) {
      const int Lg = group_extent(p.L[i], p.dil[i], g);
      for (int b = 0; b < Lg; b += eq) {
        // Window starts and ends are non-decreasing: the first and last query bound the rest.
        const int en = b + eq < Lg ? b + eq : Lg;
        const Window first = window_positions(b, Lg, p.ker[i], p.str[i], p.causal[i] != 0);
        const Window last = window_positions(en - 1, Lg, p.ker[i], p.str[i], p.causal[i] != 0);
        if (first.start != last.start || first.end != last.end) return false;
        if ((first.end - first.start) % ek != 0) return false;
      }
    }
  }
  return true;
}

DoubledTiles choose_query_stationary_doubled(const KernelParams& p, int log_rows,
                                             int log_cols) {
  return cached<DoubledTiles>(geometry_key(p, log_rows, log_cols, 2), [&] {
    const TileShape base = choose_query_stationary(p, log_rows, log_cols);
    auto doubled = [&](int i) {
      TileShape t = base;
      ++t.qlog[i];
      return t;
    };
    int best = outer_dim(base.qlog);
    double best_n = query_stationary_iterations(p, doubled(best));
    for (int i = 0; i < 3; ++i) {
      const double n = query_stationary_iterations(p, doubled(i));
      if (n < 0.98 * best_n) best = i, best_n = n;
    }
    DoubledTiles d{doubled(best), false};
    KernelParams q = p;
    q.ts = d.ts;
    d.never_cut = tiles_never_cut(q);
    return d;
  });
}

TileShape choose_key_stationary(const KernelParams& p, int log_rows, int log_cols) {
  return cached_choice(p, log_rows, log_cols, true);
}

void set_grid(KernelParams& p, const int (&lg)[3]) {
  for (int i = 0; i < 3; ++i) p.tile_order[i] = i;
  p.tiles = 1;
  for (int i = 0; i < 3; ++i) {
    const int e = 1 << lg[i];
    p.ntiles[i] = (max_group_extent(p, i) + e - 1) / e;
    p.tiles *= p.ntiles[i];
    p.fd_ntiles[i] = FastDiv::of(uint32_t(p.ntiles[i]));
  }
  p.fd_tiles = FastDiv::of(uint32_t(p.tiles));  // tiles <= tokens < 2^31
  p.groups = p.dil[0] * p.dil[1] * p.dil[2];
  p.fd_groups = FastDiv::of(uint32_t(p.groups));
}

void order_tiles_for_l2(KernelParams& p, int wave) {
  static constexpr int kOrders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  double best = -1.0;
  int pick = 0;
  for (int o = 0; o < 6; ++o) {
    // Tiles of the first wave per dim, fastest dim first: it fills before the next one moves.
    int64_t left = wave;
    double keys = 1.0;
    for (int j = 2; j >= 0; --j) {
      const int d = kOrders[o][j], n = p.ntiles[d];
      const int64_t span = left < n ? left : n;
      left = (left + n - 1) / n;
      // The key range of `span` tiles in the middle of the dim (borders clamp windows inward).
      const int Lg = max_group_extent(p, d), e = 1 << p.ts.qlog[d];
      const int b = int((n - span) / 2) * e, en = b + int(span) * e < Lg ? b + int(span) * e : Lg;
      const Window r = tile_key_range(b, en, Lg, p.ker[d], p.str[d], p.causal[d] != 0);
      keys *= double(r.end > r.start ? r.end - r.start : 1);
    }
    if (best < 0 || keys < best * 0.999) best = keys, pick = o;
  }
  for (int i = 0; i < 3; ++i) p.tile_order[i] = kOrders[pick][i];
}

}  // namespace fused
}  // namespace jax_na
