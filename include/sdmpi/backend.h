// The op interface: everything the models and the schedulers ask of a device.
//
// One model definition (src/models, src/text) runs on two backends: CPU (float32 reference and
// fallback, src/backend/cpu) and CUDA (src/backend/cuda + kernels/). Model code only calls the ops
// below; a backend owns memory, layouts and the choice of algorithm.
//
// Layout conventions (all tensors dense, row-major):
//   image activations   [B, H, W, C]        channels-last (NHWC)
//   token sequences     [B, N, C]           (an NHWC image viewed as tokens is [B, H*W, C])
//   linear weights      [out, in]           as PyTorch stores them
//   conv weights        [out, kh, kw, in]   (OHWI; PyTorch's OIHW is permuted at upload)
//   vectors (bias, norm gamma/beta) [C]
//
// Elementwise ops round after every op, like eager PyTorch (no fused multiply-add across ops), so
// schedulers written with them reproduce diffusers' float32 arithmetic bit for bit on the CPU.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sdmpi/tensor.h"

namespace sdmpi {

// How an uploaded weight is used, which decides its device layout and type.
enum class WeightKind : uint8_t {
  Linear,     // [out, in]
  Conv,       // PyTorch [out, in, kh, kw] in the file; stored [out, kh, kw, in]
  Vector,     // bias or norm parameter [C]; kept in float32 on every backend
  Embedding,  // [rows, C] table for token/position lookups
};

// A weight as it sits in a file: any of F32/F16/BF16, PyTorch layout, host memory (usually a
// read-only memory map).
struct WeightView {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;
};

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };
enum class Activation : uint8_t { SiLU, GELU, QuickGELU };

class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;           // "cpu (8 threads, OpenBLAS)", "cuda:0 NVIDIA H100"
  virtual Device device() const = 0;
  virtual DType compute_dtype() const = 0;        // dtype of activations this backend produces

  // ---- memory -----------------------------------------------------------------------------------
  virtual Tensor empty(const Shape& shape, DType dtype) = 0;
  Tensor empty(const Shape& shape) { return empty(shape, compute_dtype()); }
  // Host float32 data → a tensor of the compute dtype on this device.
  virtual Tensor from_host(const float* data, const Shape& shape) = 0;
  // Any tensor of this backend → host float32.
  virtual std::vector<float> to_host(const Tensor& t) = 0;
  // Converts a file weight to this backend's type and layout for `kind`, and uploads it.
  virtual Tensor upload_weight(const WeightView& w, WeightKind kind) = 0;
  // Waits for queued work (no-op on the CPU).
  virtual void synchronize() {}

  // ---- matrix products and convolutions ---------------------------------------------------------
  // x [..., K] · w[N, K]^T (+ bias[N]) (+ residual[..., N]) → [..., N]. The residual is added last.
  virtual Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias,
                        const Tensor* residual = nullptr) = 0;
  // x [B, H, W, Cin] ⊛ w [Cout, kh, kw, Cin] with zero padding `pad` and `stride`, + bias[Cout],
  // + residual [B, Ho, Wo, Cout] last. Returns [B, Ho, Wo, Cout].
  virtual Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                        const Tensor* residual = nullptr) = 0;

  // ---- normalisation ------------------------------------------------------------------------------
  // GroupNorm over channels-last x [B, ..., C] (all middle dims are spatial), `groups` groups of
  // C/groups channels, biased variance, then gamma/beta, then SiLU when `silu`.
  virtual Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta,
                            float eps, bool silu) = 0;
  // LayerNorm over the last dimension, biased variance.
  virtual Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                            float eps) = 0;

  // ---- attention ----------------------------------------------------------------------------------
  // Multi-head scaled dot-product attention. q [B, Nq, heads*d], k and v [B, Nk, heads*d]
  // (channel = head*d + i, PyTorch's view(B, N, heads, d)). softmax(q·kᵀ/√d [+ causal mask])·v,
  // merged back to [B, Nq, heads*d].
  virtual Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads,
                           bool causal) = 0;

  // ---- activations and elementwise glue -----------------------------------------------------------
  virtual Tensor activation(const Tensor& x, Activation act) = 0;
  // x [..., 2C] → a * GELU(g) with a = x[..., :C], g = x[..., C:] (diffusers' GEGLU).
  virtual Tensor geglu(const Tensor& x) = 0;
  // Same-shape elementwise a (op) b.
  virtual Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) = 0;
  // a (op) s, or s (op) a when scalar_first, with s a float32 scalar.
  virtual Tensor binary_scalar(BinaryOp op, const Tensor& a, float s, bool scalar_first = false) = 0;
  // x [B, ..., C] + t [B, C] broadcast over the middle dims (a ResNet's time-embedding add).
  virtual Tensor add_batch_channel(const Tensor& x, const Tensor& t) = 0;
  // Clamp to [lo, hi].
  virtual Tensor clamp(const Tensor& x, float lo, float hi) = 0;

  // ---- shape ops ------------------------------------------------------------------------------------
  // Nearest-neighbour resize of [B, H, W, C] to [B, Ho, Wo, C]: out[y][x] = in[y*H/Ho][x*W/Wo]
  // (PyTorch's mode="nearest").
  virtual Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) = 0;
  // Concatenate along the last (channel) dimension: [..., Ca] ++ [..., Cb].
  virtual Tensor concat_channels(const Tensor& a, const Tensor& b) = 0;
  // Concatenate along the first (batch) dimension.
  virtual Tensor concat_batch(const std::vector<Tensor>& parts) = 0;
  // Rows of `table` [V, C] picked by ids (host, length n) → [n, C].
  virtual Tensor embedding(const std::vector<int32_t>& ids, const Tensor& table) = 0;
  // A copy in this backend's memory.
  virtual Tensor copy(const Tensor& x) = 0;
};

// The reference backend: float32 on the host, OpenBLAS (if built with it) for matrix products,
// OpenMP threads. Every op processes each batch item on its own, so results do not depend on the
// batch size.
std::unique_ptr<Backend> make_cpu_backend(int threads = 0);

}  // namespace sdmpi
