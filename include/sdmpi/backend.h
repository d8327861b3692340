// The op interface: everything the models and the schedulers ask of a device.
//
// The only device seam (docs/architecture.md): one model definition (src/models) and one pipeline
// (src/pipeline) run on every backend: CPU (float32 reference and fallback, src/backend/cpu) and
// CUDA (src/backend/cuda + kernels/). Model and pipeline code only call the ops below; a backend
// owns memory, layouts and the choice of algorithm.
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

#include <compare>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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
  WeightView() = default;
  WeightView(std::string name_, DType dtype_, Shape shape_, const void* data_)
      : name(std::move(name_)), dtype(dtype_), shape(std::move(shape_)), data(data_) {}

  std::string name;
  DType dtype = DType::F32;
  Shape shape;  // PyTorch's shape, whatever the byte order (below)
  const void* data = nullptr;
  // Set when the bytes are already in the backend layout of their kind (a 4-D convolution weight
  // stored [out, kh, kw, in]: weights converted once per node, src/app/shared_weights.cpp).
  bool backend_layout = false;
  // Set when the bytes stay unchanged as long as this owner lives: a host backend whose dtype and
  // layout match may then use them in place, keeping the owner, instead of copying them.
  std::shared_ptr<const void> keep_alive;
};

// Converts rows [row_begin, row_end) of the first dimension of `w` (any of F32/F16/BF16) to
// `to`, in the backend layout (4-D convolution weights OIHW → OHWI unless already so), into `dst`
// (the whole tensor's destination: row r lands at r × its row size). Bit-exact: widening is exact,
// narrowing rounds to nearest even. Callers split the rows over threads.
void convert_weight_rows(const WeightView& w, DType to, void* dst, int64_t row_begin, int64_t row_end);

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };
enum class Activation : uint8_t { SiLU, GELU, QuickGELU };

// What a captured step is keyed by: one captured graph per distinct key. `variant` tells apart
// different callables of the same sizes (the UNet step with and without CFG, two pipelines).
struct GraphKey {
  int64_t batch = 0, height = 0, width = 0;
  int64_t variant = 0;
  // Tokens of the cross-attention context when they vary (77 x chunks with A1111 prompt
  // weighting): the K/V inputs' shape, so each length is its own graph. 0 where always the same.
  int64_t context = 0;
  auto operator<=>(const GraphKey&) const = default;
};

// One op call as the shared dispatch saw it, after its contract check passed: what a launch
// counter (the CUDA backend's launch table, cuda_backend.h) or a trace needs to know of a call.
// Shapes that an op does not have stay empty.
struct OpCall {
  const char* op = "";       // the public op's name: "linear", "conv2d", "group_norm", ...
  Shape x;                   // the main input (x, q, a, eps; concat_batch: its first part)
  Shape w;                   // the weight (linear, conv2d), k (attention), b (binary, concat_channels), t
                             // (add_batch_channel), the channel offset (group_norm; empty without)
  Shape out;                 // the result
  DType x_dtype = DType::F32, w_dtype = DType::F32, out_dtype = DType::F32;
  bool bias = false, residual = false;  // linear, conv2d, linear_geglu, linear_qkv (w: wq, out: q),
                                        // linear_stacked (w: the stacked [N_0 + ... + N_{n-1}, K])
  bool silu = false;                    // group_norm, concat_group_norm (x: a, w: b, out: the concat)
  bool causal = false;                  // attention
  int stride = 1, pad = 0;              // conv2d
  int heads = 0;                        // attention
  int64_t parts = 0;                    // concat_batch: tensors joined; embedding: ids
};
// Called once per outermost op call (an op a backend runs by calling other ops is one call).
using OpObserver = std::function<void(const OpCall&)>;

// Host memory this process may still use, in bytes: /proc/meminfo's MemAvailable, capped by the
// room left under the cgroup's memory limit (v2 memory.max - memory.current, or v1's
// limit_in_bytes - usage_in_bytes) when one is set; -1 when neither can be read. Shared by every
// process on the node: divide by the ranks there.
int64_t host_memory_available();

// The device seam. Every op below is a public, non-virtual call that checks the op's contract
// once, for every backend (src/core/backend.cpp: one Error line naming the op, the argument and
// the shapes), and then dispatches to the backend's do_*() implementation, which may assume the
// contract holds and checks only what is its own (the CPU computes in F32 only, a GPU kernel's
// size limits, host traffic inside a CUDA-graph capture).
class Backend {
 public:
  virtual ~Backend() = default;

  virtual std::string name() const = 0;           // "cpu (8 threads, OpenBLAS)", "cuda:0 NVIDIA H100"
  virtual Device device() const = 0;
  virtual DType compute_dtype() const = 0;        // dtype of activations this backend produces
  // Bytes this rank may still allocate where its activations and weights live, for the resource
  // plan checked before a job loads anything (src/pipeline/memory_plan.h); -1 when unknown. The
  // default is the host's (host_memory_available()); a GPU backend answers its device's free memory.
  virtual int64_t memory_available() const;

