// 2-D convolutions through cuDNN, channels-last.
//
// x [n, h, w, c] (NHWC) ⊛ w [k, r, s, c] (KRSC, our OHWI) → y [n, ho, wo, k] (NHWC), zero padding
// `pad` on every side, `stride` both ways, cross-correlation like PyTorch, float32 accumulation.
//
// API choice: the legacy cudnnConvolutionForward (deprecated in cuDNN 9, still shipped and
// supported). It runs every shape the models have, including the odd channel counts of conv_in (4)
// and the VAE's conv_out (3) that the graph API's runtime-fusion engines reject, and it lets us pin
// the math mode: CUDNN_FMA_MATH in float32 (no TF32, so float32 matches the CPU), tensor-op math in
// F16/BF16. Bias and residual: run_fused() adds them in the same cuDNN call
// (cudnnConvolutionBiasActivationForward, y = conv(x) + residual + bias, identity activation),
// which takes the bias in the data type and, for an identity activation, only the
// IMPLICIT_PRECOMP_GEMM algorithm; one call instead of the convolution plus our epilogue kernel.
// Where cuDNN declines that for a shape, run_fused() says so once and the caller runs run() and
// its epilogue kernel (kernels/elementwise.cu bias_residual, bias in float32). A cuDNN graph
// (conv → add bias → add residual, runtime fusion) would free the algorithm choice; it needs a GPU
// to validate.
//
// Algorithm: chosen once per (shape, dtype) from cuDNN's heuristic ranking
// (cudnnGetConvolutionForwardAlgorithm_v7), taking the first deterministic candidate whose workspace
// query and first execution succeed. Heuristics rather than timing (cudnnFind*) so that a shape always
// gets the same algorithm on the same GPU model and runs give the same bits. When no candidate works,
// run() says so (once per shape, with a warning listing what cuDNN answered) and the backend runs
// the shape as patches times weights (kernels/im2col.cu + cuBLASLt, bias and residual fused), a
// tensor-core path; the direct kernel (kernels/conv_direct.cu) is only a debugging aid.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <functional>
#include <map>
#include <tuple>

#include "sdmpi/dtype.h"

namespace sdmpi::cuda {

struct ConvShape {
  int64_t n, h, w, c;  // input
  int64_t k, r, s;     // filters
  int stride, pad;
  DType t;
  int64_t out_h() const { return (h + 2 * pad - r) / stride + 1; }
  int64_t out_w() const { return (w + 2 * pad - s) / stride + 1; }
};

class Convolution {
 public:
  // Workspace comes from the caller's allocator for each call: (bytes) → device pointer that stays
  // valid until the call returns and the stream has run the convolution.
  using WorkspaceFn = std::function<void*(size_t bytes)>;

  Convolution(cudnnHandle_t handle);
  ~Convolution();
  Convolution(const Convolution&) = delete;
  Convolution& operator=(const Convolution&) = delete;

  // y = conv(x, w). The first call for a shape picks and caches the algorithm. Returns false (having
  // done nothing) when cuDNN has no working algorithm for the shape.
  bool run(const ConvShape& shape, const void* x, const void* w, void* y, const WorkspaceFn& workspace);
  // y = conv(x, w) + residual + bias in one cuDNN call; bias [k] in the data type, residual (NHWC
  // like y) may be null. Returns false (having done nothing) when cuDNN declines it for the shape,
  // which it then remembers (one warning).
  bool run_fused(const ConvShape& shape, const void* x, const void* w, const void* bias, const void* residual,
                 void* y, const WorkspaceFn& workspace);

 private:
  struct Plan {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t conv = nullptr;
    cudnnConvolutionFwdAlgo_t algo{};
    cudnnMathType_t math{};
    size_t workspace = 0;
    bool chosen = false;
    bool unsupported = false;  // cuDNN declined every algorithm
    // run_fused(): its own convolution descriptor (the math mode differs), bias and activation.
    cudnnConvolutionDescriptor_t fused_conv = nullptr;
    cudnnTensorDescriptor_t bias = nullptr;
    cudnnActivationDescriptor_t identity = nullptr;
    size_t fused_workspace = 0;
    int fused = 0;  // 0 not tried yet, 1 works, -1 declined
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int, int, int>;
  Plan& plan_for(const ConvShape& shape);
  void choose(Plan& p, const ConvShape& shape, const void* x, const void* w, void* y, const WorkspaceFn& workspace);

  cudnnHandle_t handle_;
  std::map<Key, Plan> plans_;
};

}  // namespace sdmpi::cuda
