// The (batch, kv head, tile) task loop shared by the CPU passes.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/problem.h"
#include "parallel.h"
#include "rows.h"
#include "tiling.h"

namespace jax_na {
namespace cpu {

// Number of (batch, kv head, tile) tasks.
inline int64_t tile_tasks(const Problem& p, const std::vector<Tile>& tiles) {
  return p.batch * p.heads_kv * int64_t(tiles.size());
}

// Runs fn(tag, tile, b, hk, worker) for every (batch, kv head, tile) task on `workers` workers;
// tag is std::integral_constant<int, C> with C the Row parameter of head_dim (with_row_type).
template <class Fn>
void for_each_tile_task(const Problem& p, const std::vector<Tile>& tiles, int workers,
                        const Fn& fn) {
  const int64_t ntiles = int64_t(tiles.size()), tasks = p.batch * p.heads_kv * ntiles;
  with_row_type(row_chunks(p.head_dim), [&](auto tag) {
    parallel_for(tasks, workers, [&](int64_t task, int w) {
      const int64_t hk = (task / ntiles) % p.heads_kv, b = task / (ntiles * p.heads_kv);
      fn(tag, tiles[task % ntiles], b, hk, w);
    });
  });
}

}  // namespace cpu
}  // namespace jax_na
