// Naive forward (the papers' baseline): one warp per (batch, query token, head).
// Neighbours are visited in chunks: one lane per (query, neighbour) computes the score, the warp
// updates the running softmax statistics, then one lane per (query, channel) accumulates the
// weighted sum of values. No tiling, no tensor cores; any head_dim, float32 accumulation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "../common/dtype_dispatch.cuh"
#include "../common/families.h"
#include "naive_util.cuh"

namespace jax_na {
namespace naive {
namespace {

using namespace detail;

// Per-warp shared memory: offsets [kChunk] int64, probabilities [kChunk], q [D], acc [D] float.
size_t fwd_warp_bytes(int64_t D) { return align16(kChunk * 8 + kChunk * 4 + 2 * D * 4); }

template <typename T>
__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32, 4)
    fwd_kernel(const Problem p, const T* __restrict__ q, const T* __restrict__ k,
               const T* __restrict__ v, T* __restrict__ out, float* __restrict__ lse,
               int64_t rows, int warp_bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;  // (b*N + token)*H + h
  if (row >= rows) return;  // uniform per warp

  unsigned char* base = smem + size_t(warp) * warp_bytes;
  int64_t* s_off = reinterpret_cast<int64_t*>(base);
  float* s_p = reinterpret_cast<float*>(s_off + kChunk);
  float* s_q = s_p + kChunk;
  float* s_acc = s_q + p.head_dim;

  const int D = int(p.head_dim);
  const RowPos rp = row_pos(p, row, p.heads);
  const int hk = int(rp.head / p.group_size());

  const T* qrow = q + row * D;
  for (int c = lane; c < D; c += 32) {
    s_q[c] = to_f32(qrow[c]);
    s_acc[c] = 0.f;
  }
  __syncwarp();

  const Box box = neighbour_box(p, rp.x);
  float m = -INFINITY, l = 0.f;
  for (int j0 = 0; j0 < box.count; j0 += kChunk) {
    const int n = min(kChunk, box.count - j0);
    float mx = -INFINITY;
    for (int t = lane; t < n; t += 32) {
      const int64_t off = key_row(p, box, rp.b, j0 + t, hk) * D;
      const float s = dot_row(s_q, k + off, D) * p.scale;
      s_off[t] = off;
      s_p[t] = s;
      mx = fmaxf(mx, s);
    }
    mx = warp_max(mx);
    const float m_new = fmaxf(m, mx);  // finite: n >= 1
    const float alpha = expf(m - m_new);
    float sum = 0.f;
    for (int t = lane; t < n; t += 32) {  // each lane rewrites only its own entries
      const float e = expf(s_p[t] - m_new);
      s_p[t] = e;
      sum += e;
    }
    l = l * alpha + warp_sum(sum);
    m = m_new;
    __syncwarp();
    for (int c = lane; c < D; c += 32) {
      float a = s_acc[c] * alpha;
      for (int t = 0; t < n; ++t) a = fmaf(s_p[t], to_f32(v[s_off[t] + c]), a);
      s_acc[c] = a;
    }
    __syncwarp();
  }

  const float inv_l = 1.f / l;
  T* orow = out + row * D;
  for (int c = lane; c < D; c += 32) orow[c] = from_f32<T>(s_acc[c] * inv_l);
  if (lane == 0) lse[row] = m + logf(l);
}

template <typename T>
cudaError_t launch_fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream) {
  const size_t wb = fwd_warp_bytes(p.head_dim);
  const int warps = warps_per_block(wb);
  if (warps < 1) return cudaErrorNotSupported;  // head_dim too large for shared memory
  const int64_t rows = p.batch * p.tokens() * p.heads;
  const int64_t blocks = (rows + warps - 1) / warps;
  if (blocks > INT_MAX) return cudaErrorNotSupported;
  fwd_kernel<T><<<unsigned(blocks), warps * 32, wb * warps, stream>>>(
      p, static_cast<const T*>(a.q), static_cast<const T*>(a.k), static_cast<const T*>(a.v),
      static_cast<T*>(a.out), a.lse, rows, int(wb));
  return cudaGetLastError();
}

}  // namespace

cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream) {
  return dispatch_dtype(p, [&](auto t) { return launch_fwd<typename decltype(t)::type>(p, a, stream); });
}

}  // namespace naive
}  // namespace jax_na
