// One neighborhood-attention problem, as every kernel family sees it.
//
// Tensors are row-major and contiguous:
//   query/out/dq  [batch, X0, X1, X2, heads,    head_dim]
//   key/value/dk/dv [batch, X0, X1, X2, heads_kv, head_dim]
//   lse/delta     [batch, X0, X1, X2, heads]   float32
// A problem of rank r < 3 is padded at the FRONT with dimensions of extent 1 and kernel 1
// (window math gives such a dimension the single neighbour 0), so kernels see three
// dimensions and the innermost (contiguous) spatial dimension is always dim[2].
// Query head h reads key/value head h / (heads / heads_kv) (GQA/MQA).
// Additional key/value tokens are not the kernels' business: Python merges them by logsumexp.
#pragma once

#include <cstdint>

#include "window.h"

namespace jax_na {

enum class DType { kF32, kF16, kBF16 };

struct Problem {
  int rank = 0;  // spatial rank as the user gave it (1..3)
  int64_t batch = 0, heads = 0, heads_kv = 0, head_dim = 0;
  DimParams dim[3];
  float scale = 1.0f;
  DType dtype = DType::kF32;

  NA_HD int64_t tokens() const {
    return int64_t(dim[0].extent) * dim[1].extent * dim[2].extent;
  }
  NA_HD int64_t group_size() const { return heads / heads_kv; }
  NA_HD bool any_causal() const { return dim[0].causal || dim[1].causal || dim[2].causal; }
};

// Pointers of one forward call. nonfinite: a device word the tiled CUDA kernels set to nonzero
// when they store a 16-byte chunk holding a NaN or an Inf (cuda/repair/ then recomputes such
// chunks exactly); zeroed first (by the FFI handler, or by a family that arms what it uses).
// tile_counter: two device words that the Hopper forward's persistent kernel hands its tiles
// out with (the family zeroes them before a launch that uses them). Both null on the CPU.
struct FwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  unsigned* nonfinite = nullptr;
  unsigned* tile_counter = nullptr;
};

// Pointers of one backward call. delta = rowsum(dout * out) - dlse, computed by XLA.
struct BwdArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;
  const float* delta;
  void* dq;
  void* dk;
  void* dv;
  void* workspace;  // bwd_workspace_bytes() bytes from the FFI scratch allocator, or null
  unsigned* nonfinite = nullptr;  // as in FwdArgs
};

// What a backward that forms delta itself takes instead (the Hopper family's bwd_rd, whose dQ
// kernel reads out beside dout): the forward's out (query's dtype and shape) and lse's
// cotangent, and the float32 buffer (lse's shape) the delta it forms goes to.
struct DeltaArgs {
  const void* out;
  const float* dlse;
  float* delta;
};

}  // namespace jax_na
