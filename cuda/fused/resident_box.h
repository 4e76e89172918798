// Resident-box kernels of the fused family, for small windows (kernel_fwd_box.h,
// kernel_bwd_dq_box.h).
//
// The tiled kernels lay 64-key tiles on a grid anchored at the CTA's key box and share each
// loaded tile between the CTA's 4 warps. With windows of a few dozen positions a warp's 16 rows
// see a sliver of each such tile (V1, 7x7 on 8x8 query tiles: a warp of 2x8 queries walks ~3.5
// tiles, ~224 columns a row, for 49 useful). Here the CTA loads its whole key/value box into
// shared memory once; each warp then lays its own 64-key tiles (shape 2^klog, the plan's) over
// the union of ITS rows' windows (V1: 8x14, 2 tiles), and gathers each tile's rows from the box
// by per-lane ldmatrix addresses (warp_gemm.h, *_rows). No per-tile barrier and no pipeline: the
// CTA's one wait is its initial load. (A key-stationary dK/dV twin was built and measured
// slower than the tiled dK/dV on V1: NOTES.md.)
#pragma once

#include <cstdint>

#include "arch.h"
#include "fast_div.h"
#include "mask.h"
#include "params.h"
#include "query_tile.h"
#include "smem_tile.h"
#include "warp_gemm.h"

namespace jax_na {
namespace fused {

// Shared-memory layout constants: the per-CTA window table first (128-byte aligned), and the
// most a box kernel asks for (two CTAs per SM at worst).
constexpr int kTableBytes = 1152;
static_assert(kTableBytes >= kMaxTableEntries * 8, "window table");
// The query box kernels' table of their 64 rows' indices (RowTable), after the window table.
constexpr int kRowTableBytes = 64 * 8;
constexpr int kBoxSmemBytes = 96 * 1024;

// The CTA's key box: positions [b, b + n) per dim, rows row-major in shared memory.
struct ResidentBox {
  int b[3];
  int n[3];
  FUSED_HD int rows() const { return n[0] * n[1] * n[2]; }
  // Row of the key at positions pos (never below b: warp tiles start inside the box), or
  // row 0 for a tile column past the box (a loaded row; such columns are always masked).
  FUSED_HD int row_of(const int (&pos)[3]) const {
    bool in = true;
    int r = 0;
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      const int t = pos[i] - b[i];
      in = in && t < n[i];
      r = r * n[i] + t;
    }
    return in ? r : 0;
  }
};

// Rows row, row + step, row + 2 step, ... of a box, as positions, by mixed-radix additions
// (the loaders' per-row divisions cost more than the rest of a small-window CTA's prologue).
struct BoxCursor {
  int t[3];  // position - box origin, of the current row
  int s[3];  // the step as per-dim offsets
  int n1, n2;
  FUSED_HD BoxCursor(const ResidentBox& bx, int row, int step) : n1(bx.n[1]), n2(bx.n[2]) {
    split(row, t);
    split(step, s);
  }
  FUSED_HD void split(int r, int (&c)[3]) const {
    c[0] = small_div(r, n1 * n2);
    r -= c[0] * n1 * n2;
    c[1] = small_div(r, n2);
    c[2] = r - c[1] * n2;
  }
  FUSED_HD void position(const ResidentBox& bx, int (&pos)[3]) const {
#pragma unroll
    for (int i = 0; i < 3; ++i) pos[i] = bx.b[i] + t[i];
  }
  FUSED_HD void advance() {
    t[2] += s[2];
    const int c2 = t[2] >= n2;
    t[2] -= c2 ? n2 : 0;
    t[1] += s[1] + c2;
    const int c1 = t[1] >= n1;
    t[1] -= c1 ? n1 : 0;
    t[0] += s[0] + c1;
  }
};

FUSED_HD ResidentBox resident_box(const int (&lo)[3], const int (&hi)[3]) {
  ResidentBox bx;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    bx.b[i] = lo[i];
    bx.n[i] = hi[i] > lo[i] ? hi[i] - lo[i] : 0;
  }
  return bx;
}

