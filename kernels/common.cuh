// Device-side helpers shared by the kernels: storage types, float conversion, dtype dispatch,
// launch sizing and deterministic block reductions.
//
// Every kernel loads its storage type (float, __half, __nv_bfloat16), computes in float and rounds
// once when it stores (round to nearest even), as eager PyTorch does for half types. Reductions are
// written as fixed trees (warp shuffles, then one warp over the warps' partials): no atomics, so a
// result never depends on scheduling and two runs give the same bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda_check.cuh"
#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// GELU with the exact erf (torch's approximate="none"); shared by the geglu kernel and the fused
// feed-forward product (kernels/linear_geglu.cu) so both gate with the same arithmetic.
__device__ __forceinline__ float gelu_erf(float x) { return x * 0.5f * (1.0f + erff(x * 0.70710678118654752440f)); }

// Value of v after rounding to storage type T (identity for float).
template <typename T>
__device__ __forceinline__ float round_to(float v) { return to_float(from_float<T>(v)); }

// Runs the statement list with T bound to the storage type of `dtype`.
#define SDMPI_DISPATCH_FLOAT_TYPES(dtype, T, ...)        \
  switch (dtype) {                                       \
    case ::sdmpi::DType::F32: {                          \
      using T = float;                                   \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    case ::sdmpi::DType::F16: {                          \
      using T = __half;                                  \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
    case ::sdmpi::DType::BF16: {                         \
      using T = __nv_bfloat16;                           \
      __VA_ARGS__;                                       \
      break;                                             \
    }                                                    \
  }

// Same for pure data movement, keyed by element size (2 or 4 bytes).
#define SDMPI_DISPATCH_ELEMENT_SIZE(size, T, ...)                               \
  switch (size) {                                                               \
    case 2: {                                                                   \
      using T = uint16_t;                                                       \
      __VA_ARGS__;                                                              \
      break;                                                                    \
    }                                                                           \
    case 4: {                                                                   \
      using T = uint32_t;                                                       \
      __VA_ARGS__;                                                              \
      break;                                                                    \
    }                                                                           \
    default:                                                                    \
      throw ::sdmpi::Error("internal: unsupported element size " + std::to_string(size)); \
  }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill any current GPU several times over,
// few enough that each thread does a handful of items.
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, 65536));
}

#define SDMPI_GRID_STRIDE(i, n)                                                            \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// The same with index type I. Kernels that split a flat index into coordinates (a division and a
// modulo per element) use 32-bit indices whenever the tensor allows: 64-bit integer division is a
// long software sequence on the GPU and would cost more than the memory traffic of such kernels.
#define SDMPI_GRID_STRIDE_AS(I, i, n)                                                  \
  for (I i = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x); \
       i < (n); i += static_cast<I>(blockDim.x) * static_cast<I>(gridDim.x))

// Runs the statement list with I = int32_t when every index below `n` plus one grid stride fits in
// 31 bits (grid_for caps the grid at 65536 x 1024 threads), else I = int64_t.
#define SDMPI_DISPATCH_INDEX(n, I, ...)            \
  if ((n) < (int64_t{1} << 30)) {                  \
    using I = int32_t;                             \
    __VA_ARGS__;                                   \
  } else {                                         \
    using I = int64_t;                             \
    __VA_ARGS__;                                   \
  }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds at least 33 floats of shared memory. Ends with a barrier, so it can be called
// again with the same scratch.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? scratch[lane] : 0.0f;
    w = warp_sum(w);
    if (lane == 0) scratch[32] = w;
  }
  __syncthreads();
  float total = scratch[32];
  __syncthreads();
  return total;
}

}  // namespace sdmpi::kernels
