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
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "sdmpi/dtype.h"

namespace sdmpi::cuda {

class Matmul {
 public:
  Matmul(cudaStream_t stream, void* workspace, size_t workspace_bytes);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;

  // Runs the product. Returns false (and does nothing) when cuBLASLt has no algorithm with the bias
  // fused for this problem; the caller then runs it without bias and adds bias and residual itself.
  bool run(DType t, const void* x, const void* w, const void* bias, const void* residual, void* out, int64_t m,
           int64_t n, int64_t k);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool ok = false;  // an algorithm was found
  };
  // m, n, k, dtype, has bias, has residual, alignments of x, w, residual, out, bias
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, bool, int, int, int, int, int>;
  Plan& plan_for(const Key& key, DType t, const void* bias);

  cudaStream_t stream_;
  void* workspace_;
  size_t workspace_bytes_;
  cublasLtHandle_t handle_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace sdmpi::cuda
