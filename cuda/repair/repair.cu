// The repair kernel (repair.h): one launch over the 16-byte chunks of up to three result tensors.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../common/device.h"
#include "../common/dtype_dispatch.cuh"
#include "../common/nonfinite.cuh"
#include "../common/pdl.cuh"
#include "exact_rows.cuh"
#include "repair.h"

namespace jax_na {
namespace repair {
namespace {

constexpr int kThreads = 256;

// The result tensors of one call, repaired as one index space of chunks.
struct Results {
  void* data[3];
  int64_t chunks[3];
  Quantity what[3];
  int n;
};

// One block per SM, started ahead (PDL); it reads the flag once the kernels before it are done.
template <typename T>
__global__ void __launch_bounds__(kThreads, 1) repair_kernel(const Problem p, const BwdArgs in,
                                                             const Results r, const unsigned* flag) {
  wait_for_primary();
  if (*flag == 0) return;  // every stored chunk was finite
  constexpr int kN = 16 / sizeof(T);
  int64_t total = 0;
  for (int s = 0; s < r.n; ++s) total += r.chunks[s];
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * kThreads) {
    int s = 0;
    int64_t j = i;
    while (j >= r.chunks[s]) j -= r.chunks[s++];
    uint4* at = static_cast<uint4*>(r.data[s]) + j;
    if (!nonfinite16<T>(*at)) continue;
    const int64_t e = j * kN;
    store_exact_chunk<T>(p, in, r.what[s], e / p.head_dim, int(e % p.head_dim), at);
  }
}

// in: the tensors the exact formulas read (a forward's: q, k, v only).
cudaError_t launch(const Problem& p, const BwdArgs& in, const Results& r, const unsigned* flag,
                   cudaStream_t stream) {
  if (!flag) return cudaErrorInvalidValue;
  int64_t total = 0;
  for (int s = 0; s < r.n; ++s) total += r.chunks[s];
  if (total == 0) return cudaSuccess;
  DeviceInfo dev;
  if (cudaError_t e = current_device(dev); e != cudaSuccess) return e;
  const dim3 grid(unsigned(std::min<int64_t>(dev.sms, (total + kThreads - 1) / kThreads)));
  return dispatch_dtype(p, [&](auto t) {
    return launch_maybe_dependent(repair_kernel<typename decltype(t)::type>, grid, dim3(kThreads),
                                  0, stream, dev.major >= 9, p, in, r, flag);
  });
}

// 16-byte chunks of a [rows, head_dim] tensor; -1 if a row is not whole chunks.
int64_t chunks_of(const Problem& p, int64_t heads) {
  const int64_t row_bytes = p.head_dim * (p.dtype == DType::kF32 ? 4 : 2);
  if (row_bytes % 16 != 0) return -1;
  return p.batch * p.tokens() * heads * (row_bytes / 16);
}

}  // namespace

cudaError_t arm(unsigned* flag, cudaStream_t stream) {
  return flag ? cudaMemsetAsync(flag, 0, kFlagWords * sizeof(unsigned), stream)
              : cudaErrorInvalidValue;
}

cudaError_t fwd(const Problem& p, const FwdArgs& a, cudaStream_t stream) {
  const int64_t nq = chunks_of(p, p.heads);
  if (nq < 0) return cudaErrorNotSupported;
  const Results r{{a.out}, {nq}, {Quantity::kOut}, 1};
  BwdArgs in{};  // the forward's formula reads q, k and v only
  in.q = a.q, in.k = a.k, in.v = a.v;
  return launch(p, in, r, a.nonfinite, stream);
}

cudaError_t bwd(const Problem& p, const BwdArgs& a, cudaStream_t stream) {
  const int64_t nq = chunks_of(p, p.heads), nk = chunks_of(p, p.heads_kv);
  if (nq < 0 || nk < 0) return cudaErrorNotSupported;
  const Results r{{a.dq, a.dk, a.dv}, {nq, nk, nk}, {Quantity::kDq, Quantity::kDk, Quantity::kDv}, 3};
  return launch(p, a, r, a.nonfinite, stream);
}

}  // namespace repair
}  // namespace jax_na
