// Multi-head attention of the CPU backend: softmax(q·kᵀ·scale [+ causal mask])·v per (item, head).
//
// Flash-style, with an online softmax: each task is one block of query rows of one (item, head)
// and walks the keys in blocks; per block it computes the scores, updates each query's running
// max m and sum l, rescales the output rows already accumulated by exp(m_old - m_new), adds P·V,
// and divides by l at the end. No score matrix larger than one block is ever held. Heads are read
// in place: head h of q [B, N, heads*d] is the column block h*d … h*d+d-1 (row stride heads*d).
// The blocks depend on the shape alone, so the work is cut the same way whatever the batch or the
// thread count.
//
// Two implementations, by the GEMM engine (cpu_gemm.h):
// - ours (attention_ours, the default wherever the CPU has AVX2 or AVX-512): key-major, on the
//   transposed micro-kernel, so no operand is packed per block and P never leaves the layout the
//   softmax writes; the exponentials, which with d = 40 take more instructions than both products,
//   use a lean exp for x ≤ 0 (vexp_nonpositive). One thread, SD 1.5 shapes: the UNet's
//   4096-token self-attention (512²) 790 → 598 ms and the 1024-token one (256²) 50 → 41 ms
//   against the OpenBLAS products (bench/cpu/cpu_ops_bench).
// - OpenBLAS (attention_blas: SDMPI_CPU_GEMM=openblas, or CPUs with neither): row-major S and
//   P·V as library products, key blocks of 512, score blocks up to 256×512 floats.
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
#include "backend/cpu/cpu_memory.h"
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

// The tasks of both implementations: one block of query rows of one (item, head). Blocks by the
// shape alone (never the batch or the threads, so no bit depends on them): 256 query rows where
// an item still has ≥ 16 such blocks over its heads, else 64.
struct QueryBlocks {
  int64_t Nq, heads, rows_per_block, per_head, count;
  QueryBlocks(int64_t B, int64_t Nq_, int64_t heads_) : Nq(Nq_), heads(heads_) {
    rows_per_block = heads * ((Nq + kMaxRowBlock - 1) / kMaxRowBlock) >= 16 ? kMaxRowBlock : 64;
    per_head = (Nq + rows_per_block - 1) / rows_per_block;
    count = B * heads * per_head;
  }
  struct Task {
    int64_t b, h, r0, rows;
  };
  Task operator[](int64_t t) const {
    const int64_t r0 = (t % per_head) * rows_per_block;
    return {t / (heads * per_head), (t / per_head) % heads, r0, std::min(rows_per_block, Nq - r0)};
  }
};

}  // namespace

