// Host-only check of the fused family's tiling and masking logic (no GPU needed): emulates every
// CTA, warp and lane of the forward/dQ (query-stationary) and dK/dV (key-stationary) kernels'
// tile iteration, per-warp skip, mask-free test and column masks, using the very functions the
// kernels call, and checks that each (query, key) neighbour pair is computed exactly once and
// no other pair is; the same for the resident-box kernels (per-warp tiles, gathered box rows,
// the loaders' cursors, and the plan's bounds: box rows, tiles per warp). Runs on any machine with nvcc
// (tests/test_tiling.py runs it in CI). CUDA source named .cc so that the extension's glob
// (cuda/fused/**/*.cu) leaves it out. Build:
//   nvcc -O2 -std=c++17 -I cuda/common cuda/fused/tile_select.cu cuda/fused/resident_box_plan.cu -x cu \
//        cuda/fused/test/tiling_check.cc -o tiling_check && ./tiling_check [cases]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "../../common/nonfinite.cuh"
#include "../fast_div.h"
#include "../key_tile.h"
#include "../launch.h"
#include "../mask.h"
#include "../query_tile.h"
#include "../resident_box.h"

using namespace jax_na;
using namespace jax_na::fused;

namespace {

struct Geo {
  int rank;
  int L[3], k[3], s[3], d[3], c[3];
};

KernelParams params_of(const Geo& g) {
  KernelParams p{};
  for (int i = 0; i < 3; ++i) {
    p.L[i] = g.L[i], p.ker[i] = g.k[i], p.str[i] = g.s[i], p.dil[i] = g.d[i], p.causal[i] = g.c[i];
  }
  p.batch = 1;
  p.tokens = int64_t(g.L[0]) * g.L[1] * g.L[2];
  p.heads = p.heads_kv = p.group_size = 1;
  p.groups = g.d[0] * g.d[1] * g.d[2];
  return p;
}

bool neighbour(const Geo& g, int qt, int kt) {
  int qx[3] = {qt / (g.L[1] * g.L[2]), (qt / g.L[2]) % g.L[1], qt % g.L[2]};
  int kx[3] = {kt / (g.L[1] * g.L[2]), (kt / g.L[2]) % g.L[1], kt % g.L[2]};
  for (int i = 0; i < 3; ++i) {
    if (qx[i] % g.d[i] != kx[i] % g.d[i]) return false;
    const Window w = window_of(qx[i], DimParams{g.L[i], g.k[i], g.s[i], g.d[i], g.c[i] != 0});
    const int kp = kx[i] / g.d[i];
    if (kp < w.start || kp >= w.end) return false;
  }
  return true;
}

// CTA (batch 0, head 0) of dilation group gi and row-major tile t.
CtaCoord cta_at(const KernelParams& p, int gi, int64_t t) {
  CtaCoord cta{};
  cta.grp[2] = gi % p.dil[2], cta.grp[1] = (gi / p.dil[2]) % p.dil[1], cta.grp[0] = gi / (p.dil[2] * p.dil[1]);
  cta.tile[2] = int(t % p.ntiles[2]), cta.tile[1] = int((t / p.ntiles[2]) % p.ntiles[1]),
  cta.tile[0] = int(t / (int64_t(p.ntiles[2]) * p.ntiles[1]));
  return cta;
}

// fn(c, tab) for every query-stationary CTA (batch 0, head 0) with work: its geometry and
// window table, as the kernels' prologue builds them.
template <typename Fn>
void for_each_query_cta(const KernelParams& p, Fn fn) {
  for (int gi = 0; gi < p.groups; ++gi)
    for (int64_t t = 0; t < p.tiles; ++t) {
      QueryCta c;
      if (!setup_query_cta(p, cta_at(p, gi, t), c)) continue;
      Window tab[kMaxTableEntries];
      for (int e = 0; e < table_entries(p.ts.qlog); ++e) tab[e] = query_window_entry(p, c, e);
      fn(c, tab);
    }
}

// Columns of `lane` that the kernel computes for row half rr, given the tile test and masks.
template <int NT>
void lane_columns(const RowPartners& rp, const WarpTileTest& wt, const int (&tb)[3],
                  const int (&lg)[3], int lane, std::vector<std::pair<int, int>>& out) {
  float s[NT][4];
  for (int n = 0; n < NT; ++n)
    for (int e = 0; e < 4; ++e) s[n][e] = 1.f;
  if (const int cut = wt.cut_dims(tb, lg)) mask_tile(s, rp, cut, tb, lg, lane, 0.f);
  for (int n = 0; n < NT; ++n)
    for (int e = 0; e < 4; ++e)
      if (s[n][e] != 0.f) out.push_back({e >> 1, 8 * n + 2 * (lane & 3) + (e & 1)});
}

int never_cut_tilings = 0;  // query-stationary tilings tiles_never_cut accepted (and checked)

int check_query_stationary(const Geo& g, std::vector<int>& cnt, int log_rows, int log_cols,
                           int mt) {
  KernelParams p = params_of(g);
  p.ts = choose_query_stationary(p, log_rows, log_cols);
  set_mask_constants(p);
  set_grid(p, p.ts.qlog);
  // Kernels leave masks out where tiles_never_cut: then no warp may ever find a tile cut.
  const bool never_cut = tiles_never_cut(p);
  never_cut_tilings += never_cut;
  const int64_t N = p.tokens;
  int errors = 0;
  std::vector<std::pair<int, int>> cols;
  for_each_query_cta(p, [&](const QueryCta& c, const Window* tab) {
    // The loaders' query rows (query_tile_rows) against query_row_index, for head 2 of 3 of batch
    // element 1 (the geometries have one of each).
    {
      KernelParams pr = p;
      pr.heads = 3;
      QueryCta cb = c;
      cb.cta.b = 1;
      const TileRows qr = query_tile_rows(pr, cb, 2);
      for (int r = 0; r < (1 << (p.ts.qlog[0] + p.ts.qlog[1] + p.ts.qlog[2])); ++r)
        if (qr(p.ts.qlog, r) != query_row_index(pr, cb, r, 2) && errors++ < 5)
          printf("  query tile row %d is not query_row_index's\n", r);
    }
    // The kernels walk the key/value tiles incrementally and gather rows through a per-CTA
    // token-offset table: both must agree with the direct index math.
    {
      TileWalker walk;
      walk.reset();
      for (int j = 0; j < c.n_kv; ++j) {
        if (j) walk.next(c.nk);
        int tw[3], td[3];
        kv_tile_at(p, c, walk.t, tw);
        kv_tile_begin(p, c, j, td);
        if (tw[0] != td[0] || tw[1] != td[1] || tw[2] != td[2]) {
          if (errors++ < 5) printf("  fwd: tile walk differs at %d\n", j);
        }
        const int64_t rb = 96;  // any row size
        const GatherTile gt = kv_gather(p, c, td, 0, rb);
        for (int r = 0; r < (1 << log_cols); ++r) {
          const int64_t want = key_row_index(p, c, td, r, 0);
          const bool valid = (gt.valid >> r) & 1ull;
          if (valid != (want >= 0) || (valid && gt.base + int64_t(tile_row_delta(p, p.ts.klog, r)) * gt.stride != want * rb)) {
            if (errors++ < 5) printf("  fwd: gather row %d of tile %d wrong\n", r, j);
          }
        }
      }
    }
    for (int warp = 0; warp < (1 << log_rows) / (16 * mt); ++warp)
      for (int blk = 0; blk < mt; ++blk)
      for (int lane = 0; lane < 32; ++lane) {
        const int row0 = 16 * mt * warp, brow = row0 + 16 * blk;
        RowPartners rp;
        WarpTileTest wt;
        query_row_partners(p, tab, brow, lane, rp);
        {  // the packed-reference form (two row blocks per warp) must give the same partners
          RowRefs rf;
          RowPartners r2;
          query_row_refs(p, brow, lane, rf);
          unpack_partners(rf, tab, r2);
          for (int rr = 0; rr < 2; ++rr)
            for (int i = 0; i < 3; ++i)
              if (r2.lo[rr][i] != rp.lo[rr][i] || r2.hi[rr][i] != rp.hi[rr][i]) {
                if (errors++ < 5) printf("  fwd: packed row references differ\n");
              }
        }
        query_warp_test(p, c, tab, row0, 16 * mt, wt);
        for (int j = 0; j < c.n_kv; ++j) {
          int tb[3];
          kv_tile_begin(p, c, j, tb);
          if (!wt.meets(tb, p.ts.klog)) continue;
          if (never_cut && wt.cut_dims(tb, p.ts.klog) != 0 && errors++ < 5)
            printf("  fwd: a tile is cut although tiles_never_cut\n");
          cols.clear();
          if (log_cols == 6)
            lane_columns<8>(rp, wt, tb, p.ts.klog, lane, cols);
          else
            lane_columns<4>(rp, wt, tb, p.ts.klog, lane, cols);
          for (auto& rc : cols) {
            const int64_t q = query_row_index(p, c, brow + (lane >> 2) + 8 * rc.first, 0);
            if (q < 0) continue;  // row past the group's end: not stored
            const int64_t k = key_row_index(p, c, tb, rc.second, 0);
            if (k < 0) {
              if (errors++ < 5) printf("  fwd: query %lld computes a key outside the loaded box\n", (long long)q);
              continue;
            }
            cnt[q * N + k]++;
          }
        }
      }
  });
  return errors;
}

int check_key_stationary(const Geo& g, std::vector<int>& cnt, int log_rows, int log_cols) {
  KernelParams p = params_of(g);
  p.ts = choose_key_stationary(p, log_rows, log_cols);
  set_mask_constants(p);
  set_grid(p, p.ts.klog);
  const int64_t N = p.tokens;
  int errors = 0;
  std::vector<std::pair<int, int>> cols;
  for (int gi = 0; gi < p.groups; ++gi)
    for (int64_t t = 0; t < p.tiles; ++t) {
      const CtaCoord cta = cta_at(p, gi, t);
      KeyCta c;
      if (!setup_key_cta(p, cta, c)) continue;
      {  // The loaders' key rows (key_tile_rows) against own_key_row_index, for kv head 2 of 3
         // of batch element 1 (the geometries have one of each).
        KernelParams pr = p;
        pr.heads_kv = 3;
        KeyCta cb = c;
        cb.cta.b = 1, cb.cta.head = 2;
        const TileRows kr = key_tile_rows(pr, cb);
        for (int r = 0; r < (1 << (p.ts.klog[0] + p.ts.klog[1] + p.ts.klog[2])); ++r)
          if (kr(p.ts.klog, r) != own_key_row_index(pr, cb, r) && errors++ < 5)
            printf("  key tile row %d is not own_key_row_index's\n", r);
      }
      Window tab[kMaxTableEntries];
      for (int e = 0; e < table_entries(p.ts.klog); ++e) tab[e] = key_inverse_entry(p, c, e);
      {
        // Head-outer walk over G = 3 query heads, as the dK/dV kernel loads them.
        const int G = 3;
        TileWalker walk;
        walk.reset();
        int head = 0;
        for (int it = 0; it < G * c.n_q; ++it) {
          if (it && walk.next_wraps(c.nq)) ++head;
          int tw[3], td[3];
          q_tile_at(p, c, walk.t, tw);
          q_tile_begin(p, c, it % c.n_q, td);
          if (head != it / c.n_q || tw[0] != td[0] || tw[1] != td[1] || tw[2] != td[2]) {
            if (errors++ < 5) printf("  dkdv: tile walk differs at %d\n", it);
          }
        }
        for (int it = 0; it < c.n_q; ++it) {
          int td[3];
          q_tile_begin(p, c, it, td);
          const GatherTile gt = q_gather(p, c, td, 0, 1);
          for (int r = 0; r < (1 << log_cols); ++r) {
            const int64_t want = q_row_index(p, c, td, r, 0);
            const bool valid = (gt.valid >> r) & 1ull;
            if (valid != (want >= 0) || (valid && gt.base + int64_t(tile_row_delta(p, p.ts.qlog, r)) * gt.stride != want)) {
              if (errors++ < 5) printf("  dkdv: gather row %d of tile %d wrong\n", r, it);
            }
          }
        }
      }
      for (int warp = 0; warp < (1 << log_rows) / 16; ++warp)
        for (int lane = 0; lane < 32; ++lane) {
          RowPartners rp;
          WarpTileTest wt;
          key_rows(p, c, tab, warp, lane, rp, wt);
          for (int it = 0; it < c.n_q; ++it) {
            int tb[3];
            q_tile_begin(p, c, it, tb);
            if (!wt.meets(tb, p.ts.qlog)) continue;
            cols.clear();
            const bool inside = wt.inside(tb, p.ts.qlog);
            if (log_cols == 6)
              lane_columns<8>(rp, wt, tb, p.ts.qlog, lane, cols);
            else
              lane_columns<4>(rp, wt, tb, p.ts.qlog, lane, cols);
            for (auto& rc : cols) {
              const int64_t k = own_key_row_index(p, c, 16 * warp + (lane >> 2) + 8 * rc.first);
              if (k < 0) continue;
              const int64_t q = q_row_index(p, c, tb, rc.second, 0);
              if (q < 0) {
                if (inside && errors++ < 5) printf("  dkdv: mask-free tile holds a query past the group\n");
                continue;  // zero Q/dO rows: contributes exactly 0 in the masked path too
              }
              cnt[q * N + k]++;
            }
          }
        }
    }
  return errors;
}

// The resident-box kernels (resident_box.h): false when the plan does not take the geometry.
// Every CTA's box must fit the planned rows, every warp walk at most 4 tiles, and every column a
// lane computes must be a box row holding that key, addressed by the lane that loads it.
bool check_box(const Geo& g, std::vector<int>& cnt, int& errors) {
  KernelParams p = params_of(g);
  int box_rows = 0;
  if (!plan_resident_box(p, BoxSmem{0, 1, 1 << 30}, box_rows)) return false;
  set_mask_constants(p);
  set_grid(p, p.ts.qlog);
  const int64_t N = p.tokens;
  std::vector<std::pair<int, int>> cols;
  for_each_query_cta(p, [&](const QueryCta& c, const Window* tab) {
    const ResidentBox bx = resident_box(c.kb, c.ke);
    if (bx.rows() > box_rows && errors++ < 5) printf("  box: %d rows, plan %d\n", bx.rows(), box_rows);
    // The loaders' cursors (steps of 16, 32 and 128 rows) against direct decomposition, and
    // the rows they load (row_map) against token_row at those positions, for head 2 of 3 of
    // batch element 1 (the geometries have one of each).
    KernelParams pr = p;
    pr.heads_kv = 3;
    const RowMap rows = row_map(pr, 1, c.cta.grp, bx.b, 2, 3);
    for (int step : {16, 32, 128})
      for (int r0 = 0; r0 < step && r0 < bx.rows(); r0 += 7) {
        BoxCursor cur(bx, r0, step);
        for (int r = r0; r < bx.rows(); r += step, cur.advance()) {
          int pos[3];
          cur.position(bx, pos);
          const int want[3] = {bx.b[0] + r / (bx.n[1] * bx.n[2]), bx.b[1] + r / bx.n[2] % bx.n[1],
                               bx.b[2] + r % bx.n[2]};
          if ((pos[0] != want[0] || pos[1] != want[1] || pos[2] != want[2]) && errors++ < 5)
            printf("  box: cursor off at row %d\n", r);
          int x[3];
          for (int i = 0; i < 3; ++i) x[i] = want[i] * p.dil[i] + c.cta.grp[i];
          if (rows.at(cur.t) != token_row(pr, 1, x, 2, 3) && errors++ < 5)
            printf("  box: row %d loaded from the wrong token row\n", r);
        }
      }
    for (int warp = 0; warp < 4; ++warp)
      for (int lane = 0; lane < 32; ++lane) {
        RowPartners rp;
        WarpTileTest wt;
        query_rows(p, c, tab, warp, lane, rp, wt);
        WarpBoxWalk walk(wt, p.ts.klog);
        if (walk.n > 4 && errors++ < 5) printf("  box: a warp walks %d tiles\n", walk.n);
        for (int j = 0; j < walk.n; ++j, walk.next()) {
          int tb[3];
          walk.tile(p.ts.klog, tb);
          cols.clear();
          lane_columns<8>(rp, wt, tb, p.ts.klog, lane, cols);
          for (auto& rc : cols) {
            const int64_t q = query_row_index(p, c, 16 * warp + (lane >> 2) + 8 * rc.first, 0);
            if (q < 0) continue;
            // The lane whose ldmatrix address serves column rc.second, and the row it reads.
            int ll = 0;
            while (lane_column(ll) != (rc.second & 15)) ++ll;
            const int brow = lane_rows(bx, tb, p.ts.klog, ll)(rc.second >> 4);
            int tt[3], pos[3], bpos[3];
            split_row(rc.second, p.ts.klog, tt);
            bool in = true;
            for (int i = 0; i < 3; ++i) {
              pos[i] = tb[i] + tt[i];
              in = in && pos[i] >= bx.b[i] && pos[i] < bx.b[i] + bx.n[i];
            }
            if (in) BoxCursor(bx, brow, 1).position(bx, bpos);
            if (!in || bpos[0] != pos[0] || bpos[1] != pos[1] || bpos[2] != pos[2]) {
              if (errors++ < 5) printf("  box: a computed column is not its box row\n");
              continue;
            }
            const int64_t k = key_row_index(p, c, tb, rc.second, 0);
            cnt[q * N + k]++;
          }
        }
      }
  });
  return true;
}

int compare(const Geo& g, const std::vector<int>& cnt, const char* what) {
  const int N = g.L[0] * g.L[1] * g.L[2];
  int bad = 0;
  for (int q = 0; q < N; ++q)
    for (int k = 0; k < N; ++k) {
      const int want = neighbour(g, q, k) ? 1 : 0;
      if (cnt[int64_t(q) * N + k] != want) {
        if (bad++ < 5) printf("  %s: q=%d k=%d computed %d times, want %d\n", what, q, k, cnt[int64_t(q) * N + k], want);
      }
    }
  return bad;
}

}  // namespace

