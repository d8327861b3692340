// Elementwise and shape kernels of the CPU backend.
//
// Each formula is the operation sequence eager PyTorch runs on the CPU, one rounding per op:
//   SiLU        x / (1 + exp(-x))
//   GELU        (x * 0.5) * (1 + erf(x * √½))            (F.gelu, approximate="none")
//   QuickGELU   t = 1.702 * x;  x * (1 / (1 + exp(-t)))  (transformers' x * sigmoid(1.702 x))
//   GEGLU       a * GELU(g), a = x[..., :C], g = x[..., C:]
//   binary      one IEEE add/sub/mul/div per element; a scalar is a float32 like torch's wrapped
//               number. Scalar-first division is true division s / a, as torch.div(s, a) does.
//               (Python's `s / tensor` is reciprocal(a) * s: compose Div(1, a) then Mul(s).)
// exp and erf are our own vectorised versions (cpu_simd.h), not bit-identical to torch's SLEEF ones
// but within an ulp or two; the binary ops are bit-identical to torch.
// Work is cut into fixed chunks; elementwise results do not depend on the cut anyway.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_simd.h"

namespace sdmpi::cpu {

namespace {

constexpr int64_t kChunk = 16384;  // elements per parallel chunk (a multiple of every vector width)

template <class Fn>
void parallel_chunks(int64_t n, int threads, Fn fn) {
  int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk));
}

// Rows of `row_elems` elements each, in runs of about kChunk elements (a run depends on the shape
// only). parallel_chunks would count rows as elements: 2048 GEGLU rows were one chunk, one thread.
template <class Fn>
void parallel_rows(int64_t rows, int64_t row_elems, int threads, Fn fn) {
  const int64_t per_chunk = std::max<int64_t>(1, kChunk / std::max<int64_t>(row_elems, 1));
  const int64_t chunks = (rows + per_chunk - 1) / per_chunk;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) fn(c * per_chunk, std::min(rows, (c + 1) * per_chunk));
}

struct SiluOp {
  template <int W> SDMPI_SIMD_INLINE static typename Vec<W>::f apply(typename Vec<W>::f x) {
    return x / (1.0f + vexp<W>(-x));
  }
};
struct GeluOp {
  template <int W> SDMPI_SIMD_INLINE static typename Vec<W>::f apply(typename Vec<W>::f x) {
    return (x * 0.5f) * (1.0f + verf<W>(x * 0.707106781186547524f));
  }
};
struct QuickGeluOp {
  template <int W> SDMPI_SIMD_INLINE static typename Vec<W>::f apply(typename Vec<W>::f x) {
    typename Vec<W>::f t = x * 1.702f;
    return x * (1.0f / (1.0f + vexp<W>(-t)));
  }
};
struct ExpOp {
  template <int W> SDMPI_SIMD_INLINE static typename Vec<W>::f apply(typename Vec<W>::f x) {
    return vexp<W>(x);
  }
};
struct ErfOp {
  template <int W> SDMPI_SIMD_INLINE static typename Vec<W>::f apply(typename Vec<W>::f x) {
    return verf<W>(x);
  }
};

template <class Op> struct MapKernel {
  template <int W> SDMPI_SIMD_INLINE static void run(const float* x, float* y, int64_t n) {
    vmap<W, Op>(x, y, n);
  }
};

struct GegluKernel {
  // One row: y[j] = a[j] * gelu(g[j]), j < C.
  template <int W>
  SDMPI_SIMD_INLINE static void run(const float* a, const float* g, float* y, int64_t C) {
    int64_t j = 0;
    for (; j + W <= C; j += W) vstore<W>(y + j, vload<W>(a + j) * GeluOp::apply<W>(vload<W>(g + j)));
    if (j < C) {
      float ta[W] = {}, tg[W] = {};
      size_t bytes = static_cast<size_t>(C - j) * sizeof(float);
      std::memcpy(ta, a + j, bytes);
      std::memcpy(tg, g + j, bytes);
      vstore<W>(ta, vload<W>(ta) * GeluOp::apply<W>(vload<W>(tg)));
      std::memcpy(y + j, ta, bytes);
    }
  }
};

}  // namespace

void exp_floats(const float* x, float* y, int64_t n) { simd_dispatch<MapKernel<ExpOp>>(x, y, n); }
void erf_floats(const float* x, float* y, int64_t n) { simd_dispatch<MapKernel<ErfOp>>(x, y, n); }

