// Warp-specialised forward kernel of the Hopper family (sm_90a): TMA producers, two consumer
// warpgroups in ping-pong.
//
// CTA: 2 consumer warpgroups + 1 producer warpgroup (384 threads; setmaxnreg moves registers
// to the consumers) per query tile of 128 positions (shape 2^qlog per dim) of one (batch,
// head, dilation group); consumer warpgroup g owns rows [64 g, 64 g + 64), an aligned sub-box
// of the tile. Two producer threads walk the key/value tiles (64 keys, shape 2^klog) covering
// the box of the tile's windows and load each as TMA boxes into rings of KS K slots and VS V
// slots (full / empty mbarriers per slot), several tiles ahead; the warpgroups share every
// tile. Each warpgroup computes only the tiles its own rows see, one contiguous run of the
// load order (SplitWalk), and releases the others at once. Per computed tile (mainloop.h):
//   issue S_j = Q K_j^T and O += P_prev V_prev; wait S_j; masks where needed; softmax of S_j
//   while P_prev V_prev runs; wait; rescale O.
// Ping-pong: named barriers hand the right to issue MMAs back and forth between the
// warpgroups, so one's softmax runs under the other's MMAs. Epilogue as in the fused family.
#pragma once

#include <cmath>
#include <cstdint>

#include "../common/pdl.cuh"
#include "../fused/arch.h"
#include "../fused/params.h"
#include "../fused/query_tile.h"
#include "../fused/smem_tile.h"
#include "mainloop.h"
#include "smem_layout.h"
#include "tma.h"
#include "wgmma.h"

namespace jax_na {
namespace hopper {

using fused::KernelParams;

template <typename T, int D, int BN>
struct WsConfig {
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  static constexpr int kConsumers = 2;
  static constexpr int kThreads = 128 * kConsumers + 128;  // + the producer warpgroup
  // Registers per thread after setmaxnreg: 128 x 40 + 256 x 232 <= 64 K.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static constexpr int kRows = 64 * kConsumers;
  static constexpr int kCols = BN;  // keys per tile: 64, or 128 for 1-D tiles
  static constexpr int kLogCols = BN == 128 ? 7 : 6;
  // K and V slots (V of a tile is read one tile later than its K); 128-key tiles: 32 KB each.
  static constexpr int KS = BN == 128 ? 2 : 3;
  static constexpr int VS = BN == 128 ? 3 : 4;
  using QTile = GmmaTile<kRows, D>;
  using KVTile = GmmaTile<kCols, D>;
  static constexpr int kK = QTile::kBytes;
  static constexpr int kV = kK + KS * KVTile::kBytes;
  static constexpr int kTab = kV + VS * KVTile::kBytes;
  // mbarriers: full K[KS], full V[VS], empty K[KS], empty V[VS].
  static constexpr int kBar = kTab + fused::kMaxTableEntries * 8;
  static constexpr int kSmem = kBar + 2 * (KS + VS) * 8 + 1024;  // + alignment slack
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
    const int d = p.ts.qlog[0] > 0 ? 0 : (p.ts.qlog[1] > 0 ? 1 : 2);
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

template <typename T, int D, int BN>
__global__ void __launch_bounds__(WsConfig<T, D, BN>::kThreads, 1)
    hopper_fwd_ws_kernel(const KernelParams p, const __grid_constant__ TmaMaps maps) {
#if JAX_NA_WGMMA
  launch_dependents();  // the repair launch may get ready (common/pdl.cuh)
  using namespace fused;
  using Cfg = WsConfig<T, D, BN>;
  using QT = typename Cfg::QTile;
  using KV = typename Cfg::KVTile;
  constexpr int KS = Cfg::KS, VS = Cfg::VS;
  constexpr int NT = Consumer<T, D, Cfg::kRows, BN>::NT;
  constexpr int kConsumerThreads = 128 * Cfg::kConsumers;
  constexpr int64_t kRowBytes = int64_t(D) * sizeof(T);
  extern __shared__ char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023u) & ~1023u;  // swizzle atoms need 1024-byte alignment
  char* const smem = smem_raw + (sQ - raw);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  QueryCta c;
  if (!setup_query_cta(p, c)) return;
  const int head = c.cta.head;
  const int kvh = head / p.group_size;
  const uint32_t sK = sQ + Cfg::kK, sV = sQ + Cfg::kV;
  const uint32_t full_k = sQ + Cfg::kBar, full_v = full_k + 8 * KS;
  const uint32_t empty_k = full_v + 8 * VS, empty_v = empty_k + 8 * KS;
  Window* tab = reinterpret_cast<Window*>(smem + Cfg::kTab);

  auto q_off = [&](int row) -> int64_t {
    const int64_t r = query_row_index(p, c, row, head);
    return r < 0 ? -1 : r * kRowBytes;
  };
  if (tid < kConsumerThreads) {
    const char* src[1] = {static_cast<const char*>(p.q)};
    const uint32_t dst[1] = {sQ};
    load_rows_async<Cfg::kRows, D, kConsumerThreads, QT>(src, dst, q_off, tid);
    cp_async_commit();
  }
  for (int e = tid; e < table_entries(p.ts.qlog); e += Cfg::kThreads)
    tab[e] = query_window_entry(p, c, e);
  if (tid == 0) {
    for (int i = 0; i < KS + VS; ++i) {
      mbar_init(full_k + 8 * i, 1);
      mbar_init(empty_k + 8 * i, Cfg::kConsumers);
    }
    mbar_init_fence();
  }
  // Tables and barriers are ready: the producers start while Q is still landing. This is the
  // last CTA-wide barrier (the producer warpgroup leaves after its loop).
  __syncthreads();

