// The CUDA backend: backend.h's ops on one GPU, one stream, pooled memory (see cuda_backend.h).
//
// Every op's contract was checked before dispatch (src/core/backend.cpp); an op here takes its
// output from the current pool and enqueues work on the backend's stream: cuBLASLt for matrix
// products, cuDNN for convolutions, our kernels (kernels/*.cu) for the rest. Nothing here waits for
// the GPU except to_host and synchronize, so the host runs ahead and the GPU never idles between ops.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>

#include "attention.cuh"
#include "attention_naive.cuh"
#include "backend/cuda/arena.h"
#include "backend/cuda/conv.h"
#include "backend/cuda/launch_plan.h"
#include "backend/cuda/library_check.h"
#include "backend/cuda/matmul.h"
#include "conv_direct.cuh"
#include "convert.cuh"
#include "device_check.cuh"
#include "elementwise.cuh"
#include "embedding.cuh"
#include "im2col.cuh"
#include "linear_geglu.cuh"
#include "norm.cuh"
#include "resample.cuh"
#include "sdmpi/cuda_backend.h"
#include "sdmpi/error.h"
#include "sdmpi/log.h"

namespace sdmpi {
namespace {

using cuda::CudaStorage;
using cuda::DevicePool;

constexpr size_t kMiB = 1024 * 1024;
constexpr size_t kWeightChunk = 256 * kMiB;      // weights arrive in many pieces: few large chunks
constexpr size_t kActivationChunk = 256 * kMiB;  // grown rarely; reserve_activations sizes it up front
constexpr size_t kGraphChunk = 64 * kMiB;
constexpr size_t kLtWorkspace = 32 * kMiB;       // cuBLAS's recommendation for Hopper
constexpr size_t kIm2colBytes = 256 * kMiB;      // patch slice of the convolution's GEMM path

std::string op_error(const char* op, const std::string& what) { return std::string(op) + ": " + what; }

DType promote(DType a, DType b) {
  if (a == b) return a;
  return DType::F32;  // like torch: f16 with f32 → f32, f16 with bf16 → f32
}

class CudaBackendImpl final : public CudaBackend {
 public:
  CudaBackendImpl(int device, DType compute, const CudaDeviceInfo& info);
  ~CudaBackendImpl() override;

  std::string name() const override { return name_; }
  Device device() const override { return Device::CUDA; }
  DType compute_dtype() const override { return compute_; }
  // The device's free memory (cudaMemGetInfo) plus what this backend's pools hold unused.
  int64_t memory_available() const override;

  void synchronize() override;
  std::vector<Tensor> run_graph(const GraphKey& key, const std::vector<Tensor>& inputs, const GraphFn& fn) override;
  std::vector<Tensor> graph_inputs(const GraphKey& key) override;
  bool graph_captured(const GraphKey& key) const override {
    auto it = graphs_.find(key);
    return it != graphs_.end() && !it->second.eager;
  }
  void drop_graphs() override;

  int device_index() const override { return device_; }
  void* stream() const override { return stream_; }
  CudaMemoryStats memory_stats() const override;
  void reserve_activations(size_t bytes) override { activations_->reserve(bytes); }
  void allow_growth(bool allowed) override { activations_->set_growth(allowed); }
  void set_poison(bool on) override { poison_ = on; }
  bool capturing() const override { return capturing_; }
  Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift) override;