void activation_inplace(Activation act, const float* x, float* y, int64_t n, int threads) {
  parallel_chunks(n, threads, [&](int64_t b, int64_t e) {
    switch (act) {
      case Activation::SiLU: simd_dispatch<MapKernel<SiluOp>>(x + b, y + b, e - b); return;
      case Activation::GELU: simd_dispatch<MapKernel<GeluOp>>(x + b, y + b, e - b); return;
      case Activation::QuickGELU: simd_dispatch<MapKernel<QuickGeluOp>>(x + b, y + b, e - b); return;
    }
  });
}

void geglu_rows(const float* x, float* y, int64_t rows, int64_t C, int threads) {
  parallel_rows(rows, C, threads, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      simd_dispatch<GegluKernel>(x + r * 2 * C, x + r * 2 * C + C, y + r * C, C);
  });
}

namespace {

// gelu(g + b) over one row segment, in place (the bias add first, as the linear's epilogue did).
struct GeluBiasKernel {
  template <int W> SDMPI_SIMD_INLINE static void run(float* g, const float* b, int64_t n) {
    int64_t j = 0;
    for (; j + W <= n; j += W) vstore<W>(g + j, GeluOp::apply<W>(vload<W>(g + j) + vload<W>(b + j)));
    if (j < n) {
      float tg[W] = {}, tb[W] = {};
      const size_t bytes = static_cast<size_t>(n - j) * sizeof(float);
      std::memcpy(tg, g + j, bytes);
      std::memcpy(tb, b + j, bytes);
      vstore<W>(tg, GeluOp::apply<W>(vload<W>(tg) + vload<W>(tb)));
      std::memcpy(g + j, tg, bytes);
    }
  }
};

// (a + b) · g over one row segment, in place.
struct MulBiasKernel {
  template <int W> SDMPI_SIMD_INLINE static void run(float* a, const float* b, const float* g, int64_t n) {
    int64_t j = 0;
    for (; j + W <= n; j += W) vstore<W>(a + j, (vload<W>(a + j) + vload<W>(b + j)) * vload<W>(g + j));
    for (; j < n; ++j) a[j] = (a[j] + b[j]) * g[j];
  }
};

}  // namespace

void gelu_bias_block(float* g, int64_t rows, int64_t cols, int64_t ld, const float* bias) {
  for (int64_t i = 0; i < rows; ++i) {
    float* gi = g + i * ld;
    if (bias) simd_dispatch<GeluBiasKernel>(gi, bias, cols);
    else simd_dispatch<MapKernel<GeluOp>>(static_cast<const float*>(gi), gi, cols);
  }
}

void mul_bias_block(float* a, int64_t rows, int64_t cols, int64_t ld, const float* bias, const float* g, int64_t ldg) {
  for (int64_t i = 0; i < rows; ++i) {
    float* ai = a + i * ld;
    const float* gi = g + i * ldg;
    if (bias) {
      simd_dispatch<MulBiasKernel>(ai, bias, gi, cols);
    } else {
      for (int64_t j = 0; j < cols; ++j) ai[j] = ai[j] * gi[j];
    }
  }
}

void binary_op(BinaryOp op, const float* a, const float* b, float* y, int64_t n, int threads) {
  parallel_chunks(n, threads, [&](int64_t lo, int64_t hi) {
    switch (op) {
      case BinaryOp::Add: for (int64_t i = lo; i < hi; ++i) y[i] = a[i] + b[i]; break;
      case BinaryOp::Sub: for (int64_t i = lo; i < hi; ++i) y[i] = a[i] - b[i]; break;
      case BinaryOp::Mul: for (int64_t i = lo; i < hi; ++i) y[i] = a[i] * b[i]; break;
      case BinaryOp::Div: for (int64_t i = lo; i < hi; ++i) y[i] = a[i] / b[i]; break;
    }
  });
}

