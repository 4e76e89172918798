// Warp-specialised forward kernel of the Hopper family (sm_90a): TMA producers, two consumer
// warpgroups in ping-pong, persistent CTAs.
//
// CTA: 2 consumer warpgroups + 1 producer warpgroup (384 threads; setmaxnreg moves registers
// to the consumers), one per SM; it computes query tile blockIdx.x, then the tiles it takes from
// a counter, or round robin where the tiles cost the same (ids in p.tile_order:
// fused::order_tiles_for_l2). It is a programmatic dependent launch: its prologue runs under
// the tail of the kernel before it. A query tile has 128 positions
// (shape 2^qlog per dim) of one (batch, head, dilation group); consumer warpgroup g owns rows
// [64 g, 64 g + 64), an aligned sub-box of the tile. Two producer threads walk the key/value
// tiles (BN = 64 or 128 keys, shape 2^klog) covering the box of each query tile's windows and
// load each as TMA boxes into rings of KS K slots and VS V slots (full / empty mbarriers per
// slot), several tiles ahead and on into the next query tile, so its first tiles load while the
// consumers store O. Q is double-buffered (single at head_dim 256) and loaded by TMA one query
// tile ahead. The warpgroups share every key/value tile. Each warpgroup computes only the tiles
// its own rows see, one contiguous run of the load order (SplitWalk), and releases the others at
// once. Per computed tile (mainloop.h):
//   issue S_j = Q K_j^T and O += P_prev V_prev (the issue returns once the tensor pipe has
//   accepted them); build S_j's masks where needed (mainloop.h: tile_mask) while they run;
//   wait S_j; apply them; wait P_prev V_prev; P_j straight into the P fragments against the
//   running maxima where they hold, with no row max (nearly every tile:
//   fused::OnlineSoftmax::scores_at_max), else the exact update and O rescaled
//   (Consumer::next_p). (The softmax under its own P V measured slower: NOTES.md h16.)
// Ping-pong: named barriers hand the right to issue MMAs back and forth between the
// warpgroups, so one's softmax runs under the other's MMAs. Epilogue: each warp stores its O
// rows from registers (mainloop.h), and a warp whose rows hold a NaN or an Inf recomputes those
// chunks exactly (repair/in_tile.cuh): no repair launch follows this kernel, and no barrier
// joins the two warpgroups' epilogues (one starts its next query tile under the other's
// epilogue).
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "../common/problem.h"
#include "../fused/arch.h"
#include "../fused/params.h"
#include "../fused/query_tile.h"
#include "../repair/in_tile.cuh"
#include "mainloop.h"
#include "smem_layout.h"
#include "tma.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

using fused::KernelParams;

// A query tile handed to the CTA: its id (ctas or more: none left) and geometry.
struct TileSlot {
  uint32_t id;
  fused::QueryCta c;
};

