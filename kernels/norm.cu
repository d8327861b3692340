// Group normalisation (+SiLU) and layer normalisation.
//
// Statistics are float32 and numerically stable whatever the input's offset: no sum-of-squares
// formula. GroupNorm on channels-last data reads each pixel's channels contiguously, so a group's
// elements are strided by the channel count. It runs in three steps:
//   1. partial Welford statistics (count, mean, M2) per (batch, slot, channel), where a slot is a
//      run of pixels handled by one thread. Threads of a block take consecutive channels of the same
//      pixel, so loads are coalesced; with fewer channels than threads, several pixels share a block.
//   2. one block per (batch, group) merges the slots × channels-in-group partials with Chan's
//      formula in a fixed order (strided sequential merge per thread, then a tree), giving the
//      mean and 1/sqrt(var + eps).
//   3. an elementwise pass normalises, applies gamma/beta and optionally SiLU.
// The split into slots depends only on the spatial size, not on the batch, and no atomics are used:
// the same input gives the same bits on every run and in every batch.
// LayerNorm: one block per row, exact two-pass mean and variance over the row (the row stays in
// L1/L2 between passes).
#include "common.cuh"
#include "norm.cuh"

namespace sdmpi::kernels {
namespace {

constexpr int kNormThreads = 256;

struct GroupNormPlan {
  int64_t lanes;       // pixels processed side by side in one block (1 when channels >= threads)
  int64_t chunk;       // pixels per block
  int64_t chunks;      // blocks per batch item
  int64_t slots;       // chunks * lanes: partial statistics per channel per batch item
};

GroupNormPlan plan_group_norm(int64_t spatial, int64_t channels) {
  GroupNormPlan p;
  p.lanes = channels >= kNormThreads ? 1 : kNormThreads / channels;
  // About 256 chunks per image at most, each at least `lanes` pixels.
  int64_t chunk = (spatial + 255) / 256;
  p.chunk = std::max<int64_t>(chunk, p.lanes);
  p.chunks = (spatial + p.chunk - 1) / p.chunk;
  p.slots = p.chunks * p.lanes;
  return p;
}

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

// grid (chunks, batch). Partial statistics of channel c over the pixels of (chunk, lane).
template <typename T>
__global__ void group_norm_partial_kernel(const T* x, float* part_n, float* part_mean, float* part_m2,
                                          int64_t spatial, int64_t channels, int64_t lanes, int64_t chunk,
                                          int64_t slots) {
  const int64_t b = blockIdx.y, ck = blockIdx.x;
  const int64_t p_begin = ck * chunk;
  const int64_t p_end = min(p_begin + chunk, spatial);
  const T* xb = x + b * spatial * channels;
  if (lanes == 1) {
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      float n = 0.0f, mean = 0.0f, m2 = 0.0f;
      for (int64_t p = p_begin; p < p_end; ++p) {
        float v = to_float(xb[p * channels + c]);
        n += 1.0f;
        float d = v - mean;
        mean += d / n;
        m2 += d * (v - mean);
      }
      int64_t idx = (b * slots + ck) * channels + c;
      part_n[idx] = n;
      part_mean[idx] = mean;
      part_m2[idx] = m2;
    }
  } else {
    const int64_t c = threadIdx.x % channels, lane = threadIdx.x / channels;
    if (lane >= lanes) return;
    float n = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int64_t p = p_begin + lane; p < p_end; p += lanes) {
      float v = to_float(xb[p * channels + c]);
      n += 1.0f;
      float d = v - mean;
      mean += d / n;
      m2 += d * (v - mean);
    }
    int64_t idx = (b * slots + ck * lanes + lane) * channels + c;
    part_n[idx] = n;
    part_mean[idx] = mean;
    part_m2[idx] = m2;
  }
}

// grid (groups, batch). Merges the partials of one group into (mean, rstd).
__global__ void group_norm_merge_kernel(const float* part_n, const float* part_mean, const float* part_m2,
                                        float* stats, int64_t channels, int64_t groups, int64_t slots,
                                        float eps) {
  __shared__ Welford shared[kNormThreads];
  const int64_t b = blockIdx.y, g = blockIdx.x;
  const int64_t cg = channels / groups;
  const int64_t items = slots * cg;
  Welford acc{0.0f, 0.0f, 0.0f};
  for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
    int64_t slot = i / cg, c = g * cg + (i - slot * cg);
    int64_t idx = (b * slots + slot) * channels + c;
    acc = merge(acc, Welford{part_n[idx], part_mean[idx], part_m2[idx]});
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) shared[threadIdx.x] = merge(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    Welford r = shared[0];
    float var = r.n > 0.0f ? r.m2 / r.n : 0.0f;
    stats[(b * groups + g) * 2 + 0] = r.mean;
    stats[(b * groups + g) * 2 + 1] = 1.0f / sqrtf(var + eps);
  }
}

template <typename T, typename I>
__global__ void group_norm_apply_kernel(const T* x, T* out, const float* stats, const float* gamma,
                                        const float* beta, I spatial, I channels, I groups, bool silu, I n) {
  const I cg = channels / groups;
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    I c = i % channels;
    I b = i / (spatial * channels);
    I g = c / cg;
    float mean = stats[(b * groups + g) * 2], rstd = stats[(b * groups + g) * 2 + 1];
    float y = (to_float(x[i]) - mean) * rstd * gamma[c] + beta[c];
    if (silu) y = y / (1.0f + expf(-y));
    out[i] = from_float<T>(y);
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

size_t group_norm_scratch_bytes(int64_t batch, int64_t spatial, int64_t channels, int64_t groups) {
  GroupNormPlan p = plan_group_norm(spatial, channels);
  return static_cast<size_t>(3 * batch * p.slots * channels + 2 * batch * groups) * sizeof(float);
}

void group_norm(cudaStream_t stream, DType t, const void* x, void* out, const float* gamma, const float* beta,
                int64_t batch, int64_t spatial, int64_t channels, int64_t groups, float eps, bool silu,
                void* scratch) {
  if (batch == 0 || spatial == 0 || channels == 0) return;
  GroupNormPlan p = plan_group_norm(spatial, channels);
  float* part_n = static_cast<float*>(scratch);
  float* part_mean = part_n + batch * p.slots * channels;
  float* part_m2 = part_mean + batch * p.slots * channels;
  float* stats = part_m2 + batch * p.slots * channels;
  if (batch > 65535) throw Error("group_norm: batch " + std::to_string(batch) + " exceeds 65535");
  dim3 partial_grid(static_cast<unsigned>(p.chunks), static_cast<unsigned>(batch));
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    group_norm_partial_kernel<T><<<partial_grid, kNormThreads, 0, stream>>>(
        static_cast<const T*>(x), part_n, part_mean, part_m2, spatial, channels, p.lanes, p.chunk, p.slots));
  SDMPI_CUDA_CHECK_LAUNCH();
  dim3 merge_grid(static_cast<unsigned>(groups), static_cast<unsigned>(batch));
  group_norm_merge_kernel<<<merge_grid, kNormThreads, 0, stream>>>(part_n, part_mean, part_m2, stats, channels,
                                                                   groups, p.slots, eps);
  SDMPI_CUDA_CHECK_LAUNCH();
  int64_t n = batch * spatial * channels;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    SDMPI_DISPATCH_INDEX(n, I,
      group_norm_apply_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<T*>(out), stats, gamma, beta, static_cast<I>(spatial),
          static_cast<I>(channels), static_cast<I>(groups), silu, static_cast<I>(n))));
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
