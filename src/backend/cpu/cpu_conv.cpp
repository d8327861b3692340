// Convolution and linear layers of the CPU backend: both become the product A · Wᵀ (cpu_gemm.h).
//
// conv2d on NHWC with OHWI weights: output pixel (oy, ox) is the dot product of the weight row
// [kh, kw, Cin] with the input patch gathered in the same (ky, kx, c) order (im2col). The patch
// rows are gathered per GEMM tile into a thread-local buffer, right before the tile's product, so
// the full im2col matrix (gigabytes for the VAE at 512×512) never exists and the rows are still in
// cache when the product reads them. Small images, whose products are also cut along the output
// channels, gather all patches once up front instead. A 1×1 stride-1 unpadded convolution is
// already a product on the [H*W, Cin] view and gathers nothing. Either way the tiles and their
// inputs are the same, so the choice changes no bits.
//
// Bias and residual run in each tile's epilogue, in torch's order: (x ⊛ w + bias) + residual.
// 3×3 stride-1 layers with enough channels and pixels take Winograd's path (cpu_winograd.cpp).
#include <algorithm>
#include <cstring>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_memory.h"

namespace sdmpi::cpu {

namespace {

// c_tile[i][j] = (c + bias[n0 + j]) + residual_item[m0 + i][n0 + j]
void bias_residual_epilogue(const GemmTile& t, float* c, int64_t ldc, const float* bias,
                            const float* residual, int64_t res_item_stride) {
  for (int64_t i = 0; i < t.mn; ++i) {
    float* row = c + i * ldc;
    if (bias) {
      const float* b = bias + t.n0;
      for (int64_t j = 0; j < t.nn; ++j) row[j] = row[j] + b[j];
    }
    if (residual) {
      const float* r = residual + t.item * res_item_stride + (t.m0 + i) * ldc + t.n0;
      for (int64_t j = 0; j < t.nn; ++j) row[j] = row[j] + r[j];
    }
  }
}

// How many column tiles the GEMM driver will cut this product into (each one reads all of A).
int64_t column_tiles(const GemmProblem& p) {
  if (gemm_engine() == GemmEngine::OpenBlas) return gemm_tile_grid(p.M, p.N, p.K).nt;
  return builtin_tile_grid(p.items * p.M, p.N, p.K).nt;
}

}  // namespace

void conv2d_nhwc(const float* x, int64_t B, int64_t H, int64_t W, int64_t Cin, const float* w,
                 int64_t Cout, int64_t kh, int64_t kw, int stride, int pad, const float* bias,
                 const float* residual, float* y, int64_t Ho, int64_t Wo, int threads, const float* winograd_w,
                 const float* w_packed) {
  if (const int m = winograd_plan(Ho, Wo, Cin, Cout, kh, kw, stride)) {
    conv3x3_winograd_nhwc(m, x, B, H, W, Cin, w, Cout, pad, bias, residual, y, Ho, Wo, threads, winograd_w);
    return;
  }
  GemmProblem p;
  p.items = B;
  p.M = Ho * Wo;
  p.N = Cout;
  p.K = kh * kw * Cin;
  p.W = w;
  p.W_packed = w_packed;
  p.C = y;
  p.ldc = Cout;
  p.c_item_stride = Ho * Wo * Cout;
  // Patch rows [m0, m0 + rows), patch columns [k0, k0 + kc) of item b into dst (row stride kc).
  // A patch row is (ky, kx, c) with c fastest, so a column range is a few runs of channels.
  auto gather = [=](int64_t b, int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
    const float* xb = x + b * H * W * Cin;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t m = m0 + i, oy = m / Wo, ox = m % Wo;
      float* d = dst + i * kc;
      for (int64_t k = k0; k < k0 + kc;) {
        const int64_t tap = k / Cin, c = k % Cin, ky = tap / kw, kx = tap % kw;
        const int64_t run = std::min(Cin - c, k0 + kc - k);
        const int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        if (iy < 0 || iy >= H || ix < 0 || ix >= W) std::memset(d, 0, static_cast<size_t>(run) * sizeof(float));
        else std::memcpy(d, xb + (iy * W + ix) * Cin + c, static_cast<size_t>(run) * sizeof(float));
        d += run;
        k += run;
      }
    }
  };
  const bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  const int64_t patch_floats = B * p.M * p.K;
  if (direct) {
    p.A = x;
    p.lda = Cin;
    p.a_item_stride = H * W * Cin;
  } else if (column_tiles(p) > 1 && patch_floats <= (int64_t{16} << 20)) {
    // Small images (the deep UNet levels) split the columns too; gathering per tile would repeat
    // the same patches for every column tile, so gather them once (≤ 64 MB), in parallel, up front.
    // Kept by the calling thread between calls, as the backend's other scratch (cpu_memory.h),
    // instead of a new allocation per call, which glibc may serve as a fresh mapping to fault in.
    thread_local FloatScratch patch_buf;
    float* patches = patch_buf.get(static_cast<size_t>(patch_floats));
    const int64_t row_blocks = (p.M + 63) / 64, tasks = B * row_blocks;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tasks > 1)
    for (int64_t t = 0; t < tasks; ++t) {
      int64_t b = t / row_blocks, m0 = (t % row_blocks) * 64;
      gather(b, m0, std::min<int64_t>(64, p.M - m0), 0, p.K, patches + (b * p.M + m0) * p.K);
    }
    p.A = patches;
    p.lda = p.K;
    p.a_item_stride = p.M * p.K;
  } else {
    // Large images: each tile gathers its own patches right before its product.
    p.gather_a = gather;
  }
  if (bias || residual) {
    const int64_t res_stride = Ho * Wo * Cout;
    p.epilogue = [=](const GemmTile& t, float* c) {
      bias_residual_epilogue(t, c, Cout, bias, residual, res_stride);
    };
  }
  gemm_nt_parallel(p, threads);
}