  // ---- memory -----------------------------------------------------------------------------------
  Tensor empty(const Shape& shape, DType dtype);
  Tensor empty(const Shape& shape) { return empty(shape, compute_dtype()); }
  // Host float32 data → a tensor of the compute dtype on this device.
  Tensor from_host(const float* data, const Shape& shape);
  // Any tensor of this backend → host float32.
  std::vector<float> to_host(const Tensor& t);
  // Converts a file weight to this backend's type and layout for `kind`, and uploads it. The
  // layout check (a conv weight is [out, in, kh, kw], ...) throws InputError naming the weight.
  // `model_dtype`: the dtype the model owning the weight computes in, the compute dtype unless a
  // model is upcast to float32 (an SDXL VAE under fp16, docs/design.md "force_upcast"); vectors
  // (norm scales, biases) follow each backend's own rule. Anything else is refused.
  Tensor upload_weight(const WeightView& w, WeightKind kind, std::optional<DType> model_dtype = std::nullopt);
  // Waits for queued work (no-op on the CPU).
  virtual void synchronize() {}
  // x converted to `dtype` (F32, F16 or BF16): exact when widening, round to nearest even when
  // narrowing (torch's .to()); x itself when it already has that dtype. The pipeline keeps latents
  // and scheduler arithmetic in F32 and casts at the UNet's and the VAE's edges, a no-op where the
  // compute dtype is F32.
  Tensor cast(const Tensor& x, DType dtype);

