// Direct 2-D convolution, channels-last: the fallback when cuDNN offers no working algorithm for a
// shape (src/backend/cuda/conv.cpp), so an unusual shape is slow rather than an error.
//
// Idea: the definition, one thread per output element. Thread (b, oy, ox, o) sums
// x[b, oy*stride - pad + i, ox*stride - pad + j, :] · w[o, i, j, :] over the kernel window in float32,
// skipping taps that fall into the zero padding. Both operands are read along their contiguous
// channel dimension. No tiling, no shared memory: correct for every shape, far from fast.
#include "common.cuh"
#include "conv_direct.cuh"

namespace sdmpi::kernels {
namespace {

template <typename T>
__global__ void conv2d_direct_kernel(const T* x, const T* w, T* y, int64_t h, int64_t wd, int64_t c, int64_t k,
                                     int64_t r, int64_t s, int stride, int pad, int64_t ho, int64_t wo,
                                     int64_t total) {
  SDMPI_GRID_STRIDE(idx, total) {
    int64_t o = idx % k;
    int64_t rest = idx / k;
    int64_t ox = rest % wo;
    rest /= wo;
    int64_t oy = rest % ho;
    int64_t b = rest / ho;
    float acc = 0.0f;
    for (int64_t i = 0; i < r; ++i) {
      int64_t iy = oy * stride - pad + i;
      if (iy < 0 || iy >= h) continue;
      for (int64_t j = 0; j < s; ++j) {
        int64_t ix = ox * stride - pad + j;
        if (ix < 0 || ix >= wd) continue;
        const T* xp = x + ((b * h + iy) * wd + ix) * c;
        const T* wp = w + ((o * r + i) * s + j) * c;
        for (int64_t ch = 0; ch < c; ++ch) acc += to_float(xp[ch]) * to_float(wp[ch]);
      }
    }
    y[idx] = from_float<T>(acc);
  }
}

}  // namespace

void conv2d_direct(cudaStream_t stream, DType t, const void* x, const void* w, void* y, int64_t n, int64_t h,
                   int64_t wd, int64_t c, int64_t k, int64_t r, int64_t s, int stride, int pad, int64_t ho,
                   int64_t wo) {
  const int64_t total = n * ho * wo * k;
  if (total == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    conv2d_direct_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), h, wd, c, k, r, s, stride, pad, ho,
        wo, total));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
