// Host side of the TMA path (tma.h): encode the K/V (or Q/dO) tensor maps through the driver's
// cuTensorMapEncodeTiled, reached via the runtime's entry-point query (no libcuda link).
#include <cstdint>

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include "../fused/params.h"
#include "tma.h"

namespace jax_na {
namespace hopper {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) !=
            cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      f = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// Maps of n [batch * L0, L1, L2, heads, head_dim] tensors base[i] -> *out[i] for boxes of 2^lg
// positions per dim (times the dilation, which is the element stride). past_end_unused: rows
// of a box past a group's end are never used (query rows: computed, never stored), so a box may
// run from one batch element into the next.
bool make_maps(const fused::KernelParams& p, const int (&lg)[3], int64_t heads, int n,
               const void* const* base, CUtensorMap* const* out, int head_dim, bool bf16,
               bool past_end_unused) {
  const auto encode = encode_fn();
  if (!encode) return false;
  // One box per column block of the tile layout (smem_layout.h): 64 columns, 128-byte swizzle;
  // at head_dim 32 all 32, 64-byte swizzle.
  const bool narrow = head_dim == 32;
  cuuint32_t box[5] = {narrow ? 32u : 64u, 1, 1, 1, 1}, estr[5] = {1, 1, 1, 1, 1};
  for (int i = 0; i < 3; ++i) {
    const int64_t extent = int64_t(1) << lg[i];
    if (p.dil[i] > 8 || extent * p.dil[i] > 256) return false;
    box[4 - i] = cuuint32_t(extent * p.dil[i]);  // dims 2, 3, 4 hold L2, L1, batch * L0
    estr[4 - i] = cuuint32_t(p.dil[i]);
  }
  // Batch and L0 share one dim: a box longer than one position along L0 could read the next
  // batch element's rows instead of zeros past L0 (their keys are masked, but a non-finite
  // value there would reach P V as 0 * inf).
  if (!past_end_unused && p.L[0] > 1 && p.batch > 1 && lg[0] > 0) return false;
  if (p.batch * p.L[0] > 0x7fffffff) return false;  // 32-bit TMA coordinates
  const int64_t row = int64_t(head_dim) * 2;        // bytes
  const cuuint64_t dim[5] = {cuuint64_t(head_dim), cuuint64_t(heads), cuuint64_t(p.L[2]),
                             cuuint64_t(p.L[1]), cuuint64_t(p.batch * p.L[0])};
  const cuuint64_t stride[4] = {cuuint64_t(row), cuuint64_t(row * heads),
                                cuuint64_t(row * heads * p.L[2]),
                                cuuint64_t(row * heads * p.L[2] * p.L[1])};
  const auto type = bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  for (int t = 0; t < n; ++t) {
    if (reinterpret_cast<uintptr_t>(base[t]) % 16 != 0) return false;
    const CUresult r = encode(out[t], type, 5, const_cast<void*>(base[t]), dim, stride, box, estr,
                              CU_TENSOR_MAP_INTERLEAVE_NONE,
                              narrow ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_128B,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return false;
  }
  return true;
}

}  // namespace

bool make_kv_maps(const fused::KernelParams& p, int head_dim, bool bf16, TmaMaps& maps) {
  const void* base[2] = {p.k, p.v};
  CUtensorMap* out[2] = {&maps.k, &maps.v};
  return make_maps(p, p.ts.klog, p.heads_kv, 2, base, out, head_dim, bf16, false);
}

bool make_qdo_maps(const fused::KernelParams& p, int head_dim, bool bf16, TmaMaps& maps) {
  const void* base[2] = {p.q, p.dout};
  CUtensorMap* out[2] = {&maps.k, &maps.v};
  return make_maps(p, p.ts.qlog, p.heads, 2, base, out, head_dim, bf16, false);
}

bool make_q_map(const fused::KernelParams& p, const int (&lg)[3], int head_dim, bool bf16,
                TmaMaps& maps) {
  const void* base[1] = {p.q};
  CUtensorMap* out[1] = {&maps.q};
  return make_maps(p, lg, p.heads, 1, base, out, head_dim, bf16, true);
}

}  // namespace hopper
}  // namespace jax_na