  // ---- matrix products and convolutions ---------------------------------------------------------
  // x [..., K] · w[N, K]^T (+ bias[N]) (+ residual[..., N]) → [..., N]. The residual is added last.
  Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual = nullptr);
  // The three projections of a self-attention from one input: q = linear(x, wq, bq), k = linear(x,
  // wk, bk), v = linear(x, wv, bv), with wq, wk, wv [N, K] of one shape and the biases all three or
  // none. One op so a backend may run the three as one product (CUDA: one strided-batched cuBLASLt
  // call over the weights packed once, q, k and v dense slices of one buffer). The default runs
  // the three linears (bit-identical to calling them one after the other).
  struct QkvProjections {
    Tensor q, k, v;
  };
  QkvProjections linear_qkv(const Tensor& x, const Tensor& wq, const Tensor& wk, const Tensor& wv,
                            const Tensor* bq = nullptr, const Tensor* bk = nullptr, const Tensor* bv = nullptr);
  // Several products of one x joined along the last dimension: [linear(x, w_0, b_0), ...,
  // linear(x, w_{n-1}, b_{n-1})] → [..., N_0 + ... + N_{n-1}], the weights [N_i, K] of any row
  // counts, the biases all given or all null. One op so a backend may run them as one product
  // (CUDA: the weights stacked once, like linear_qkv's): every ResNet's time_emb_proj of one UNet
  // call, which group_norm then reads by column range. The default runs the linears and joins them
  // with concat_channels (bit-identical to calling them one after the other).
  Tensor linear_stacked(const Tensor& x, const std::vector<const Tensor*>& weights,
                        const std::vector<const Tensor*>& biases);
  // x [B, H, W, Cin] ⊛ w [Cout, kh, kw, Cin] with zero padding `pad` and `stride`, + bias[Cout],
  // + residual [B, Ho, Wo, Cout] last. Returns [B, Ho, Wo, Cout].
  Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                const Tensor* residual = nullptr);

  // ---- normalisation ------------------------------------------------------------------------------
  // GroupNorm over channels-last x [B, ..., C] (all middle dims are spatial), `groups` groups of
  // C/groups channels, biased variance, then gamma/beta, then SiLU when `silu`. With
  // channel_offset [B, C], the norm of add_batch_channel(x, channel_offset) (a ResNet's time
  // embedding added to conv1's output, which only norm2 reads): one op, so a backend may add the
  // offset while it reads x. The default runs add_batch_channel then group_norm (bit-identical).
  // offset_column: the offset is columns [offset_column, offset_column + C) of a wider
  // channel_offset [B, Ct] (one ResNet's slice of linear_stacked's result; backends read it in place).
  Tensor group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                    const Tensor* channel_offset = nullptr, int64_t offset_column = 0);
  // group_norm(concat_channels(a, b), ...) and the concat itself: an up-path ResNet's norm1 over
  // [x, skip], whose 1x1 shortcut reads the same concat. a [B, ..., Ca] and b [B, ..., Cb] with the
  // same leading dims; gamma/beta [Ca + Cb]. One op so a backend may write both in one pass (CUDA:
  // the norm kernel reads a and b and writes the concat as it goes, no concat kernel). The default
  // runs concat_channels then group_norm (bit-identical).
  struct JoinedNorm {
    Tensor joined, normed;
  };
  JoinedNorm concat_group_norm(const Tensor& a, const Tensor& b, int groups, const Tensor& gamma, const Tensor& beta,
                               float eps, bool silu);
  // LayerNorm over the last dimension, biased variance.
  Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps);

  // ---- attention ----------------------------------------------------------------------------------
  // Multi-head scaled dot-product attention. q [B, Nq, heads*d], k and v [B, Nk, heads*d]
  // (channel = head*d + i, PyTorch's view(B, N, heads, d)). softmax(q·kᵀ/√d [+ causal mask])·v,
  // merged back to [B, Nq, heads*d].
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal);

  // ---- activations and elementwise glue -----------------------------------------------------------
  Tensor activation(const Tensor& x, Activation act);
  // x [..., 2C] → a * GELU(g) with a = x[..., :C], g = x[..., C:] (diffusers' GEGLU).
  Tensor geglu(const Tensor& x);
  // geglu(linear(x, w, bias)) with w [2C, K]: a feed-forward's first projection and its gate as
  // one op, so a backend may apply the gate in the product's epilogue. The default runs linear
  // then geglu (bit-identical to calling them one after the other).
  Tensor linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias);
  // Same-shape elementwise a (op) b.
  Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
  // a (op) s, or s (op) a when scalar_first, with s a float32 scalar.
  Tensor binary_scalar(BinaryOp op, const Tensor& a, float s, bool scalar_first = false);
  // x [B, ..., C] + t [B, C] broadcast over the middle dims (a ResNet's time-embedding add).
  Tensor add_batch_channel(const Tensor& x, const Tensor& t);
  // Clamp to [lo, hi].
  Tensor clamp(const Tensor& x, float lo, float hi);
  // Classifier-free guidance on eps [2B, ...] = [uncond; cond]: u + scale * (c - u) with three
  // roundings, as diffusers' eager sub, mul and add compute it. Returns [B, ...].
  Tensor guidance_combine(const Tensor& eps, float scale);

  // ---- shape ops ------------------------------------------------------------------------------------
  // Nearest-neighbour resize of [B, H, W, C] to [B, Ho, Wo, C]: out[y][x] = in[y*H/Ho][x*W/Wo]
  // (PyTorch's mode="nearest").
  Tensor upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w);
  // Zero padding of [B, H, W, C] to [B, top + H + bottom, left + W + right, C] (torch's F.pad with
  // (left, right, top, bottom), value 0). Sides may differ: diffusers' VAE encoder pads only right
  // and bottom before its stride-2 convs (models/blocks.h, Downsample2D).
  Tensor pad2d(const Tensor& x, int top, int bottom, int left, int right);
  // Concatenate along the last (channel) dimension: [..., Ca] ++ [..., Cb].
  Tensor concat_channels(const Tensor& a, const Tensor& b);
  // Concatenate along the first (batch) dimension.
  Tensor concat_batch(const std::vector<Tensor>& parts);
  // Rows of `table` [V, C] picked by ids (host, length n) → [n, C].
  Tensor embedding(const std::vector<int32_t>& ids, const Tensor& table);
  // A copy in this backend's memory.
  Tensor copy(const Tensor& x);

  // ---- captured steps -------------------------------------------------------------------------------
  // fn reads its inputs only from `static_inputs` and returns tensors of this backend.
  using GraphFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& static_inputs)>;
  // Runs fn(inputs) as a step the backend may capture once per key and replay. The CPU runs fn
  // directly. The CUDA backend captures it as a CUDA graph on the first call for a key, with
  // inputs copied into static buffers owned by the graph, and replays it later (include/sdmpi/
  // cuda_backend.h states the rules fn must keep: no host traffic, no data-dependent branches,
  // scalars are baked in). Returned tensors may be the same buffers on every call for a key,
  // overwritten by the next run: consume or copy them before running the key again.
  virtual std::vector<Tensor> run_graph(const GraphKey& key, const std::vector<Tensor>& inputs, const GraphFn& fn);
  // Whether `key` replays a captured graph (false: not seen yet, eager, or a backend without graphs).
  virtual bool graph_captured(const GraphKey& key) const;
  // The static input buffers of `key` (empty when there are none), so a caller can leave inputs
  // there and pass them back without a copy.
  virtual std::vector<Tensor> graph_inputs(const GraphKey& key);
  // Frees every captured graph (their weights' addresses are baked in).
  virtual void drop_graphs() {}

  // ---- observation ----------------------------------------------------------------------------------
  // Every later op call (outermost calls only) is reported to `observer` after it ran; an empty
  // function stops it. For counting and tracing: it sees shapes and flags, never data.
  void set_op_observer(OpObserver observer) { observer_ = std::move(observer); }

 protected:
  // The implementations, called after the contract check (out_shape: the checked result shape).
  virtual Tensor do_empty(const Shape& shape, DType dtype) = 0;
  virtual Tensor do_from_host(const float* data, const Shape& shape) = 0;
  virtual std::vector<float> do_to_host(const Tensor& t) = 0;
  // layout: the tensor's shape on the device for `kind` (conv weights [out, kh, kw, in]);
  // model_dtype: the compute dtype or F32 (checked), what the owning model computes in.
  virtual Tensor do_upload_weight(const WeightView& w, WeightKind kind, const Shape& layout, DType model_dtype) = 0;
  virtual Tensor do_cast(const Tensor& x, DType dtype) = 0;
  virtual Tensor do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual,
                           const Shape& out_shape) = 0;
  // out_shape: the shape of each of q, k, v [..., N].
  virtual QkvProjections do_linear_qkv(const Tensor& x, const Tensor& wq, const Tensor& wk, const Tensor& wv,
                                       const Tensor* bq, const Tensor* bk, const Tensor* bv, const Shape& out_shape);
  // out_shape: [..., N_0 + ... + N_{n-1}].
  virtual Tensor do_linear_stacked(const Tensor& x, const std::vector<const Tensor*>& weights,
                                   const std::vector<const Tensor*>& biases, const Shape& out_shape);
  virtual Tensor do_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                           const Tensor* residual, const Shape& out_shape) = 0;
  virtual Tensor do_group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                               bool silu) = 0;
  // group_norm with a channel_offset [B, Ct] whose columns [offset_column, offset_column + C) are
  // added (checked); the default copies a column range out as a [B, C] offset (concat_batch of the
  // items' column runs), adds it, then normalises (a backend may read the range in place instead).
  virtual Tensor do_group_norm_offset(const Tensor& x, const Tensor& channel_offset, int64_t offset_column, int groups,
                                      const Tensor& gamma, const Tensor& beta, float eps, bool silu);
  // out_shape: the concat's shape [B, ..., Ca + Cb].
  virtual JoinedNorm do_concat_group_norm(const Tensor& a, const Tensor& b, int groups, const Tensor& gamma,
                                          const Tensor& beta, float eps, bool silu, const Shape& out_shape);
  virtual Tensor do_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) = 0;
  virtual Tensor do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) = 0;
  virtual Tensor do_activation(const Tensor& x, Activation act) = 0;
  virtual Tensor do_geglu(const Tensor& x, const Shape& out_shape) = 0;
  // linear_shape: the product's shape [..., 2C]; out_shape: the result's [..., C].
  virtual Tensor do_linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias, const Shape& linear_shape,
                                 const Shape& out_shape);
  virtual Tensor do_binary(BinaryOp op, const Tensor& a, const Tensor& b) = 0;
  virtual Tensor do_binary_scalar(BinaryOp op, const Tensor& a, float s, bool scalar_first) = 0;
  virtual Tensor do_add_batch_channel(const Tensor& x, const Tensor& t) = 0;
  virtual Tensor do_clamp(const Tensor& x, float lo, float hi) = 0;
  // The default composes binary ops (sub, mul, add); a backend may fuse them with the same roundings.
  virtual Tensor do_guidance_combine(const Tensor& eps, float scale);
  virtual Tensor do_upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) = 0;
  virtual Tensor do_pad2d(const Tensor& x, int top, int bottom, int left, int right, const Shape& out_shape) = 0;
  virtual Tensor do_concat_channels(const Tensor& a, const Tensor& b, const Shape& out_shape) = 0;
  virtual Tensor do_concat_batch(const std::vector<Tensor>& parts, const Shape& out_shape) = 0;
  virtual Tensor do_embedding(const std::vector<int32_t>& ids, const Tensor& table) = 0;
  virtual Tensor do_copy(const Tensor& x) = 0;

 private:
  friend class OpScope;
  OpObserver observer_;
  int op_depth_ = 0;  // ops running now: nested calls (a default composed of ops) are not reported
};

// The reference backend: float32 on the host, OpenBLAS (if built with it) for matrix products,
// OpenMP threads. Every op processes each batch item on its own, so results do not depend on the
// batch size. `winograd_cache_bytes`: memory the backend may keep Winograd's transformed weights in
// (src/backend/cpu/cpu_memory.h; results are the same bits either way, only faster); -1: a quarter
// of the memory available now, at most 8 GiB. SDMPI_CPU_WINOGRAD_CACHE_MB, when set, caps either.
std::unique_ptr<Backend> make_cpu_backend(int threads = 0, int64_t winograd_cache_bytes = -1);

}  // namespace sdmpi