namespace {

// With OpenBLAS as the GEMM engine (SDMPI_CPU_GEMM=openblas, or a CPU with neither AVX2 nor
// AVX-512): S and P·V as library products, row-major.
void attention_blas(const float* q, const float* k, const float* v, int64_t B, int64_t Nq, int64_t Nk,
                    int64_t heads, int64_t d, bool causal, float* out, int threads) {
  const int64_t C = heads * d;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const int64_t kb = kKeyBlock;
  const QueryBlocks blocks(B, Nq, heads);
  const int64_t rb = blocks.rows_per_block;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && blocks.count > 1)
  for (int64_t t = 0; t < blocks.count; ++t) {
    const auto [b, h, r0, rows] = blocks[t];
    thread_local FloatScratch s_buf;
    float* S = s_buf.get(static_cast<size_t>(rb * kb));
    const float* qb = q + (b * Nq + r0) * C + h * d;
    const float* kbase = k + b * Nk * C + h * d;
    const float* vbase = v + b * Nk * C + h * d;
    float* ob = out + (b * Nq + r0) * C + h * d;
    const GemmEngine engine = GemmEngine::OpenBlas;
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

// e^x for x ≤ 0 (scores less their running max) and -inf, every lane: vexp's reduction and
// polynomial (cpu_simd.h) without what only positive or NaN-free inputs need there (the overflow
// clamp, the two-step scaling that keeps 2^128 representable); n = round(x·log2 e) by adding
// 1.5·2^23. Below -87.34 (where 2^n would be subnormal) the result is 0, as vexp's. With d = 40
// the exponentials cost more instructions than the two products per score, so they are worth a
// lean copy. NaN stays NaN. (The softmax's x = fma(s, scale, -m) is exactly 0 or a rounding
// residual of either sign, ~1e-7 at most, for the key that set the max: e^x of such an x is as exact.)
template <int W> SDMPI_SIMD_INLINE typename Vec<W>::f vexp_nonpositive(typename Vec<W>::f x) {
  using F = typename Vec<W>::f;
  using I = typename Vec<W>::i;
  const F lo = vsplat<W>(-87.3365448f), magic = vsplat<W>(12582912.0f);
  const F xc = x < lo ? lo : x;
  const F fx = vfma<W>(xc, vsplat<W>(1.44269504088896341f), magic);  // rounds to an integer: n + 1.5·2^23
  const F nf = fx - magic;
  const I n = reinterpret_cast<I>(fx) - reinterpret_cast<I>(magic);
  const F res = vexp_reduced<W>(xc, nf) * reinterpret_cast<F>((n + 127) << 23);
  return x < lo ? vsplat<W>(0.0f) : res;
}

// One key block's online-softmax step for `panel` queries, the lanes: St [kn][panel] holds the
// block's raw scores q·k (key-major). Keys past valid[q] are masked (causal; null: none). The
// scores become p = exp(fma(s, scale, -m_new)) in place (0 where masked); each query's running max m
// (of scale·s: scale > 0, so it is scale times the max of s, exactly) and sum l are updated, and
// corr = exp(m_old - m_new) is the factor its output so far is rescaled by. The sum: in float over
// the block's keys in order (at most 256 terms in [0, 1], as torch's CPU flash attention sums in
// float), then added to l in double; a double sum per key, its two conversions and two additions
// per 16 scores, had cost 7-8% of the UNet's attention time. Lanes are independent, so the bits
// do not depend on W.
struct BlockSoftmax {
  template <int W>
  SDMPI_SIMD_INLINE static void run(float* st, int64_t kn, int64_t panel, const int64_t* valid, float scale,
                                    bool first, float* m, double* l, float* corr) {
    using F = typename Vec<W>::f;
    using D = typename DoubleVec<W>::d;
    const F sc = vsplat<W>(scale), neg_inf = vsplat<W>(-INFINITY), zero = vsplat<W>(0.0f);
    if (valid)
      for (int64_t kk = 0; kk < kn; ++kk)
        for (int64_t i = 0; i < panel; ++i)
          if (kk >= valid[i]) st[kk * panel + i] = -INFINITY;
    for (int64_t c = 0; c < panel; c += W) {
      F mb = neg_inf;
      for (int64_t kk = 0; kk < kn; ++kk) {
        const F s = vload<W>(st + kk * panel + c);
        mb = s > mb ? s : mb;
      }
      mb = mb * sc;
      const F mo = first ? neg_inf : vload<W>(m + c);
      F mn = mb > mo ? mb : mo;
      mn = mn == neg_inf ? zero : mn;  // no key seen yet: exp(-inf - 0) = 0 below
      F sum = zero;
      for (int64_t kk = 0; kk < kn; ++kk) {
        const F e = vexp_nonpositive<W>(vfma<W>(vload<W>(st + kk * panel + c), sc, -mn));
        vstore<W>(st + kk * panel + c, e);
        sum += e;
      }
      const F cr = vexp_nonpositive<W>(mo - mn);
      const D block_sum = __builtin_convertvector(sum, D);
      D lv;
      if (first) {
        lv = block_sum;
      } else {
        std::memcpy(&lv, l + c, sizeof lv);
        lv = lv * __builtin_convertvector(cr, D) + block_sum;
      }
      std::memcpy(l + c, &lv, sizeof lv);
      vstore<W>(m + c, mn);
      vstore<W>(corr + c, cr);
    }
  }
};

constexpr int64_t kKeyBlockT = 256;

// Our own kernels (the built-in GEMM engine): everything key-major, so that no operand is packed
// per block. Queries go in panels of P (the transposed micro-kernel's width: 32 on AVX-512):
//   Sᵀ[key][q] = K_blk · Qᵀ   the kernel with K's rows as w, read in place (row stride C), and
//                              Qᵀ packed once per task;
//   softmax over keys          lane-wise over the P queries (BlockSoftmax), in place: Sᵀ → Pᵀ;
//   Oᵀ[dd][q] += Vᵀ_blk · Pᵀ    the kernel with Vᵀ's rows as w (V transposed once per call) and
//                              Pᵀ as the k-major operand, exactly as the softmax left it.
// Each output is one FMA chain per key block (continued from the rescaled output of the blocks
// before), so the bits do not depend on the instruction set (AVX-512, AVX2 and portable kernels
// add up alike), the panel width, the batch or the threads.
void attention_ours(const float* q, const float* k, const float* v, int64_t B, int64_t Nq, int64_t Nk,
                    int64_t heads, int64_t d, bool causal, float* out, int threads) {
  const TransposedKernel& tk = transposed_kernel();
  const int64_t P = tk.panel, G = tk.group;
  // P·V runs over Vᵀ's rows with whichever kernel pads d less (AVX-512, d = 40: 8 rows, not 12).
  const auto padded = [d](int64_t g) { return (d + g - 1) / g * g; };
  const bool narrow_v = padded(tk.narrow_group) < padded(G);
  const int64_t GV = narrow_v ? tk.narrow_group : G;
  const TransposedKernelFn v_fn = narrow_v ? tk.narrow_fn : tk.fn;
  const int64_t C = heads * d, dpad = padded(GV);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  // Vᵀ per (item, head): [dpad][Nk], rows past d zero.
  thread_local FloatScratch vt_buf;
  float* Vt = vt_buf.get(static_cast<size_t>(B * heads * dpad * std::max<int64_t>(Nk, 1)));
  const int64_t vt_tasks = B * heads;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && vt_tasks > 1)
  for (int64_t t = 0; t < vt_tasks; ++t) {
    const int64_t b = t / heads, h = t % heads;
    float* dst = Vt + t * dpad * Nk;
    transpose_copy(v + b * Nk * C + h * d, C, Nk, d, dst, Nk);
    std::memset(dst + d * Nk, 0, static_cast<size_t>((dpad - d) * Nk) * sizeof(float));
  }
  const QueryBlocks blocks(B, Nq, heads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && blocks.count > 1)
  for (int64_t t = 0; t < blocks.count; ++t) {
    const auto [b, h, r0, rows] = blocks[t];
    const int64_t panels = (rows + P - 1) / P;
    thread_local FloatScratch q_buf, o_buf, s_buf, edge_buf;
    float* Qp = q_buf.get(static_cast<size_t>(panels * d * P));  // panel j: Qᵀ [d][P]
    float* Ot = o_buf.get(static_cast<size_t>(panels * dpad * P));  // panel j: Oᵀ [dpad][P]
    float* St = s_buf.get(static_cast<size_t>((kKeyBlockT + G) * P));
    float* Kedge = edge_buf.get(static_cast<size_t>(G * d));
    float m[kMaxRowBlock], corr[kMaxRowBlock];
    double l[kMaxRowBlock];
    int64_t valid[kMaxRowBlock];
    // The two transposes (Vᵀ above, Qᵀ here) as scalar strided copies had taken 14% of the
    // 1024-token self-attention's time (perf, 2 threads, Emerald Rapids VM).
    for (int64_t j = 0; j < panels; ++j) {
      const int64_t n_q = std::min(P, rows - j * P);
      float* qp = Qp + j * d * P;
      transpose_copy(q + (b * Nq + r0 + j * P) * C + h * d, C, n_q, d, qp, P);
      if (n_q < P)
        for (int64_t dd = 0; dd < d; ++dd)
          std::memset(qp + dd * P + n_q, 0, static_cast<size_t>(P - n_q) * sizeof(float));
    }
    const float* vt = Vt + (b * heads + h) * dpad * Nk;
    const int64_t key_end = causal ? std::min(Nk, r0 + rows) : Nk;
    for (int64_t k0 = 0; k0 < key_end; k0 += kKeyBlockT) {
      for (int64_t j = 0; j < panels; ++j) {
        const int64_t q0 = r0 + j * P, n_q = std::min(P, rows - j * P);
        const int64_t panel_end = causal ? std::min(Nk, q0 + n_q) : Nk;
        if (k0 >= panel_end) continue;
        const int64_t kn = std::min(kKeyBlockT, panel_end - k0);
        for (int64_t g = 0; g < kn; g += G) {  // Sᵀ rows g … g+G-1
          const float* w = k + (b * Nk + k0 + g) * C + h * d;
          int64_t ldw = C;
          if (kn - g < G) {  // the block's last keys, zero-padded to a full call
            for (int64_t i = 0; i < G; ++i) {
              if (g + i < kn) std::memcpy(Kedge + i * d, w + i * C, static_cast<size_t>(d) * sizeof(float));
              else std::memset(Kedge + i * d, 0, static_cast<size_t>(d) * sizeof(float));
            }
            w = Kedge;
            ldw = d;
          }
          tk.fn(d, w, ldw, Qp + j * d * P, St + g * P, P, false);
        }
        if (causal)
          for (int64_t i = 0; i < P; ++i) valid[i] = std::clamp<int64_t>(q0 + i + 1 - k0, 0, kn);
        const bool first = k0 == 0;
        simd_dispatch<BlockSoftmax>(St, kn, P, static_cast<const int64_t*>(causal ? valid : nullptr), scale, first,
                                    m + j * P, l + j * P, corr + j * P);
        float* ot = Ot + j * dpad * P;
        if (!first)
          for (int64_t dd = 0; dd < dpad; ++dd)
            for (int64_t i = 0; i < P; ++i) ot[dd * P + i] *= corr[j * P + i];
        for (int64_t g = 0; g < dpad; g += GV) v_fn(kn, vt + g * Nk + k0, Nk, St, ot + g * P, P, !first);
      }
    }
    for (int64_t j = 0; j < panels; ++j) {
      const int64_t n_q = std::min(P, rows - j * P);
      const float* ot = Ot + j * dpad * P;
      for (int64_t i = 0; i < n_q; ++i) {
        float* o = out + (b * Nq + r0 + j * P + i) * C + h * d;
        if (key_end == 0) {  // no keys: 0/0 = NaN, as torch
          for (int64_t dd = 0; dd < d; ++dd) o[dd] = 0.0f / 0.0f;
          continue;
        }
        const float denom = static_cast<float>(l[j * P + i]);
        for (int64_t dd = 0; dd < d; ++dd) o[dd] = ot[dd * P + i] / denom;
      }
    }
  }
}

}  // namespace

void attention_mh(const float* q, const float* k, const float* v, int64_t B, int64_t Nq, int64_t Nk,
                  int64_t heads, int64_t d, bool causal, float* out, int threads) {
  if (gemm_engine() == GemmEngine::OpenBlas) attention_blas(q, k, v, B, Nq, Nk, heads, d, causal, out, threads);
  else attention_ours(q, k, v, B, Nq, Nk, heads, d, causal, out, threads);
}

}  // namespace sdmpi::cpu
