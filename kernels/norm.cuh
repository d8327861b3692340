// Launchers for the normalisation kernels (kernels/norm.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::kernels {

// GroupNorm over x [batch, spatial, channels] (channels-last), `groups` groups of channels/groups
// channels, biased variance, then gamma/beta (F32), then SiLU when `silu`: one kernel launch.
// offset: null, or [batch, channels] of type offset_dtype (F32 or t) added to x first, rounded to t
// (add_batch_channel's values, never stored); its rows offset_stride elements apart (0: channels;
// a column range of a wider tensor: that tensor's width). out may not alias x.
void group_norm(cudaStream_t stream, DType t, const void* x, DType offset_dtype, const void* offset, void* out,
                const float* gamma, const float* beta, int64_t batch, int64_t spatial, int64_t channels, int64_t groups,
                float eps, bool silu, int64_t offset_stride = 0);

// The same norm over the channel concat [a | b] (a [batch, spatial, ca], b [batch, spatial,
// channels - ca], no offset), which it also writes to joined [batch, spatial, channels]: one launch
// for concat_channels and group_norm. out and joined may not alias a or b.
void group_norm_joined(cudaStream_t stream, DType t, const void* a, const void* b, int64_t ca, void* joined, void* out,
                       const float* gamma, const float* beta, int64_t batch, int64_t spatial, int64_t channels,
                       int64_t groups, float eps, bool silu);

// LayerNorm over the last dimension of x [rows, c], biased variance, gamma/beta in F32.
void layer_norm(cudaStream_t stream, DType t, const void* x, void* out, const float* gamma, const float* beta,
                int64_t rows, int64_t c, float eps);

}  // namespace sdmpi::kernels
