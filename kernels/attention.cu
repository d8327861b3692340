// Attention: the entry point (validation, stride resolution, the choice of kernel variant) and the
// Reference kernel.
//
// The Reference kernel is the obviously correct one: one warp per query row, the row's scaled query
// and its fp32 output accumulator in shared memory (lane c%32 owns channel c), keys visited one at
// a time with an online softmax in fp32 and accurate exp2f. It takes any head_dim up to 1024, any
// dtype and any alignment, so every call has a correct kernel; tests also use it as a second, GPU
// side reference for the tensor-core variants (attention_flash.cu, attention_wide.cu).
//
// choose_variant below is the one place that picks a variant; the variant tables list each kernel
// file's configurations in order of preference. On compute capability 9.0 it takes the Hopper
// kernel (attention_hopper.cu) for head dims 40/64 when SDMPI_CUDA_ATTENTION asks for it.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "attention_detail.cuh"

namespace sdmpi::cuda {

constexpr int kMaxHeadDim = 1024;  // Reference: 4 warps × 2 × 1024 floats = 32 KB shared memory

namespace detail {

cudaError_t allow_dynamic_smem(const void* kernel, size_t bytes,
                               std::atomic<unsigned long long>* done) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  const unsigned long long bit = 1ull << (device & 63);
  if (done->load(std::memory_order_acquire) & bit) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(bytes));
  if (err == cudaSuccess) done->fetch_or(bit, std::memory_order_acq_rel);
  return err;
}

namespace {

template <typename T>
__device__ __forceinline__ float to_f32(T x);
template <>
__device__ __forceinline__ float to_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_f32<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

constexpr int kRefWarps = 4;

template <typename T>
__global__ void __launch_bounds__(kRefWarps * 32) attention_reference_kernel(const LaunchArgs a) {
  extern __shared__ float ref_smem[];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * kRefWarps + warp;
  const int head = blockIdx.y;
  const int b = blockIdx.z;
  if (row >= a.seq_q) return;  // no block-wide barrier below: warps are independent
  const int d = a.head_dim;
  float* q = ref_smem + static_cast<size_t>(warp) * 2 * d;  // q·scale·log2(e), then the output
  float* acc = q + d;                                       // lane c%32 owns q[c] and acc[c]

  const T* gq = static_cast<const T*>(a.q) + b * a.q_batch + row * a.q_row + head * d;
  for (int c = lane; c < d; c += 32) {
    q[c] = to_f32(gq[c]) * a.scale_log2;
    acc[c] = 0.0f;
  }
  const T* gk = static_cast<const T*>(a.k) + b * a.k_batch + head * d;
  const T* gv = static_cast<const T*>(a.v) + b * a.v_batch + head * d;
  const int n_keys = a.causal ? min(a.seq_kv, row + 1) : a.seq_kv;

  float m = -INFINITY;  // running max of the log2-scaled logits
  float l = 0.0f;       // running sum of exp2(logit - m)
  for (int j = 0; j < n_keys; ++j) {
    const T* kj = gk + j * a.k_row;
    float logit = 0.0f;
    for (int c = lane; c < d; c += 32) logit = fmaf(q[c], to_f32(kj[c]), logit);
    // Butterfly sum: every lane ends with the same value (each step adds the same two numbers).
    for (int offset = 16; offset > 0; offset >>= 1)
      logit += __shfl_xor_sync(0xffffffffu, logit, offset);
    const float m_new = fmaxf(m, logit);
    const float alpha = exp2f(m - m_new);  // 0 on the first key (m = -inf)
    const float p = exp2f(logit - m_new);
    l = l * alpha + p;
    const T* vj = gv + j * a.v_row;
    for (int c = lane; c < d; c += 32) acc[c] = fmaf(acc[c], alpha, p * to_f32(vj[c]));
    m = m_new;
  }
  T* go = static_cast<T*>(a.out) + b * a.out_batch + row * a.out_row + head * d;
  const float inv_l = 1.0f / l;  // l >= 1: the largest logit contributes exp2(0)
  for (int c = lane; c < d; c += 32) go[c] = from_f32<T>(acc[c] * inv_l);
}

template <typename T>
cudaError_t launch_reference(const LaunchArgs& a, cudaStream_t stream) {
  const dim3 grid((a.seq_q + kRefWarps - 1) / kRefWarps, a.heads, a.batch);
  const size_t smem = static_cast<size_t>(kRefWarps) * 2 * a.head_dim * sizeof(float);
  attention_reference_kernel<T><<<grid, kRefWarps * 32, smem, stream>>>(a);
  return cudaGetLastError();
}

const VariantDesc kReferenceVariants[] = {
    {AttentionKernel::Reference, DType::F16, 0, 0, 80, 0, 1000, kRefWarps, kRefWarps * 32, 0,
     "reference_f16", launch_reference<__half>},
    {AttentionKernel::Reference, DType::BF16, 0, 0, 80, 0, 1000, kRefWarps, kRefWarps * 32, 0,
     "reference_bf16", launch_reference<__nv_bfloat16>},
    {AttentionKernel::Reference, DType::F32, 0, 0, 80, 0, 1000, kRefWarps, kRefWarps * 32, 0,
     "reference_f32", launch_reference<float>},
};

}  // namespace

