// Launcher for the direct convolution (kernels/conv_direct.cu), the fallback for shapes cuDNN
// declines.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// y [n, ho, wo, k] = x [n, h, w, c] ⊛ w [k, r, s, c], zero padding `pad`, `stride`, float32
// accumulation, all tensors of dtype t.
void conv2d_direct(cudaStream_t stream, DType t, const void* x, const void* w, void* y, int64_t n, int64_t h,
                   int64_t wd, int64_t c, int64_t k, int64_t r, int64_t s, int stride, int pad, int64_t ho,
                   int64_t wo);

}  // namespace sdmpi::kernels
