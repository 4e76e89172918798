// CPU forward. One task = (batch, kv head, query tile): gather the tile's key/value box once
// as padded float32 rows, then for each query and each query head of the group: scores of its
// window (at most prod(kernel) floats), softmax, and the probability-weighted sum of values,
// with the query row and the output accumulator held in registers (Row<C>).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "convert.h"
#include "cpu_na.h"
#include "parallel.h"
#include "rows.h"
#include "tasks.h"
#include "tiling.h"

namespace jax_na {
namespace cpu {

namespace fwd_detail {

struct Scratch {
  std::vector<float> k, v, scores, row;
};

template <int C>
JAX_NA_CPU_CLONES void fwd_task(const Problem& p, const FwdArgs& a, const Tile& t, int64_t b,
                                int64_t hk, Scratch& s) {
  const int64_t D = p.head_dim, H = p.heads, G = p.group_size(), T = p.tokens();
  Row<C> q(row_chunks(D)), acc(row_chunks(D));
  const int64_t Dp = 8 * int64_t(q.chunks());
  const KeyBox box(p, t);
  gather_box(p, a.k, p.heads_kv, b, hk, 1, t, box.r, Dp, s.k.data());
  gather_box(p, a.v, p.heads_kv, b, hk, 1, t, box.r, Dp, s.v.data());
  float* scores = s.scores.data();

  for (int p0 = t.pos[0].begin; p0 < t.pos[0].end; ++p0) {
    const Range w0 = window_range(p0, t.Lg[0], p.dim[0]);
    for (int p1 = t.pos[1].begin; p1 < t.pos[1].end; ++p1) {
      const Range w1 = window_range(p1, t.Lg[1], p.dim[1]);
      for (int p2 = t.pos[2].begin; p2 < t.pos[2].end; ++p2) {
        const Range w2 = window_range(p2, t.Lg[2], p.dim[2]);
        const int64_t tok = token_of(p, t, p0, p1, p2), run = w2.size();
        for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
          const int64_t row = (b * T + tok) * H + h;
          load(q, load_padded(a.q, p.dtype, row * D, D, Dp, s.row.data()), p.scale);
          // Scaled scores of the window: one contiguous run of box rows per (a0, a1).
          int64_t n = 0;
          for (int a0 = w0.begin; a0 < w0.end; ++a0)
            for (int a1 = w1.begin; a1 < w1.end; ++a1, n += run) {
              const int64_t r = box.row(a0, a1, w2.begin);
              dots(q, s.k.data() + r * Dp, run, scores + n);
            }
          const int64_t n8 = pad8(scores, n, -std::numeric_limits<float>::infinity());
          const float m = max8(scores, n8);
          const float sum = exp_shift_sum(scores, n8, m);  // scores become exp(score - max)
          zero(acc);
          n = 0;
          for (int a0 = w0.begin; a0 < w0.end; ++a0)
            for (int a1 = w1.begin; a1 < w1.end; ++a1, n += run) {
              const int64_t r = box.row(a0, a1, w2.begin);
              axpy_rows(acc, scores + n, s.v.data() + r * Dp, run);
            }
          store(acc, s.row.data());
          store_row(a.out, p.dtype, row * D, D, s.row.data(), 1.f / sum);
          a.lse[row] = m + std::log(sum);
        }
      }
    }
  }
}

}  // namespace fwd_detail

void fwd(const Problem& p, const FwdArgs& a) {
  using fwd_detail::Scratch;
  const int64_t Dp = 8 * int64_t(row_chunks(p.head_dim));
  int tile[3];
  choose_tile(p, tile);
  const std::vector<Tile> tiles = make_tiles(p, tile);
  const int64_t max_box = max_key_box(p, tiles);
  const int workers = num_workers(tile_tasks(p, tiles), pass_work(p));
  std::vector<Scratch> scratch(workers);
  for (Scratch& s : scratch) {
    s.k.resize(max_box * Dp);
    s.v.resize(max_box * Dp);
    s.scores.resize(int64_t(p.dim[0].kernel) * p.dim[1].kernel * p.dim[2].kernel + 8);
    s.row.resize(Dp);
  }
  for_each_tile_task(p, tiles, workers, [&](auto tag, const Tile& t, int64_t b, int64_t hk, int w) {
    fwd_detail::fwd_task<decltype(tag)::value>(p, a, t, b, hk, scratch[w]);
  });
}

}  // namespace cpu
}  // namespace jax_na
