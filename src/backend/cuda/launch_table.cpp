// The CUDA backend's launches per op: one table, host code, built with and without CUDA.
//
// Each row restates what cuda_backend.cpp enqueues for the op (kernels, cudaMemcpyAsync and
// cudaMemsetAsync: each one node of a captured graph), using the shared path choices of
// launch_plan.h. Parameters (biases, norm scales) are converted once when first seen, which the
// warm-up run of a captured step does, so they cost nothing here. Debug switches
// (SDMPI_CUDA_CONV, SDMPI_CUDA_ATTENTION, poisoning) and library fallbacks (cuBLASLt without an
// epilogue algorithm: +1 per product; cuDNN declining the fused convolution: +1) are not modelled:
// tests/gpu/cuda_launch_count_test.cpp compares the table with a real capture, so a library that
// does not take the fused path shows up there.
#include <string>

#include "backend/cuda/launch_plan.h"
#include "sdmpi/cuda_backend.h"

namespace sdmpi {

namespace {

bool empty(const Shape& s) { return shape_numel(s) == 0; }

// The product out [m, n] = x [m, k] · w [n, k]ᵀ with bias and residual in cuBLASLt's epilogue
// (CudaBackendImpl::matmul_into).
CudaOpLaunches matmul(int64_t m, int64_t n, int64_t k, bool bias, bool residual) {
  if (m == 0 || n == 0) return {0, "empty product"};
  if (k == 0) return {(bias || residual) ? 2 : 1, "empty sum: memset + bias/residual kernel"};
  return {1, std::string("cuBLASLt") + (bias || residual ? ", bias/residual epilogue" : "")};
}

int64_t rows_of(const Shape& s) { return s.empty() ? 0 : shape_numel(s) / std::max<int64_t>(s.back(), 1); }

}  // namespace

CudaOpLaunches cuda_op_launches(const OpCall& c) {
  const std::string op = c.op;
  if (op == "linear") return matmul(rows_of(c.x), c.w.at(0), c.w.at(1), c.bias, c.residual);
  if (op == "linear_qkv") {
    // One strided-batched product over the packed [wq; wk; wv] (packed once, like a parameter).
    const int64_t m = rows_of(c.x), n = c.w.at(0), k = c.w.at(1);
    if (m == 0 || n == 0) return {0, "empty product"};
    if (k == 0) return {3 * (c.bias ? 2 : 1), "empty sums: 3 x (memset + bias kernel)"};
    return {1, std::string("cuBLASLt strided batch of 3 (q, k, v)") + (c.bias ? ", bias epilogue" : "")};
  }
  if (op == "linear_stacked") {
    // One product over the weights stacked once (w: the stacked [N_0 + ... + N_{n-1}, K]).
    CudaOpLaunches product = matmul(rows_of(c.x), c.w.at(0), c.w.at(1), c.bias, false);
    return {product.launches, product.path + " over the stacked weights"};
  }
  if (op == "linear_geglu") {
    // F16/BF16: one tensor-core kernel with the gate in its epilogue (kernels/linear_geglu.cu).
    // F32: the cuBLASLt product, then the gate as its own pass.
    const int64_t m = rows_of(c.x), n = c.w.at(0), k = c.w.at(1);
    if (cuda::linear_geglu_fused(c.x_dtype, m, n / 2, k)) return {1, "tensor-core GEMM with the GEGLU epilogue"};
    CudaOpLaunches product = matmul(m, n, k, c.bias, false);
    return {product.launches + (empty(c.out) ? 0 : 1), product.path + " + GEGLU kernel"};
  }
  if (op == "conv2d") {
    if (cuda::conv_runs_as_matmul(c.w.at(1), c.w.at(2), c.stride, c.pad))
      return matmul(c.x.at(0) * c.x.at(1) * c.x.at(2), c.w.at(0), c.w.at(3), c.bias, c.residual);
    if (empty(c.out)) return {0, "empty convolution"};
    const int64_t n = c.x.at(0);
    const int64_t piece = cuda::conv_batch_piece(n, c.x.at(1) * c.x.at(2) * c.x.at(3), c.out.at(1) * c.out.at(2) * c.out.at(3));
    const int64_t pieces = (n + piece - 1) / piece;
    if (c.bias) return {pieces, "cuDNN conv+bias+residual (one fused call)"};
    return {pieces * (c.residual ? 2 : 1), c.residual ? "cuDNN conv + residual kernel" : "cuDNN conv"};
  }
  if (op == "group_norm") {
    if (empty(c.x)) return {0, "empty"};
    const std::string norm = c.silu ? "group norm + SiLU" : "group norm";
    if (c.w.empty()) return {1, norm + ", one kernel"};
    // A channel offset is read inside the kernel; one of a third dtype is widened first (as add_batch_channel).
    const bool cast = c.w_dtype != DType::F32 && c.w_dtype != c.x_dtype;
    return {cast ? 2 : 1, cast ? "cast + " + norm + " with channel offset" : norm + " with channel offset, one kernel"};
  }
  if (op == "concat_group_norm")
    return {empty(c.out) ? 0 : 1, std::string(c.silu ? "group norm + SiLU" : "group norm") +
                                       " over [a, b], writing the concat: one kernel"};
  if (op == "layer_norm") return {empty(c.x) ? 0 : 1, "layer norm kernel"};
  if (op == "attention") {
    if (empty(c.out)) return {0, "empty"};
    if (c.w.at(1) == 0) return {1, "no keys: memset"};
    const int64_t b = c.x.at(0);
    return {(b + cuda::kAttentionMaxBatch - 1) / cuda::kAttentionMaxBatch, "flash attention kernel"};
  }
  if (op == "binary") {
    // Operands of another dtype than the result are widened first (one convert each).
    const int64_t casts = (c.x_dtype != c.out_dtype ? 1 : 0) + (c.w_dtype != c.out_dtype ? 1 : 0);
    return {empty(c.out) ? 0 : 1 + casts, casts ? "widening casts + elementwise kernel" : "elementwise kernel"};
  }
  if (op == "add_batch_channel") {
    if (empty(c.out)) return {0, "empty"};
    const bool cast = c.w_dtype != DType::F32 && c.w_dtype != c.x_dtype;
    return {cast ? 2 : 1, cast ? "cast + broadcast add" : "broadcast add"};
  }
  if (op == "activation" || op == "geglu" || op == "binary_scalar" || op == "clamp" || op == "guidance_combine" ||
      op == "upsample_nearest" || op == "pad2d" || op == "concat_channels" || op == "cast")
    return {empty(c.out) ? 0 : 1, "elementwise kernel"};
  if (op == "concat_batch") return {empty(c.out) ? 0 : c.parts, "one device copy per part"};
  if (op == "copy" || op == "from_host" || op == "to_host") return {empty(c.out) ? 0 : 1, "memory copy"};
  if (op == "embedding") return {empty(c.out) ? 0 : 2, "id upload + gather kernel"};
  return {0, "unknown op '" + op + "' (not in the launch table)"};
}

}  // namespace sdmpi
