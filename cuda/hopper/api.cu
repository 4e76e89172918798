// Entry points of the Hopper family (cuda/common/families.h).
//
// Forward and backward: wgmma kernels (sm_90a) for f16/bf16 at head_dim 32, 64, 128 and 256;
// the backward is deterministic (key-stationary dK/dV, query-stationary dQ, no atomics, no
// workspace). The forward's out is exact as returned (non-finite chunks repaired in the kernel,
// or by its own repair launch); the backward's needs the caller's repair launch (repair::bwd).
// bwd_rd: the backward whose dQ kernel forms delta (row_delta.h).
// Anything else (another GPU, dtype or head_dim) returns cudaErrorNotSupported; Python routes
// those problems to the fused or naive family.
#include <cuda_runtime.h>

#include "../common/device.h"
#include "../fused/launch.h"
#include "families.h"
#include "launch.h"

namespace jax_na {
namespace hopper {
namespace {

bool supported(const Problem& pr) {
  return (pr.dtype == DType::kF16 || pr.dtype == DType::kBF16) &&
         (pr.head_dim == 32 || pr.head_dim == 64 || pr.head_dim == 128 || pr.head_dim == 256);
}

// The kernels are sm_90a code: the device running the stream's work (dev) must be compute 9.0.
bool on_sm90(DeviceInfo& dev) {
  return current_device(dev) == cudaSuccess && dev.major == 9 && dev.minor == 0;
}

// The backward's kernel parameters; cudaErrorNotSupported where the kernels cannot run.
cudaError_t bwd_params(const Problem& pr, const BwdArgs& a, fused::KernelParams& p) {
  DeviceInfo dev;
  if (!supported(pr) || !on_sm90(dev)) return cudaErrorNotSupported;
  return fused::make_bwd_params(pr, a, p);
}

// dK/dV, then dQ (launched dependent on dK/dV: instantiate_bwd.h).
template <typename T>
cudaError_t launch_bwd(const fused::KernelParams& p, int head_dim, cudaStream_t stream) {
  // Qualified: argument-dependent lookup would also find fused::launch_bwd_*.
  const cudaError_t e = hopper::launch_bwd_dkdv<T>(p, head_dim, stream);
  return e != cudaSuccess ? e : hopper::launch_bwd_dq<T>(p, head_dim, stream);
}

// RD: dQ, which writes delta, then dK/dV (launched dependent on dQ, waiting for its delta).
template <typename T>
cudaError_t launch_bwd_rd(const fused::KernelParams& p, int head_dim, cudaStream_t stream) {
  const cudaError_t e = hopper::launch_bwd_dq_rd<T>(p, head_dim, stream);
  return e != cudaSuccess ? e : hopper::launch_bwd_dkdv_rd<T>(p, head_dim, stream);
}

}  // namespace

cudaError_t fwd(const Problem& pr, const FwdArgs& a, cudaStream_t stream) {
  DeviceInfo dev;
  if (!supported(pr) || !on_sm90(dev)) return cudaErrorNotSupported;
  fused::KernelParams p;
  const cudaError_t e = fused::make_fwd_params(pr, a, p);
  if (e != cudaSuccess || p.batch == 0) return e;
  if (!a.tile_counter) return cudaErrorInvalidValue;  // the persistent kernel's tile counter
  const int d = int(pr.head_dim);
  return pr.dtype == DType::kF16 ? hopper::launch_fwd<__half>(pr, a, p, d, dev.sms, stream)
                                 : hopper::launch_fwd<__nv_bfloat16>(pr, a, p, d, dev.sms, stream);
}

size_t bwd_workspace_bytes(const Problem&) { return 0; }

cudaError_t bwd(const Problem& pr, const BwdArgs& a, cudaStream_t stream) {
  fused::KernelParams p;
  const cudaError_t e = bwd_params(pr, a, p);
  if (e != cudaSuccess || p.batch == 0) return e;
  const int d = int(pr.head_dim);
  return pr.dtype == DType::kF16 ? launch_bwd<__half>(p, d, stream)
                                 : launch_bwd<__nv_bfloat16>(p, d, stream);
}

cudaError_t bwd_rd(const Problem& pr, const BwdArgs& a, const DeltaArgs& dl, cudaStream_t stream) {
  BwdArgs b = a;
  b.delta = dl.delta;  // what dK/dV reads, once the dQ kernel has written it
  fused::KernelParams p;
  const cudaError_t e = bwd_params(pr, b, p);
  if (e != cudaSuccess || p.batch == 0) return e;
  if (!dl.out || !dl.dlse) return cudaErrorInvalidValue;
  p.o_in = dl.out, p.dlse = dl.dlse, p.delta_out = dl.delta;
  const int d = int(pr.head_dim);
  return pr.dtype == DType::kF16 ? launch_bwd_rd<__half>(p, d, stream)
                                 : launch_bwd_rd<__nv_bfloat16>(p, d, stream);
}

}  // namespace hopper
}  // namespace jax_na
