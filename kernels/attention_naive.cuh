// Launcher for the simple reference attention kernel (kernels/attention_naive.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// Largest head dimension attention_naive supports.
constexpr int kNaiveAttentionMaxHeadDim = 512;

// q [b, nq, heads*d], k and v [b, nk, heads*d] (channel = head*d + i) → out [b, nq, heads*d] =
// softmax(q·kᵀ/√d [causal: key j ≤ query i]) · v, all of dtype t, float32 accumulation.
void attention_naive(cudaStream_t stream, DType t, const void* q, const void* k, const void* v, void* out,
                     int64_t b, int64_t nq, int64_t nk, int heads, int d, bool causal);

}  // namespace sdmpi::kernels