 protected:
  Tensor do_empty(const Shape& shape, DType dtype) override;
  Tensor do_from_host(const float* data, const Shape& shape) override;
  std::vector<float> do_to_host(const Tensor& t) override;
  Tensor do_upload_weight(const WeightView& w, WeightKind kind, const Shape& layout, DType model_dtype) override;
  Tensor do_cast(const Tensor& x, DType dtype) override;
  Tensor do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual,
                   const Shape& out_shape) override;
  QkvProjections do_linear_qkv(const Tensor& x, const Tensor& wq, const Tensor& wk, const Tensor& wv,
                               const Tensor* bq, const Tensor* bk, const Tensor* bv, const Shape& out_shape) override;
  Tensor do_linear_stacked(const Tensor& x, const std::vector<const Tensor*>& weights,
                           const std::vector<const Tensor*>& biases, const Shape& out_shape) override;
  Tensor do_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad, const Tensor* residual,
                   const Shape& out_shape) override;
  Tensor do_group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta, float eps,
                       bool silu) override;
  Tensor do_group_norm_offset(const Tensor& x, const Tensor& channel_offset, int64_t offset_column, int groups,
                              const Tensor& gamma, const Tensor& beta, float eps, bool silu) override;
  // Both group norms; offset: null or [B, Ct], of which columns [offset_column, offset_column + C) are added.
  Tensor group_norm_impl(const Tensor& x, const Tensor* offset, int64_t offset_column, int groups, const Tensor& gamma,
                         const Tensor& beta, float eps, bool silu);
  JoinedNorm do_concat_group_norm(const Tensor& a, const Tensor& b, int groups, const Tensor& gamma, const Tensor& beta,
                                  float eps, bool silu, const Shape& out_shape) override;
  Tensor do_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) override;
  Tensor do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) override;
  Tensor do_activation(const Tensor& x, Activation act) override;
  Tensor do_geglu(const Tensor& x, const Shape& out_shape) override;
  Tensor do_linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias, const Shape& linear_shape,
                         const Shape& out_shape) override;
  Tensor do_binary(BinaryOp op, const Tensor& a, const Tensor& b) override;
  Tensor do_binary_scalar(BinaryOp op, const Tensor& a, float s, bool scalar_first) override;
  Tensor do_add_batch_channel(const Tensor& x, const Tensor& t) override;
  Tensor do_clamp(const Tensor& x, float lo, float hi) override;
  Tensor do_guidance_combine(const Tensor& eps, float scale) override;
  Tensor do_upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) override;
  Tensor do_pad2d(const Tensor& x, int top, int bottom, int left, int right, const Shape& out_shape) override;
  Tensor do_concat_channels(const Tensor& a, const Tensor& b, const Shape& out_shape) override;
  Tensor do_concat_batch(const std::vector<Tensor>& parts, const Shape& out_shape) override;
  Tensor do_embedding(const std::vector<int32_t>& ids, const Tensor& table) override;
  Tensor do_copy(const Tensor& x) override;

 private:
  struct GraphEntry {
    std::shared_ptr<DevicePool> pool;
    std::vector<Tensor> static_inputs;
    std::vector<Tensor> outputs;
    cudaGraphExec_t exec = nullptr;
    bool eager = false;  // capture impossible (or graphs off): fn runs directly on the static inputs
  };
  // Routes allocations to a graph's private pool while its callable runs.
  class PoolScope {
   public:
    PoolScope(CudaBackendImpl* b, std::shared_ptr<DevicePool> pool) : b_(b), saved_(b->graph_pool_) {
      b_->graph_pool_ = std::move(pool);
    }
    ~PoolScope() { b_->graph_pool_ = saved_; }

   private:
    CudaBackendImpl* b_;
    std::shared_ptr<DevicePool> saved_;
  };

  void bind() const;
  Tensor alloc(const Shape& shape, DType dtype);             // activation pool (or the graph's)
  Tensor alloc_in(const std::shared_ptr<DevicePool>& pool, const Shape& shape, DType dtype);
  void check(const Tensor& t, const char* op, const char* what) const;
  void no_host_traffic(const char* op) const;
  // `t` in dtype `want`: t itself when it already is, else a converted copy.
  Tensor as_dtype(const Tensor& t, DType want);
  // The same for a parameter (bias, norm scale): a weight is converted once and the copy kept with
  // the weights, so a step does not convert every bias again (about 130 kernels per UNet call).
  // Tensors of other pools (tests pass activations) are converted each time.
  Tensor param_as(const Tensor& t, DType want);
  // Parameters [r_i, ...] (equal but for the first dimension) stacked into one [sum r_i, ...] tensor
  // in dtype `want` (the packed [wq; wk; wv] of linear_qkv, linear_stacked's weights). Like
  // param_as: built once and kept with the weights when every part is a weight, built each call
  // otherwise.
  Tensor packed_params(const std::vector<const Tensor*>& parts, DType want);
  cudaStream_t s() const { return stream_; }
  Tensor linear_impl(const Tensor& x2, const Tensor& w, const Tensor* bias, const Tensor* residual,
                     const Shape& out_shape);
  // out [m, n] = x2 [m, k] · w [n, k]ᵀ (+ bias) (+ residual at res_ptr), into memory the caller owns.
  void matmul_into(const Tensor& x2, const Tensor& w, const Tensor* bias, const void* res_ptr, void* out);
  // A convolution as patches x weights (cuDNN declined the shape, or SDMPI_CUDA_CONV=gemm).
  void conv_as_gemm(const cuda::ConvShape& p, const void* x, const Tensor& w, const Tensor* bias,
                    const void* residual, void* y, int64_t ho, int64_t wo);

  int device_;
  DType compute_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  std::shared_ptr<int64_t> driver_allocations_ = std::make_shared<int64_t>(0);
  std::shared_ptr<DevicePool> weights_, activations_, graph_pool_;
  Tensor lt_workspace_;
  std::unique_ptr<cuda::Matmul> matmul_;
  std::unique_ptr<cuda::Convolution> conv_;
  std::map<GraphKey, GraphEntry> graphs_;
  // param_as's converted copies by (source storage, offset, dtype); an entry whose source storage
  // died (its weights were freed) is stale and replaced.
  struct ConvertedParam {
    std::weak_ptr<Storage> source;
    Tensor converted;
  };
  std::map<std::tuple<const Storage*, size_t, DType>, ConvertedParam> converted_params_;
  // packed_params's stacks by their parts' (storage, offset) and dtype; stale when a part's storage died.
  struct PackedParams {
    std::vector<std::weak_ptr<Storage>> sources;
    Tensor packed;
  };
  std::map<std::pair<std::vector<std::pair<const Storage*, size_t>>, DType>, PackedParams> packed_params_;
  bool poison_ = false;
  bool capturing_ = false;
  int64_t graph_fallbacks_ = 0;  // keys whose capture failed and that run eagerly
  // SDMPI_CUDA_ATTENTION=naive: the simple one-warp-per-query kernel instead of the tuned ones
  // (a debugging aid: a second implementation to compare with).
  bool naive_attention_ = false;
  // SDMPI_CUDA_CONV=direct|gemm: our direct convolution kernel (a debugging aid, slow) or the
  // patches-times-weights path (what a shape cuDNN declines runs) instead of cuDNN.
  enum class ConvChoice { Cudnn, Direct, Gemm } conv_choice_ = ConvChoice::Cudnn;
  // The feed-forward's product and gate as one kernel (kernels/linear_geglu.cu) on sm_80 and newer;
  // SDMPI_CUDA_GEGLU=unfused: the cuBLASLt product then the geglu kernel (to compare and to time).
  bool fused_geglu_ = true;
  // SDMPI_CUDA_GRAPHS=0: run_graph runs its callable directly (for debugging and comparison).
  bool graphs_enabled_ = true;
  // SDMPI_CUDA_GRAPHS=require: a step that cannot be captured is an error instead of a warning and
  // an eager fallback (the GPU window runs so, to measure the design we ship).
  bool graphs_required_ = false;
};

// ---- construction -------------------------------------------------------------------------------

CudaBackendImpl::CudaBackendImpl(int device, DType compute, const CudaDeviceInfo& info)
    : device_(device), compute_(compute) {
  const char* attention_choice = std::getenv("SDMPI_CUDA_ATTENTION");
  naive_attention_ = attention_choice && std::string(attention_choice) == "naive";
  const char* conv_choice = std::getenv("SDMPI_CUDA_CONV");
  if (conv_choice && std::string(conv_choice) == "direct") conv_choice_ = ConvChoice::Direct;
  if (conv_choice && std::string(conv_choice) == "gemm") conv_choice_ = ConvChoice::Gemm;
  const char* geglu_choice = std::getenv("SDMPI_CUDA_GEGLU");
  fused_geglu_ = info.cc_major >= 8 && !(geglu_choice && std::string(geglu_choice) == "unfused");
  const char* graphs_choice = std::getenv("SDMPI_CUDA_GRAPHS");
  graphs_enabled_ = !(graphs_choice && std::string(graphs_choice) == "0");
  graphs_required_ = graphs_choice && std::string(graphs_choice) == "require";
  SDMPI_CUDA_CHECK(cudaSetDevice(device_));
  try {
    SDMPI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    weights_ = std::make_shared<DevicePool>("weights", device_, kWeightChunk, driver_allocations_);
    activations_ = std::make_shared<DevicePool>("activations", device_, kActivationChunk, driver_allocations_);
    SDMPI_CUDNN_CHECK(cudnnCreate(&cudnn_));
    SDMPI_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
    lt_workspace_ = alloc(Shape{static_cast<int64_t>(kLtWorkspace / 4)}, DType::F32);
    const char* matmul_choice = std::getenv("SDMPI_CUDA_MATMUL");
    matmul_ = std::make_unique<cuda::Matmul>(stream_, lt_workspace_.raw(), lt_workspace_.nbytes(),
                                             matmul_choice && std::string(matmul_choice) == "fallback");
    conv_ = std::make_unique<cuda::Convolution>(cudnn_);
  } catch (...) {  // the destructor does not run for a constructor that throws
    matmul_.reset();
    lt_workspace_ = Tensor();
    if (cudnn_) cudnnDestroy(cudnn_);
    if (stream_) cudaStreamDestroy(stream_);
    throw;
  }
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(info.total_memory) / (1024.0 * 1024.0 * 1024.0));
  name_ = "cuda:" + std::to_string(device_) + " " + info.name + " (sm_" + std::to_string(info.cc_major) +
          std::to_string(info.cc_minor) + ", " + mem + ", " + (compute_ == DType::F32 ? "fp32" : compute_ == DType::F16 ? "fp16" : "bf16") + ")";
}

