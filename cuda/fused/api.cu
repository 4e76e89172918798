// Entry points of the fused family (cuda/common/families.h): decode the Problem into the
// kernels' parameter block and dispatch on dtype and head_dim.
//
// Support: dtype f16 / bf16 (tensor cores, sm_80+) and f32 (SIMT, exact fp32); head_dim 32, 64,
// 128; spatial rank 1-3, any kernel size / stride / dilation / causal per dim, GQA/MQA.
// Other head_dims return cudaErrorNotSupported. The backward is deterministic (key-stationary
// dK/dV with the GQA group looped inside the CTA, query-stationary dQ; no atomics) and needs no
// workspace.
#include <cuda_runtime.h>

#include "families.h"
#include "launch.h"
#include "params.h"

namespace jax_na {
namespace fused {
namespace {

bool supported_head_dim(int64_t d) { return d == 32 || d == 64 || d == 128; }

}  // namespace

cudaError_t make_kernel_params(const Problem& pr, KernelParams& p) {
  if (pr.dtype != DType::kF32 && pr.dtype != DType::kF16 && pr.dtype != DType::kBF16)
    return cudaErrorNotSupported;
  if (pr.batch < 0 || pr.heads <= 0 || pr.heads_kv <= 0 || pr.heads % pr.heads_kv != 0)
    return cudaErrorInvalidValue;
  if (pr.heads > 0x7fffffff) return cudaErrorInvalidValue;
  // Token offsets inside a tile are 32-bit, and so are row indices inside a batch element
  // (token_row).
  const int64_t tokens = int64_t(pr.dim[0].extent) * pr.dim[1].extent * pr.dim[2].extent;
  if (tokens > 0x7fffffff || tokens * pr.heads > int64_t(0xffffffff)) return cudaErrorNotSupported;
  p = KernelParams{};
  for (int i = 0; i < 3; ++i) {
    const DimParams& d = pr.dim[i];
    if (d.extent < 1) return cudaErrorInvalidValue;
    if (d.extent == 1) {  // a padded (or trivial) dimension: the single neighbour 0
      p.L[i] = 1, p.dil[i] = 1, p.ker[i] = 1, p.str[i] = 1, p.causal[i] = 0;
      continue;
    }
    if (d.kernel < 1 || d.dilation < 1 || d.stride < 1 || d.stride > d.kernel ||
        int64_t(d.kernel) * d.dilation > d.extent)
      return cudaErrorInvalidValue;
    p.L[i] = d.extent, p.dil[i] = d.dilation, p.ker[i] = d.kernel, p.str[i] = d.stride;
    p.causal[i] = d.causal ? 1 : 0;
  }
  p.batch = pr.batch;
  p.tokens = int64_t(p.L[0]) * p.L[1] * p.L[2];
  p.heads = int(pr.heads);
  p.heads_kv = int(pr.heads_kv);
  p.group_size = int(pr.heads / pr.heads_kv);
  p.groups = p.dil[0] * p.dil[1] * p.dil[2];
  p.fd_groups = FastDiv::of(uint32_t(p.groups));
  p.fd_heads = FastDiv::of(uint32_t(p.heads));
  p.fd_heads_kv = FastDiv::of(uint32_t(p.heads_kv));
  for (int i = 0; i < 3; ++i) p.fd_dil[i] = FastDiv::of(uint32_t(p.dil[i]));
  p.scale = pr.scale;
  p.scale_log2 = pr.scale * kLog2e;
  return cudaSuccess;
}

cudaError_t make_fwd_params(const Problem& pr, const FwdArgs& a, KernelParams& p) {
  if (const cudaError_t e = make_kernel_params(pr, p); e != cudaSuccess) return e;
  if (p.batch > 0 && (!a.q || !a.k || !a.v || !a.out || !a.lse || !a.nonfinite))
    return cudaErrorInvalidValue;
  p.q = a.q, p.k = a.k, p.v = a.v, p.out = a.out, p.lse_out = a.lse, p.nonfinite = a.nonfinite;
  p.tile_counter = a.tile_counter;
  return cudaSuccess;
}

cudaError_t fwd(const Problem& pr, const FwdArgs& a, cudaStream_t stream) {
  if (!supported_head_dim(pr.head_dim)) return cudaErrorNotSupported;
  KernelParams p;
  const cudaError_t e = make_fwd_params(pr, a, p);
  if (e != cudaSuccess || p.batch == 0) return e;
  const int d = int(pr.head_dim);
  switch (pr.dtype) {
    case DType::kF16: return launch_fwd<__half>(p, d, stream);
    case DType::kBF16: return launch_fwd<__nv_bfloat16>(p, d, stream);
    default: return launch_simt_f32_fwd(p, d, stream);
  }
}

size_t bwd_workspace_bytes(const Problem&) { return 0; }

cudaError_t make_bwd_params(const Problem& pr, const BwdArgs& a, KernelParams& p) {
  if (const cudaError_t e = make_kernel_params(pr, p); e != cudaSuccess) return e;
  if (p.batch > 0 && (!a.q || !a.k || !a.v || !a.dout || !a.lse || !a.delta || !a.dq || !a.dk ||
                      !a.dv || !a.nonfinite))
    return cudaErrorInvalidValue;
  p.q = a.q, p.k = a.k, p.v = a.v, p.dout = a.dout, p.lse_in = a.lse, p.delta = a.delta;
  p.dq = a.dq, p.dk = a.dk, p.dv = a.dv, p.nonfinite = a.nonfinite;
  return cudaSuccess;
}

cudaError_t bwd(const Problem& pr, const BwdArgs& a, cudaStream_t stream) {
  if (!supported_head_dim(pr.head_dim)) return cudaErrorNotSupported;
  KernelParams p;
  cudaError_t e = make_bwd_params(pr, a, p);
  if (e != cudaSuccess || p.batch == 0) return e;
  const int d = int(pr.head_dim);
  switch (pr.dtype) {
    case DType::kF16:
      e = launch_bwd_dkdv<__half>(p, d, stream);
      return e != cudaSuccess ? e : launch_bwd_dq<__half>(p, d, stream);
    case DType::kBF16:
      e = launch_bwd_dkdv<__nv_bfloat16>(p, d, stream);
      return e != cudaSuccess ? e : launch_bwd_dq<__nv_bfloat16>(p, d, stream);
    default: return launch_simt_f32_bwd(p, d, stream);
  }
}

}  // namespace fused
}  // namespace jax_na
