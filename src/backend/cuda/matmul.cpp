// cuBLASLt matrix products with fused bias and residual (see matmul.h).
#include "backend/cuda/matmul.h"

#include <algorithm>

#include "backend/cuda/library_check.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

// Largest power of two (at most 256) dividing the address; what cuBLASLt's alignment preferences ask.
int alignment_of(const void* p) {
  if (!p) return 256;
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 1;
  while (align < 256 && (a % (2 * align)) == 0) align *= 2;
  return align;
}

// The alignment every product of a strided batch sees: the base's, and the stride's in bytes.
int batched_alignment(const void* p, int64_t stride_elements, size_t element_size) {
  const int base = alignment_of(p);
  if (!p || stride_elements == 0) return base;
  const auto stride_bytes = static_cast<uintptr_t>(stride_elements) * element_size;
  return std::min(base, alignment_of(reinterpret_cast<const void*>(stride_bytes)));
}

}  // namespace

Matmul::Matmul(cudaStream_t stream, void* workspace, size_t workspace_bytes, bool force_fallback)
    : stream_(stream), workspace_(workspace), workspace_bytes_(workspace_bytes), force_fallback_(force_fallback) {
  SDMPI_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Matmul::~Matmul() {
  for (auto& [key, p] : plans_) {
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.c) cublasLtMatrixLayoutDestroy(p.c);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  }
  if (fallback_) cublasDestroy(fallback_);
  if (handle_) cublasLtDestroy(handle_);
}

Matmul::Plan& Matmul::plan_for(const Key& key, DType t, const void* bias) {
  auto found = plans_.find(key);
  if (found != plans_.end()) return found->second;
  const auto [m, n, k, dtype_i, has_bias, has_residual, align_x, align_w, align_r, align_d, align_b, batch_count, x_stride,
              w_stride, bias_stride, out_stride] = key;
  (void)dtype_i;
  (void)align_b;
  Plan p;
  const cudaDataType_t type = cuda_type(t);
  SDMPI_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  SDMPI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t));
  SDMPI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n));
  if (has_bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    SDMPI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    const int32_t bias_type = type;
    SDMPI_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
    // The heuristic reads the bias pointer's alignment from here.
    SDMPI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  }
  // A = w viewed column-major [k, n] (op T), B = x column-major [k, m], C = D = out column-major [n, m].
  SDMPI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, type, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k));
  SDMPI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, type, static_cast<uint64_t>(k), static_cast<uint64_t>(m), k));
  SDMPI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, type, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
  SDMPI_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, type, static_cast<uint64_t>(n), static_cast<uint64_t>(m), n));
  if (batch_count > 1) {
    // A strided batch: every layout counts `batch_count` matrices; x's stride 0 broadcasts one x.
    auto batch_layout = [&](cublasLtMatrixLayout_t layout, int64_t stride) {
      const int32_t c32 = batch_count;
      SDMPI_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &c32, sizeof c32));
      SDMPI_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    };
    batch_layout(p.a, w_stride);
    batch_layout(p.b, x_stride);
    batch_layout(p.c, out_stride);
    batch_layout(p.d, out_stride);
    if (has_bias) {
      const int64_t bs = bias_stride;
      SDMPI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bs, sizeof bs));
    }
  }

  cublasLtMatmulPreference_t pref = nullptr;
  SDMPI_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  auto set_pref = [&](cublasLtMatmulPreferenceAttributes_t attr, uint32_t v) {
    SDMPI_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof v));
  };
  const uint64_t ws = workspace_bytes_;
  SDMPI_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(align_w));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(align_x));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(has_residual ? align_r : align_d));
  set_pref(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(align_d));

  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.d, pref, 1, &result, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  if (force_fallback_ && st == CUBLAS_STATUS_SUCCESS) count = 0;  // as if the heuristic had nothing
  if (st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    p.algo = result.algo;
    p.ok = true;
  } else if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) {
    SDMPI_CUBLAS_CHECK(st);
  } else {
    const std::string shape = std::string(dtype_name(t)) + " product [" + std::to_string(m) + ", " +
                              std::to_string(k) + "] x [" + std::to_string(k) + ", " + std::to_string(n) + "]" +
                              (batch_count > 1 ? " (a strided batch of " + std::to_string(batch_count) + ")" : "");
    if (has_bias || has_residual) {
      log::warn("cuda: cuBLASLt has no fused bias/residual algorithm for the " + shape +
                "; running the product and our epilogue kernel instead");
    } else {
      log::warn("cuda: cuBLASLt has no algorithm for the " + shape + "; using cublasGemmEx for it");
      p.gemm_ex = true;
      if (!fallback_) {
        SDMPI_CUBLAS_CHECK(cublasCreate(&fallback_));
        SDMPI_CUBLAS_CHECK(cublasSetStream(fallback_, stream_));
        // A workspace of ours keeps cuBLAS from allocating inside a CUDA-graph capture.
        SDMPI_CUBLAS_CHECK(cublasSetWorkspace(fallback_, workspace_, workspace_bytes_));
      }
    }
  }
  return plans_.emplace(key, p).first->second;
}