CudaBackendImpl::~CudaBackendImpl() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  for (auto& [key, e] : graphs_)
    if (e.exec) cudaGraphExecDestroy(e.exec);
  graphs_.clear();
  conv_.reset();
  matmul_.reset();
  lt_workspace_ = Tensor();
  if (cudnn_) cudnnDestroy(cudnn_);
  if (stream_) cudaStreamDestroy(stream_);
}

void CudaBackendImpl::bind() const {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device_) SDMPI_CUDA_CHECK(cudaSetDevice(device_));
}

// ---- memory -------------------------------------------------------------------------------------

Tensor CudaBackendImpl::alloc_in(const std::shared_ptr<DevicePool>& pool, const Shape& shape, DType dtype) {
  for (int64_t d : shape)
    if (d < 0) throw Error("cuda: negative dimension in " + shape_str(shape));
  size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* p = pool->allocate(bytes);
  auto storage = std::make_shared<CudaStorage>(pool, p, bytes);
  if (poison_ && bytes) SDMPI_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, bytes, stream_));
  return Tensor(std::move(storage), shape, dtype);
}

Tensor CudaBackendImpl::alloc(const Shape& shape, DType dtype) {
  return alloc_in(graph_pool_ ? graph_pool_ : activations_, shape, dtype);
}

Tensor CudaBackendImpl::do_empty(const Shape& shape, DType dtype) {
  bind();
  return alloc(shape, dtype);
}

void CudaBackendImpl::check(const Tensor& t, const char* op, const char* what) const {
  if (!t.defined()) throw Error(op_error(op, std::string(what) + " is undefined"));
  if (t.device() != Device::CUDA)
    throw Error(op_error(op, std::string(what) + " " + t.describe() + " is not on the GPU"));
}

void CudaBackendImpl::no_host_traffic(const char* op) const {
  if (capturing_)
    throw Error(op_error(op, "reads or writes host memory, which a captured CUDA graph cannot replay; "
                             "pass the data as a graph input instead"));
}

Tensor CudaBackendImpl::as_dtype(const Tensor& t, DType want) {
  if (t.dtype() == want) return t;
  Tensor out = alloc(t.shape(), want);
  kernels::convert(s(), t.dtype(), t.raw(), want, out.raw(), t.numel());
  return out;
}

Tensor CudaBackendImpl::param_as(const Tensor& t, DType want) {
  if (t.dtype() == want) return t;
  const auto* storage = dynamic_cast<const CudaStorage*>(t.storage().get());
  if (!storage || storage->pool() != weights_) return as_dtype(t, want);
  const size_t offset = static_cast<size_t>(static_cast<const char*>(t.raw()) - static_cast<const char*>(storage->data()));
  const auto key = std::make_tuple(static_cast<const Storage*>(storage), offset, want);
  auto it = converted_params_.find(key);
  if (it != converted_params_.end() && !it->second.source.expired() && it->second.converted.shape() == t.shape())
    return it->second.converted;
  if (capturing_) throw Error("cuda: a parameter was first converted inside a graph capture (the warm-up runs it first)");
  for (auto e = converted_params_.begin(); e != converted_params_.end();)  // drop copies of freed weights
    e = e->second.source.expired() ? converted_params_.erase(e) : std::next(e);
  Tensor out = alloc_in(weights_, t.shape(), want);
  kernels::convert(s(), t.dtype(), t.raw(), want, out.raw(), t.numel());
  converted_params_[key] = {t.storage(), out};
  return out;
}

Tensor CudaBackendImpl::packed_params(const std::vector<const Tensor*>& parts, DType want) {
  Shape shape = parts.at(0)->shape();
  shape.at(0) = 0;
  for (const Tensor* t : parts) shape.at(0) += t->dim(0);
  std::vector<std::pair<const Storage*, size_t>> ids;
  bool all_weights = true;
  for (const Tensor* t : parts) {
    const auto* storage = dynamic_cast<const CudaStorage*>(t->storage().get());
    all_weights = all_weights && storage && storage->pool() == weights_;
    if (!all_weights) break;
    ids.emplace_back(storage, static_cast<size_t>(static_cast<const char*>(t->raw()) -
                                                  static_cast<const char*>(storage->data())));
  }
  const auto key = std::make_pair(ids, want);
  if (all_weights) {
    auto it = packed_params_.find(key);
    if (it != packed_params_.end() && it->second.packed.shape() == shape &&
        std::none_of(it->second.sources.begin(), it->second.sources.end(),
                     [](const std::weak_ptr<Storage>& w) { return w.expired(); }))
      return it->second.packed;
    if (capturing_) throw Error("cuda: parameters were first packed inside a graph capture (the warm-up runs it first)");
    for (auto e = packed_params_.begin(); e != packed_params_.end();)  // drop stacks of freed weights
      e = std::any_of(e->second.sources.begin(), e->second.sources.end(),
                      [](const std::weak_ptr<Storage>& w) { return w.expired(); })
              ? packed_params_.erase(e)
              : std::next(e);
  }
  Tensor out = all_weights ? alloc_in(weights_, shape, want) : alloc(shape, want);
  size_t at = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    Tensor src = all_weights ? param_as(*parts[i], want) : as_dtype(*parts[i], want);
    const size_t part_bytes = static_cast<size_t>(parts[i]->numel()) * dtype_size(want);
    if (part_bytes)
      SDMPI_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(out.raw()) + at, src.raw(), part_bytes,
                                       cudaMemcpyDeviceToDevice, stream_));
    at += part_bytes;
  }
  if (all_weights) {
    PackedParams entry{{}, out};
    for (const Tensor* t : parts) entry.sources.push_back(t->storage());
    packed_params_[key] = std::move(entry);
  }
  return out;
}

Tensor CudaBackendImpl::do_from_host(const float* data, const Shape& shape) {
  bind();
  no_host_traffic("from_host");
  Tensor out = alloc(shape, compute_);
  size_t n = static_cast<size_t>(out.numel());
  if (n == 0) return out;
  // A copy from pageable host memory returns once the source has been read into the driver's
  // staging buffers, so the host data (and `converted` below) may go when the call returns.
  if (compute_ == DType::F32) {
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(out.raw(), data, out.nbytes(), cudaMemcpyHostToDevice, stream_));
  } else {
    std::vector<uint16_t> converted(n);
    convert_from_f32(compute_, data, converted.data(), n);
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(out.raw(), converted.data(), out.nbytes(), cudaMemcpyHostToDevice, stream_));
  }
  return out;
}

std::vector<float> CudaBackendImpl::do_to_host(const Tensor& t) {
  bind();
  no_host_traffic("to_host");
  size_t n = static_cast<size_t>(t.numel());
  std::vector<float> out(n);
  if (n == 0) return out;
  if (t.dtype() == DType::F32) {
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(out.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream_));
    SDMPI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } else {
    std::vector<uint16_t> raw(n);
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(raw.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream_));
    SDMPI_CUDA_CHECK(cudaStreamSynchronize(stream_));
    convert_to_f32(t.dtype(), raw.data(), out.data(), n);
  }
  return out;
}

