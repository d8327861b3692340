// Dtype conversion and the OIHW → OHWI permute of convolution weights.
//
// Weights arrive in the file's dtype and PyTorch's layout; they are uploaded as raw bytes and
// converted here once, at load, to the compute dtype (biases and norm parameters to float32) and,
// for convolutions, to cuDNN's KRSC = our OHWI layout. Every conversion goes through float32, which
// holds every F16 and BF16 value exactly, and rounds once to nearest even (__float2half_rn,
// __float2bfloat16_rn), as torch's .half() / .bfloat16() and the host's float_to_half do.
#include "common.cuh"
#include "convert.cuh"

namespace sdmpi::kernels {
namespace {

template <typename S, typename D>
__global__ void convert_kernel(const S* src, D* dst, int64_t n) {
  SDMPI_GRID_STRIDE(i, n) { dst[i] = from_float<D>(to_float(src[i])); }
}

// One thread per output element [o, y, x, c] of [O, KH, KW, I]; reads [o, c, y, x].
template <typename S, typename D>
__global__ void oihw_to_ohwi_kernel(const S* src, D* dst, int64_t ci, int64_t kh, int64_t kw, int64_t n) {
  SDMPI_GRID_STRIDE(idx, n) {
    int64_t c = idx % ci;
    int64_t rest = idx / ci;
    int64_t x = rest % kw;
    rest /= kw;
    int64_t y = rest % kh;
    int64_t o = rest / kh;
    dst[idx] = from_float<D>(to_float(src[((o * ci + c) * kh + y) * kw + x]));
  }
}

}  // namespace

void convert(cudaStream_t stream, DType from, const void* src, DType to, void* dst, int64_t n) {
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(from, S,
    SDMPI_DISPATCH_FLOAT_TYPES(to, D,
      convert_kernel<S, D><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const S*>(src), static_cast<D*>(dst), n)));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void convert_oihw_to_ohwi(cudaStream_t stream, DType from, const void* src, DType to, void* dst, int64_t o,
                          int64_t i, int64_t kh, int64_t kw) {
  int64_t n = o * i * kh * kw;
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(from, S,
    SDMPI_DISPATCH_FLOAT_TYPES(to, D,
      oihw_to_ohwi_kernel<S, D><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const S*>(src),
                                                                      static_cast<D*>(dst), i, kh, kw, n)));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
