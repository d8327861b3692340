// Launchers for the elementwise kernels (kernels/elementwise.cu). Pointers are device memory; `n`
// counts elements. All tensors are dense; dtypes are the storage types of the operands.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "sdmpi/backend.h"
#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// out = a (op) b, all of dtype t, rounded like one eager PyTorch op.
void binary(cudaStream_t stream, BinaryOp op, DType t, const void* a, const void* b, void* out, int64_t n);
// out = a (op) s, or s (op) a with scalar_first.
void binary_scalar(cudaStream_t stream, BinaryOp op, DType t, const void* a, float s, bool scalar_first,
                   void* out, int64_t n);
void activation(cudaStream_t stream, Activation act, DType t, const void* x, void* out, int64_t n);
// x [rows, 2c] → out [rows, c] = x[:, :c] * GELU(x[:, c:]).
void geglu(cudaStream_t stream, DType t, const void* x, void* out, int64_t rows, int64_t c);
// NaN stays NaN (torch.clamp).
void clamp(cudaStream_t stream, DType t, const void* x, void* out, int64_t n, float lo, float hi);
// x [batch, inner, c] (dtype tx) + t [batch, c] (dtype tt: tx or F32) → out [batch, inner, c] (tx).
void add_batch_channel(cudaStream_t stream, DType tx, const void* x, DType tt, const void* t, void* out,
                       int64_t batch, int64_t inner, int64_t c);
// In place on y [rows, c] (dtype t): y = (y + bias[c]) + residual[r, c]; bias (F32) and residual
// (dtype t) may each be null. The epilogue of convolutions and of un-fused matrix products.
void bias_residual(cudaStream_t stream, DType t, void* y, const float* bias, const void* residual,
                   int64_t rows, int64_t c);
// eps [2, half] (uncond rows, then cond rows) → out [half] = u + scale * (c - u), rounding to t
// after each of the three ops like eager PyTorch.
void guidance_combine(cudaStream_t stream, DType t, const void* eps, void* out, int64_t half, float scale);

}  // namespace sdmpi::kernels
