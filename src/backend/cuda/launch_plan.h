// The CUDA backend's path choices that depend on shapes only, shared by the backend
// (cuda_backend.cpp) and its launch table (launch_table.cpp), so the table predicts the path the
// backend takes by construction. Host code without CUDA headers: it builds without a GPU toolkit.
#pragma once

#include <algorithm>
#include <cstdint>

#include "sdmpi/dtype.h"

namespace sdmpi::cuda {

// A convolution that is a matrix product over the pixels (NHWC): 1x1, stride 1, no padding.
inline bool conv_runs_as_matmul(int64_t kh, int64_t kw, int stride, int pad) {
  return kh == 1 && kw == 1 && stride == 1 && pad == 0;
}

// cuDNN's legacy descriptors count elements in int: a convolution runs in batch pieces of at most
// this many items, each below 2^31 elements in and out.
inline int64_t conv_batch_piece(int64_t n, int64_t per_item_in, int64_t per_item_out) {
  const int64_t limit = (int64_t{1} << 31) - 1;
  const int64_t per_item = std::max<int64_t>(std::max<int64_t>(per_item_in, per_item_out), 1);
  return std::max<int64_t>(1, std::min<int64_t>(n, limit / per_item));
}

// linear_geglu runs as one kernel (kernels/linear_geglu.cu: tensor cores, the gate in the
// epilogue) for F16/BF16, a non-empty product and c at most 65535 tiles of 64 output columns;
// otherwise as the cuBLASLt product then the geglu kernel. (Debug switch SDMPI_CUDA_GEGLU=unfused
// and GPUs before sm_80 take the two launches too; the launch table does not model them.)
inline bool linear_geglu_fused(DType t, int64_t m, int64_t c, int64_t k) {
  return t != DType::F32 && m > 0 && c > 0 && k > 0 && c <= int64_t{65535} * 64;
}

// The attention kernels' grid takes at most this many batch items per launch.
constexpr int64_t kAttentionMaxBatch = 65535;

}  // namespace sdmpi::cuda
