// Element-type dispatch shared by the CUDA families' entry points.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "problem.h"

namespace jax_na {

template <class T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T the element type of p.dtype; an empty problem launches nothing.
template <class F>
cudaError_t dispatch_dtype(const Problem& p, F&& f) {
  if (p.batch * p.tokens() * p.heads == 0) return cudaSuccess;
  switch (p.dtype) {
    case DType::kF32: return f(TypeTag<float>{});
    case DType::kF16: return f(TypeTag<__half>{});
    case DType::kBF16: return f(TypeTag<__nv_bfloat16>{});
  }
  return cudaErrorNotSupported;
}

}  // namespace jax_na
