// A simple, correct multi-head attention: one warp per (batch, head, query), online softmax.
//
// Idea: the warp holds its query row and its output accumulator spread over the 32 lanes (lane l
// owns dimensions l, l+32, ...). For each key it forms the score with a warp-wide sum, then updates
// the running maximum m, the running denominator l and the accumulator (rescaled by exp(m_old -
// m_new)), as in flash attention but one key at a time; the output is acc / l. Memory per query is
// constant, so any sequence length works, in float32 whatever the storage type. It is the
// placeholder until the tuned kernels (kernels/attention*.cu) take over: it reads K and V once per
// query (from L2), so it is slow, but its arithmetic is the textbook one, which makes it a good
// second reference.
#include <cmath>

#include "attention_naive.cuh"
#include "common.cuh"

namespace sdmpi::kernels {
namespace {

constexpr int kWarpsPerBlock = 4;

// DPL: dimensions per lane (d ≤ 32 * DPL).
template <typename T, int DPL>
__global__ void attention_naive_kernel(const T* q, const T* k, const T* v, T* out, int64_t nq, int64_t nk,
                                       int heads, int d, bool causal, float scale, int64_t rows) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  // row = (b * heads + h) * nq + i
  const int64_t i = row % nq;
  const int64_t bh = row / nq;
  const int h = static_cast<int>(bh % heads);
  const int64_t b = bh / heads;
  const int64_t width = static_cast<int64_t>(heads) * d;

  float qr[DPL], acc[DPL];
  const T* qrow = q + (b * nq + i) * width + static_cast<int64_t>(h) * d;
#pragma unroll
  for (int u = 0; u < DPL; ++u) {
    int dd = lane + 32 * u;
    qr[u] = dd < d ? to_float(qrow[dd]) : 0.0f;
    acc[u] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  const int64_t last = causal ? min(i + 1, nk) : nk;
  for (int64_t j = 0; j < last; ++j) {
    const T* krow = k + (b * nk + j) * width + static_cast<int64_t>(h) * d;
    const T* vrow = v + (b * nk + j) * width + static_cast<int64_t>(h) * d;
    float s = 0.0f;
#pragma unroll
    for (int u = 0; u < DPL; ++u) {
      int dd = lane + 32 * u;
      if (dd < d) s += qr[u] * to_float(krow[dd]);
    }
    s = warp_sum(s) * scale;
    float m_new = fmaxf(m, s);
    float correction = expf(m - m_new);  // exp(-inf) = 0 on the first key
    float p = expf(s - m_new);
    l = l * correction + p;
#pragma unroll
    for (int u = 0; u < DPL; ++u) {
      int dd = lane + 32 * u;
      if (dd < d) acc[u] = acc[u] * correction + p * to_float(vrow[dd]);
    }
    m = m_new;
  }
  T* orow = out + (b * nq + i) * width + static_cast<int64_t>(h) * d;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int u = 0; u < DPL; ++u) {
    int dd = lane + 32 * u;
    if (dd < d) orow[dd] = from_float<T>(acc[u] * inv);
  }
}

template <typename T, int DPL>
void launch(cudaStream_t stream, const void* q, const void* k, const void* v, void* out, int64_t b, int64_t nq,
            int64_t nk, int heads, int d, bool causal) {
  const int64_t rows = b * heads * nq;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 2147483647LL) throw Error("attention: too many rows " + std::to_string(rows));
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  attention_naive_kernel<T, DPL><<<static_cast<unsigned>(blocks), 32 * kWarpsPerBlock, 0, stream>>>(
      static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), static_cast<T*>(out), nq, nk,
      heads, d, causal, scale, rows);
}

}  // namespace

void attention_naive(cudaStream_t stream, DType t, const void* q, const void* k, const void* v, void* out,
                     int64_t b, int64_t nq, int64_t nk, int heads, int d, bool causal) {
  if (b * nq * heads == 0) return;
  if (d <= 0 || d > kNaiveAttentionMaxHeadDim)
    throw Error("attention: head dimension " + std::to_string(d) + " outside 1.." +
                std::to_string(kNaiveAttentionMaxHeadDim));
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    if (d <= 64) launch<T, 2>(stream, q, k, v, out, b, nq, nk, heads, d, causal);
    else if (d <= 128) launch<T, 4>(stream, q, k, v, out, b, nq, nk, heads, d, causal);
    else if (d <= 256) launch<T, 8>(stream, q, k, v, out, b, nq, nk, heads, d, causal);
    else launch<T, 16>(stream, q, k, v, out, b, nq, nk, heads, d, causal));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
