// The current CUDA device as the host-side launchers need it: SM count (grid sizes of
// persistent and one-block-per-SM kernels) and compute capability (which kernels it runs).
#pragma once

#include <cuda_runtime.h>

namespace jax_na {

struct DeviceInfo {
  int sms = 0;
  int major = 0;
  int minor = 0;
};

inline cudaError_t current_device(DeviceInfo& d) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, dev);
  return e;
}

}  // namespace jax_na