void CudaBackendImpl::synchronize() {
  bind();
  no_host_traffic("synchronize");
  SDMPI_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

Tensor CudaBackendImpl::do_upload_weight(const WeightView& w, WeightKind kind, const Shape& shape, DType model_dtype) {
  bind();
  no_host_traffic("upload_weight");
  const int64_t n = shape_numel(w.shape);
  const DType target = kind == WeightKind::Vector ? DType::F32 : model_dtype;
  // 1x1 kernels: OIHW and OHWI are the same bytes; backend_layout bytes are OHWI already.
  const bool permute = kind == WeightKind::Conv && !w.backend_layout && (w.shape[2] != 1 || w.shape[3] != 1);
  Tensor out = alloc_in(weights_, shape, target);
  if (n == 0) return out;
  const size_t src_bytes = static_cast<size_t>(n) * dtype_size(w.dtype);
  if (w.dtype == target && !permute) {
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(out.raw(), w.data, src_bytes, cudaMemcpyHostToDevice, stream_));
  } else {
    Tensor staging = alloc(Shape{n}, w.dtype);
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(staging.raw(), w.data, src_bytes, cudaMemcpyHostToDevice, stream_));
    if (permute)
      kernels::convert_oihw_to_ohwi(s(), w.dtype, staging.raw(), target, out.raw(), w.shape[0], w.shape[1],
                                    w.shape[2], w.shape[3]);
    else
      kernels::convert(s(), w.dtype, staging.raw(), target, out.raw(), n);
  }
  return out;
}

int64_t CudaBackendImpl::memory_available() const {
  cudaSetDevice(device_);
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  size_t pooled = (weights_->reserved_bytes() - weights_->in_use_bytes()) +
                  (activations_->reserved_bytes() - activations_->in_use_bytes());
  return static_cast<int64_t>(free_b + pooled);
}

CudaMemoryStats CudaBackendImpl::memory_stats() const {
  CudaMemoryStats st;
  st.weight_bytes = weights_->in_use_bytes();
  st.activation_bytes = activations_->in_use_bytes();
  st.peak_activation_bytes = activations_->peak_in_use_bytes();
  st.reserved_bytes = weights_->reserved_bytes() + activations_->reserved_bytes();
  for (const auto& [key, e] : graphs_) st.graph_pool_bytes += e.pool->reserved_bytes();
  st.reserved_bytes += st.graph_pool_bytes;
  st.device_allocations = *driver_allocations_;
  st.graph_fallbacks = graph_fallbacks_;
  return st;
}

// ---- matrix products and convolutions -------------------------------------------------------------

Tensor CudaBackendImpl::linear_impl(const Tensor& x2, const Tensor& w, const Tensor* bias, const Tensor* residual,
                                    const Shape& out_shape) {
  Tensor out = alloc(out_shape, x2.dtype());
  matmul_into(x2, w, bias, residual ? residual->raw() : nullptr, out.raw());
  return out;
}

void CudaBackendImpl::matmul_into(const Tensor& x2, const Tensor& w, const Tensor* bias, const void* res_ptr,
                                  void* out) {
  // x2 [m, k], w [n, k], out [m, n] in x2's dtype
  const DType t = x2.dtype();
  const int64_t m = x2.dim(0), k = x2.dim(1), n = w.dim(0);
  if (m == 0 || n == 0) return;
  if (k == 0) {  // empty sum: bias and residual only
    SDMPI_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(m * n) * dtype_size(t), stream_));
    Tensor b32 = bias ? param_as(*bias, DType::F32) : Tensor();
    kernels::bias_residual(s(), t, out, bias ? static_cast<const float*>(b32.raw()) : nullptr, res_ptr, m, n);
    return;
  }
  Tensor bias_t = bias ? param_as(*bias, t) : Tensor();  // cuBLASLt reads the bias in the output dtype
  if (matmul_->run(t, x2.raw(), w.raw(), bias ? bias_t.raw() : nullptr, res_ptr, out, m, n, k)) return;
  // No fused bias/residual algorithm for this problem: plain product, then our epilogue (bias in
  // float32). The matmul warned once for the shape.
  matmul_->run(t, x2.raw(), w.raw(), nullptr, nullptr, out, m, n, k);
  Tensor b32 = bias ? param_as(*bias, DType::F32) : Tensor();
  kernels::bias_residual(s(), t, out, bias ? static_cast<const float*>(b32.raw()) : nullptr, res_ptr, m, n);
}

Tensor CudaBackendImpl::do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor* residual,
                                  const Shape& out_shape) {
  bind();
  const int64_t k = w.dim(1);
  const int64_t m = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  Tensor x2 = x.reshape({m, k});
  return linear_impl(x2, w, bias, residual, out_shape);
}

// q, k, v of one x as one strided-batched product: x [m, k] (stride 0: read three times) times the
// packed [wq; wk; wv] [3n, k] (stride n*k), the packed biases (stride n) in the epilogue, into one
// buffer of three slices [m, n], each starting on the pool's alignment so that q, k and v are
// dense, aligned tensors the attention kernels read as they are (no copy, no extra launch).
Backend::QkvProjections CudaBackendImpl::do_linear_qkv(const Tensor& x, const Tensor& wq, const Tensor& wk,
                                                       const Tensor& wv, const Tensor* bq, const Tensor* bk,
                                                       const Tensor* bv, const Shape& out_shape) {
  bind();
  const DType t = x.dtype();
  const size_t es = dtype_size(t);
  const int64_t n = wq.dim(0), k = wq.dim(1);
  const int64_t m = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  const int64_t align = static_cast<int64_t>(DevicePool::kAlignment / es);
  const int64_t slice = (m * n + align - 1) / align * align;  // elements per slice, rounded up
  Tensor buffer = alloc(Shape{3 * slice}, t);
  auto part = [&](int i) { return Tensor(buffer.storage(), out_shape, t, static_cast<size_t>(i * slice) * es); };
  QkvProjections out{part(0), part(1), part(2)};
  if (m == 0 || n == 0) return out;
  const Tensor x2 = x.reshape({m, k});
  const Tensor* weights[] = {&wq, &wk, &wv};
  const Tensor* biases[] = {bq, bk, bv};
  auto three_products = [&] {  // each slice on its own, with matmul_into's fallbacks
    for (int i = 0; i < 3; ++i)
      matmul_into(x2, *weights[i], biases[i], nullptr, static_cast<char*>(buffer.raw()) + i * slice * es);
  };
  if (k == 0) {  // empty sums: each slice is its bias (matmul_into's memset + bias kernel)
    three_products();
    return out;
  }
  const Tensor w = packed_params({&wq, &wk, &wv}, t);
  // cuBLASLt reads the bias in the output dtype.
  const Tensor b = bq ? packed_params({bq, bk, bv}, t) : Tensor();
  cuda::MatmulBatch batch;
  batch.count = 3;
  batch.x_stride = 0;
  batch.w_stride = n * k;
  batch.bias_stride = n;
  batch.out_stride = slice;
  if (matmul_->run(t, x2.raw(), w.raw(), bq ? b.raw() : nullptr, nullptr, out.q.raw(), m, n, k, batch)) return out;
  // No fused-bias algorithm for the batch (the matmul warned once for the shape): three products.
  three_products();
  return out;
}

