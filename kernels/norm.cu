// Group normalisation (+SiLU) and layer normalisation.
//
// Statistics are float32 and numerically stable whatever the input's offset: no sum-of-squares
// formula. GroupNorm on channels-last data reads each pixel's group of channels contiguously, the
// pixels strided by the channel count. It is one launch: one block per (batch item, group) reads
// the group twice. Pass 1 gives every thread a Welford accumulator (count, mean, M2) over the
// elements i = thread, thread + blockDim, ... of the group; the block merges them with Chan's
// formula in a fixed tree order into the mean and 1/sqrt(var + eps). Pass 2 normalises, applies
// gamma/beta and optionally SiLU, re-reading the group (at SD 1.5 sizes a group is at most a few
// hundred KB and comes back from L2). No atomics and an order that depends only on the group's
// size: the same input gives the same bits on every run and in every batch. The price of one
// launch is parallelism: batch x 32 blocks (64 for a CFG pair) on a GPU with more SMs; splitting a
// group over a thread-block cluster (sm_90, distributed shared memory) is the next step if the
// GPU profile shows this kernel.
// With a channel offset [batch, channels] (a ResNet's time embedding, which diffusers adds to
// conv1's output right before norm2), both passes read x + offset rounded to x's type, exactly the
// values add_batch_channel would have written: the sum never goes through memory, one launch less.
// Joined input (an up-path ResNet's norm1 over [x, skip]): x is read as the channel concat of two
// tensors [.., c1] and [.., channels - c1], a group may straddle the seam; pass 1 writes each value
// it reads to the concat's place in `joined` (the 1x1 shortcut's input), so the concat kernel and
// its read of both tensors are gone. The values normalised are the same, hence the same bits.
// LayerNorm: one block per row, exact two-pass mean and variance over the row (the row stays in
// L1/L2 between passes).
#include "common.cuh"
#include "norm.cuh"

namespace sdmpi::kernels {
namespace {

constexpr int kGroupNormThreads = 1024;

struct Welford {
  float n, mean, m2;
};

__device__ __forceinline__ Welford merge(Welford a, Welford b) {
  if (b.n == 0.0f) return a;
  if (a.n == 0.0f) return b;
  float n = a.n + b.n;
  float delta = b.mean - a.mean;
  float fb = b.n / n;
  Welford r;
  r.n = n;
  r.mean = a.mean + delta * fb;
  r.m2 = a.m2 + b.m2 + delta * delta * a.n * fb;
  return r;
}

// x's element, plus the group's channel offset when there is one, rounded like add_batch_channel's
// result (__fadd_rn: no contraction into a later multiply).
template <typename T, typename O>
__device__ __forceinline__ float offset_input(const T* xg, int64_t at, const O* offset, int ch) {
  const float v = to_float(xg[at]);
  return offset ? to_float(from_float<T>(__fadd_rn(v, to_float(offset[ch])))) : v;
}

// Element (pixel p, channel ch of the group) of a joined input: the channel gc = group's first + ch
// of the concat [x | x2] (x: c1 channels, x2: channels - c1), pixel pix of the whole batch.
template <typename T>
__device__ __forceinline__ T joined_input(const T* x, const T* x2, int64_t pix, int64_t gc, int64_t c1,
                                          int64_t channels) {
  return gc < c1 ? x[pix * c1 + gc] : x2[pix * (channels - c1) + (gc - c1)];
}

// grid (groups, batch), kGroupNormThreads threads. items = spatial * cg < 2^31 (checked by the launcher).
// offset: null, or [batch, channels] in T or float, rows offset_stride apart.
// kJoin: x [batch, spatial, c1] and x2 [batch, spatial, channels - c1] are the input's two halves,
// copied into joined [batch, spatial, channels] on the way (no offset then).
template <typename T, typename O, bool kJoin>
__global__ void __launch_bounds__(kGroupNormThreads)
group_norm_kernel(const T* x, const O* offset, int64_t offset_stride, T* out, const float* gamma, const float* beta,
                  int64_t spatial, int64_t channels, int cg, float eps, bool silu, const T* x2, int64_t c1,
                  T* joined) {
  __shared__ Welford shared[kGroupNormThreads];
  __shared__ float stats[2];
  const int64_t base = static_cast<int64_t>(blockIdx.y) * spatial * channels + static_cast<int64_t>(blockIdx.x) * cg;
  const T* xg = x + base;
  T* og = out + base;
  const O* og_offset =
      offset ? offset + static_cast<int64_t>(blockIdx.y) * offset_stride + static_cast<int64_t>(blockIdx.x) * cg : nullptr;
  const int items = static_cast<int>(spatial) * cg;
  const int64_t pix0 = static_cast<int64_t>(blockIdx.y) * spatial, gc0 = static_cast<int64_t>(blockIdx.x) * cg;
  Welford acc{0.0f, 0.0f, 0.0f};
  for (int i = threadIdx.x; i < items; i += blockDim.x) {
    const int p = i / cg, ch = i - p * cg;
    float v;
    if constexpr (kJoin) {
      const T raw = joined_input(x, x2, pix0 + p, gc0 + ch, c1, channels);
      joined[(pix0 + p) * channels + gc0 + ch] = raw;
      v = to_float(raw);
    } else {
      v = offset_input(xg, p * channels + ch, og_offset, ch);
    }
    acc.n += 1.0f;
    const float d = v - acc.mean;
    acc.mean += d / acc.n;
    acc.m2 += d * (v - acc.mean);
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] = merge(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const Welford r = shared[0];
    const float var = r.n > 0.0f ? r.m2 / r.n : 0.0f;
    stats[0] = r.mean;
    stats[1] = 1.0f / sqrtf(var + eps);
  }
  __syncthreads();
  const float mean = stats[0], rstd = stats[1];
  const float* gg = gamma + static_cast<int64_t>(blockIdx.x) * cg;
  const float* bg = beta + static_cast<int64_t>(blockIdx.x) * cg;
  for (int i = threadIdx.x; i < items; i += blockDim.x) {
    const int p = i / cg, ch = i - p * cg;
    const int64_t at = p * channels + ch;
    const float v = kJoin ? to_float(joined_input(x, x2, pix0 + p, gc0 + ch, c1, channels))
                          : offset_input(xg, at, og_offset, ch);
    float y = (v - mean) * rstd * gg[ch] + bg[ch];
    if (silu) y = y / (1.0f + expf(-y));
    og[at] = from_float<T>(y);
  }
}

template <typename T>
__global__ void layer_norm_kernel(const T* x, T* out, const float* gamma, const float* beta, int64_t c,
                                  float eps) {
  __shared__ float scratch[33];
  const T* row = x + static_cast<int64_t>(blockIdx.x) * c;
  T* orow = out + static_cast<int64_t>(blockIdx.x) * c;
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) s += to_float(row[j]);
  const float mean = block_sum(s, scratch) / static_cast<float>(c);
  float q = 0.0f;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float d = to_float(row[j]) - mean;
    q += d * d;
  }
  const float var = block_sum(q, scratch) / static_cast<float>(c);
  const float rstd = 1.0f / sqrtf(var + eps);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x)
    orow[j] = from_float<T>((to_float(row[j]) - mean) * rstd * gamma[j] + beta[j]);
}

}  // namespace

