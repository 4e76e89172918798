// Where the Hopper backward pays for forming delta in its dQ kernel (RD, row_delta.h) instead of
// taking XLA's reduction rowsum(dout * out) - dlse: the one rule, which jax_na's lowering reads
// through the extension (hopper_rd_pays, cuda/bindings.cc) to pick the RD handler, and
// fused_check prints. Plain C++: the extension's host code includes it with or without CUDA.
//
// Measured (H100, session 15, NOTES.md): on V1 (2-D 56x56, kernel 7x7, head_dim 32, bf16: many
// short rows, where XLA's reduction costs 39 µs of a 781 µs training step) RD gains 15 µs
// through JAX; it loses at kernel level on V2 (V1 with dilation 8: +65 µs) and A1 (1-D, kernel
// 2048, head_dim 128: +26 µs), more than the reduction costs there.
#pragma once

#include <cstdint>
#include <cstdlib>

#include "../common/problem.h"

namespace jax_na {
namespace hopper {

// The largest window (product of the kernel sizes) RD is used for: V1's 49 and 9x9.
constexpr int64_t kRdMaxWindow = 81;

// 2-D, head_dim 32, no dilation, no stride, a window of at most kRdMaxWindow keys. 2-D only: on
// a 3-D problem of that kind (24^3, kernel 3, B=4, H=4; session 16) RD cost the backward 12 µs
// at kernel level and the training step 3-4 µs through JAX (0.310 ms against 0.306); 1-D is not
// measured.
// JAX_NA_HOPPER_RD=0 says no everywhere (A/B runs), as JAX_NA_FUSED_RESIDENT_BOX=0 does for the
// box kernels.
inline bool rd_pays(const Problem& p) {
  if (const char* s = std::getenv("JAX_NA_HOPPER_RD"); s && s[0] == '0') return false;
  if (p.head_dim != 32 || p.rank != 2) return false;
  int64_t window = 1;
  for (const DimParams& d : p.dim) {
    if (d.dilation != 1 || d.stride != 1) return false;
    window *= d.kernel;
  }
  return window <= kRdMaxWindow;
}

}  // namespace hopper
}  // namespace jax_na