VariantTable reference_variants() {
  return {kReferenceVariants, static_cast<int>(sizeof(kReferenceVariants) / sizeof(VariantDesc))};
}

}  // namespace detail

namespace {

using detail::LaunchArgs;
using detail::VariantDesc;

struct DeviceInfo {
  int sm = 0;               // compute capability, major*10 + minor
  int multiprocessors = 0;
  size_t smem_per_block = 0;  // opt-in maximum of dynamic shared memory per block
};

cudaError_t current_device_info(DeviceInfo* info) {
  int device = 0, major = 0, minor = 0, sms = 0, smem = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess)
    err = cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err != cudaSuccess) return err;
  info->sm = major * 10 + minor;
  info->multiprocessors = sms;
  info->smem_per_block = static_cast<size_t>(smem);
  return cudaSuccess;
}

int64_t or_packed(int64_t stride, int64_t packed) { return stride != 0 ? stride : packed; }

LaunchArgs resolve(const AttentionParams& p) {
  LaunchArgs a{};
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.out = p.out;
  const int64_t width = static_cast<int64_t>(p.heads) * p.head_dim;
  a.q_row = or_packed(p.q_row_stride, width);
  a.k_row = or_packed(p.k_row_stride, width);
  a.v_row = or_packed(p.v_row_stride, width);
  a.out_row = or_packed(p.out_row_stride, width);
  a.q_batch = or_packed(p.q_batch_stride, p.seq_q * a.q_row);
  a.k_batch = or_packed(p.k_batch_stride, p.seq_kv * a.k_row);
  a.v_batch = or_packed(p.v_batch_stride, p.seq_kv * a.v_row);
  a.out_batch = or_packed(p.out_batch_stride, p.seq_q * a.out_row);
  a.batch = p.batch;
  a.heads = p.heads;
  a.seq_q = p.seq_q;
  a.seq_kv = p.seq_kv;
  a.head_dim = p.head_dim;
  a.scale = p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(p.head_dim));
  a.scale_log2 = a.scale * 1.4426950408889634f;
  a.causal = p.causal ? 1 : 0;
  return a;
}

// The tensor-core variants read 16-byte chunks: every pointer 16-byte aligned, every stride a
// multiple of 8 elements.
bool vector_aligned(const LaunchArgs& a) {
  auto ptr_ok = [](const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; };
  auto stride_ok = [](int64_t s) { return s % 8 == 0; };
  return ptr_ok(a.q) && ptr_ok(a.k) && ptr_ok(a.v) && ptr_ok(a.out) && stride_ok(a.q_row) &&
         stride_ok(a.k_row) && stride_ok(a.v_row) && stride_ok(a.out_row) &&
         stride_ok(a.q_batch) && stride_ok(a.k_batch) && stride_ok(a.v_batch) &&
         stride_ok(a.out_batch) && a.head_dim % 8 == 0;
}

bool can_run(const VariantDesc& v, const LaunchArgs& a, DType dtype, const DeviceInfo& dev) {
  if (v.dtype != dtype || dev.sm < v.min_sm || v.smem_bytes > dev.smem_per_block) return false;
  if (v.head_dim != 0 && v.head_dim != a.head_dim) return false;
  if (v.max_seq_kv != 0 && a.seq_kv > v.max_seq_kv) return false;
  if (v.kernel == AttentionKernel::Reference) return a.head_dim <= kMaxHeadDim;
  // sm_90a machine code runs on compute capability 9.0 only; the kernel has no causal mask.
  if (v.kernel == AttentionKernel::FlashHopper &&
      (dev.sm != 90 || a.causal || !detail::hopper_kernel_available()))
    return false;
  return vector_aligned(a);
}