void binary_scalar_op(BinaryOp op, const float* a, float s, bool scalar_first, float* y, int64_t n,
                      int threads) {
  parallel_chunks(n, threads, [&](int64_t lo, int64_t hi) {
    switch (op) {
      case BinaryOp::Add: for (int64_t i = lo; i < hi; ++i) y[i] = a[i] + s; break;
      case BinaryOp::Mul: for (int64_t i = lo; i < hi; ++i) y[i] = a[i] * s; break;
      case BinaryOp::Sub:
        if (scalar_first) for (int64_t i = lo; i < hi; ++i) y[i] = s - a[i];
        else for (int64_t i = lo; i < hi; ++i) y[i] = a[i] - s;
        break;
      case BinaryOp::Div:
        if (scalar_first) for (int64_t i = lo; i < hi; ++i) y[i] = s / a[i];
        else for (int64_t i = lo; i < hi; ++i) y[i] = a[i] / s;
        break;
    }
  });
}

void add_batch_channel_op(const float* x, const float* t, float* y, int64_t B, int64_t inner,
                          int64_t C, int threads) {
  int64_t rows = B * inner;
  parallel_rows(rows, C, threads, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* tb = t + (r / std::max<int64_t>(inner, 1)) * C;
      const float* xr = x + r * C;
      float* yr = y + r * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] + tb[c];
    }
  });
}

void clamp_op(const float* x, float* y, int64_t n, float lo, float hi, int threads) {
  // NaN propagates (both comparisons false), as torch.clamp does.
  parallel_chunks(n, threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float v = x[i];
      y[i] = v < lo ? lo : (v > hi ? hi : v);
    }
  });
}

// PyTorch's nearest_idx (UpSample.h) for a given output size: identity for equal sizes, a shift
// for exact doubling, otherwise floor(dst * (float(in) / out)) in float arithmetic, capped at
// in - 1. (With interpolate(scale_factor=s) torch uses float(1/s) instead of in/out; the models
// only ever double, where both agree.)
int64_t nearest_source_index(int64_t dst, int64_t in_size, int64_t out_size) {
  if (out_size == in_size) return dst;
  if (out_size == 2 * in_size) return dst >> 1;
  float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  int64_t src = static_cast<int64_t>(std::floor(static_cast<float>(dst) * scale));
  return std::min(src, in_size - 1);
}

void upsample_nearest_nhwc(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t Ho,
                           int64_t Wo, float* y, int threads) {
  std::vector<int64_t> src_x(static_cast<size_t>(Wo));
  for (int64_t ox = 0; ox < Wo; ++ox) src_x[static_cast<size_t>(ox)] = nearest_source_index(ox, W, Wo);
  int64_t rows = B * Ho;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * Wo * C > kChunk)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t b = r / Ho, oy = r % Ho;
    const float* in_row = x + (b * H + nearest_source_index(oy, H, Ho)) * W * C;
    float* out_row = y + r * Wo * C;
    for (int64_t ox = 0; ox < Wo; ++ox)
      std::memcpy(out_row + ox * C, in_row + src_x[static_cast<size_t>(ox)] * C,
                  static_cast<size_t>(C) * sizeof(float));
  }
}

void pad2d_nhwc(const float* x, int64_t B, int64_t H, int64_t W, int64_t C, int64_t top, int64_t bottom,
                int64_t left, int64_t right, float* y, int threads) {
  const int64_t Ho = H + top + bottom, Wo = W + left + right, rows = B * Ho;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * Wo * C > kChunk)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / Ho, iy = r % Ho - top;
    float* out_row = y + r * Wo * C;
    if (iy < 0 || iy >= H) {
      std::fill_n(out_row, Wo * C, 0.0f);
      continue;
    }
    std::fill_n(out_row, left * C, 0.0f);
    if (W * C > 0)
      std::memcpy(out_row + left * C, x + (b * H + iy) * W * C, static_cast<size_t>(W * C) * sizeof(float));
    std::fill_n(out_row + (left + W) * C, right * C, 0.0f);
  }
}

void concat_rows(const float* a, int64_t a_cols, const float* b, int64_t b_cols, float* y,
                 int64_t rows, int threads) {
  int64_t cols = a_cols + b_cols;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * cols > kChunk)
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(y + r * cols, a + r * a_cols, static_cast<size_t>(a_cols) * sizeof(float));
    std::memcpy(y + r * cols + a_cols, b + r * b_cols, static_cast<size_t>(b_cols) * sizeof(float));
  }
}

void copy_floats(const float* x, float* y, int64_t n, int threads) {
  parallel_chunks(n, threads, [&](int64_t b, int64_t e) {
    std::memcpy(y + b, x + b, static_cast<size_t>(e - b) * sizeof(float));
  });
}

}  // namespace sdmpi::cpu