bool Matmul::run(DType t, const void* x, const void* w, const void* bias, const void* residual, void* out,
                 int64_t m, int64_t n, int64_t k, const MatmulBatch& batch) {
  if (m == 0 || n == 0 || batch.count == 0) return true;
  if (batch.count < 0 || (batch.count > 1 && residual))
    throw Error("cuda matmul: a strided batch of " + std::to_string(batch.count) + " products" +
                (residual ? " takes no residual" : " is negative"));
  const size_t es = dtype_size(t);
  const bool batched = batch.count > 1;
  Key key{m,
          n,
          k,
          static_cast<int>(t),
          bias != nullptr,
          residual != nullptr,
          batched_alignment(x, batched ? batch.x_stride : 0, es),
          batched_alignment(w, batched ? batch.w_stride : 0, es),
          alignment_of(residual),
          batched_alignment(out, batched ? batch.out_stride : 0, es),
          batched_alignment(bias, batched ? batch.bias_stride : 0, es),
          batch.count,
          batched ? batch.x_stride : 0,
          batched ? batch.w_stride : 0,
          batched ? batch.bias_stride : 0,
          batched ? batch.out_stride : 0};
  Plan& p = plan_for(key, t, bias);
  if (p.gemm_ex) {
    if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
      throw Error("cublasGemmEx: product [" + std::to_string(m) + ", " + std::to_string(k) + "] x [" +
                  std::to_string(k) + ", " + std::to_string(n) + "] exceeds its int dimensions");
    // The same column-major view as cuBLASLt's: out^T [n, m] = (w [k, n])^T · x^T [k, m].
    const float alpha = 1.0f, beta = 0.0f;
    const cudaDataType_t type = cuda_type(t);
    if (batched) {
      SDMPI_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
          fallback_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
          w, type, static_cast<int>(k), batch.w_stride, x, type, static_cast<int>(k), batch.x_stride, &beta, out, type,
          static_cast<int>(n), batch.out_stride, batch.count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      return true;
    }
    SDMPI_CUBLAS_CHECK(cublasGemmEx(fallback_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                    static_cast<int>(k), &alpha, w, type, static_cast<int>(k), x, type,
                                    static_cast<int>(k), &beta, out, type, static_cast<int>(n), CUBLAS_COMPUTE_32F,
                                    CUBLAS_GEMM_DEFAULT));
    return true;
  }
  if (!p.ok) return false;
  if (bias)
    SDMPI_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const float alpha = 1.0f, beta = residual ? 1.0f : 0.0f;
  const void* c = residual ? residual : out;
  SDMPI_CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &alpha, w, p.a, x, p.b, &beta, c, p.c, out, p.d, &p.algo,
                                    workspace_, workspace_bytes_, stream_));
  return true;
}

}  // namespace sdmpi::cuda