template <typename F>
void for_each_variant(F&& f) {
  for (const detail::VariantTable& table :
       {detail::hopper_variants(), detail::flash_variants(), detail::wide_variants(),
        detail::reference_variants()}) {
    for (int i = 0; i < table.count; ++i) f(table.begin[i]);
  }
}

int variant_id(const VariantDesc* v) {
  int id = 0, found = -1;
  for_each_variant([&](const VariantDesc& d) {
    if (&d == v) found = id;
    ++id;
  });
  return found;
}

const VariantDesc* variant_by_id(int wanted) {
  int id = 0;
  const VariantDesc* found = nullptr;
  for_each_variant([&](const VariantDesc& d) {
    if (id == wanted) found = &d;
    ++id;
  });
  return found;
}

// Whether choose_variant takes the Hopper kernel (kernels/attention_hopper.cu) where it applies.
// SDMPI_CUDA_ATTENTION=hopper or =fa2 decides (A/B timing in a GPU window); unset, the default
// below, which stays "fa2" until a GPU window has run tests/gpu/attention_hopper_test.cpp clean.
// Read once per process: a CUDA graph must not change kernels between captures.
constexpr bool kHopperAttentionByDefault = false;

bool hopper_attention_requested() {
  static const bool requested = [] {
    const char* env = std::getenv("SDMPI_CUDA_ATTENTION");
    if (env == nullptr || *env == '\0') return kHopperAttentionByDefault;
    if (std::strcmp(env, "hopper") == 0) return true;
    if (std::strcmp(env, "fa2") == 0) return false;
    if (std::strcmp(env, "naive") == 0) return false;  // the backend's own switch (cuda_backend.cpp)
    std::fprintf(stderr,
                 "sd_mpi: SDMPI_CUDA_ATTENTION=%s is not hopper, fa2 or naive; using %s\n", env,
                 kHopperAttentionByDefault ? "hopper" : "fa2");
    return kHopperAttentionByDefault;
  }();
  return requested;
}

// The one place that picks a variant. Tensor cores when the dtype, alignment and head dim allow;
// among those the kind of kernel the shape calls for (the whole K/V in one tile for short key
// sequences, split head dims for 512), then the first variant in table order (the order of
// preference) that is meant for this device and whose grid fills it; if none fills it, the one
// with the most blocks. Everything else runs on the Reference kernel: slow, never wrong.
const VariantDesc* choose_variant(const LaunchArgs& a, DType dtype, const DeviceInfo& dev) {
  const VariantDesc* reference = nullptr;
  for (int i = 0; i < detail::reference_variants().count; ++i)
    if (detail::reference_variants().begin[i].dtype == dtype)
      reference = &detail::reference_variants().begin[i];
  if (dtype == DType::F32 || !vector_aligned(a)) return reference;

  auto pick = [&](AttentionKernel kind) -> const VariantDesc* {
    const VariantDesc* best = nullptr;
    int64_t best_blocks = -1;
    for_each_variant([&](const VariantDesc& v) {
      if (v.kernel != kind || !can_run(v, a, dtype, dev)) return;
      if (dev.sm < v.pick_min_sm || dev.sm > v.pick_max_sm) return;
      const int64_t blocks = static_cast<int64_t>(a.batch) * a.heads *
                             ((a.seq_q + v.rows_per_block - 1) / v.rows_per_block);
      const bool fills = blocks >= dev.multiprocessors;
      const bool best_fills = best_blocks >= dev.multiprocessors;
      if (best == nullptr || (!best_fills && (fills || blocks > best_blocks))) {
        best = &v;
        best_blocks = blocks;
      }
    });
    return best;
  };
  const VariantDesc* chosen = nullptr;
  if (a.head_dim > 256) {
    chosen = pick(AttentionKernel::FlashWideHead);
  } else {
    // Short key sequences (cross-attention to 77 tokens) stay on FlashShortKV: one 80-key tile
    // beats the Hopper kernel's 128-key tile there.
    if (a.seq_kv > 80 && hopper_attention_requested()) chosen = pick(AttentionKernel::FlashHopper);
    if (chosen == nullptr && a.seq_kv <= 80) chosen = pick(AttentionKernel::FlashShortKV);
    if (chosen == nullptr) chosen = pick(AttentionKernel::Flash);
  }
  return chosen != nullptr ? chosen : reference;
}