// A warp's walk over the 64-key tiles (shape 2^lg) covering the union of its rows' windows
// [wt.any_lo, wt.any_hi).
struct WarpBoxWalk {
  int lo[3];
  int nk[3];
  int n;  // tiles in all (0 for a warp without valid rows)
  TileWalker w;

  FUSED_HD WarpBoxWalk(const WarpTileTest& wt, const int (&lg)[3]) {
    n = wt.active ? 1 : 0;
#pragma unroll
    for (int i = 0; i < 3; ++i) {
      lo[i] = wt.any_lo[i];
      const int len = wt.any_hi[i] - wt.any_lo[i];
      nk[i] = len > 0 ? (len + (1 << lg[i]) - 1) >> lg[i] : 0;
      n *= nk[i];
    }
    w.reset();
  }
  FUSED_HD void tile(const int (&lg)[3], int (&tb)[3]) const {
#pragma unroll
    for (int i = 0; i < 3; ++i) tb[i] = lo[i] + (w.t[i] << lg[i]);
  }
  FUSED_HD void next() { w.next(nk); }
};

// The box rows lane `lane` addresses in a warp tile at tb (shape 2^lg): for 16-column group j,
// the row of column 16 j + lane_column(lane) (the row map of gemm_abt_rows / gemm_pv_rows).
struct LaneRows {
  int r[4];
  FUSED_HD int operator()(int j) const { return r[j]; }
};

// The row map of half h (columns 32 h .. 32 h + 31) of a warp tile, for kernels that process a
// tile in two halves to keep fewer accumulators live.
struct HalfRows {
  const LaneRows& lr;
  int h;
  FUSED_HD int operator()(int j) const { return lr.r[2 * h + j]; }
};

FUSED_HD LaneRows lane_rows(const ResidentBox& bx, const int (&tb)[3], const int (&lg)[3], int lane) {
  LaneRows lr;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    int t[3];
    split_row(16 * j + lane_column(lane), lg, t);
    const int pos[3] = {tb[0] + t[0], tb[1] + t[1], tb[2] + t[2]};
    lr.r[j] = bx.row_of(pos);
  }
  return lr;
}

#if defined(__CUDACC__)
// cp.async the box's rows of up to two tensors (same row offsets), row t[] of the box (positions
// past its origin) at g.at(t).
template <int D, int NTHREADS, int NT>
__device__ __forceinline__ void load_box_async(const char* const (&src)[NT],
                                               const uint32_t (&dst)[NT], const ResidentBox& bx,
                                               const RowMap& g, int tid) {
  constexpr int kChunks = SmemTile<D>::kChunks;
  static_assert(NTHREADS % kChunks == 0, "whole rows per pass");
  constexpr int kRowsPerPass = NTHREADS / kChunks;
  const int ch = tid % kChunks;
  const int nrows = bx.rows();
  if (nrows == 0) return;
  // A pass moves every row by a multiple of the swizzle's period: the shared offset just adds.
  static_assert(kRowsPerPass % SmemTile<D>::kSwizzleRows == 0, "same swizzle each pass");
  constexpr uint32_t kPassBytes = kRowsPerPass * SmemTile<D>::kRowBytes;
  BoxCursor cur(bx, tid / kChunks, kRowsPerPass);
  uint32_t so = SmemTile<D>::offset(tid / kChunks, ch);
  for (int row = tid / kChunks; row < nrows; row += kRowsPerPass, cur.advance(), so += kPassBytes) {
    const int64_t off = g.at(cur.t) * SmemTile<D>::kRowBytes + ch * 16;
#pragma unroll
    for (int t = 0; t < NT; ++t) cp_async_16(dst[t] + so, src[t] + off, true);
  }
}
// The prologue of the query-stationary box kernels: the CTA's tile, its key box, and the shared
// layout [window table | NQ 64-row tiles (Q; Q and dO) | K box | V box]. load() issues the
// query rows of the tensors qsrc and the K/V box, fills the window table and waits for all of
// it.
template <int D, int NQ>
struct QueryBoxCta {
  QueryCta c;
  ResidentBox bx;
  int head, kvh;
  uint32_t sq;  // the first 64-row tile; tile t at sq + t * SmemTile<D>::bytes(64)
  uint32_t sk, sv;

