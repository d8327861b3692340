// Launchers for the shape kernels (kernels/resample.cu): nearest upsampling, zero padding and channel
// concat.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace sdmpi::kernels {

// x [b, h, w, c] → out [b, oh, ow, c] by PyTorch's nearest rule (see resample.cu); elements of
// elem_size bytes.
void upsample_nearest(cudaStream_t stream, size_t elem_size, const void* x, void* out, int64_t b, int64_t h,
                      int64_t w, int64_t c, int64_t oh, int64_t ow);
// Zero padding: x [b, h, w, c] → out [b, top + h + bottom, left + w + right, c].
void pad2d(cudaStream_t stream, size_t elem_size, const void* x, void* out, int64_t b, int64_t h, int64_t w,
           int64_t c, int64_t top, int64_t bottom, int64_t left, int64_t right);
// a [rows, ca] ++ b [rows, cb] → out [rows, ca + cb].
void concat_channels(cudaStream_t stream, size_t elem_size, const void* a, const void* b, void* out,
                     int64_t rows, int64_t ca, int64_t cb);

}  // namespace sdmpi::kernels
