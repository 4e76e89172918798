// Definitions of the GEMM family's host launchers (see launch.h): tile grid, shared-memory
// opt-in, grid size checks, launches on XLA's stream.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstddef>

#include "config.cuh"
#include "launch.h"
#include "tile_geometry.cuh"

namespace jax_na {
namespace gemm {

// Allow `bytes` of dynamic shared memory for `kernel`, if this device has them.
template <typename K>
cudaError_t prepare_smem(K kernel, size_t bytes) {
  int dev = 0, optin = 0;
  if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
      e != cudaSuccess)
    return e;
  if (bytes > size_t(optin)) return cudaErrorNotSupported;
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
}

// Blocks for `per_bh` tiles per (batch, head) over `heads` heads; 0 if the grid is too large.
inline unsigned grid_blocks(const Problem& p, const TileGrid& tg, int64_t heads) {
  const int64_t n = tg.count * heads * p.batch;
  return n > int64_t(INT_MAX) ? 0u : unsigned(n);
}

}  // namespace gemm
}  // namespace jax_na