// key_tile_query_range (whose searches assume every window holds its query and at most k
// positions) against the definition, on every key range of small groups: the queries p, in
// order, whose window meets [kb, ke). Returns the number of ranges that differ.
int check_inverse_ranges(int& checked) {
  int bad = 0;
  for (int Lg = 2; Lg <= 20; ++Lg)
    for (int k = 2; k <= Lg; ++k)
      for (int s = 1; s <= k; ++s)
        for (int causal = 0; causal < 2; ++causal)
          for (int kb = 0; kb < Lg; ++kb)
            for (int ke = kb + 1; ke <= Lg; ++ke) {
              int first = Lg, last = -1;
              for (int q = 0; q < Lg; ++q) {
                const Window w = window_positions(q, Lg, k, s, causal != 0);
                if (w.start < ke && w.end > kb) first = first < q ? first : q, last = q;
              }
              const Window r = key_tile_query_range(kb, ke, Lg, k, s, causal != 0);
              ++checked;
              if (r.start != first || r.end != last + 1) {
                if (bad++ < 5)
                  printf("  inverse range: Lg=%d k=%d s=%d causal=%d keys [%d, %d): [%d, %d), want "
                         "[%d, %d)\n", Lg, k, s, causal, kb, ke, r.start, r.end, first, last + 1);
              }
            }
  return bad;
}

