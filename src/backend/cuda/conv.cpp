// cuDNN convolutions, NHWC/KRSC, algorithm chosen once per shape (see conv.h).
#include "backend/cuda/conv.h"

#include <string>

#include "backend/cuda/library_check.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi::cuda {
namespace {

cudnnDataType_t cudnn_type(DType t) {
  switch (t) {
    case DType::F32: return CUDNN_DATA_FLOAT;
    case DType::F16: return CUDNN_DATA_HALF;
    case DType::BF16: return CUDNN_DATA_BFLOAT16;
  }
  return CUDNN_DATA_FLOAT;
}

std::string describe(const ConvShape& s) {
  return std::string(dtype_name(s.t)) + " conv x[" + std::to_string(s.n) + ", " + std::to_string(s.h) + ", " +
         std::to_string(s.w) + ", " + std::to_string(s.c) + "] w[" + std::to_string(s.k) + ", " +
         std::to_string(s.r) + ", " + std::to_string(s.s) + ", " + std::to_string(s.c) +
         "] stride " + std::to_string(s.stride) + " pad " + std::to_string(s.pad);
}

int as_int(int64_t v, const ConvShape& s) {
  if (v > 2147483647LL) throw Error("cuDNN: dimension " + std::to_string(v) + " too large in " + describe(s));
  return static_cast<int>(v);
}

// The math modes allowed for a dtype: float32 must not use TF32 tensor cores.
cudnnMathType_t math_for(DType t, cudnnMathType_t suggested) {
  if (t == DType::F32) return CUDNN_FMA_MATH;
  return suggested == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ? CUDNN_TENSOR_OP_MATH : suggested;
}

}  // namespace

Convolution::Convolution(cudnnHandle_t handle) : handle_(handle) {}

Convolution::~Convolution() {
  for (auto& [key, p] : plans_) {
    if (p.x) cudnnDestroyTensorDescriptor(p.x);
    if (p.y) cudnnDestroyTensorDescriptor(p.y);
    if (p.w) cudnnDestroyFilterDescriptor(p.w);
    if (p.conv) cudnnDestroyConvolutionDescriptor(p.conv);
    if (p.fused_conv) cudnnDestroyConvolutionDescriptor(p.fused_conv);
    if (p.bias) cudnnDestroyTensorDescriptor(p.bias);
    if (p.identity) cudnnDestroyActivationDescriptor(p.identity);
  }
}

Convolution::Plan& Convolution::plan_for(const ConvShape& s) {
  Key key{s.n, s.h, s.w, s.c, s.k, s.r, s.s, s.stride, s.pad, static_cast<int>(s.t)};
  auto found = plans_.find(key);
  if (found != plans_.end()) return found->second;
  Plan p;
  const cudnnDataType_t type = cudnn_type(s.t);
  SDMPI_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.x));
  SDMPI_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.y));
  SDMPI_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p.w));
  SDMPI_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.conv));
  Plan& stored = plans_.emplace(key, p).first->second;  // from here on the destructor frees them
  // With CUDNN_TENSOR_NHWC the dimensions are still given in the order n, c, h, w.
  SDMPI_CUDNN_CHECK(cudnnSetTensor4dDescriptor(stored.x, CUDNN_TENSOR_NHWC, type, as_int(s.n, s), as_int(s.c, s),
                                               as_int(s.h, s), as_int(s.w, s)));
  SDMPI_CUDNN_CHECK(cudnnSetFilter4dDescriptor(stored.w, type, CUDNN_TENSOR_NHWC, as_int(s.k, s), as_int(s.c, s),
                                               as_int(s.r, s), as_int(s.s, s)));
  SDMPI_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(stored.conv, s.pad, s.pad, s.stride, s.stride, 1, 1,
                                                    CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  SDMPI_CUDNN_CHECK(cudnnSetConvolutionMathType(stored.conv, math_for(s.t, CUDNN_TENSOR_OP_MATH)));
  int on = 0, oc = 0, oh = 0, ow = 0;
  SDMPI_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(stored.conv, stored.x, stored.w, &on, &oc, &oh, &ow));
  if (on != s.n || oc != s.k || oh != s.out_h() || ow != s.out_w())
    throw Error("cuDNN: unexpected output size [" + std::to_string(on) + ", " + std::to_string(oh) + ", " +
                std::to_string(ow) + ", " + std::to_string(oc) + "] for " + describe(s));
  SDMPI_CUDNN_CHECK(cudnnSetTensor4dDescriptor(stored.y, CUDNN_TENSOR_NHWC, type, on, oc, oh, ow));
  return stored;
}