AttentionVariant describe(const VariantDesc* v) {
  AttentionVariant out;
  if (v == nullptr) return out;
  out.id = variant_id(v);
  out.kernel = v->kernel;
  out.name = v->name;
  return out;
}

}  // namespace

std::string attention_validate(const AttentionParams& p) {
  auto fail = [](const char* field, long long value, const char* rule) {
    return std::string("attention: ") + field + " = " + std::to_string(value) + " " + rule;
  };
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.out == nullptr)
    return "attention: q, k, v and out must all be device pointers (one is null)";
  if (p.dtype != DType::F16 && p.dtype != DType::BF16 && p.dtype != DType::F32)
    return "attention: dtype " + std::string(dtype_name(p.dtype)) + " is not F16, BF16 or F32";
  if (p.batch < 1 || p.batch > 65535) return fail("batch", p.batch, "must be in [1, 65535]");
  if (p.heads < 1 || p.heads > 65535) return fail("heads", p.heads, "must be in [1, 65535]");
  if (p.seq_q < 1) return fail("seq_q", p.seq_q, "must be >= 1");
  if (p.seq_kv < 1) return fail("seq_kv", p.seq_kv, "must be >= 1");
  if (p.head_dim < 1 || p.head_dim > kMaxHeadDim)
    return fail("head_dim", p.head_dim, "must be in [1, 1024]");
  if (!(p.scale == 0.0f || (std::isfinite(p.scale) && p.scale > 0.0f)))
    return "attention: scale = " + std::to_string(p.scale) + " must be 0 (1/sqrt(d)) or finite > 0";
  const LaunchArgs a = resolve(p);
  const int64_t width = static_cast<int64_t>(p.heads) * p.head_dim;
  struct Strides {
    const char* name;
    int64_t row, batch;
    int seq;
  };
  const Strides all[] = {{"q", a.q_row, a.q_batch, p.seq_q},
                         {"k", a.k_row, a.k_batch, p.seq_kv},
                         {"v", a.v_row, a.v_batch, p.seq_kv},
                         {"out", a.out_row, a.out_batch, p.seq_q}};
  for (const Strides& s : all) {
    if (s.row < width)
      return std::string("attention: ") + s.name + " row stride " + std::to_string(s.row) +
             " is below heads*head_dim = " + std::to_string(width);
    if (p.batch > 1 && s.batch < (s.seq - 1) * s.row + width)
      return std::string("attention: ") + s.name + " batch stride " + std::to_string(s.batch) +
             " overlaps the previous batch item (rows of " + std::to_string(s.row) + " × " +
             std::to_string(s.seq) + ")";
  }
  return "";
}

cudaError_t attention_forward(const AttentionParams& p, cudaStream_t stream) {
  if (!attention_validate(p).empty()) return cudaErrorInvalidValue;
  DeviceInfo dev;
  cudaError_t err = current_device_info(&dev);
  if (err != cudaSuccess) return err;
  const LaunchArgs a = resolve(p);
  return choose_variant(a, p.dtype, dev)->launch(a, stream);
}

AttentionVariant attention_chosen_variant(const AttentionParams& p) {
  DeviceInfo dev;
  if (!attention_validate(p).empty() || current_device_info(&dev) != cudaSuccess) return {};
  return describe(choose_variant(resolve(p), p.dtype, dev));
}

std::vector<AttentionVariant> attention_variants(const AttentionParams& p) {
  std::vector<AttentionVariant> out;
  DeviceInfo dev;
  if (!attention_validate(p).empty() || current_device_info(&dev) != cudaSuccess) return out;
  const LaunchArgs a = resolve(p);
  for_each_variant([&](const VariantDesc& v) {
    if (can_run(v, a, p.dtype, dev)) out.push_back(describe(&v));
  });
  return out;
}

cudaError_t attention_forward_variant(const AttentionParams& p, int variant_id,
                                      cudaStream_t stream) {
  if (!attention_validate(p).empty()) return cudaErrorInvalidValue;
  const VariantDesc* v = variant_by_id(variant_id);
  if (v == nullptr) return cudaErrorInvalidValue;
  DeviceInfo dev;
  cudaError_t err = current_device_info(&dev);
  if (err != cudaSuccess) return err;
  const LaunchArgs a = resolve(p);
  if (!can_run(*v, a, p.dtype, dev)) return cudaErrorNotSupported;
  return v->launch(a, stream);
}

}  // namespace sdmpi::cuda
