// Naive backward: two kernels, no atomics, deterministic, no workspace.
//  dq:   one warp per (batch, query token, head). Per neighbour (one lane each) it recomputes
//        P = exp(S - lse) and dP = <dout, v>, forms dS = P (dP - delta), then one lane per
//        channel accumulates dq = scale * sum dS k.
//  dkdv: one warp per (batch, key token, kv head). It visits the queries whose neighbourhood
//        holds the key (the inverse neighbourhood, window.h key_tile_query_range) times the
//        query heads of the GQA group; per (query, head) pair one lane recomputes P and dS, then
//        one lane per channel accumulates dv = sum P dout and dk = scale * sum dS q.
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

// dq warp: offsets [kChunk] int64, dS [kChunk], q [D], dout [D], dq [D] float.
size_t dq_warp_bytes(int64_t D) { return align16(kChunk * 8 + kChunk * 4 + 3 * D * 4); }
// dkdv warp: offsets [kChunk] int64, P [kChunk], dS [kChunk], k, v, dk, dv [D] float.
size_t dkdv_warp_bytes(int64_t D) { return align16(kChunk * 8 + 2 * kChunk * 4 + 4 * D * 4); }

template <typename T>
__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32, 4)
    dq_kernel(const Problem p, const T* __restrict__ q, const T* __restrict__ k,
              const T* __restrict__ v, const T* __restrict__ dout, const float* __restrict__ lse,
              const float* __restrict__ delta, T* __restrict__ dq, int64_t rows, int warp_bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;  // (b*N + token)*H + h
  if (row >= rows) return;

  unsigned char* base = smem + size_t(warp) * warp_bytes;
  int64_t* s_off = reinterpret_cast<int64_t*>(base);
  float* s_ds = reinterpret_cast<float*>(s_off + kChunk);
  float* s_q = s_ds + kChunk;
  float* s_do = s_q + p.head_dim;
  float* s_dq = s_do + p.head_dim;

  const int D = int(p.head_dim);
  const RowPos rp = row_pos(p, row, p.heads);
  const int hk = int(rp.head / p.group_size());

  for (int c = lane; c < D; c += 32) {
    s_q[c] = to_f32(q[row * D + c]);
    s_do[c] = to_f32(dout[row * D + c]);
    s_dq[c] = 0.f;
  }
  __syncwarp();
  const float row_lse = lse[row], row_delta = delta[row];

  const Box box = neighbour_box(p, rp.x);
  for (int j0 = 0; j0 < box.count; j0 += kChunk) {
    const int n = min(kChunk, box.count - j0);
    for (int t = lane; t < n; t += 32) {
      const int64_t off = key_row(p, box, rp.b, j0 + t, hk) * D;
      const float s = dot_row(s_q, k + off, D) * p.scale;
      const float pr = expf(s - row_lse);
      const float dp = dot_row(s_do, v + off, D);
      s_off[t] = off;
      s_ds[t] = pr * (dp - row_delta) * p.scale;
    }
    __syncwarp();
    for (int c = lane; c < D; c += 32) {
      float a = s_dq[c];
      for (int t = 0; t < n; ++t) a = fmaf(s_ds[t], to_f32(k[s_off[t] + c]), a);
      s_dq[c] = a;
    }
    __syncwarp();
  }
  for (int c = lane; c < D; c += 32) dq[row * D + c] = from_f32<T>(s_dq[c]);
}