namespace {

// y[i] = x[i] · wᵀ for `items` [rows, K] blocks, w [N, K], y's rows N floats apart.
GemmProblem rows_problem(const float* x, int64_t items, int64_t rows, int64_t K, const float* w, int64_t N, float* y) {
  GemmProblem p;
  p.items = items;
  p.M = rows;
  p.N = N;
  p.K = K;
  p.A = x;
  p.lda = K;
  p.a_item_stride = rows * K;
  p.W = w;
  p.C = y;
  p.ldc = N;
  p.c_item_stride = rows * N;
  return p;
}

}  // namespace

void linear_rows(const float* x, int64_t items, int64_t rows, int64_t K, const float* w, int64_t N,
                 const float* bias, const float* residual, float* y, int threads, const float* w_packed) {
  GemmProblem p = rows_problem(x, items, rows, K, w, N, y);
  p.W_packed = w_packed;
  if (bias || residual) {
    const int64_t res_stride = rows * N;
    p.epilogue = [=](const GemmTile& t, float* c) {
      bias_residual_epilogue(t, c, N, bias, residual, res_stride);
    };
  }
  gemm_nt_parallel(p, threads);
}

// Two products over the same rows: the gate half into `gate`, finished to gelu(g + b) while each
// tile is in cache, then the hidden half into y, finished to (a + b) · gelu(g). Against linear_rows
// then geglu_rows, the [rows, 2C] projection is never written and read back, and no separate pass
// runs (each output is still one FMA chain: a product's bits do not depend on its columns).
void linear_geglu_rows(const float* x, int64_t items, int64_t rows, int64_t K, const float* w, int64_t C,
                       const float* bias, float* gate, float* y, int threads, const float* w_packed) {
  GemmProblem p = rows_problem(x, items, rows, K, w + C * K, C, gate);
  p.W_packed = w_packed ? w_packed + gemm_packed_floats(C, K) : nullptr;
  const float* gate_bias = bias ? bias + C : nullptr;
  p.epilogue = [=](const GemmTile& t, float* c) { gelu_bias_block(c, t.mn, t.nn, C, gate_bias ? gate_bias + t.n0 : nullptr); };
  gemm_nt_parallel(p, threads);
  p.W = w;
  p.W_packed = w_packed;
  p.C = y;
  p.epilogue = [=](const GemmTile& t, float* c) {
    const float* g = gate + t.item * rows * C + t.m0 * C + t.n0;
    mul_bias_block(c, t.mn, t.nn, C, bias ? bias + t.n0 : nullptr, g, C);
  };
  gemm_nt_parallel(p, threads);
}

}  // namespace sdmpi::cpu
