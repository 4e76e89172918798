// Backward, dq pass. One task = (batch, kv head, query tile), structured like the forward:
// per query and head, the window's scores and dout.v, then dq = scale * sum_j dS_j k_j with
// the accumulator in registers.
#include <algorithm>
#include <vector>

#include "bwd_passes.h"
#include "convert.h"
#include "parallel.h"
#include "rows.h"
#include "tasks.h"
#include "tiling.h"

namespace jax_na {
namespace cpu {

namespace dq_detail {

struct Scratch {
  std::vector<float> k, v, s, dp, row;
};

template <int C>
JAX_NA_CPU_CLONES void dq_task(const Problem& p, const BwdArgs& a, const Tile& t, int64_t b,
                               int64_t hk, Scratch& s) {
  const int64_t D = p.head_dim, H = p.heads, G = p.group_size(), T = p.tokens();
  Row<C> q(row_chunks(D)), dout(row_chunks(D)), acc(row_chunks(D));
  const int64_t Dp = 8 * int64_t(q.chunks());
  const KeyBox box(p, t);
  gather_box(p, a.k, p.heads_kv, b, hk, 1, t, box.r, Dp, s.k.data());
  gather_box(p, a.v, p.heads_kv, b, hk, 1, t, box.r, Dp, s.v.data());
  float* sc = s.s.data();
  float* dp = s.dp.data();

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
          load(dout, load_padded(a.dout, p.dtype, row * D, D, Dp, s.row.data()));
          const float lse = a.lse[row], delta = a.delta[row];
          int64_t n = 0;
          for (int a0 = w0.begin; a0 < w0.end; ++a0)
            for (int a1 = w1.begin; a1 < w1.end; ++a1, n += run) {
              const int64_t r = box.row(a0, a1, w2.begin);
              dots(q, s.k.data() + r * Dp, run, sc + n);
              dots(dout, s.v.data() + r * Dp, run, dp + n);
            }
          const int64_t n8 = pad8(sc, n, -__builtin_inff());
          pad8(dp, n, 0.f);
          probs_and_grads(sc, dp, n8, lse, delta);  // sc = P, dp = dS
          zero(acc);
          n = 0;
          for (int a0 = w0.begin; a0 < w0.end; ++a0)
            for (int a1 = w1.begin; a1 < w1.end; ++a1, n += run) {
              const int64_t r = box.row(a0, a1, w2.begin);
              axpy_rows(acc, dp + n, s.k.data() + r * Dp, run);
            }
          store(acc, s.row.data());
          store_row(a.dq, p.dtype, row * D, D, s.row.data(), p.scale);
        }
      }
    }
  }
}

}  // namespace dq_detail

void bwd_dq(const Problem& p, const BwdArgs& a) {
  using dq_detail::Scratch;
  const int64_t Dp = 8 * int64_t(row_chunks(p.head_dim));
  int tile[3];
  choose_tile(p, tile);
  const std::vector<Tile> tiles = make_tiles(p, tile);
  const int64_t max_box = max_key_box(p, tiles);
  const int64_t max_keys = int64_t(p.dim[0].kernel) * p.dim[1].kernel * p.dim[2].kernel;
  const int workers = num_workers(tile_tasks(p, tiles), pass_work(p));
  std::vector<Scratch> scratch(workers);
  for (Scratch& s : scratch) {
    s.k.resize(max_box * Dp);
    s.v.resize(max_box * Dp);
    s.s.resize(max_keys + 8);
    s.dp.resize(max_keys + 8);
    s.row.resize(Dp);
  }
  for_each_tile_task(p, tiles, workers, [&](auto tag, const Tile& t, int64_t b, int64_t hk, int w) {
    dq_detail::dq_task<decltype(tag)::value>(p, a, t, b, hk, scratch[w]);
  });
}

}  // namespace cpu
}  // namespace jax_na