// FastDiv (the grid decode's divisions) against / and %: every divisor up to 2048 on dividends
// near its multiples and at random, random divisors up to 2^31 with powers of two and their
// neighbours, and the largest dividend (2^31 - 1). Returns the number of wrong quotients or
// remainders.
long check_fast_div(long& checked) {
  std::mt19937_64 rng(7);
  long bad = 0;
  auto check = [&](uint32_t d, uint32_t n) {
    uint32_t r;
    const uint32_t q = FastDiv::of(d).divmod(n, r);
    ++checked;
    if ((q != n / d || r != n % d) && bad++ < 5) printf("  fast_div: %u / %u = %u rem %u\n", n, d, q, r);
  };
  for (uint32_t d = 1; d <= 2048; ++d) {
    for (uint32_t n = 0; n < 3 * d + 5; ++n) check(d, n);
    for (int i = 0; i < 500; ++i) {
      const uint32_t n = uint32_t(rng() % (1u << 31)), m = n / d * d;
      check(d, n), check(d, m);
      if (m) check(d, m - 1);
    }
    check(d, 0x7fffffffu);
  }
  for (int i = 0; i < 100000; ++i) {
    uint32_t d = uint32_t(rng() % 0x7fffffffu) + 1;
    if (i % 3 == 0) d = std::max(1u, (1u << (rng() % 31)) + uint32_t(rng() % 3) - 1u);
    const uint32_t n = uint32_t(rng() % (1u << 31));
    check(d, n), check(d, 0x7fffffffu), check(d, n / d * d), check(d, d - 1);
  }
  return bad;
}

