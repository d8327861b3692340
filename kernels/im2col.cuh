// Launcher for the patch gather (kernels/im2col.cu) behind the convolution's GEMM path.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace sdmpi::kernels {

// Rows [row_begin, row_begin + rows) of the patch matrix of x [n, h, w, c] (NHWC) for an r x s
// kernel, `stride`, zero padding `pad`: row (b, oy, ox) = b * ho * wo + oy * wo + ox holds the
// r * s * c values x[b, oy*stride - pad + ky, ox*stride - pad + kx, ch] in (ky, kx, ch) order, 0
// outside the image. Elements of elem_size bytes; out is [rows, r * s * c].
void im2col_nhwc(cudaStream_t stream, size_t elem_size, const void* x, void* out, int64_t h, int64_t w, int64_t c,
                 int64_t r, int64_t s, int stride, int pad, int64_t ho, int64_t wo, int64_t row_begin, int64_t rows);

}  // namespace sdmpi::kernels
