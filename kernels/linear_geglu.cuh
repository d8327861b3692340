// Launcher for the feed-forward's first product with its GEGLU gate in the epilogue
// (kernels/linear_geglu.cu): one launch instead of a cuBLASLt product plus the geglu kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// The problems linear_geglu takes: F16 or BF16 (tensor cores; F32 keeps the cuBLASLt product and
// the geglu kernel), a non-empty product, c at most 65535 tiles of 64 (the grid's second
// dimension). The backend decides with cuda::linear_geglu_fused (src/backend/cuda/launch_plan.h),
// which states the same limits; the launcher throws on anything else.
constexpr int64_t kLinearGegluMaxC = int64_t{65535} * 64;

// out [m, c] = a * GELU(g) with [a | g] = x [m, k] · w [2c, k]ᵀ + bias [2c] (a: product columns
// [0, c), g: [c, 2c)), all of dtype t, bias (dtype t, as cuBLASLt's epilogue reads it) may be null.
// Float32 accumulation; a and g are rounded to t as the stored product would be, then the gate is
// computed in float and rounded once, like the geglu kernel (kernels/elementwise.cu). Needs sm_80.
void linear_geglu(cudaStream_t stream, DType t, const void* x, const void* w, const void* bias, void* out, int64_t m,
                  int64_t c, int64_t k);

}  // namespace sdmpi::kernels
