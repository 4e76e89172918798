// How fast can an H100 add fp32 tiles into a buffer in L2? The question behind a backward
// that accumulates dQ in fp32 from its key-stationary kernel instead of running a dQ kernel
// (NOTES.md "Session 23": built, slower, not kept). On A1 that kernel adds 16896 tiles of
// 64 x 128 fp32 (553 MB) into a 16 MB dq; this times that traffic alone, for each way of adding
// and for plain stores. Each CTA stands for one of A1's 512 key tiles and adds its 33
// neighbouring query tiles, as the kernel did.
// Build and run (on the GPU machine):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a benchmarks/micro/l2_reduce_rate.cu \
//        -o l2_reduce_rate && ./l2_reduce_rate
// Results: BENCHMARKS.md "Session 23".
#include <cuda_runtime.h>

#include <cstdio>

constexpr int kTiles = 512, kReach = 16, kRowFloats = 128, kTileFloats = 64 * kRowFloats;

__device__ int query_tile(int kt, int j) {
  const int q = kt - kReach + j;
  return q < 0 ? 0 : (q >= kTiles ? kTiles - 1 : q);
}

enum Mode { kRedV2Frag, kRedV2, kRedV4, kBulk, kStore };

// kRedV2Frag: the wgmma accumulator's pattern (rows 16 w + lane / 4 and + 8, two columns a
// lane); kRedV2 / kRedV4 / kStore: a warp covers 256 / 512 contiguous bytes per instruction;
// kBulk: one thread adds the tile from shared memory with one cp.reduce.async.bulk of 32 KB.
template <Mode M>
__global__ void __launch_bounds__(128) add_tiles(float* buf, float x) {
  extern __shared__ float4 stage[];
  const int kt = blockIdx.x, tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  if (M == kBulk) {
    for (int i = tid; i < kTileFloats / 4; i += 128) stage[i] = make_float4(x, x, x, x);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
  }
  for (int j = 0; j <= 2 * kReach; ++j) {
    float* t = buf + size_t(query_tile(kt, j)) * kTileFloats;
    if (M == kRedV2Frag) {
      for (int h = 0; h < 2; ++h) {
        float* row = t + (16 * w + (lane >> 2) + 8 * h) * kRowFloats + 2 * (lane & 3);
#pragma unroll
        for (int n = 0; n < 16; ++n)
          asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(row + 8 * n), "f"(x), "f"(x)
                       : "memory");
      }
    } else if (M == kRedV2) {
#pragma unroll
      for (int k = 0; k < 32; ++k)
        asm volatile("red.global.add.v2.f32 [%0], {%1, %2};" ::"l"(t + 2 * (k * 128 + tid)),
                     "f"(x), "f"(x)
                     : "memory");
    } else if (M == kRedV4) {
#pragma unroll
      for (int k = 0; k < 16; ++k)
        asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(t + 4 * (k * 128 + tid)),
                     "f"(x), "f"(x), "f"(x), "f"(x)
                     : "memory");
    } else if (M == kStore) {
#pragma unroll
      for (int k = 0; k < 16; ++k)
        reinterpret_cast<float4*>(t)[k * 128 + tid] = make_float4(x, x, x, x);
    } else if (tid == 0) {
      const unsigned src = unsigned(__cvta_generic_to_shared(stage));
      asm volatile(
          "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n"
          "cp.async.bulk.commit_group;\n" ::"l"(t),
          "r"(src), "r"(kTileFloats * 4)
          : "memory");
      asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");  // two in flight
    }
  }
  if (M == kBulk && tid == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}

template <Mode M>
void time_mode(const char* name, float* buf, int reps) {
  const int smem = M == kBulk ? kTileFloats * 4 : 0;
  cudaFuncSetAttribute(add_tiles<M>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  add_tiles<M><<<kTiles, 128, smem>>>(buf, 1.f);  // warm-up
  cudaEventRecord(a);
  for (int r = 0; r < reps; ++r) add_tiles<M><<<kTiles, 128, smem>>>(buf, 1.f);
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  ms /= reps;
  const double bytes = double(kTiles) * (2 * kReach + 1) * kTileFloats * 4;
  printf("%-22s %8.1f us  %6.2f TB/s of fp32 tiles  %s\n", name, ms * 1e3, bytes / (ms * 1e-3) / 1e12,
         cudaGetErrorString(cudaGetLastError()));
}

int main() {
  float* buf;
  cudaMalloc(&buf, size_t(kTiles) * kTileFloats * 4);
  cudaMemset(buf, 0, size_t(kTiles) * kTileFloats * 4);
  for (int round = 0; round < 2; ++round) {
    time_mode<kStore>("st.global.v4", buf, 20);
    time_mode<kRedV2Frag>("red.v2 (wgmma frags)", buf, 20);
    time_mode<kRedV2>("red.v2 (coalesced)", buf, 20);
    time_mode<kRedV4>("red.v4 (coalesced)", buf, 20);
    time_mode<kBulk>("cp.reduce.async.bulk", buf, 20);
  }
  return 0;
}