template <typename T, int D, int BN, bool kBias = false>
struct WsConfig {
  static_assert(D == 64 || D == 128 || (D == 256 && BN == 64), "head_dim 64, 128 or 256");
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * kConsumers + 128;  // + the producer warpgroup
  // Registers per thread after setmaxnreg: 128 x 48 + 256 x 224 <= 384 x 168 (the launch's
  // pool). The producer keeps the tile geometry in shared memory (TileSlot), not registers;
  // decoding a tile in p.tile_order takes it past 40.
  // At head_dim 256 (O alone is 128 registers) four values spill (16 bytes, stored and reloaded
  // outside the key/value tile loop); 232 / 40 spilled the producer instead.
  static constexpr int kProducerRegs = 48;
  static constexpr int kConsumerRegs = 224;
  static constexpr int kRows = 64 * kConsumers;
  static constexpr int kCols = BN;  // keys per tile: 64, or 128 for 1-D tiles
  static constexpr int kLogCols = BN == 128 ? 7 : 6;
  // K and V slots (V of a tile is read one tile later than its K); 128-key tiles, and 64-key
  // tiles at head_dim 256: 32 KB each.
  static constexpr int KS = BN == 128 || D == 256 ? 2 : 3;
  // kBias: a V slot gives its 32 KB for the BiasTile (+0.3% on A2: NOTES.md, session 20).
  static constexpr int VS = BN == 128 ? (kBias ? 2 : 3) : (D == 256 ? 2 : 4);
  using QTile = GmmaTile<kRows, D>;
  using KVTile = GmmaTile<kCols, D>;
  // Q buffers: two (persistent CTAs load the next tile's Q under this one), one at head_dim
  // 256 (64 KB each: two would leave the rings too little of the 227 KB).
  static constexpr int QB = D == 256 ? 1 : 2;
  static constexpr int kK = QB * QTile::kBytes;
  static constexpr int kV = kK + KS * KVTile::kBytes;
  static constexpr int kBiasTile = kV + VS * KVTile::kBytes;
  static constexpr int kTab = kBiasTile + (kBias ? BiasTile::kBytes : 0);
  // mbarriers: full K[KS], full V[VS], empty K[KS], empty V[VS], full Q[2], full tile[2],
  // empty Q[2], free tile[2]; then the two tile slots.
  static constexpr int kBar = kTab + fused::kMaxTableEntries * 8;
  static constexpr int kSlots = kBar + (2 * (KS + VS) + 8) * 8;
  static constexpr int kSmem = kSlots + 2 * int(sizeof(TileSlot)) + 1024;  // + alignment slack
};

// Hand registers between warpgroups (all threads of a warpgroup execute these).
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
#if JAX_NA_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
#if JAX_NA_WGMMA
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ void named_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

// The dim that splits a query tile between the warpgroups: the outermost with extent > 1.
FUSED_HD int split_dim(const int (&qlog)[3]) { return fused::outer_dim(qlog); }

// A ring slot and the parity of its current use: use u of slot u % N has parity (u / N) % 2.
template <int N>
struct Ring {
  int slot = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ void next() {
    if (++slot == N) slot = 0, phase ^= 1u;
  }
};

// The CTA's key/value tiles in the order the producer loads them: the dim that splits the
// query tile between the warpgroups (the outermost one with query extent > 1) outermost. Each
// warpgroup's queries see all tiles along the other dims and an interval along that one, so
// the tiles it computes are one contiguous run of this order.
struct SplitWalk {
  int perm[3];  // walk dim i is tile dim perm[i]
  int n[3];     // tiles per walk dim
  fused::TileWalker w;

  __device__ __forceinline__ SplitWalk(const KernelParams& p, const fused::QueryCta& c) {
    const int d = split_dim(p.ts.qlog);
    perm[0] = d, perm[1] = d == 0 ? 1 : 0, perm[2] = d == 2 ? 1 : 2;
#pragma unroll
    for (int i = 0; i < 3; ++i) n[i] = fused::pick3(c.nk, perm[i]);
    w.reset();
  }
  // First key position of the current tile.
  __device__ __forceinline__ void tile(const KernelParams& p, const fused::QueryCta& c,
                                       int (&tb)[3]) const {
    int t[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) t[i] = perm[0] == i ? w.t[0] : (perm[1] == i ? w.t[1] : w.t[2]);
    fused::kv_tile_at(p, c, t, tb);
  }
  __device__ __forceinline__ void next() { w.next(n); }
  // Walk indices [first, last) of the tiles that meet the box of test `g` (its rows' windows).
  __device__ __forceinline__ void run(const KernelParams& p, const fused::QueryCta& c,
                                      const fused::WarpTileTest& g, int& first, int& last) const {
    const int d = perm[0], lg = fused::pick3(p.ts.klog, d), kb = fused::pick3(c.kb, d);
    const int lo = na_max(fused::pick3(g.any_lo, d) - kb, 0) >> lg;
    const int hi = na_min((fused::pick3(g.any_hi, d) - kb + (1 << lg) - 1) >> lg, n[0]);
    first = g.active && hi > lo ? lo * n[1] * n[2] : 0;
    last = g.active && hi > lo ? hi * n[1] * n[2] : 0;
  }
};