// One product over the weights stacked once (packed_params), the stacked biases in its epilogue:
// every ResNet's time_emb_proj of a UNet call in one launch, instead of one per ResNet.
Tensor CudaBackendImpl::do_linear_stacked(const Tensor& x, const std::vector<const Tensor*>& weights,
                                          const std::vector<const Tensor*>& biases, const Shape& out_shape) {
  bind();
  const DType t = x.dtype();
  const int64_t k = x.dim(-1), m = shape_numel(out_shape) / std::max<int64_t>(out_shape.back(), 1);
  const Tensor w = packed_params(weights, t);
  // cuBLASLt reads the bias in the output dtype.
  const Tensor b = biases.empty() ? Tensor() : packed_params(biases, t);
  return linear_impl(x.reshape({m, k}), w, biases.empty() ? nullptr : &b, nullptr, out_shape);
}

Tensor CudaBackendImpl::do_conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int pad,
                                  const Tensor* residual, const Shape& out_shape) {
  bind();
  cuda::ConvShape cs{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(2), stride, pad, x.dtype()};
  const int64_t ho = out_shape[1], wo = out_shape[2];
  // A 1x1 convolution with stride 1 and no padding is a matrix product over the pixels (NHWC): the
  // cuBLASLt path with its fused bias and residual.
  if (cuda::conv_runs_as_matmul(cs.r, cs.s, stride, pad) && conv_choice_ != ConvChoice::Direct) {
    Tensor x2 = x.reshape({cs.n * cs.h * cs.w, cs.c});
    return linear_impl(x2, w.reshape({cs.k, cs.c}), bias, residual, out_shape);
  }
  Tensor out = alloc(out_shape, x.dtype());
  if (out.numel() == 0) return out;
  // cuDNN wants its tensors 256-byte aligned for every algorithm to apply; views (rows()) may not be.
  Tensor xin = x;
  if (reinterpret_cast<uintptr_t>(x.raw()) % DevicePool::kAlignment != 0) {
    xin = alloc(x.shape(), x.dtype());
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(xin.raw(), x.raw(), x.nbytes(), cudaMemcpyDeviceToDevice, stream_));
  }
  // cuDNN's legacy descriptors count elements in int: split the batch so each piece stays below 2^31.
  const int64_t per_in = cs.h * cs.w * cs.c, per_out = ho * wo * cs.k;
  const int64_t piece = cuda::conv_batch_piece(cs.n, per_in, per_out);
  const size_t es = dtype_size(x.dtype());
  std::vector<Tensor> workspaces;
  auto workspace = [&](size_t bytes) -> void* {
    workspaces.push_back(alloc(Shape{static_cast<int64_t>((bytes + 3) / 4)}, DType::F32));
    return workspaces.back().raw();
  };
  Tensor b32 = bias ? param_as(*bias, DType::F32) : Tensor();
  // cuDNN's fused call reads the bias in the data type (converted once, kept with the weights).
  Tensor bias_t = bias && conv_choice_ == ConvChoice::Cudnn ? param_as(*bias, x.dtype()) : Tensor();
  for (int64_t b0 = 0; b0 < cs.n; b0 += piece) {
    cuda::ConvShape p = cs;
    p.n = std::min(piece, cs.n - b0);
    const void* xp = static_cast<const char*>(xin.raw()) + b0 * per_in * es;
    void* yp = static_cast<char*>(out.raw()) + b0 * per_out * es;
    const void* rp = residual ? static_cast<const char*>(residual->raw()) + b0 * per_out * es : nullptr;
    // Bias and residual in the convolution's own call: one launch (launch_table.cpp counts it so).
    if (bias && conv_choice_ == ConvChoice::Cudnn && conv_->run_fused(p, xp, w.raw(), bias_t.raw(), rp, yp, workspace))
      continue;
    if (conv_choice_ == ConvChoice::Direct) {
      kernels::conv2d_direct(s(), p.t, xp, w.raw(), yp, p.n, p.h, p.w, p.c, p.k, p.r, p.s, p.stride, p.pad, ho, wo);
    } else if (conv_choice_ == ConvChoice::Gemm || !conv_->run(p, xp, w.raw(), yp, workspace)) {
      conv_as_gemm(p, xp, w, bias, rp, yp, ho, wo);  // bias and residual included
      continue;
    }
    if (bias || residual)
      kernels::bias_residual(s(), x.dtype(), yp, bias ? static_cast<const float*>(b32.raw()) : nullptr, rp,
                             p.n * ho * wo, cs.k);
  }
  return out;
}

void CudaBackendImpl::conv_as_gemm(const cuda::ConvShape& p, const void* x, const Tensor& w, const Tensor* bias,
                                   const void* residual, void* y, int64_t ho, int64_t wo) {
  // y[pixel, k] = patches[pixel, (ky, kx, ch)] · w[k, (ky, kx, ch)]ᵀ (kernels/im2col.cu): the weight
  // in OHWI already is the [k, r*s*c] matrix. The patches are gathered a slice of rows at a time so
  // the workspace stays within kIm2colBytes.
  const size_t es = dtype_size(p.t);
  const int64_t patch = p.r * p.s * p.c, rows_total = p.n * ho * wo;
  const int64_t slice = std::max<int64_t>(1, std::min<int64_t>(rows_total, static_cast<int64_t>(kIm2colBytes / (patch * es))));
  Tensor patches = alloc(Shape{slice, patch}, p.t);
  const Tensor w2 = w.reshape({p.k, patch});
  for (int64_t r0 = 0; r0 < rows_total; r0 += slice) {
    const int64_t rows = std::min(slice, rows_total - r0);
    kernels::im2col_nhwc(s(), es, x, patches.raw(), p.h, p.w, p.c, p.r, p.s, p.stride, p.pad, ho, wo, r0, rows);
    Tensor x2 = patches.rows(0, rows);
    void* yp = static_cast<char*>(y) + r0 * p.k * static_cast<int64_t>(es);
    const void* rp = residual ? static_cast<const char*>(residual) + r0 * p.k * static_cast<int64_t>(es) : nullptr;
    matmul_into(x2, w2, bias, rp, yp);
  }
}

// ---- normalisation ----------------------------------------------------------------------------------

Tensor CudaBackendImpl::do_group_norm(const Tensor& x, int groups, const Tensor& gamma, const Tensor& beta,
                                      float eps, bool silu) {
  return group_norm_impl(x, nullptr, 0, groups, gamma, beta, eps, silu);
}

