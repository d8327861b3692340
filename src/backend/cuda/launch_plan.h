// The CUDA backend's path choices that depend on shapes only, shared by the backend
// (cuda_backend.cpp) and its launch table (launch_table.cpp), so the table predicts the path the
// backend takes by construction. Host code without CUDA headers: it builds without a GPU toolkit.
#pragma once

#include <algorithm>
#include <cstdint>

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

// The attention kernels' grid takes at most this many batch items per launch.
constexpr int64_t kAttentionMaxBatch = 65535;

}  // namespace sdmpi::cuda