template <typename T>
__global__ void __launch_bounds__(kMaxWarpsPerBlock * 32, 4)
    dkdv_kernel(const Problem p, const T* __restrict__ q, const T* __restrict__ k,
                const T* __restrict__ v, const T* __restrict__ dout,
                const float* __restrict__ lse, const float* __restrict__ delta,
                T* __restrict__ dk, T* __restrict__ dv, int64_t rows, int warp_bytes) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t row = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;  // (b*N + token)*Hkv + hk
  if (row >= rows) return;

  unsigned char* base = smem + size_t(warp) * warp_bytes;
  int64_t* s_off = reinterpret_cast<int64_t*>(base);
  float* s_p = reinterpret_cast<float*>(s_off + kChunk);
  float* s_ds = s_p + kChunk;
  float* s_k = s_ds + kChunk;
  float* s_v = s_k + p.head_dim;
  float* s_dk = s_v + p.head_dim;
  float* s_dv = s_dk + p.head_dim;

  const int D = int(p.head_dim);
  const int G = int(p.group_size());
  const RowPos rp = row_pos(p, row, p.heads_kv);

  for (int c = lane; c < D; c += 32) {
    s_k[c] = to_f32(k[row * D + c]);
    s_v[c] = to_f32(v[row * D + c]);
    s_dk[c] = 0.f;
    s_dv[c] = 0.f;
  }
  __syncwarp();

  const Box box = attending_box(p, rp.x);
  const int pairs = box.count * G;  // (query, head of the group), head fastest
  for (int j0 = 0; j0 < pairs; j0 += kChunk) {
    const int n = min(kChunk, pairs - j0);
    for (int t = lane; t < n; t += 32) {
      const int64_t qrow = query_row(p, box, rp.b, j0 + t, rp.head);
      const int64_t off = qrow * D;
      const float s = dot_row(s_k, q + off, D) * p.scale;
      const float pr = expf(s - lse[qrow]);
      const float dp = dot_row(s_v, dout + off, D);
      s_off[t] = off;
      s_p[t] = pr;
      s_ds[t] = pr * (dp - delta[qrow]) * p.scale;
    }
    __syncwarp();
    for (int c = lane; c < D; c += 32) {
      float ak = s_dk[c], av = s_dv[c];
      for (int t = 0; t < n; ++t) {
        const int64_t o = s_off[t] + c;
        av = fmaf(s_p[t], to_f32(dout[o]), av);
        ak = fmaf(s_ds[t], to_f32(q[o]), ak);
      }
      s_dk[c] = ak;
      s_dv[c] = av;
    }
    __syncwarp();
  }
  for (int c = lane; c < D; c += 32) {
    dk[row * D + c] = from_f32<T>(s_dk[c]);
    dv[row * D + c] = from_f32<T>(s_dv[c]);
  }
}

template <typename T>
cudaError_t launch_bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream) {
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* dout = static_cast<const T*>(a.dout);

  const size_t wq = dq_warp_bytes(p.head_dim), wkv = dkdv_warp_bytes(p.head_dim);
  const int warps_q = warps_per_block(wq), warps_kv = warps_per_block(wkv);
  if (warps_q < 1 || warps_kv < 1) return cudaErrorNotSupported;

  const int64_t rows_q = p.batch * p.tokens() * p.heads;
  const int64_t rows_kv = p.batch * p.tokens() * p.heads_kv;
  const int64_t blocks_q = (rows_q + warps_q - 1) / warps_q;
  const int64_t blocks_kv = (rows_kv + warps_kv - 1) / warps_kv;
  if (blocks_q > INT_MAX || blocks_kv > INT_MAX) return cudaErrorNotSupported;

  dq_kernel<T><<<unsigned(blocks_q), warps_q * 32, wq * warps_q, stream>>>(
      p, q, k, v, dout, a.lse, a.delta, static_cast<T*>(a.dq), rows_q, int(wq));
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  dkdv_kernel<T><<<unsigned(blocks_kv), warps_kv * 32, wkv * warps_kv, stream>>>(
      p, q, k, v, dout, a.lse, a.delta, static_cast<T*>(a.dk), static_cast<T*>(a.dv), rows_kv,
      int(wkv));
  return cudaGetLastError();
}

}  // namespace

size_t bwd_workspace_bytes(const Problem&) { return 0; }

cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream) {
  return dispatch_dtype(p, [&](auto t) { return launch_bwd<typename decltype(t)::type>(p, a, stream); });
}

}  // namespace naive
}  // namespace jax_na
