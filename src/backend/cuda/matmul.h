// Matrix products through cuBLASLt, with the bias and the residual add fused into the epilogue.
//
// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) (+ residual[m, n]), row-major, all in one dtype, with
// float32 accumulation and float32 scaling. cuBLASLt is column-major, so the product is computed
// transposed: outᵀ[n, m] = w[n, k] · xᵀ[k, m], where the row-major buffers already are the
// column-major matrices w ᵀ-view [k, n] (op T) and xᵀ [k, m] (op N). Its bias epilogue adds a vector
// along the rows of the column-major result, which is exactly bias[n]; the residual enters as C with
// beta = 1. cuBLASLt's epilogue reads the bias in the output dtype, so the caller passes it in that
// dtype.
//
// The algorithm is cuBLASLt's first heuristic answer for (m, n, k, dtype, epilogue, alignments),
// asked once and cached: the same shapes on the same GPU model always run the same kernel, hence
// the same bits. In float32 the compute type is CUBLAS_COMPUTE_32F, which never uses TF32.
//
// A strided batch of such products runs as one call (MatmulBatch): product i reads x + i*x_stride,
// w + i*w_stride, bias + i*bias_stride and writes out + i*out_stride (strides in elements). A stride
// of 0 broadcasts: linear_qkv multiplies one x by the packed [wq; wk; wv] (w_stride n*k) into three
// dense slices of one buffer.
//
// When the heuristic has nothing, the choice falls back and is cached per shape like the rest,
// with one warning naming the shape: with a bias or residual, run() answers false and the caller
// runs the plain product plus its own epilogue kernel; a plain product with no cuBLASLt algorithm
// at all runs through cublasGemmEx with CUBLAS_GEMM_DEFAULT, which cuBLAS always has.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "sdmpi/dtype.h"

namespace sdmpi::cuda {

// A strided batch of `count` products (see above); the default is one product.
struct MatmulBatch {
  int count = 1;
  int64_t x_stride = 0, w_stride = 0, bias_stride = 0, out_stride = 0;
};

class Matmul {
 public:
  // force_fallback: behave as if cuBLASLt had no algorithm for any shape (SDMPI_CUDA_MATMUL=fallback,
  // so the GPU tests exercise the fallbacks).
  Matmul(cudaStream_t stream, void* workspace, size_t workspace_bytes, bool force_fallback = false);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;

  // Runs the product. Returns false (and does nothing) when cuBLASLt has no algorithm with the bias
  // fused for this problem; the caller then runs it without bias and adds bias and residual itself.
  // A batch takes no residual.
  bool run(DType t, const void* x, const void* w, const void* bias, const void* residual, void* out, int64_t m,
           int64_t n, int64_t k, const MatmulBatch& batch = MatmulBatch{});

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;        // cuBLASLt has an algorithm
    bool gemm_ex = false;   // plain product without one: cublasGemmEx
  };
  // m, n, k, dtype, has bias, has residual, alignments of x, w, residual, out, bias, batch count and
  // strides (x, w, bias, out)
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, bool, int, int, int, int, int, int, int64_t, int64_t,
                         int64_t, int64_t>;
  Plan& plan_for(const Key& key, DType t, const void* bias);

  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  bool force_fallback_;
  cublasLtHandle_t handle_ = nullptr;
  cublasHandle_t fallback_ = nullptr;  // created on the first shape that needs it
  std::map<Key, Plan> plans_;
};

}  // namespace sdmpi::cuda