  __device__ __forceinline__ bool setup(const KernelParams& p, char* smem) {
    if (!setup_query_cta(p, c)) return false;
    head = c.cta.head;
    kvh = head / p.group_size;
    bx = resident_box(c.kb, c.ke);
    sq = smem_u32(smem) + kTableBytes + kRowTableBytes;
    sk = sq + NQ * SmemTile<D>::bytes(64);
    sv = sk + SmemTile<D>::bytes(bx.rows());
    return true;
  }
  __device__ __forceinline__ void load(const KernelParams& p, char* smem,
                                       const char* const (&qsrc)[NQ], int tid) const {
    uint32_t qdst[NQ];
#pragma unroll
    for (int t = 0; t < NQ; ++t) qdst[t] = sq + t * SmemTile<D>::bytes(64);
    const TileRows qr = query_tile_rows(p, c, head);
    auto q_off = [&](int row) { return qr.offset(p.ts.qlog, row, SmemTile<D>::kRowBytes); };
    load_rows_async<64, D, 128>(qsrc, qdst, q_off, tid);
    const char* kv[2] = {static_cast<const char*>(p.k), static_cast<const char*>(p.v)};
    const uint32_t kvdst[2] = {sk, sv};
    load_box_async<D, 128>(kv, kvdst, bx, row_map(p, c.cta.b, c.cta.grp, bx.b, kvh, p.heads_kv),
                           tid);
    cp_async_commit();
    Window* tab = reinterpret_cast<Window*>(smem);
    for (int e = tid; e < table_entries(p.ts.qlog); e += 128) tab[e] = query_window_entry(p, c, e);
    if (tid < 64) rows(smem)[tid] = qr(p.ts.qlog, tid);
    cp_async_wait<0>();
    __syncthreads();
  }
  // The rows' indices (negative past the group's end), written by load(): for the rows' stats
  // and the epilogue's stores, which would otherwise each compute them again.
  static __device__ __forceinline__ int64_t* rows(char* smem) {
    return reinterpret_cast<int64_t*>(smem + kTableBytes);
  }
};
#endif

// Shared-memory bytes of a resident-box kernel: `fixed` bytes, plus per box row `per_row`.
struct BoxSmem {
  int fixed;
  int per_row;
  int max_bytes;
  constexpr int bytes(int rows) const { return fixed + rows * per_row; }
  constexpr int max_rows() const { return (max_bytes - fixed) / per_row; }
};

// Query-stationary box kernels: the window table, the row table, `tiles` 64-row tiles (Q; Q and
// dO), then two boxes (K and V).
template <int D>
constexpr BoxSmem query_box_smem(int tiles) {
  return BoxSmem{kTableBytes + kRowTableBytes + tiles * SmemTile<D>::bytes(64),
                 2 * SmemTile<D>::kRowBytes, kBoxSmemBytes};
}

// Launch configuration of a query-stationary box kernel with kTiles 64-row tiles.
template <int D, int kTiles>
struct QueryBoxConfig {
  static_assert(D == 32 || D == 64, "resident-box kernels: head_dim 32 or 64");
  static constexpr int kThreads = 128;
  static constexpr int kMinBlocks = D >= 64 ? 2 : 3;
  static constexpr BoxSmem kSmem = query_box_smem<D>(kTiles);
};

// Host: can the resident-box kernels run this problem, and is it worth it? Sets p.ts (query tile:
// the tiled kernels' choice; key tile: the fewest tiles over a warp's union) and box_rows (the
// largest CTA box, for the shared-memory size), or returns false: a warp would walk more than 4
// tiles or not at most half the tiled kernel's, a box would not fit in sm.max_rows(), or
// JAX_NA_FUSED_RESIDENT_BOX=0 (A/B runs and checks of the tiled kernels).
bool plan_resident_box(KernelParams& p, const BoxSmem& sm, int& box_rows);

}  // namespace fused
}  // namespace jax_na