// The offset is read inside the norm kernel (kernels/norm.cu): add_batch_channel's launch and its
// full-size output are gone. Like add_batch_channel, an offset of a third dtype is widened first. A
// column range of a wider offset (linear_stacked's result) is read in place, rows Ct apart.
Tensor CudaBackendImpl::do_group_norm_offset(const Tensor& x, const Tensor& channel_offset, int64_t offset_column,
                                             int groups, const Tensor& gamma, const Tensor& beta, float eps,
                                             bool silu) {
  return group_norm_impl(x, &channel_offset, offset_column, groups, gamma, beta, eps, silu);
}

Tensor CudaBackendImpl::group_norm_impl(const Tensor& x, const Tensor* offset, int64_t offset_column, int groups,
                                        const Tensor& gamma, const Tensor& beta, float eps, bool silu) {
  bind();
  const int64_t batch = x.dim(0), c = x.dim(-1);
  const int64_t spatial = batch && c ? x.numel() / (batch * c) : 0;
  Tensor out = alloc(x.shape(), x.dtype());
  if (out.numel() == 0) return out;
  Tensor g32 = param_as(gamma, DType::F32), b32 = param_as(beta, DType::F32);
  Tensor off;
  if (offset) off = (offset->dtype() == DType::F32 || offset->dtype() == x.dtype()) ? *offset : as_dtype(*offset, DType::F32);
  const void* off_ptr =
      off.defined() ? static_cast<const char*>(off.raw()) + offset_column * static_cast<int64_t>(dtype_size(off.dtype()))
                    : nullptr;
  kernels::group_norm(s(), x.dtype(), x.raw(), off.defined() ? off.dtype() : x.dtype(), off_ptr, out.raw(),
                      static_cast<const float*>(g32.raw()), static_cast<const float*>(b32.raw()), batch, spatial, c,
                      groups, eps, silu, off.defined() ? off.dim(1) : 0);
  return out;
}

// One kernel reads a and b as the concat, normalises it and writes the concat besides (kernels/
// norm.cu): concat_channels' launch is gone.
Backend::JoinedNorm CudaBackendImpl::do_concat_group_norm(const Tensor& a, const Tensor& b, int groups,
                                                          const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                                                          const Shape& out_shape) {
  bind();
  const int64_t batch = a.dim(0), c = out_shape.back();
  const int64_t spatial = batch && c ? shape_numel(out_shape) / (batch * c) : 0;
  JoinedNorm out{alloc(out_shape, a.dtype()), alloc(out_shape, a.dtype())};
  if (out.joined.numel() == 0) return out;
  Tensor g32 = param_as(gamma, DType::F32), b32 = param_as(beta, DType::F32);
  kernels::group_norm_joined(s(), a.dtype(), a.raw(), b.raw(), a.dim(-1), out.joined.raw(), out.normed.raw(),
                             static_cast<const float*>(g32.raw()), static_cast<const float*>(b32.raw()), batch,
                             spatial, c, groups, eps, silu);
  return out;
}

Tensor CudaBackendImpl::do_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps) {
  bind();
  const int64_t c = x.dim(-1);
  Tensor out = alloc(x.shape(), x.dtype());
  if (out.numel() == 0) return out;
  Tensor g32 = param_as(gamma, DType::F32), b32 = param_as(beta, DType::F32);
  kernels::layer_norm(s(), x.dtype(), x.raw(), out.raw(), static_cast<const float*>(g32.raw()),
                      static_cast<const float*>(b32.raw()), x.numel() / c, c, eps);
  return out;
}

// ---- attention ---------------------------------------------------------------------------------------

Tensor CudaBackendImpl::do_attention(const Tensor& q, const Tensor& k, const Tensor& v, int heads, bool causal) {
  bind();
  const int64_t c = q.dim(2);
  const int d = static_cast<int>(c / heads);
  Tensor out = alloc(q.shape(), q.dtype());
  if (out.numel() == 0) return out;
  if (k.dim(1) == 0) {  // no keys: softmax over nothing; define the result as zeros
    SDMPI_CUDA_CHECK(cudaMemsetAsync(out.raw(), 0, out.nbytes(), stream_));
    return out;
  }
  if (naive_attention_) {
    kernels::attention_naive(s(), q.dtype(), q.raw(), k.raw(), v.raw(), out.raw(), q.dim(0), q.dim(1), k.dim(1),
                             heads, d, causal);
    return out;
  }
  constexpr int64_t kIntMax = 2147483647;
  if (q.dim(1) > kIntMax || k.dim(1) > kIntMax)
    throw Error("attention: sequence lengths " + std::to_string(q.dim(1)) + "/" + std::to_string(k.dim(1)) + " too long");
  // The batch may exceed the kernel's grid limit (65535): run it in slices.
  constexpr int64_t kMaxBatch = cuda::kAttentionMaxBatch;
  const size_t es = dtype_size(q.dtype());
  const int64_t q_item = q.dim(1) * c, kv_item = k.dim(1) * c;
  for (int64_t b0 = 0; b0 < q.dim(0); b0 += kMaxBatch) {
    const int64_t nb = std::min(kMaxBatch, q.dim(0) - b0);
    cuda::AttentionParams p;
    p.q = static_cast<const char*>(q.raw()) + b0 * q_item * es;
    p.k = static_cast<const char*>(k.raw()) + b0 * kv_item * es;
    p.v = static_cast<const char*>(v.raw()) + b0 * kv_item * es;
    p.out = static_cast<char*>(out.raw()) + b0 * q_item * es;
    p.dtype = q.dtype();
    p.batch = static_cast<int>(nb);
    p.heads = heads;
    p.seq_q = static_cast<int>(q.dim(1));
    p.seq_kv = static_cast<int>(k.dim(1));
    p.head_dim = d;
    p.causal = causal;
    cudaError_t err = cuda::attention_forward(p, stream_);
    if (err == cudaErrorInvalidValue) {
      std::string why = cuda::attention_validate(p);
      if (!why.empty()) throw Error(why + " (q " + q.describe() + ", k " + k.describe() + ")");
    }
    SDMPI_CUDA_CHECK(err);
  }
  return out;
}

// ---- activations and elementwise glue -----------------------------------------------------------------

Tensor CudaBackendImpl::do_activation(const Tensor& x, Activation act) {
  bind();
  Tensor out = alloc(x.shape(), x.dtype());
  kernels::activation(s(), act, x.dtype(), x.raw(), out.raw(), x.numel());
  return out;
}

Tensor CudaBackendImpl::do_geglu(const Tensor& x, const Shape& out_shape) {
  bind();
  const int64_t c = out_shape.back();
  Tensor out = alloc(out_shape, x.dtype());
  if (out.numel() == 0) return out;
  kernels::geglu(s(), x.dtype(), x.raw(), out.raw(), out.numel() / c, c);
  return out;
}

