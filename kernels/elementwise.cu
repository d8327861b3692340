// Elementwise kernels: binary ops with a tensor or a scalar, activations, GEGLU, clamp, the
// time-embedding broadcast add, the bias/residual epilogue and the classifier-free-guidance combine.
//
// Idea: one grid-stride loop per op, loading the storage type, computing in float and rounding once
// on store, so each op rounds exactly like one eager PyTorch op. Where a chain of ops must match
// PyTorch bit for bit (scheduler updates, CFG) the arithmetic uses __fadd_rn/__fsub_rn/__fmul_rn/
// __fdiv_rn, which the compiler never contracts into a fused multiply-add, and rounds to the storage
// type between ops as eager PyTorch does. The transcendental functions are the accurate CUDA ones
// (expf, erff: a few ulp), never the __expf-style intrinsics.
#include "common.cuh"
#include "elementwise.cuh"

namespace sdmpi::kernels {
namespace {

__device__ __forceinline__ float apply_binary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::Add: return __fadd_rn(a, b);
    case BinaryOp::Sub: return __fsub_rn(a, b);
    case BinaryOp::Mul: return __fmul_rn(a, b);
    case BinaryOp::Div: return __fdiv_rn(a, b);
  }
  return 0.0f;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float quick_gelu(float x) { return x * (1.0f / (1.0f + expf(-(1.702f * x)))); }

template <typename T>
__global__ void binary_kernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  SDMPI_GRID_STRIDE(i, n) { out[i] = from_float<T>(apply_binary(op, to_float(a[i]), to_float(b[i]))); }
}

template <typename T>
__global__ void binary_scalar_kernel(BinaryOp op, const T* a, float s, bool scalar_first, T* out, int64_t n) {
  SDMPI_GRID_STRIDE(i, n) {
    float x = to_float(a[i]);
    out[i] = from_float<T>(scalar_first ? apply_binary(op, s, x) : apply_binary(op, x, s));
  }
}

template <typename T>
__global__ void activation_kernel(Activation act, const T* x, T* out, int64_t n) {
  SDMPI_GRID_STRIDE(i, n) {
    float v = to_float(x[i]);
    float r = act == Activation::SiLU ? silu(v) : act == Activation::GELU ? gelu_erf(v) : quick_gelu(v);
    out[i] = from_float<T>(r);
  }
}

template <typename T, typename I>
__global__ void geglu_kernel(const T* x, T* out, I n, I c) {
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    I r = i / c, j = i - r * c;
    float a = to_float(x[r * 2 * c + j]);
    float g = to_float(x[r * 2 * c + c + j]);
    out[i] = from_float<T>(a * gelu_erf(g));
  }
}

template <typename T>
__global__ void clamp_kernel(const T* x, T* out, int64_t n, float lo, float hi) {
  SDMPI_GRID_STRIDE(i, n) {
    float v = to_float(x[i]);
    if (!isnan(v)) v = v < lo ? lo : (v > hi ? hi : v);
    out[i] = from_float<T>(v);
  }
}

template <typename T, typename TT, typename I>
__global__ void add_batch_channel_kernel(const T* x, const TT* t, T* out, I inner, I c, I n) {
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    I ch = i % c;
    I b = i / (inner * c);
    out[i] = from_float<T>(__fadd_rn(to_float(x[i]), to_float(t[b * c + ch])));
  }
}

template <typename T, typename I>
__global__ void bias_residual_kernel(T* y, const float* bias, const T* residual, I c, I n) {
  SDMPI_GRID_STRIDE_AS(I, i, n) {
    float v = to_float(y[i]);
    if (bias) v = __fadd_rn(v, bias[i % c]);
    if (residual) v = __fadd_rn(v, to_float(residual[i]));
    y[i] = from_float<T>(v);
  }
}