// small_div (the box cursors' divisions) against /, over the dividends and divisors a box can
// have (rows < 2^12), with its quotient before truncation also moved by twice the float error its
// exactness argument allows, at either sign. Returns the number of wrong answers.
long check_small_div(long& checked) {
  long bad = 0;
  for (int n = 1; n < 4096; ++n)
    for (int a = 0; a < 4096; ++a) {
      const double x = (a + 0.5) / n;
      const int lo = int(x * (1 - 0x1p-21)), hi = int(x * (1 + 0x1p-21));
      ++checked;
      if ((small_div(a, n) != a / n || lo != a / n || hi != a / n) && bad++ < 5)
        printf("  small_div: %d / %d\n", a, n);
    }
  return bad;
}

// nonfinite_lanes16 (the stored chunks' NaN/Inf test) against the lane-by-lane definition, for
// both 16-bit types: every 16-bit value in each lane beside a set of other-lane values (the
// high lane's answer depends on the low lane only through its borrow). An exhaustive run over
// all 2^32 words (session 14) found none wrong. Returns the number of wrong answers.
template <uint32_t e>
long check_nonfinite_lanes16(long& checked) {
  const uint32_t others[] = {0u, 1u, e - 1u, e, e | 1u, e | 0x8000u, 0x7fffu, 0x8000u, 0xffffu,
                             e ^ 0x0400u, 0x3c00u, 0xbc00u, e - 0x80u, 0x7bffu, 0x7f7fu, 0xfc00u};
  long bad = 0;
  auto check = [&](uint32_t w) {
    const bool want = (w & e) == e || ((w >> 16) & e) == e;
    ++checked;
    if (want != (nonfinite_lanes16<e>(w) != 0u) && bad++ < 5) printf("  nonfinite: %08x\n", w);
  };
  for (uint32_t a = 0; a < 0x10000u; ++a)
    for (uint32_t b : others) check(a | b << 16), check(b | a << 16);
  return bad;
}

