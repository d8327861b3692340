// Multi-head attention of the CPU backend: softmax(q·kᵀ·scale [+ causal mask])·v per (item, head).
//
// Heads are read in place: head h of q [B, N, heads*d] is the column block h*d..h*d+d-1, a matrix
// with row stride heads*d, which BLAS takes as is. Flash-style, with an online softmax: each task
// is one block of query rows of one (item, head), and walks the keys in blocks of 512. Per key
// block, S = scale·Q_blk·K_blkᵀ into a thread-local buffer (256×512 floats, 512 KiB: it stays in
// L2 while the exponentials and P·V read it), each row's running max m and sum l are updated
// (l in double, the block's part summed over 8 fixed lanes), the output rows already written are
// rescaled by exp(m_old - m_new), and P·V_blk is added to them; at the end they are divided by l.
// No score matrix larger than the block is ever held. Against the former row blocks (~1 MB of
// scores over all keys), one thread, SD 1.5 shapes (bench/results/cpu/2026-12-05-kernels.md):
// the VAE's 4096-token attention (512²) 24% faster, the UNet's 4096-token self-attention 6%, the
// 1024-token ones (256²) 2-4%. The blocks depend on the shape alone, so the work is cut the same
// way whatever the batch or the thread count.
//
// scale = float(1/sqrt(d)) as torch's SDPA computes it; the causal mask keeps key j ≤ query i
// (torch's is_causal / CLIP's triangular mask, aligned at the top left): key blocks past a row
// block's last query are skipped. A row whose scores are all -inf gets 0/0 = NaN, like torch.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
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

constexpr int64_t kKeyBlock = 512;
constexpr int64_t kMaxRowBlock = 256;  // also sizes each task's per-row max and sum

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

void attention_mh(const float* q, const float* k, const float* v, int64_t B, int64_t Nq, int64_t Nk,
                  int64_t heads, int64_t d, bool causal, float* out, int threads) {
  const int64_t C = heads * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  // Blocks by the shape alone (never the batch or the threads, so no bit depends on them): 512
  // keys, 256 query rows where an item still has ≥ 16 such blocks over its heads, else 64.
  const int64_t kb = kKeyBlock;
  const int64_t rb = heads * ((Nq + kMaxRowBlock - 1) / kMaxRowBlock) >= 16 ? kMaxRowBlock : 64;
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
    const size_t need = static_cast<size_t>(rb * kb);
    if (need > s_size) {
      s_buf.reset(static_cast<float*>(std::aligned_alloc(64, (need * sizeof(float) + 63) / 64 * 64)));
      s_size = s_buf ? need : 0;
    }
    float* S = s_buf.get();
    const float* qb = q + (b * Nq + r0) * C + h * d;
    const float* kbase = k + b * Nk * C + h * d;
    const float* vbase = v + b * Nk * C + h * d;
    float* ob = out + (b * Nq + r0) * C + h * d;
    const GemmEngine engine = attention_gemm_engine();
    float m[kMaxRowBlock];  // running row max of the scores seen so far
    double l[kMaxRowBlock];  // running row sum of exp(score - m)
    const int64_t key_end = causal ? std::min(Nk, r0 + rows) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kb) {
      const int64_t kn = std::min(kb, key_end - k0);
      gemm_on(engine, true, rows, kn, d, scale, qb, C, kbase + k0 * C, C, 0.0f, S, kn);
      for (int64_t i = 0; i < rows; ++i) {
        float* s = S + i * kn;
        const int64_t valid = causal ? std::clamp<int64_t>(r0 + i + 1 - k0, 0, kn) : kn;
        float mb = -INFINITY;
        if (valid > 0) simd_dispatch<RowMax>(static_cast<const float*>(s), valid, &mb);
        const float m_old = k0 == 0 ? -INFINITY : m[i];
        float m_new = std::max(m_old, mb);
        if (m_new == -INFINITY) m_new = 0.0f;
        simd_dispatch<SoftmaxExp>(s, kn, valid, m_new);
        const double sum = row_sum(s, valid);
        if (k0 == 0) {
          l[i] = sum;
        } else {
          // Our vector exp (one lane), not libm's, whose code path may differ between CPUs.
          const float shift = m_old - m_new;
          float corr;
          exp_floats(&shift, &corr, 1);
          l[i] = l[i] * corr + sum;
          float* o = ob + i * C;
          if (corr != 1.0f)
            for (int64_t j = 0; j < d; ++j) o[j] *= corr;
        }
        m[i] = m_new;
      }
      gemm_on(engine, false, rows, d, kn, 1.0f, S, kn, vbase + k0 * C, C, k0 == 0 ? 0.0f : 1.0f, ob, C);
    }
    if (key_end == 0) {  // no keys: 0/0 = NaN, as before and as torch
      for (int64_t i = 0; i < rows; ++i) {
        l[i] = 0.0;
        std::fill(ob + i * C, ob + i * C + d, 0.0f);
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      float denom = static_cast<float>(l[i]);
      float* o = ob + i * C;
      for (int64_t j = 0; j < d; ++j) o[j] = o[j] / denom;
    }
  }
}

}  // namespace sdmpi::cpu