// One launch where the fused kernel takes the problem (launch_plan.h's linear_geglu_fused, which the
// launch table shares); otherwise Backend's default, the product then the gate.
Tensor CudaBackendImpl::do_linear_geglu(const Tensor& x, const Tensor& w, const Tensor* bias,
                                        const Shape& linear_shape, const Shape& out_shape) {
  bind();
  const DType t = x.dtype();
  const int64_t k = w.dim(1), c = w.dim(0) / 2;
  const int64_t m = shape_numel(Shape(x.shape().begin(), x.shape().end() - 1));
  if (!fused_geglu_ || !cuda::linear_geglu_fused(t, m, c, k))
    return Backend::do_linear_geglu(x, w, bias, linear_shape, out_shape);
  Tensor out = alloc(out_shape, t);
  // The bias in the data type, as cuBLASLt's epilogue reads it (converted once, kept with the weights).
  Tensor bias_t = bias ? param_as(*bias, t) : Tensor();
  kernels::linear_geglu(s(), t, x.raw(), w.raw(), bias ? bias_t.raw() : nullptr, out.raw(), m, c, k);
  return out;
}

Tensor CudaBackendImpl::do_binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  bind();
  const DType t = promote(a.dtype(), b.dtype());
  Tensor a2 = as_dtype(a, t), b2 = as_dtype(b, t);  // widening to F32 is exact
  Tensor out = alloc(a.shape(), t);
  kernels::binary(s(), op, t, a2.raw(), b2.raw(), out.raw(), out.numel());
  return out;
}

Tensor CudaBackendImpl::do_binary_scalar(BinaryOp op, const Tensor& a, float sc, bool scalar_first) {
  bind();
  Tensor out = alloc(a.shape(), a.dtype());
  kernels::binary_scalar(s(), op, a.dtype(), a.raw(), sc, scalar_first, out.raw(), out.numel());
  return out;
}

Tensor CudaBackendImpl::do_add_batch_channel(const Tensor& x, const Tensor& t) {
  bind();
  Tensor t2 = (t.dtype() == DType::F32 || t.dtype() == x.dtype()) ? t : as_dtype(t, DType::F32);
  Tensor out = alloc(x.shape(), x.dtype());
  if (out.numel() == 0) return out;
  const int64_t batch = x.dim(0), c = x.dim(-1);
  kernels::add_batch_channel(s(), x.dtype(), x.raw(), t2.dtype(), t2.raw(), out.raw(), batch,
                             x.numel() / (batch * c), c);
  return out;
}

Tensor CudaBackendImpl::do_clamp(const Tensor& x, float lo, float hi) {
  bind();
  Tensor out = alloc(x.shape(), x.dtype());
  kernels::clamp(s(), x.dtype(), x.raw(), out.raw(), x.numel(), lo, hi);
  return out;
}

// ---- shape ops --------------------------------------------------------------------------------------

Tensor CudaBackendImpl::do_upsample_nearest(const Tensor& x, int64_t out_h, int64_t out_w) {
  bind();
  Tensor out = alloc({x.dim(0), out_h, out_w, x.dim(3)}, x.dtype());
  kernels::upsample_nearest(s(), dtype_size(x.dtype()), x.raw(), out.raw(), x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                            out_h, out_w);
  return out;
}

Tensor CudaBackendImpl::do_pad2d(const Tensor& x, int top, int bottom, int left, int right, const Shape& shape) {
  bind();
  Tensor out = alloc(shape, x.dtype());
  kernels::pad2d(s(), dtype_size(x.dtype()), x.raw(), out.raw(), x.dim(0), x.dim(1), x.dim(2), x.dim(3), top, bottom,
                 left, right);
  return out;
}

Tensor CudaBackendImpl::do_concat_channels(const Tensor& a, const Tensor& b, const Shape& shape) {
  bind();
  const int64_t ca = a.dim(-1), cb = b.dim(-1);
  Tensor out = alloc(shape, a.dtype());
  if (out.numel() == 0) return out;
  kernels::concat_channels(s(), dtype_size(a.dtype()), a.raw(), b.raw(), out.raw(), out.numel() / (ca + cb), ca, cb);
  return out;
}

Tensor CudaBackendImpl::do_concat_batch(const std::vector<Tensor>& parts, const Shape& shape) {
  bind();
  const Tensor& first = parts[0];
  Tensor out = alloc(shape, first.dtype());
  size_t offset = 0;
  for (const Tensor& p : parts) {
    if (p.nbytes())
      SDMPI_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(out.raw()) + offset, p.raw(), p.nbytes(),
                                       cudaMemcpyDeviceToDevice, stream_));
    offset += p.nbytes();
  }
  return out;
}

Tensor CudaBackendImpl::do_embedding(const std::vector<int32_t>& ids, const Tensor& table) {
  bind();
  no_host_traffic("embedding");
  const int64_t c = table.dim(1), n = static_cast<int64_t>(ids.size());
  Tensor out = alloc({n, c}, table.dtype());
  if (out.numel() == 0) return out;
  Tensor dev_ids = alloc({n}, DType::F32);  // 4-byte slots for the int32 ids
  SDMPI_CUDA_CHECK(cudaMemcpyAsync(dev_ids.raw(), ids.data(), ids.size() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                   stream_));
  kernels::embedding_gather(s(), dtype_size(table.dtype()), static_cast<const int32_t*>(dev_ids.raw()), table.raw(),
                            out.raw(), n, c);
  return out;
}

Tensor CudaBackendImpl::do_copy(const Tensor& x) {
  bind();
  Tensor out = alloc(x.shape(), x.dtype());
  if (x.nbytes())
    SDMPI_CUDA_CHECK(cudaMemcpyAsync(out.raw(), x.raw(), x.nbytes(), cudaMemcpyDeviceToDevice, stream_));
  return out;
}

// ---- fused helpers -------------------------------------------------------------------------------------

Tensor CudaBackendImpl::timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float shift) {
  bind();
  check(t, "timestep_embedding", "t");
  if (t.rank() != 1 || dim < 0) throw Error("timestep_embedding: t " + t.describe() + " must be [B], dim " + std::to_string(dim));
  if (static_cast<float>(dim / 2) == shift) throw Error("timestep_embedding: dim/2 equals the shift");
  Tensor t32 = as_dtype(t, DType::F32);
  Tensor out = alloc({t.dim(0), dim}, compute_);
  kernels::timestep_embedding(s(), compute_, static_cast<const float*>(t32.raw()), out.raw(), t.dim(0), dim,
                              flip_sin_to_cos, shift);
  return out;
}

Tensor CudaBackendImpl::do_guidance_combine(const Tensor& eps, float scale) {
  bind();
  Shape shape = eps.shape();
  shape[0] /= 2;
  Tensor out = alloc(shape, eps.dtype());
  kernels::guidance_combine(s(), eps.dtype(), eps.raw(), out.raw(), out.numel(), scale);
  return out;
}

Tensor CudaBackendImpl::do_cast(const Tensor& x, DType dtype) {
  bind();
  return as_dtype(x, dtype);
}