int main(int argc, char** argv) {
  const int cases = argc > 1 ? atoi(argv[1]) : 300;
  std::mt19937 rng(1234);
  auto uni = [&](int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); };
  int failed = 0, box_cases = 0;
  for (int cs = 0; cs < cases; ++cs) {
    Geo g{};
    g.rank = uni(1, 3);
    const int maxL = g.rank == 1 ? 300 : (g.rank == 2 ? 40 : 14);
    for (int i = 0; i < 3; ++i) {
      if (i < 3 - g.rank) {
        g.L[i] = 1, g.k[i] = 1, g.s[i] = 1, g.d[i] = 1, g.c[i] = 0;
        continue;
      }
      g.L[i] = uni(2, maxL);
      g.d[i] = uni(0, 3) == 0 ? uni(1, g.L[i] / 2) : 1;
      g.k[i] = uni(2, g.L[i] / g.d[i]);
      g.s[i] = uni(0, 2) == 0 ? uni(1, g.k[i]) : 1;
      g.c[i] = uni(0, 3) == 0;
    }
    // The first cases: blocked and tile-aligned strided geometries (tiles_never_cut holds for
    // some of their tilings), and one whose windows (96 keys) are whole 32-key tiles but not
    // whole 64-key ones.
    const Geo fixed[] = {{1, {1, 1, 256}, {1, 1, 128}, {1, 1, 128}, {1, 1, 1}, {0, 0, 0}},
                         {2, {1, 32, 32}, {1, 16, 16}, {1, 16, 8}, {1, 1, 1}, {0, 0, 0}},
                         {3, {8, 16, 16}, {4, 8, 8}, {4, 8, 8}, {1, 1, 1}, {0, 0, 0}},
                         {1, {1, 1, 256}, {1, 1, 96}, {1, 1, 64}, {1, 1, 1}, {0, 0, 0}}};
    if (cs < int(sizeof(fixed) / sizeof(fixed[0]))) g = fixed[cs];
    const int N = g.L[0] * g.L[1] * g.L[2];
    std::vector<int> cnt(size_t(N) * N);
    int bad = 0;
    const int qcfg[3][3] = {{6, 6, 1}, {7, 5, 2}, {6, 5, 1}};  // log rows, log cols, blocks/warp
    for (const auto& qc : qcfg) {
      std::fill(cnt.begin(), cnt.end(), 0);
      bad += check_query_stationary(g, cnt, qc[0], qc[1], qc[2]);
      bad += compare(g, cnt, qc[2] == 2 ? "query-stationary/mt2" : "query-stationary");
    }
    for (int lc : {6, 5}) {
      std::fill(cnt.begin(), cnt.end(), 0);
      bad += check_key_stationary(g, cnt, 6, lc);
      bad += compare(g, cnt, lc == 6 ? "key-stationary/64" : "key-stationary/32");
    }
    {
      std::fill(cnt.begin(), cnt.end(), 0);
      int errs = 0;
      if (check_box(g, cnt, errs)) {
        ++box_cases;
        bad += errs + compare(g, cnt, "query-stationary/box");
      }
    }
    if (bad) {
      ++failed;
      printf("case %d FAILED: L=(%d,%d,%d) k=(%d,%d,%d) s=(%d,%d,%d) d=(%d,%d,%d) causal=(%d,%d,%d)\n", cs,
             g.L[0], g.L[1], g.L[2], g.k[0], g.k[1], g.k[2], g.s[0], g.s[1], g.s[2], g.d[0], g.d[1],
             g.d[2], g.c[0], g.c[1], g.c[2]);
    }
  }
  int inverse_ranges = 0;
  const int inverse_wrong = check_inverse_ranges(inverse_ranges);
  printf("tiling_check: inverse ranges checked: %d, wrong: %d\n", inverse_ranges, inverse_wrong);
  printf("tiling_check: resident-box plans checked: %d\n", box_cases);
  printf("tiling_check: tilings with no tile cut checked: %d\n", never_cut_tilings);
  long div_checked = 0, small_checked = 0, lanes_checked = 0;
  const long div_wrong = check_fast_div(div_checked);
  const long small_wrong = check_small_div(small_checked);
  const long lanes_wrong = check_nonfinite_lanes16<0x7c00u>(lanes_checked) +
                           check_nonfinite_lanes16<0x7f80u>(lanes_checked);
  printf("tiling_check: fast_div checked: %ld, wrong: %ld\n", div_checked, div_wrong);
  printf("tiling_check: small_div checked: %ld, wrong: %ld\n", small_checked, small_wrong);
  printf("tiling_check: nonfinite_lanes16 checked: %ld, wrong: %ld\n", lanes_checked, lanes_wrong);
  printf("tiling_check: %d of %d geometries failed\n", failed, cases);
  return failed || inverse_wrong || div_wrong || small_wrong || lanes_wrong ? 1 : 0;
}