template <typename T>
__global__ void guidance_kernel(const T* eps, T* out, int64_t half, float scale) {
  SDMPI_GRID_STRIDE(i, half) {
    float u = to_float(eps[i]), c = to_float(eps[half + i]);
    float d = round_to<T>(__fsub_rn(c, u));
    float m = round_to<T>(__fmul_rn(d, scale));
    out[i] = from_float<T>(__fadd_rn(u, m));
  }
}

}  // namespace

void binary(cudaStream_t stream, BinaryOp op, DType t, const void* a, const void* b, void* out, int64_t n) {
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    binary_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, static_cast<const T*>(a),
                                                          static_cast<const T*>(b), static_cast<T*>(out), n));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void binary_scalar(cudaStream_t stream, BinaryOp op, DType t, const void* a, float s, bool scalar_first,
                   void* out, int64_t n) {
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    binary_scalar_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(op, static_cast<const T*>(a), s, scalar_first,
                                                                 static_cast<T*>(out), n));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void activation(cudaStream_t stream, Activation act, DType t, const void* x, void* out, int64_t n) {
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    activation_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(act, static_cast<const T*>(x),
                                                              static_cast<T*>(out), n));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void geglu(cudaStream_t stream, DType t, const void* x, void* out, int64_t rows, int64_t c) {
  const int64_t n = rows * c;
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    SDMPI_DISPATCH_INDEX(2 * n, I,
      geglu_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(out),
                                                              static_cast<I>(n), static_cast<I>(c))));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void clamp(cudaStream_t stream, DType t, const void* x, void* out, int64_t n, float lo, float hi) {
  if (n == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    clamp_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(out), n,
                                                         lo, hi));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void add_batch_channel(cudaStream_t stream, DType tx, const void* x, DType tt, const void* t, void* out,
                       int64_t batch, int64_t inner, int64_t c) {
  int64_t n = batch * inner * c;
  if (n == 0) return;
  if (tt == DType::F32) {
    SDMPI_DISPATCH_FLOAT_TYPES(tx, T,
      SDMPI_DISPATCH_INDEX(n, I,
        add_batch_channel_kernel<T, float, I><<<grid_for(n), kThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const float*>(t), static_cast<T*>(out), static_cast<I>(inner),
            static_cast<I>(c), static_cast<I>(n))));
  } else {
    if (tt != tx) throw Error("internal: add_batch_channel with " + std::string(dtype_name(tx)) + " and " + dtype_name(tt));
    SDMPI_DISPATCH_FLOAT_TYPES(tx, T,
      SDMPI_DISPATCH_INDEX(n, I,
        add_batch_channel_kernel<T, T, I><<<grid_for(n), kThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<const T*>(t), static_cast<T*>(out), static_cast<I>(inner),
            static_cast<I>(c), static_cast<I>(n))));
  }
  SDMPI_CUDA_CHECK_LAUNCH();
}

void bias_residual(cudaStream_t stream, DType t, void* y, const float* bias, const void* residual,
                   int64_t rows, int64_t c) {
  int64_t n = rows * c;
  if (n == 0 || (!bias && !residual)) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    SDMPI_DISPATCH_INDEX(n, I,
      bias_residual_kernel<T, I><<<grid_for(n), kThreads, 0, stream>>>(static_cast<T*>(y), bias,
                                                                      static_cast<const T*>(residual),
                                                                      static_cast<I>(c), static_cast<I>(n))));
  SDMPI_CUDA_CHECK_LAUNCH();
}

void guidance_combine(cudaStream_t stream, DType t, const void* eps, void* out, int64_t half, float scale) {
  if (half == 0) return;
  SDMPI_DISPATCH_FLOAT_TYPES(t, T,
    guidance_kernel<T><<<grid_for(half), kThreads, 0, stream>>>(static_cast<const T*>(eps), static_cast<T*>(out),
                                                               half, scale));
  SDMPI_CUDA_CHECK_LAUNCH();
}

}  // namespace sdmpi::kernels