void Convolution::choose(Plan& p, const ConvShape& s, const void* x, const void* w, void* y,
                         const WorkspaceFn& workspace) {
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int count = 0;
  SDMPI_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p.x, p.w, p.conv, p.y,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, perf));
  std::string tried;
  // Deterministic candidates first (all forward algorithms are, in practice), each in heuristic order.
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < count; ++i) {
      const cudnnConvolutionFwdAlgoPerf_t& c = perf[i];
      if (c.status != CUDNN_STATUS_SUCCESS) continue;
      if ((c.determinism == CUDNN_DETERMINISTIC) != (pass == 0)) continue;
      const cudnnMathType_t math = math_for(s.t, c.mathType);
      SDMPI_CUDNN_CHECK(cudnnSetConvolutionMathType(p.conv, math));
      size_t bytes = 0;
      cudnnStatus_t st = cudnnGetConvolutionForwardWorkspaceSize(handle_, p.x, p.w, p.conv, p.y, c.algo, &bytes);
      if (st != CUDNN_STATUS_SUCCESS) {
        tried += " algo " + std::to_string(c.algo) + ": " + cudnnGetErrorString(st) + ";";
        continue;
      }
      const float alpha = 1.0f, beta = 0.0f;
      void* ws = bytes ? workspace(bytes) : nullptr;
      st = cudnnConvolutionForward(handle_, &alpha, p.x, x, p.w, w, p.conv, c.algo, ws, bytes, &beta, p.y, y);
      if (st != CUDNN_STATUS_SUCCESS) {
        tried += " algo " + std::to_string(c.algo) + ": " + cudnnGetErrorString(st) + ";";
        continue;
      }
      p.algo = c.algo;
      p.math = math;
      p.workspace = bytes;
      p.chosen = true;
      log::debug("cuda: " + describe(s) + ": cuDNN algorithm " + std::to_string(c.algo) + ", math " +
                 std::to_string(math) + ", workspace " + std::to_string(bytes) + " bytes");
      return;
    }
  }
  p.unsupported = true;
  log::warn("cuda: cuDNN has no working algorithm for " + describe(s) + ";" + (tried.empty() ? " none offered" : tried) +
            "; running it as patches x weights (im2col + cuBLASLt) instead");
}

bool Convolution::run(const ConvShape& s, const void* x, const void* w, void* y, const WorkspaceFn& workspace) {
  if (s.n == 0 || s.k == 0) return true;
  Plan& p = plan_for(s);
  if (p.unsupported) return false;
  if (!p.chosen) {
    choose(p, s, x, w, y, workspace);  // ran the convolution while choosing, when it found one
    return p.chosen;
  }
  const float alpha = 1.0f, beta = 0.0f;
  void* ws = p.workspace ? workspace(p.workspace) : nullptr;
  SDMPI_CUDNN_CHECK(cudnnConvolutionForward(handle_, &alpha, p.x, x, p.w, w, p.conv, p.algo, ws, p.workspace,
                                            &beta, p.y, y));
  return true;
}

bool Convolution::run_fused(const ConvShape& s, const void* x, const void* w, const void* bias, const void* residual,
                            void* y, const WorkspaceFn& workspace) {
  if (s.n == 0 || s.k == 0) return true;
  Plan& p = plan_for(s);
  if (p.fused < 0) return false;
  constexpr cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  const float alpha1 = 1.0f, alpha2 = residual ? 1.0f : 0.0f;
  // Without a residual z is y itself with alpha2 = 0 (cuDNN allows z == y).
  const void* z = residual ? residual : y;
  if (p.fused == 0) {
    SDMPI_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p.fused_conv));
    SDMPI_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p.bias));
    SDMPI_CUDNN_CHECK(cudnnCreateActivationDescriptor(&p.identity));
    SDMPI_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p.fused_conv, s.pad, s.pad, s.stride, s.stride, 1, 1,
                                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    SDMPI_CUDNN_CHECK(cudnnSetConvolutionMathType(p.fused_conv, math_for(s.t, CUDNN_TENSOR_OP_MATH)));
    SDMPI_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p.bias, CUDNN_TENSOR_NHWC, cudnn_type(s.t), 1, as_int(s.k, s), 1, 1));
    SDMPI_CUDNN_CHECK(cudnnSetActivationDescriptor(p.identity, CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    size_t bytes = 0;
    cudnnStatus_t st = cudnnGetConvolutionForwardWorkspaceSize(handle_, p.x, p.w, p.fused_conv, p.y, algo, &bytes);
    if (st == CUDNN_STATUS_SUCCESS) {
      void* ws = bytes ? workspace(bytes) : nullptr;
      st = cudnnConvolutionBiasActivationForward(handle_, &alpha1, p.x, x, p.w, w, p.fused_conv, algo, ws, bytes, &alpha2,
                                                 p.y, z, p.bias, bias, p.identity, p.y, y);
    }
    if (st != CUDNN_STATUS_SUCCESS) {
      p.fused = -1;
      log::warn("cuda: cuDNN declines the fused convolution + bias + residual for " + describe(s) + " (" +
                cudnnGetErrorString(st) + "); running the convolution and our epilogue kernel instead");
      return false;
    }
    p.fused = 1;
    p.fused_workspace = bytes;
    return true;
  }
  void* ws = p.fused_workspace ? workspace(p.fused_workspace) : nullptr;
  SDMPI_CUDNN_CHECK(cudnnConvolutionBiasActivationForward(handle_, &alpha1, p.x, x, p.w, w, p.fused_conv, algo, ws,
                                                          p.fused_workspace, &alpha2, p.y, z, p.bias, bias, p.identity,
                                                          p.y, y));
  return true;
}

}  // namespace sdmpi::cuda
