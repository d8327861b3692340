// The patch gather of a convolution computed as a matrix product (im2col), channels-last.
//
// The idea: with activations NHWC and filters KRSC (our OHWI), a convolution is
//   y[pixel, k] = sum over (ky, kx, ch) of patch[pixel, (ky, kx, ch)] * w[k, (ky, kx, ch)],
// i.e. patches [pixels, r*s*c] times wᵀ — one cuBLASLt product with the bias and residual fused
// into its epilogue. This kernel writes the patch matrix. It is the convolution's fallback when
// cuDNN offers no working algorithm for a shape: far faster than a direct kernel, because the
// product runs on tensor cores, at the price of r*s times the input in workspace, which the
// caller bounds by gathering a slice of rows at a time.
//
// Layout: one thread per output element. Consecutive threads write consecutive channels of one
// kernel tap and read consecutive channels of one input pixel, so both sides are coalesced; padding
// taps write zeros. Pure data movement: bit patterns are copied (2- or 4-byte words), so every dtype
// shares the kernel and the values reach the product unchanged.
#include "common.cuh"
#include "im2col.cuh"

namespace sdmpi::kernels {
namespace {

template <typename W, typename I>
__global__ void im2col_nhwc_kernel(const W* x, W* out, I h, I w, I c, I s, I stride, I pad, I ho, I wo, I row_begin,
                                   I patch, I n) {
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    const I row = i / patch, col = i - row * patch;
    const I ch = col % c, tap = col / c;
    const I kx = tap % s, ky = tap / s;
    const I pixel = row_begin + row;
    const I ox = pixel % wo, rest = pixel / wo;
    const I oy = rest % ho, b = rest / ho;
    const I iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
    out[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[((b * h + iy) * w + ix) * c + ch] : W(0);
  }
}

}  // namespace

void im2col_nhwc(cudaStream_t stream, size_t elem_size, const void* x, void* out, int64_t h, int64_t w, int64_t c,
                 int64_t r, int64_t s, int stride, int pad, int64_t ho, int64_t wo, int64_t row_begin, int64_t rows) {
  const int64_t patch = r * s * c, n = rows * patch;
  if (n == 0) return;
  // Indices reach the last output row of the slice and the last input image it reads.
  const int64_t images = (row_begin + rows + ho * wo - 1) / (ho * wo);
  const int64_t largest = std::max({n, (row_begin + rows) * patch, images * h * w * c});
  SDMPI_DISPATCH_ELEMENT_SIZE(elem_size, W,
    SDMPI_DISPATCH_INDEX(largest, I,
      im2col_nhwc_kernel<W, I><<<grid_for(n), kThreads, 0, stream>>>(
          static_cast<const W*>(x), static_cast<W*>(out), static_cast<I>(h), static_cast<I>(w), static_cast<I>(c),
          static_cast<I>(s), static_cast<I>(stride), static_cast<I>(pad), static_cast<I>(ho), static_cast<I>(wo),
          static_cast<I>(row_begin), static_cast<I>(patch), static_cast<I>(n))));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
