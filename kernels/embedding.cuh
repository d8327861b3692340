// Launchers for the embedding kernels (kernels/embedding.cu): table lookups and the sinusoidal
// timestep embedding.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// out [n, c] = table[ids[i], :] (ids on the device, already checked to lie in the table).
void embedding_gather(cudaStream_t stream, size_t elem_size, const int32_t* ids, const void* table, void* out,
                      int64_t n, int64_t c);
// diffusers' get_timestep_embedding for t [batch] (F32) → out [batch, dim] of dtype `out_t`.
void timestep_embedding(cudaStream_t stream, DType out_t, const float* t, void* out, int64_t batch, int dim,
                        bool flip_sin_to_cos, float shift);

}  // namespace sdmpi::kernels
