// Backward, dk/dv pass, key-stationary. One task = (batch, kv head, key tile). Along each dim
// the queries that see key position a form one interval (query_box of [a, a + 1): window
// bounds are monotone in the query position), and a query sees a key iff it does so in every
// dim, so a key's queries are the product of three intervals. The task gathers the tile's
// query box (q, dout, lse, delta of every head of the group) once; then per key, with dk and
// dv accumulated in registers: P and dS for all its (query, head) rows, dv += P dout,
// dk += dS q.
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

namespace dkdv_detail {

struct Scratch {
  std::vector<float> q, dout, lse, delta, s, dp, row;
  std::vector<Range> qi[3];
};

template <int C>
JAX_NA_CPU_CLONES void dkdv_task(const Problem& p, const BwdArgs& a, const Tile& t, int64_t b,
                                 int64_t hk, Scratch& s) {
  const int64_t D = p.head_dim, Hkv = p.heads_kv, G = p.group_size(), T = p.tokens();
  Row<C> k(row_chunks(D)), v(row_chunks(D)), dk(row_chunks(D)), dv(row_chunks(D));
  const int64_t Dp = 8 * int64_t(k.chunks());

  // Query interval of every key position of the tile, per dim, and their union.
  Range qbox[3];
  int64_t most = G;  // bound on the (query, head) rows of one key
  for (int i = 0; i < 3; ++i) {
    std::vector<Range>& qi = s.qi[i];
    qi.clear();
    int longest = 0;
    for (int x = t.pos[i].begin; x < t.pos[i].end; ++x) {
      qi.push_back(query_box(Range{x, x + 1}, t.Lg[i], p.dim[i]));
      longest = std::max(longest, qi.back().size());
    }
    qbox[i] = Range{qi.front().begin, qi.back().end};
    most *= longest;
  }
  const int64_t nq = volume(qbox) * G;
  for (auto* buf : {&s.q, &s.dout}) buf->resize(std::max<int64_t>(nq, 1) * Dp);
  for (auto* buf : {&s.lse, &s.delta}) buf->resize(std::max<int64_t>(nq, 1));
  for (auto* buf : {&s.s, &s.dp}) buf->resize(most + 8);
  if (nq > 0) {
    gather_box(p, a.q, p.heads, b, hk * G, G, t, qbox, Dp, s.q.data());
    gather_box(p, a.dout, p.heads, b, hk * G, G, t, qbox, Dp, s.dout.data());
    gather_stats(p, a.lse, b, hk * G, G, t, qbox, s.lse.data());
    gather_stats(p, a.delta, b, hk * G, G, t, qbox, s.delta.data());
  }
  const int64_t m1 = qbox[1].size(), m2 = qbox[2].size();
  float* sc = s.s.data();
  float* dp = s.dp.data();

  for (int a0 = t.pos[0].begin; a0 < t.pos[0].end; ++a0) {
    const Range I0 = s.qi[0][a0 - t.pos[0].begin];
    for (int a1 = t.pos[1].begin; a1 < t.pos[1].end; ++a1) {
      const Range I1 = s.qi[1][a1 - t.pos[1].begin];
      for (int a2 = t.pos[2].begin; a2 < t.pos[2].end; ++a2) {
        const Range I2 = s.qi[2][a2 - t.pos[2].begin];
        const int64_t off = ((b * T + token_of(p, t, a0, a1, a2)) * Hkv + hk) * D;
        load(k, load_padded(a.k, p.dtype, off, D, Dp, s.row.data()), p.scale);
        load(v, load_padded(a.v, p.dtype, off, D, Dp, s.row.data()));
        const int64_t run = int64_t(I2.size()) * G;  // contiguous (query, head) rows
        int64_t n = 0;
        for (int q0 = I0.begin; q0 < I0.end; ++q0)
          for (int q1 = I1.begin; q1 < I1.end; ++q1, n += run) {
            const int64_t r = (((q0 - qbox[0].begin) * m1 + (q1 - qbox[1].begin)) * m2 + (I2.begin - qbox[2].begin)) * G;
            dots(k, s.q.data() + r * Dp, run, sc + n);
            dots(v, s.dout.data() + r * Dp, run, dp + n);
            for (int64_t j = 0; j < run; ++j) {
              sc[n + j] -= s.lse[r + j];
              dp[n + j] -= s.delta[r + j];
            }
          }
        const int64_t n8 = pad8(sc, n, -__builtin_inff());
        pad8(dp, n, 0.f);
        probs_and_grads(sc, dp, n8, 0.f, 0.f);  // lse and delta already subtracted
        zero(dk);
        zero(dv);
        n = 0;
        for (int q0 = I0.begin; q0 < I0.end; ++q0)
          for (int q1 = I1.begin; q1 < I1.end; ++q1) {
            const int64_t r = (((q0 - qbox[0].begin) * m1 + (q1 - qbox[1].begin)) * m2 + (I2.begin - qbox[2].begin)) * G;
            for (int64_t j = 0; j < run; ++j, ++n) {
              axpy(dv, sc[n], s.dout.data() + (r + j) * Dp);
              axpy(dk, dp[n], s.q.data() + (r + j) * Dp);
            }
          }
        store(dk, s.row.data());
        store_row(a.dk, p.dtype, off, D, s.row.data(), p.scale);
        store(dv, s.row.data());
        store_row(a.dv, p.dtype, off, D, s.row.data(), 1.f);
      }
    }
  }
}

}  // namespace dkdv_detail

void bwd_dkdv(const Problem& p, const BwdArgs& a) {
  using dkdv_detail::Scratch;
  const int64_t Dp = 8 * int64_t(row_chunks(p.head_dim));
  int tile[3];
  choose_tile(p, tile);
  const std::vector<Tile> tiles = make_tiles(p, tile);  // key tiles
  const int workers = num_workers(tile_tasks(p, tiles), pass_work(p));
  std::vector<Scratch> scratch(workers);
  for (Scratch& s : scratch) s.row.resize(Dp);  // the rest grows per task as needed
  for_each_tile_task(p, tiles, workers, [&](auto tag, const Tile& t, int64_t b, int64_t hk, int w) {
    dkdv_detail::dkdv_task<decltype(tag)::value>(p, a, t, b, hk, scratch[w]);
  });
}

}  // namespace cpu
}  // namespace jax_na