  if (warp >= 2 * 4) {  // ---- producer warpgroup: two threads, in different warps
    setmaxnreg_dec<Cfg::kProducerRegs>();
    // K and V are separate streams: a consumer holds V of its last tile until its next computed
    // tile, whose K must not wait behind that V slot.
    const bool k_stream = tid == kConsumerThreads;
    if (k_stream || tid == kConsumerThreads + 32) {
      const CUtensorMap* map = k_stream ? &maps.k : &maps.v;
      const uint32_t base = k_stream ? sK : sV;
      const uint32_t full = k_stream ? full_k : full_v, empty = k_stream ? empty_k : empty_v;
      const int slots = k_stream ? KS : VS;
      SplitWalk walk(p, c);
      int slot = 0;
      uint32_t phase = 0;
      for (int j = 0; j < c.n_kv; ++j) {
        int tb[3];
        walk.tile(p, c, tb);
        walk.next();
        // A slot is refilled once both consumers released its previous tile.
        if (j >= slots) mbar_wait(empty + 8 * slot, phase ^ 1u);
        mbar_arrive_expect_tx(full + 8 * slot, KV::kBytes);
        tma_load_tile<KV, D>(map, base + slot * KV::kBytes, full + 8 * slot, p, c.cta.b,
                             c.cta.grp, tb, kvh);
        if (++slot == slots) slot = 0, phase ^= 1u;
      }
    }
    return;
  }

  // ---- consumer warpgroups
  setmaxnreg_inc<Cfg::kConsumerRegs>();
  cp_async_wait<0>();  // this thread's part of Q, then everyone's, visible to wgmma
  fence_proxy_async();
  named_sync(1, kConsumerThreads);
  // Broadcast from lane 0: the compiler then treats the warpgroup index (and what derives from
  // it: which tiles the warpgroup computes) as warp-uniform, and keeps its wgmma unserialised.
  const int wg = __shfl_sync(0xffffffffu, warp >> 2, 0), row0 = 16 * warp;
  const bool leader = (tid & 127) == 0;  // arrives on the empty barriers for the warpgroup
  Consumer<T, D, Cfg::kRows, BN> cs;
  cs.init(p, c, tab, sQ + wg * 64 * 128, row0, lane);
  WarpTileTest gt;  // the warpgroup's 64 rows: which tiles it computes
  query_warp_test(p, c, tab, 64 * wg, 64, gt);
  int pv_slot = 0;  // V slot of the tile whose P V is pending, and the parity of that use
  uint32_t pv_phase = 0;
  // Ping-pong: warpgroup g issues MMAs after bar.sync on barrier 2 + g; it then hands the turn
  // to the other with bar.arrive on 3 - g. Warpgroup 1 opens the first turn of warpgroup 0.
  // Every tile is one turn of each warpgroup, computed or not.
  const int my_turn = 2 + wg, other_turn = 3 - wg;
  if (wg == 1) named_arrive(2, kConsumerThreads);

  SplitWalk walk(p, c);
  int first, last;  // the warpgroup's run of tiles
  walk.run(p, c, gt, first, last);
  Ring<KS> rk;
  Ring<VS> rv;
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
  auto keep = [&](const float (&s)[NT][4]) {
    cs.keep_p(s);
    pv_slot = rv.slot, pv_phase = rv.phase;
  };
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
      cs.issue_s(s, k_tile());
      named_arrive(other_turn, kConsumerThreads);
      wgmma_wait<0>();
      release_k();
      cs.scores(p, tb, s, alpha, lane);
      keep(s);
      ++j, next_tile();
    }
    for (; j < last; ++j, next_tile()) {
      walk.tile(p, c, tb);
      float s[NT][4], alpha[2];
      named_sync(my_turn, kConsumerThreads);
      mbar_wait(full_k + 8 * rk.slot, rk.phase);
      mbar_wait(full_v + 8 * pv_slot, pv_phase);
      wgmma_fence();
      cs.issue_s(s, k_tile());
      cs.issue_pv(sV + pv_slot * KV::kBytes);
      wgmma_commit();
      named_arrive(other_turn, kConsumerThreads);
      wgmma_wait<1>();  // S_j is ready; P_prev V_prev may still run during the softmax
      release_k();
      cs.scores(p, tb, s, alpha, lane);
      wgmma_wait<0>();
      fence_acc(cs.o);
      if (leader) mbar_arrive(empty_v + 8 * pv_slot);
      cs.sm.rescale(cs.o, alpha);
      keep(s);
    }
    // The run's last P V now (outside the turns), so its V slot is free for the producer while
    // the other warpgroup goes on.
    mbar_wait(full_v + 8 * pv_slot, pv_phase);
    cs.last_pv(sV + pv_slot * KV::kBytes);
    if (leader) mbar_arrive(empty_v + 8 * pv_slot);
  }
  for (; j < c.n_kv; ++j, next_tile()) idle_turn();

  // Take warpgroup 1's last hand-over, so that no arrival is left pending on barrier 2 when
  // the CTA exits (the next CTA on this SM starts from clean barriers).
  if (wg == 0) named_sync(2, kConsumerThreads);
  named_sync(1, kConsumerThreads);  // both warpgroups are done reading Q: stage O over it
  cs.stage(p, c, sQ, row0, lane);
  // Each warpgroup stores its own 64 staged rows (disjoint bytes of the staging tile).
  named_sync(4 + wg, 128);
  const int r0 = 64 * wg;
  store_rows<T, 64, D, 128>(static_cast<char*>(p.out), sQ + SmemTile<D>::bytes(r0),
                            [&](int row) { return q_off(r0 + row); }, tid & 127, p.nonfinite);
#else
  __trap();  // built for sm_90a only; the host side never launches it elsewhere
#endif
}

}  // namespace hopper
}  // namespace jax_na
