// Nearest-neighbour upsampling, zero padding and concatenation along channels, on channels-last
// tensors.
//
// Both are pure data movement, so they copy bit patterns (2- or 4-byte words) without touching
// values, whatever the dtype. Each thread writes one output element and computes where it comes
// from; in NHWC consecutive threads write consecutive channels of one pixel and read consecutive
// channels of the source pixel, so reads and writes are coalesced. The source index of nearest
// resizing is PyTorch's nearest_idx for a given output size: the same index for equal sizes, dst/2
// for exact doubling, else min(floor(dst * float(in/out)), in - 1) in float arithmetic (the
// multiply with __fmul_rn so it rounds as on the CPU).
#include "common.cuh"
#include "resample.cuh"

namespace sdmpi::kernels {
namespace {

template <typename I>
__device__ __forceinline__ I nearest_source(I dst, I in, I out, float scale) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  I src = static_cast<I>(floorf(__fmul_rn(static_cast<float>(dst), scale)));
  return src < in - 1 ? src : in - 1;
}

template <typename W, typename I>
__global__ void upsample_nearest_kernel(const W* x, W* out, I h, I w, I c, I oh, I ow, float scale_h,
                                        float scale_w, I n) {
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    I ch = i % c;
    I pix = i / c;
    I ox = pix % ow;
    I rest = pix / ow;
    I oy = rest % oh;
    I b = rest / oh;
    I sy = nearest_source(oy, h, oh, scale_h), sx = nearest_source(ox, w, ow, scale_w);
    out[i] = x[((b * h + sy) * w + sx) * c + ch];
  }
}

// Every output element either copies its source element or is zero (a zero bit pattern is 0.0 in
// every dtype we store).
template <typename W, typename I>
__global__ void pad2d_kernel(const W* x, W* out, I h, I w, I c, I oh, I ow, I top, I left, I n) {
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    I ch = i % c;
    I pix = i / c;
    I ox = pix % ow;
    I rest = pix / ow;
    I oy = rest % oh;
    I b = rest / oh;
    I iy = oy - top, ix = ox - left;
    out[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[((b * h + iy) * w + ix) * c + ch] : W(0);
  }
}

template <typename W, typename I>
__global__ void concat_channels_kernel(const W* a, const W* b, W* out, I ca, I cb, I n) {
  const I c = ca + cb;
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    I r = i / c, j = i - r * c;
    out[i] = j < ca ? a[r * ca + j] : b[r * cb + (j - ca)];
  }
}

}  // namespace

void upsample_nearest(cudaStream_t stream, size_t elem_size, const void* x, void* out, int64_t b, int64_t h,
                      int64_t w, int64_t c, int64_t oh, int64_t ow) {
  int64_t n = b * oh * ow * c;
  if (n == 0) return;
  const float scale_h = static_cast<float>(h) / static_cast<float>(oh);
  const float scale_w = static_cast<float>(w) / static_cast<float>(ow);
  const int64_t largest = std::max(n, b * h * w * c);
  SDMPI_DISPATCH_ELEMENT_SIZE(elem_size, W,
    SDMPI_DISPATCH_INDEX(largest, I,
      upsample_nearest_kernel<W, I><<<grid_for(n), kThreads, 0, stream>>>(
          static_cast<const W*>(x), static_cast<W*>(out), static_cast<I>(h), static_cast<I>(w), static_cast<I>(c),
          static_cast<I>(oh), static_cast<I>(ow), scale_h, scale_w, static_cast<I>(n))));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void pad2d(cudaStream_t stream, size_t elem_size, const void* x, void* out, int64_t b, int64_t h, int64_t w,
           int64_t c, int64_t top, int64_t bottom, int64_t left, int64_t right) {
  const int64_t oh = top + h + bottom, ow = left + w + right;
  const int64_t n = b * oh * ow * c;
  if (n == 0) return;
  SDMPI_DISPATCH_ELEMENT_SIZE(elem_size, W,
    SDMPI_DISPATCH_INDEX(n, I,
      pad2d_kernel<W, I><<<grid_for(n), kThreads, 0, stream>>>(
          static_cast<const W*>(x), static_cast<W*>(out), static_cast<I>(h), static_cast<I>(w), static_cast<I>(c),
          static_cast<I>(oh), static_cast<I>(ow), static_cast<I>(top), static_cast<I>(left), static_cast<I>(n))));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void concat_channels(cudaStream_t stream, size_t elem_size, const void* a, const void* b, void* out,
                     int64_t rows, int64_t ca, int64_t cb) {
  int64_t n = rows * (ca + cb);
  if (n == 0) return;
  SDMPI_DISPATCH_ELEMENT_SIZE(elem_size, W,
    SDMPI_DISPATCH_INDEX(n, I,
      concat_channels_kernel<W, I><<<grid_for(n), kThreads, 0, stream>>>(
          static_cast<const W*>(a), static_cast<const W*>(b), static_cast<W*>(out), static_cast<I>(ca),
          static_cast<I>(cb), static_cast<I>(n))));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
