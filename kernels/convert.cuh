// Launchers for dtype conversion and the weight-layout permute done at upload (kernels/convert.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// dst[i] = src[i] converted from `from` to `to`, round to nearest even.
void convert(cudaStream_t stream, DType from, const void* src, DType to, void* dst, int64_t n);
// PyTorch's conv weight [o, i, kh, kw] (dtype from) → our [o, kh, kw, i] (dtype to).
void convert_oihw_to_ohwi(cudaStream_t stream, DType from, const void* src, DType to, void* dst, int64_t o,
                          int64_t i, int64_t kh, int64_t kw);

}  // namespace sdmpi::kernels
