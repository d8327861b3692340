// Embedding lookups (token and position tables) and the sinusoidal timestep embedding.
//
// A lookup is a row gather: thread i writes element i of the output and reads the same column of the
// row its id names, so consecutive threads copy consecutive bytes of one row.
// The timestep embedding follows diffusers' get_timestep_embedding op by op in float32, as torch
// runs it: exponent_k = (-ln(10000) * k) / (half - shift) (the Python constant is rounded to float
// first), freq_k = exp(exponent_k), arg = t * freq_k, then sin and cos. The products and the
// division use the _rn intrinsics (no contraction). exp, sin and cos are evaluated in double and
// rounded to float, i.e. correctly rounded float results (CUDA's expf/sinf are up to 2 ulp off, and
// one ulp of freq becomes ~1e-4 of sin(arg) at t ≈ 1000). torch's own SLEEF versions differ from
// correct rounding by at most 1 ulp in a few per cent of the values. The kernel is tiny ([B, 320]),
// so double arithmetic costs nothing here.
#include "common.cuh"
#include "embedding.cuh"

namespace sdmpi::kernels {
namespace {

template <typename W>
__global__ void gather_kernel(const int32_t* ids, const W* table, W* out, int64_t c, int64_t n) {
  SDMPI_GRID_STRIDE(i, n) {
    int64_t r = i / c, j = i - r * c;
    out[i] = table[static_cast<int64_t>(ids[r]) * c + j];
  }
}

template <typename T>
__global__ void timestep_embedding_kernel(const float* t, T* out, int64_t batch, int dim, bool flip, float shift) {
  const int half = dim / 2;
  const float neg_log_max_period = -9.210340371976184f;  // -ln(10000) rounded to float32
  SDMPI_GRID_STRIDE(i, batch * dim) {
    int64_t b = i / dim;
    int j = static_cast<int>(i - b * dim);
    float v = 0.0f;  // the zero pad column of an odd dim
    if (j < 2 * half) {
      int k = j < half ? j : j - half;
      bool first_half = j < half;
      float exponent = __fdiv_rn(__fmul_rn(neg_log_max_period, static_cast<float>(k)),
                                 __fsub_rn(static_cast<float>(half), shift));
      float freq = static_cast<float>(exp(static_cast<double>(exponent)));
      float arg = __fmul_rn(t[b], freq);
      // Without flip: [sin | cos]; with flip: [cos | sin].
      bool use_sin = flip ? !first_half : first_half;
      v = static_cast<float>(use_sin ? sin(static_cast<double>(arg)) : cos(static_cast<double>(arg)));
    }
    out[i] = from_float<T>(v);
  }
}

}  // namespace

void embedding_gather(cudaStream_t stream, size_t elem_size, const int32_t* ids, const void* table, void* out,
                      int64_t n, int64_t c) {
  if (n * c == 0) return;
  SDMPI_DISPATCH_ELEMENT_SIZE(elem_size, W,
    gather_kernel<W><<<grid_for(n * c), kThreads, 0, stream>>>(ids, static_cast<const W*>(table), static_cast<W*>(out),
                                                              c, n * c));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void timestep_embedding(cudaStream_t stream, DType out_t, const float* t, void* out, int64_t batch, int dim,
                        bool flip_sin_to_cos, float shift) {
  if (batch * dim == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(out_t, T,
    timestep_embedding_kernel<T><<<grid_for(batch * dim), kThreads, 0, stream>>>(t, static_cast<T*>(out), batch, dim,
                                                                                flip_sin_to_cos, shift));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