// kRoundRobin: CTA b takes tiles b, b + grid, ... (tiles of equal cost), else from the counter.
// kMasks false: no tile of the problem is cut by a window (fused::tiles_never_cut), so the
// kernel carries no mask code (its presence alone cost A1b 3%: NOTES.md, session 13).
// A template flag, not a branch on p.tile_counter: with both paths the 48-register producer
// spilled 96 bytes.
// kBias: masks by the tensor core (Consumer::issue_s_bias) instead of mask words and selects.
template <typename T, int D, int BN, bool kRoundRobin, bool kMasks = true, bool kBias = false>
__global__ void __launch_bounds__(WsConfig<T, D, BN, kBias>::kThreads, 1)
    hopper_fwd_ws_kernel(const KernelParams p, const __grid_constant__ TmaMaps maps,
                         const uint32_t ctas, const __grid_constant__ Problem pr) {
#if JAX_NA_WGMMA
  using namespace fused;
  using Cfg = WsConfig<T, D, BN, kBias>;
  using QT = typename Cfg::QTile;
  using KV = typename Cfg::KVTile;
  constexpr int KS = Cfg::KS, VS = Cfg::VS;
  constexpr int NT = Consumer<T, D, Cfg::kRows, BN>::NT;
  constexpr int kConsumerThreads = 128 * Cfg::kConsumers;
  extern __shared__ char smem_raw[];
  const AlignedSmem sm = align_smem_1024(smem_raw);
  const uint32_t sQ0 = sm.addr;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  const uint32_t sK = sQ0 + Cfg::kK, sV = sQ0 + Cfg::kV;
  const uint32_t full_k = sQ0 + Cfg::kBar, full_v = full_k + 8 * KS;
  const uint32_t empty_k = full_v + 8 * VS, empty_v = empty_k + 8 * KS;
  const uint32_t full_q = empty_v + 8 * VS, full_id = full_q + 16, empty_q = full_id + 16;
  const uint32_t free_id = empty_q + 16;
  Window* tab = reinterpret_cast<Window*>(sm.ptr + Cfg::kTab);
  // Q of the i-th query tile goes to buffer i % QB (the consumers only read it), one TMA box per
  // warpgroup half (SplitWalk's dim d splits the tile); its full / empty barriers are
  // q_bar(i) + full_q / empty_q, in use i / QB of the buffer (parity q_parity(i)).
  constexpr int QB = Cfg::QB;
  auto q_bar = [&](int i) { return uint32_t(8 * (i % QB)); };
  auto q_parity = [&](int i) { return uint32_t((i / QB) & 1); };
  auto q_buffer = [&](int i) { return sQ0 + (i % QB) * QT::kBytes; };
  auto load_q = [&](const QueryCta& cq, int i) {
    const int d = split_dim(p.ts.qlog);
    mbar_arrive_expect_tx(full_q + q_bar(i), QT::kBytes);
#pragma unroll
    for (int g = 0; g < 2; ++g) {
      const int half = g << (pick3(p.ts.qlog, d) - 1);
      const int qb[3] = {cq.qb[0] + (d == 0 ? half : 0), cq.qb[1] + (d == 1 ? half : 0),
                         cq.qb[2] + (d == 2 ? half : 0)};
      tma_load_tile<QT, D>(&maps.q, q_buffer(i) + g * 64 * QT::kSwizzle, full_q + q_bar(i), p,
                           cq.cta.b, cq.cta.grp, qb, cq.cta.head);
    }
  };
  // Tile scheduling: the K producer thread takes the CTA's query tiles from the counter (after
  // its first, blockIdx.x) about one tile ahead of the consumers, so tiles go out in order to
  // whichever CTA frees first. It publishes the i-th tile in slot i % 2 (full barrier full_id)
  // once the V thread has released tile i - 2 from that slot (free_id; the consumers are done
  // with it by then: empty_q), and loads its Q once the consumers are done with tile i - QB's Q
  // in that buffer (empty_q).
  TileSlot* slots = reinterpret_cast<TileSlot*>(sm.ptr + Cfg::kSlots);
  auto next_id = [&](uint32_t id) {
    return kRoundRobin ? id + gridDim.x : gridDim.x + atomicAdd(p.tile_counter, 1u);
  };
  auto take_tile = [&](uint32_t id, QueryCta& cq) {  // the first tile with work from id on
    while (id < ctas && !setup_query_cta(p, decode_cta<uint32_t, true>(p, p.fd_heads, id), cq))
      id = next_id(id);
    return id;
  };
  auto publish = [&](int i, uint32_t id) {
    slots[i & 1].id = id;
    mbar_arrive(full_id + 8 * (i & 1));
    // This CTA takes no more tiles; the last one done leaves the counter zero. (Round robin
    // keeps the fence too: without it ptxas hoists the tile decode's invariants out of the
    // producer's loop and spills them, 112 bytes at 48 registers.)
    if (id >= ctas) {
      __threadfence();
      if (kRoundRobin) return;
      if (atomicAdd(p.tile_counter + 1, 1u) == gridDim.x - 1) {
        p.tile_counter[0] = 0;
        p.tile_counter[1] = 0;
      }
    }
  };

  if (tid == 0) {
    for (int i = 0; i < KS + VS; ++i) {
      mbar_init(full_k + 8 * i, 1);
      mbar_init(empty_k + 8 * i, Cfg::kConsumers);
    }
    for (int i = 0; i < 2; ++i) {
      mbar_init(full_q + 8 * i, 1);
      mbar_init(full_id + 8 * i, 1);
      mbar_init(empty_q + 8 * i, kConsumerThreads);
      mbar_init(free_id + 8 * i, 1);
    }
    mbar_init_fence();
  }
  if constexpr (kBias) BiasTile::fill<T>(sm.ptr + Cfg::kBiasTile, p.ts.klog, tid, Cfg::kThreads);
  // The last CTA-wide barrier: the producer warpgroup leaves after its loop.
  __syncthreads();
  // Launched dependent on the kernel before (instantiate.h): what follows reads or writes
  // global memory only after that kernel is done. Kernels after this one may launch now.
  launch_dependents();
  wait_for_primary();

  if (warp >= 2 * 4) {  // ---- producer warpgroup: two threads, in different warps
    setmaxnreg_dec<Cfg::kProducerRegs>();
    // K and V are separate streams: a consumer holds V of its last tile until its next computed
    // tile, whose K must not wait behind that V slot. The rings run on across query tiles.
    const bool k_stream = tid == kConsumerThreads;
    if (k_stream || tid == kConsumerThreads + 32) {
      const CUtensorMap* map = k_stream ? &maps.k : &maps.v;
      const uint32_t base = k_stream ? sK : sV;
      const uint32_t full = k_stream ? full_k : full_v, empty = k_stream ? empty_k : empty_v;
      const int ring = k_stream ? KS : VS;
      int slot = 0, loaded = 0;
      uint32_t phase = 0;
      uint32_t id = blockIdx.x;
      for (int i = 0;; ++i) {
        if (k_stream) {  // the K thread also schedules: the next tile, and its Q
          if (i >= QB) mbar_wait(empty_q + q_bar(i), q_parity(i) ^ 1u);
          // The V thread is done reading tile i - 2 from this slot.
          if (i >= 2) mbar_wait(free_id + 8 * (i & 1), ((i >> 1) & 1) ^ 1u);
          // The last id from shared memory: a register held across the loads spilled (ptxas).
          if (i > 0) id = next_id(slots[(i - 1) & 1].id);
          id = take_tile(id, slots[i & 1].c);  // built in shared memory
          if (id < ctas) load_q(slots[i & 1].c, i);
          publish(i, id);
          if (id >= ctas) break;
        } else {
          mbar_wait(full_id + 8 * (i & 1), (i >> 1) & 1);
          if (slots[i & 1].id >= ctas) break;
        }
        const QueryCta& c = slots[i & 1].c;  // read from shared memory where used
        SplitWalk walk(p, c);
        for (int j = 0; j < c.n_kv; ++j, ++loaded) {
          int tb[3];
          walk.tile(p, c, tb);
          walk.next();
          // A slot is refilled once both consumers released its previous tile.
          if (loaded >= ring) mbar_wait(empty + 8 * slot, phase ^ 1u);
          mbar_arrive_expect_tx(full + 8 * slot, KV::kBytes);
          tma_load_tile<KV, D>(map, base + slot * KV::kBytes, full + 8 * slot, p, c.cta.b,
                               c.cta.grp, tb, c.cta.head / p.group_size);
          if (++slot == ring) slot = 0, phase ^= 1u;
        }
        if (!k_stream) mbar_arrive(free_id + 8 * (i & 1));  // the slot may take tile i + 2
      }
    }
    return;
  }

  // ---- consumer warpgroups
  setmaxnreg_inc<Cfg::kConsumerRegs>();
  // Broadcast from lane 0: the compiler then treats the warpgroup index (and what derives from
  // it: which tiles the warpgroup computes) as warp-uniform, and keeps its wgmma unserialised.
  const int wg = __shfl_sync(0xffffffffu, warp >> 2, 0), row0 = 16 * warp;
  const bool leader = (tid & 127) == 0;  // arrives on the empty barriers for the warpgroup
  // Named barriers (0 is __syncthreads). Ping-pong: warpgroup g issues MMAs after bar.sync on
  // 2 + g, then hands the turn to the other with bar.arrive on 3 - g. Every key/value tile is
  // one turn of each warpgroup, computed or not, and the hand-overs run on from one query tile
  // into the next. The window table: warpgroup 0 builds it (on its own barrier 4) and hands it
  // over on kTableReady; warpgroup 1 releases it on kTableFree once read. No barrier spans
  // both warpgroups' epilogues, so one starts its next tile while the other finishes.
  const int my_turn = 2 + wg, other_turn = 3 - wg;
  constexpr int kTableReady = 1, kTableFree = 6;
  Ring<KS> rk;
  Ring<VS> rv;
  QueryCta c;
  int i = 0;
  for (;; ++i) {
    mbar_wait(full_id + 8 * (i & 1), (i >> 1) & 1);
    if (slots[i & 1].id >= ctas) break;
    c = slots[i & 1].c;
    const uint32_t sQ = q_buffer(i);
    if (wg == 0) {
      if (i > 0) named_sync(kTableFree, kConsumerThreads);
      for (int e = tid; e < table_entries(p.ts.qlog); e += 128)
        tab[e] = query_window_entry(p, c, e);
      named_sync(4, 128);
      named_arrive(kTableReady, kConsumerThreads);
    } else {
      named_sync(kTableReady, kConsumerThreads);
    }
    mbar_wait(full_q + q_bar(i), q_parity(i));

    Consumer<T, D, Cfg::kRows, BN> cs;
    cs.init(p, c, tab, sQ + wg * 64 * QT::kSwizzle, row0, lane);
    WarpTileTest gt;  // the warpgroup's 64 rows: which tiles it computes
    query_warp_test(p, c, tab, 64 * wg, 64, gt);
    if (wg == 1) named_arrive(kTableFree, kConsumerThreads);  // its table reads are done
    int pv_slot = 0;  // V slot of the tile whose P V is pending, and the parity of that use
    uint32_t pv_phase = 0;
    if (wg == 1 && i == 0) named_arrive(2, kConsumerThreads);  // opens warpgroup 0's first turn

    SplitWalk walk(p, c);
    int first, last;  // the warpgroup's run of tiles
    walk.run(p, c, gt, first, last);
    int tb[3];
    auto next_tile = [&]() {
      rk.next();
      rv.next();
      walk.next();
    };
    auto k_tile = [&]() { return sK + rk.slot * KV::kBytes; };
    auto release_k = [&]() {
      if (leader) mbar_arrive(empty_k + 8 * rk.slot);
    };
    // S of the tile at tb (kBias: with the masks of the dims the warpgroup's rows cut; the
    // choice broadcast from lane 0, so that ptxas sees the branches around wgmma uniform).
    auto issue_s = [&](float (&s)[NT][4]) {
      if constexpr (kBias) {
        const int wcut = __shfl_sync(0xffffffffu, gt.cut_dims(tb, p.ts.klog), 0);
        cs.issue_s_bias(s, k_tile(), sQ0 + Cfg::kBiasTile, wcut, tb, lane);
      } else {
        cs.issue_s(s, k_tile());
      }
    };
    // This tile's P is in the fragments: its P V is the pending one.
    auto pv_pending = [&]() { pv_slot = rv.slot, pv_phase = rv.phase; };
    // A turn on a tile this warpgroup does not compute: hand the turn on, release the tile.
    auto idle_turn = [&]() {
      named_sync(my_turn, kConsumerThreads);
      named_arrive(other_turn, kConsumerThreads);
      if (leader) mbar_arrive(empty_v + 8 * rv.slot);
      release_k();
    };

    int j = 0;
    for (; j < first; ++j, next_tile()) idle_turn();
    if (first < last) {
      {  // the first computed tile: no P V to overlap yet (O is still zero)
        walk.tile(p, c, tb);
        float s[NT][4], alpha[2];
        named_sync(my_turn, kConsumerThreads);
        mbar_wait(full_k + 8 * rk.slot, rk.phase);
        wgmma_fence();
        issue_s(s);
        named_arrive(other_turn, kConsumerThreads);
        const auto mask = cs.template tile_mask<kMasks && !kBias>(p, tb, lane);
        wgmma_wait<0>();
        release_k();
        cs.scores(p, mask, s, alpha);
        cs.keep_p(s);
        pv_pending();
        ++j, next_tile();
      }
      for (; j < last; ++j, next_tile()) {
        walk.tile(p, c, tb);
        float s[NT][4];
        named_sync(my_turn, kConsumerThreads);
        mbar_wait(full_k + 8 * rk.slot, rk.phase);
        mbar_wait(full_v + 8 * pv_slot, pv_phase);
        wgmma_fence();
        issue_s(s);
        cs.issue_pv(sV + pv_slot * KV::kBytes);
        wgmma_commit();
        named_arrive(other_turn, kConsumerThreads);
        const auto mask = cs.template tile_mask<kMasks && !kBias>(p, tb, lane);
        wgmma_wait<1>();  // S_j is ready; P_prev V_prev may still run
        release_k();
        cs.masked(mask, s);
        wgmma_wait<0>();  // P_prev V_prev too: its fragments take this tile's P
        fence_acc(cs.o);
        if (leader) mbar_arrive(empty_v + 8 * pv_slot);
        cs.next_p(p, s);
        pv_pending();
      }
      // The run's last P V now (outside the turns), so its V slot is free for the producer
      // while the other warpgroup goes on.
      mbar_wait(full_v + 8 * pv_slot, pv_phase);
      cs.last_pv(sV + pv_slot * KV::kBytes);
      if (leader) mbar_arrive(empty_v + 8 * pv_slot);
    }
    for (; j < c.n_kv; ++j, next_tile()) idle_turn();

    // Each warp stores its O rows from registers; a NaN or an Inf in them has the warp
    // recompute those 16-byte chunks exactly (__syncwarp orders the lanes' stores first).
    if (__any_sync(0xffffffffu, cs.store(p, c, row0, lane))) {
      __syncwarp();
      repair::stored_out_chunks<T, 16, D, 32>(pr, p.q, p.k, p.v, static_cast<char*>(p.out),
                                              cs.row_offset(p, c, row0), lane);
    }
    mbar_arrive(empty_q + q_bar(i));
  }
  // Take warpgroup 1's last hand-over and table release, so that no arrival is left pending
  // when the next CTA on this SM starts.
  if (wg == 0 && i > 0) {
    named_sync(2, kConsumerThreads);
    named_sync(kTableFree, kConsumerThreads);
  }
#else
  __trap();  // built for sm_90a only; the host side never launches it elsewhere
#endif
}

}  // namespace hopper
}  // namespace jax_na