void group_norm(cudaStream_t stream, DType t, const void* x, DType offset_dtype, const void* offset, void* out,
                const float* gamma, const float* beta, int64_t batch, int64_t spatial, int64_t channels, int64_t groups,
                float eps, bool silu, int64_t offset_stride) {
  if (batch == 0 || spatial == 0 || channels == 0) return;
  if (offset_stride == 0) offset_stride = channels;
  if (batch > 65535 || groups > 2147483647LL)
    throw Error("group_norm: batch " + std::to_string(batch) + " x groups " + std::to_string(groups) + " exceeds the grid");
  const int64_t cg = channels / groups;
  if (spatial * cg > 2147483647LL)
    throw Error("group_norm: a group of " + std::to_string(spatial) + " x " + std::to_string(cg) +
                " elements exceeds 2^31");
  if (offset && offset_dtype != DType::F32 && offset_dtype != t)
    throw Error("internal: group_norm of " + std::string(dtype_name(t)) + " with a " + dtype_name(offset_dtype) +
                " channel offset");
  dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(batch));
  if (offset && offset_dtype == DType::F32) {
    SDMPI_DISPATCH_FLOAT_TYPES(t, T,
      group_norm_kernel<T, float, false><<<grid, kGroupNormThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const float*>(offset), offset_stride, static_cast<T*>(out), gamma, beta, spatial,
          channels, static_cast<int>(cg), eps, silu, nullptr, 0, nullptr));
  } else {
    SDMPI_DISPATCH_FLOAT_TYPES(t, T,
      group_norm_kernel<T, T, false><<<grid, kGroupNormThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(offset), offset_stride, static_cast<T*>(out), gamma, beta, spatial,
          channels, static_cast<int>(cg), eps, silu, nullptr, 0, nullptr));
  }
  SDMPI_CUDA_CHECK_LAUNCH();
}

void group_norm_joined(cudaStream_t stream, DType t, const void* a, const void* b, int64_t ca, void* joined, void* out,
                       const float* gamma, const float* beta, int64_t batch, int64_t spatial, int64_t channels,
                       int64_t groups, float eps, bool silu) {
  if (batch == 0 || spatial == 0 || channels == 0) return;
  if (batch > 65535 || groups > 2147483647LL)
    throw Error("group_norm: batch " + std::to_string(batch) + " x groups " + std::to_string(groups) + " exceeds the grid");
  const int64_t cg = channels / groups;
  if (spatial * cg > 2147483647LL)
    throw Error("group_norm: a group of " + std::to_string(spatial) + " x " + std::to_string(cg) +
                " elements exceeds 2^31");
  dim3 grid(static_cast<unsigned>(groups), static_cast<unsigned>(batch));
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    group_norm_kernel<T, T, true><<<grid, kGroupNormThreads, 0, stream>>>(
        static_cast<const T*>(a), static_cast<const T*>(nullptr), 0, static_cast<T*>(out), gamma, beta, spatial,
        channels, static_cast<int>(cg), eps, silu, static_cast<const T*>(b), ca, static_cast<T*>(joined)));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void layer_norm(cudaStream_t stream, DType t, const void* x, void* out, const float* gamma, const float* beta,
                int64_t rows, int64_t c, float eps) {
  if (rows == 0 || c == 0) return;
  if (rows > 2147483647LL) throw Error("layer_norm: too many rows " + std::to_string(rows));
  int threads = c >= 512 ? 256 : 128;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    layer_norm_kernel<T><<<static_cast<unsigned>(rows), threads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(out), gamma, beta, c, eps));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
