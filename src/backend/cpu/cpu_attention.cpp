// Multi-head attention of the CPU backend: softmax(q·kᵀ·scale [+ causal mask])·v per (item, head).
//
// Heads are read in place: head h of q [B, N, heads*d] is the column block h*d..h*d+d-1, a matrix
// with row stride heads*d, which BLAS takes as is. Each task is one block of query rows of one
// (item, head): S = scale·Q_blk·K_hᵀ into a thread-local buffer, a numerically stable softmax per
// row (max subtracted, exp, sum in double over 8 fixed lanes), then O_blk = E·V_h written straight into the output
// columns of head h and divided by the row sum. Row blocks keep S at about 1 MB, so the VAE's
// 4096×4096 single-head attention never holds its whole score matrix. The block size depends on
// Nk alone, so the work is cut the same way whatever the thread count.
//
// scale = float(1/sqrt(d)) as torch's SDPA computes it; the causal mask keeps key j ≤ query i
// (torch's is_causal / CLIP's triangular mask, aligned at the top left).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_simd.h"

namespace sdmpi::cpu {

namespace {

// exp(s - m) over a row of n scores, in place, for the first `valid` entries; zero past them.
struct SoftmaxExp {
  template <int W> SDMPI_SIMD_INLINE static void run(float* s, int64_t n, int64_t valid, float m) {
    using F = typename Vec<W>::f;
    const F mv = vsplat<W>(m);
    int64_t j = 0;
    for (; j + W <= valid; j += W) vstore<W>(s + j, vexp<W>(vload<W>(s + j) - mv));
    if (j < valid) {
      float tmp[W] = {};
      std::memcpy(tmp, s + j, static_cast<size_t>(valid - j) * sizeof(float));
      vstore<W>(tmp, vexp<W>(vload<W>(tmp) - mv));
      std::memcpy(s + j, tmp, static_cast<size_t>(valid - j) * sizeof(float));
    }
    for (j = valid; j < n; ++j) s[j] = 0.0f;
  }
};

// Largest of the first n scores (max is exact in any order, so lanes may differ per ISA).
struct RowMax {
  template <int W> SDMPI_SIMD_INLINE static void run(const float* s, int64_t n, float* out) {
    using F = typename Vec<W>::f;
    F m = vsplat<W>(-INFINITY);
    int64_t j = 0;
    for (; j + W <= n; j += W) {
      F v = vload<W>(s + j);
      m = v > m ? v : m;
    }
    float r = -INFINITY;
    for (int l = 0; l < W; ++l) r = m[l] > r ? m[l] : r;
    for (; j < n; ++j) r = s[j] > r ? s[j] : r;
    *out = r;
  }
};

// Sum of n floats in double, over 8 fixed lanes combined in a fixed order: the same bits on every
// instruction set, without a serial chain of n dependent additions.
double row_sum(const float* s, int64_t n) {
  double lane[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int l = 0; l < 8; ++l) lane[l] += static_cast<double>(s[j + l]);
  for (int l = 0; j < n; ++j, ++l) lane[l] += static_cast<double>(s[j]);
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

void attention_mh(const float* q, const float* k, const float* v, int64_t B, int64_t Nq, int64_t Nk,
                  int64_t heads, int64_t d, bool causal, float* out, int threads) {
  const int64_t C = heads * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  // Query rows per task: S block ≈ 256 K floats, between 16 and 256 rows, a multiple of 16.
  const int64_t rb = std::clamp<int64_t>((262144 / std::max<int64_t>(Nk, 1)) / 16 * 16, 16, 256);
  const int64_t row_blocks = (Nq + rb - 1) / rb;
  const int64_t tasks = B * heads * row_blocks;

#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t b = t / (heads * row_blocks);
    const int64_t h = (t / row_blocks) % heads;
    const int64_t r0 = (t % row_blocks) * rb;
    const int64_t rows = std::min(rb, Nq - r0);

    thread_local std::unique_ptr<float, FreeDeleter> s_buf;
    thread_local size_t s_size = 0;
    const size_t need = static_cast<size_t>(rb * std::max<int64_t>(Nk, 1));
    if (need > s_size) {
      s_buf.reset(static_cast<float*>(std::aligned_alloc(64, (need * sizeof(float) + 63) / 64 * 64)));
      s_size = s_buf ? need : 0;
    }
    float* S = s_buf.get();

    const float* qb = q + (b * Nq + r0) * C + h * d;
    const float* kb = k + b * Nk * C + h * d;
    const float* vb = v + b * Nk * C + h * d;
    float* ob = out + (b * Nq + r0) * C + h * d;

    const GemmEngine engine = attention_gemm_engine();
    gemm_on(engine, true, rows, Nk, d, scale, qb, C, kb, C, 0.0f, S, Nk);

    double sums[256];
    for (int64_t i = 0; i < rows; ++i) {
      float* s = S + i * Nk;
      const int64_t valid = causal ? std::min(Nk, r0 + i + 1) : Nk;
      float m = -INFINITY;
      simd_dispatch<RowMax>(static_cast<const float*>(s), valid, &m);
      if (m == -INFINITY) m = 0.0f;  // all scores -inf (or no keys): e = 0, output 0/0 → NaN like torch
      simd_dispatch<SoftmaxExp>(s, Nk, valid, m);
      sums[i] = row_sum(s, valid);
    }

    gemm_on(engine, false, rows, d, Nk, 1.0f, S, Nk, vb, C, 0.0f, ob, C);
    for (int64_t i = 0; i < rows; ++i) {
      float denom = static_cast<float>(sums[i]);
      float* o = ob + i * C;
      for (int64_t j = 0; j < d; ++j) o[j] = o[j] / denom;
    }
  }
}

}  // namespace sdmpi::cpu