// ---- CUDA graphs ----------------------------------------------------------------------------------------

std::vector<Tensor> CudaBackendImpl::run_graph(const GraphKey& key, const std::vector<Tensor>& inputs,
                                               const GraphFn& fn) {
  bind();
  if (capturing_) throw Error("run_graph: called while another graph is being captured");
  for (const Tensor& in : inputs) check(in, "run_graph", "input");
  auto it = graphs_.find(key);
  const std::string label = "batch " + std::to_string(key.batch) + ", " + std::to_string(key.height) + "x" +
                            std::to_string(key.width) + " (variant " + std::to_string(key.variant) + ")";
  if (it == graphs_.end()) {
    GraphEntry e;
    e.pool = std::make_shared<DevicePool>("graph " + label, device_, kGraphChunk, driver_allocations_);
    {
      PoolScope scope(this, e.pool);
      for (const Tensor& in : inputs) e.static_inputs.push_back(copy(in));
      // Warm-up: picks algorithms, builds cuDNN plans, loads kernels and grows the pool, none of
      // which may happen inside a capture. Its outputs are dropped, returning their blocks.
      std::vector<Tensor> warm = fn(e.static_inputs);
    }
    e.eager = !graphs_enabled_;
    if (!e.eager) {
      SDMPI_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
      capturing_ = true;
      std::vector<Tensor> outs;
      std::exception_ptr failure;
      std::string failure_text;
      try {
        PoolScope scope(this, e.pool);
        outs = fn(e.static_inputs);
      } catch (const std::exception& ex) {
        failure = std::current_exception();
        failure_text = ex.what();
      } catch (...) {
        failure = std::current_exception();
      }
      capturing_ = false;
      cudaGraph_t graph = nullptr;
      const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
      cudaError_t instantiated = cudaSuccess;
      if (!failure && ended == cudaSuccess) {
        instantiated = cudaGraphInstantiate(&e.exec, graph, 0);
        if (instantiated != cudaSuccess) e.exec = nullptr;
      }
      if (graph) cudaGraphDestroy(graph);
      if (failure && ended == cudaSuccess) {
        // fn itself failed (e.g. host traffic inside the capture): the caller's error.
        cudaGetLastError();
        std::rethrow_exception(failure);
      }
      if (failure || ended != cudaSuccess || instantiated != cudaSuccess) {
        // A library call broke the capture (or the graph would not instantiate): run this key
        // without a graph rather than fail the job.
        const cudaError_t why = ended != cudaSuccess ? ended : instantiated;
        cudaGetLastError();
        const std::string reason = failure_text.empty() ? std::string(cudaGetErrorString(why)) : failure_text;
        ++graph_fallbacks_;
        if (graphs_required_)
          throw Error("cuda: the step for " + label + " could not be captured as a CUDA graph (" + reason +
                      ") and SDMPI_CUDA_GRAPHS=require is set");
        log::warn("cuda: the step for " + label + " could not be captured as a CUDA graph (" + reason +
                  "); running it without a graph (counted in memory_stats().graph_fallbacks)");
        e.eager = true;
        outs.clear();
      } else {
        for (const Tensor& o : outs) check(o, "run_graph", "output");
        e.outputs = std::move(outs);
      }
    }
    it = graphs_.emplace(key, std::move(e)).first;
    if (!it->second.eager)
      log::debug("cuda: captured a graph for " + label + ", pool " +
                 std::to_string(it->second.pool->reserved_bytes() / kMiB) + " MiB");
  } else {
    GraphEntry& e = it->second;
    if (inputs.size() != e.static_inputs.size())
      throw Error("run_graph: " + std::to_string(inputs.size()) + " inputs for a graph captured with " +
                  std::to_string(e.static_inputs.size()));
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& in = inputs[i];
      Tensor& st = e.static_inputs[i];
      if (in.shape() != st.shape() || in.dtype() != st.dtype())
        throw Error("run_graph: input " + std::to_string(i) + " " + in.describe() + " differs from the captured " +
                    st.describe());
      if (in.raw() != st.raw() && in.nbytes())
        SDMPI_CUDA_CHECK(cudaMemcpyAsync(st.raw(), in.raw(), in.nbytes(), cudaMemcpyDeviceToDevice, stream_));
    }
  }
  if (it->second.eager) return fn(it->second.static_inputs);
  SDMPI_CUDA_CHECK(cudaGraphLaunch(it->second.exec, stream_));
  return it->second.outputs;
}

std::vector<Tensor> CudaBackendImpl::graph_inputs(const GraphKey& key) {
  auto it = graphs_.find(key);
  return it == graphs_.end() ? std::vector<Tensor>{} : it->second.static_inputs;
}

void CudaBackendImpl::drop_graphs() {
  bind();
  if (capturing_) throw Error("drop_graphs: called during a capture");
  SDMPI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  for (auto& [key, e] : graphs_)
    if (e.exec) cudaGraphExecDestroy(e.exec);
  graphs_.clear();
}

}  // namespace

// ---- factory ----------------------------------------------------------------------------------------------

std::unique_ptr<Backend> make_cuda_backend(int device, DType compute) {
  CudaProbe probe = probe_cuda();
  if (!probe.usable()) throw Error(probe.reason);
  if (device < 0 || device >= static_cast<int>(probe.devices.size()))
    throw Error("cuda:" + std::to_string(device) + " does not exist: " + std::to_string(probe.devices.size()) +
                " device(s) visible");
  const CudaDeviceInfo& info = probe.devices[static_cast<size_t>(device)];
  const std::string label = "cuda:" + std::to_string(device) + " (" + info.name + ", sm_" +
                            std::to_string(info.cc_major) + std::to_string(info.cc_minor) + ")";
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw Error(label + ": cannot use the device: " + cudaGetErrorString(err));
  }
  std::string failure = kernels::device_check();
  if (!failure.empty())
    throw Error(label + ": " + failure + " (this build targets the architectures in CMAKE_CUDA_ARCHITECTURES; "
                "rebuild with the GPU's, e.g. -DCMAKE_CUDA_ARCHITECTURES=native)");
  if (compute == DType::BF16 && info.cc_major < 8)
    throw Error(label + ": bf16 needs compute capability 8.0 or newer; use --precision fp16");
  const size_t cudnn_version = cudnnGetVersion();
  if (cudnn_version / 10000 != CUDNN_MAJOR)
    throw Error(label + ": cuDNN " + std::to_string(cudnn_version) + " is installed, this build needs cuDNN " +
                std::to_string(CUDNN_MAJOR) + ".x");
  auto backend = std::make_unique<CudaBackendImpl>(device, compute, info);
  log::debug("cuda: " + backend->name() + ", driver " + cuda_version_string(probe.driver_version) + ", runtime " +
             cuda_version_string(probe.runtime_version) + ", cuDNN " + std::to_string(cudnn_version) +
             ", cuBLASLt " + std::to_string(cublasLtGetVersion()));
  return backend;
}

}  // namespace sdmpi
