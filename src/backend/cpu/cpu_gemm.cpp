// Matrix products for the CPU backend (see cpu_gemm.h for the invariance argument).
//
// The built-in GEMM follows the usual Goto/BLIS scheme: op(B) is packed into panels of NR columns
// that run over the whole of K (once per call, shared by every tile and thread), a block of A rows
// into panels of MR rows, one block of Kc at a time, and a register-blocked micro-kernel computes
// MR×NR outputs. The micro-kernel starts from zero on the first K block and from C on the next
// ones, so every output is one FMA chain k = 0, 1, …, K-1: the same bits whatever the tile, the
// block sizes, the neighbouring rows or the micro-kernel (AVX-512, AVX2 and portable give identical
// results). Edge panels are zero-padded; edge outputs go through a small buffer and get the same
// chain.
#include "backend/cpu/cpu_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_memory.h"
#include "backend/cpu/cpu_simd.h"
#include "sdmpi/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SDMPI_X86 1
#endif

#ifdef SDMPI_HAVE_BLAS
#include <cblas.h>
#endif

namespace sdmpi::cpu {

namespace {

// Measured on AMD Zen 4 (32 KiB L1d, 1 MiB L2 per core): Kc = 256 beat 128 by 3–8% and tied with
// 384 on the SD shapes. Mc×Kc of packed A (144×256 floats, 144 KiB) and Kc×Nc of packed B (256×512
// floats, 512 KiB) share the L2; a B micro-panel (Kc×NR) is read from L1/L2 by every A micro-panel.
constexpr int64_t kGemmKc = 256;
// Products at most this deep run as one K block, deeper ones in near-equal blocks of about kGemmKc
// (gemm_kc): K = 320 (the UNet's first level) was a block of 256 and one of 64, which loaded and
// stored every C tile twice and packed A twice for a quarter of the work. Any blocking gives the
// same bits: a block continues each output's FMA chain from the value the last one stored.
constexpr int64_t kGemmKcMax = 384;

int64_t gemm_kc(int64_t K) {
  if (K <= kGemmKcMax) return std::max<int64_t>(K, 1);
  const int64_t blocks = (K + kGemmKc - 1) / kGemmKc;
  return std::min(kGemmKcMax, ((K + blocks - 1) / blocks + 15) / 16 * 16);
}
constexpr int64_t kGemmMc = 144;  // rows of A packed at once (a multiple of every MR below)
constexpr int64_t kGemmNc = 512;  // columns per block (a multiple of every NR below)
// Fewer (product, row block) pairs than this and the built-in driver also cuts columns into tiles.
constexpr int64_t kBuiltinMinTiles = 8;

// C[MR×NR] (row stride ldc) = (accumulate ? C : 0) + Σ_k a[k][i] · b[k][j], one FMA per k. `next_b`
// (null: none) is the B micro-panel the caller's next call will read (kc × NR floats): the vector
// kernels prefetch it into L2 while they compute (Prefetch::NextPanel below).
using KernelFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate,
                          const float* next_b);

struct MicroKernel {
  int mr, nr;
  KernelFn fn;
  const char* isa;
  const char* shape;
};

// Portable kernel: std::fma per step, so it adds up exactly like the vector kernels.
void kernel_generic_4x8(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate,
                        const float* /*next_b*/) {
  float r[4][8];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j) r[i][j] = accumulate ? c[i * ldc + j] : 0.0f;
  for (int64_t k = 0; k < kc; ++k) {
    const float* ak = a + k * 4;
    const float* bk = b + k * 8;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 8; ++j) r[i][j] = std::fma(ak[i], bk[j], r[i][j]);
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j) c[i * ldc + j] = r[i][j];
}

#ifdef SDMPI_X86
// Where a micro-kernel's broadcast operand comes from: a packed panel (element (i, k) at
// x[k·rows + i], the A panels of the packed path) or rows read in place (x[i·ld + k], W's rows
// in the transposed path, cpu_gemm.h's TransposedKernel). One kernel body serves both.
enum class Broadcast { Packed, InPlace };

// What a kernel prefetches into L2 while it computes, for the call after it (prefetches never
// fault, so addresses past the data are harmless):
// - NextRows: the broadcast rows read in place by the next call (`next`, row stride next_ld), one
//   line per row every 16 k: the few-rows products, whose weights stream from memory (see
//   kernel_avx512_wt_12x32_streaming);
// - NextPanel: the packed B micro-panel of the next call (`next`, NR floats per k), a line every
//   16 floats of it: the packed path's first pass over a block's panels, which reads them from
//   memory (the kept Winograd weights, or a product's freshly packed B beyond L2), one panel ahead.
//   Winograd convolutions with their kept weights from DRAM (Emerald Rapids VM, 2 threads, the two
//   variants alternating call by call): the UNet's 320 channels at 32×32 6.0-6.8 → 5.6-6.4 ms, the
//   VAE's 512 channels at 64×64 31.7-34.3 → 28.2-30.5 ms, 256 at 128×128 -4%; the UNet's linears
//   0-4% faster.
enum class Prefetch { None, NextRows, NextPanel };

// Twelve named accumulators rather than an array: with an array GCC 12 kept a copy of every
// accumulator on the stack and stored all twelve on each k (16 ymm registers hold 12 + 2 + 1, but
// not its array), which halved this kernel's rate. c[i][j] (row stride ldc) (+)= Σ_k x(i, k) ·
// v[k·16 + j] for i < 6, j < 16.
template <Broadcast kFrom, Prefetch kPrefetch = Prefetch::None>
__attribute__((target("avx2,fma"))) inline void avx2_6x16(int64_t kc, const float* x, int64_t ldx, const float* v,
                                                          float* c, int64_t ldc, bool accumulate,
                                                          const float* next = nullptr, int64_t next_ld = 0) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (accumulate) {
    c00 = _mm256_loadu_ps(c), c01 = _mm256_loadu_ps(c + 8);
    c10 = _mm256_loadu_ps(c + ldc), c11 = _mm256_loadu_ps(c + ldc + 8);
    c20 = _mm256_loadu_ps(c + 2 * ldc), c21 = _mm256_loadu_ps(c + 2 * ldc + 8);
    c30 = _mm256_loadu_ps(c + 3 * ldc), c31 = _mm256_loadu_ps(c + 3 * ldc + 8);
    c40 = _mm256_loadu_ps(c + 4 * ldc), c41 = _mm256_loadu_ps(c + 4 * ldc + 8);
    c50 = _mm256_loadu_ps(c + 5 * ldc), c51 = _mm256_loadu_ps(c + 5 * ldc + 8);
  } else {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
  }
  // Element (i, k) of the broadcast operand is at x[i·si + k·sk].
  const int64_t si = kFrom == Broadcast::Packed ? 1 : ldx, sk = kFrom == Broadcast::Packed ? 6 : 1;
  for (int64_t k = 0; k < kc; ++k, v += 16) {
    if constexpr (kPrefetch == Prefetch::NextRows) {
      if ((k & 15) == 0)
        for (int i = 0; i < 6; ++i) _mm_prefetch(reinterpret_cast<const char*>(next + i * next_ld + k), _MM_HINT_T1);
    } else if constexpr (kPrefetch == Prefetch::NextPanel) {
      _mm_prefetch(reinterpret_cast<const char*>(next + k * 16), _MM_HINT_T1);
    }
    const __m256 v0 = _mm256_load_ps(v), v1 = _mm256_load_ps(v + 8);
    const float* xk = x + k * sk;
    __m256 xi = _mm256_broadcast_ss(xk);
    c00 = _mm256_fmadd_ps(xi, v0, c00), c01 = _mm256_fmadd_ps(xi, v1, c01);
    xi = _mm256_broadcast_ss(xk + si);
    c10 = _mm256_fmadd_ps(xi, v0, c10), c11 = _mm256_fmadd_ps(xi, v1, c11);
    xi = _mm256_broadcast_ss(xk + 2 * si);
    c20 = _mm256_fmadd_ps(xi, v0, c20), c21 = _mm256_fmadd_ps(xi, v1, c21);
    xi = _mm256_broadcast_ss(xk + 3 * si);
    c30 = _mm256_fmadd_ps(xi, v0, c30), c31 = _mm256_fmadd_ps(xi, v1, c31);
    xi = _mm256_broadcast_ss(xk + 4 * si);
    c40 = _mm256_fmadd_ps(xi, v0, c40), c41 = _mm256_fmadd_ps(xi, v1, c41);
    xi = _mm256_broadcast_ss(xk + 5 * si);
    c50 = _mm256_fmadd_ps(xi, v0, c50), c51 = _mm256_fmadd_ps(xi, v1, c51);
  }
  _mm256_storeu_ps(c, c00), _mm256_storeu_ps(c + 8, c01);
  _mm256_storeu_ps(c + ldc, c10), _mm256_storeu_ps(c + ldc + 8, c11);
  _mm256_storeu_ps(c + 2 * ldc, c20), _mm256_storeu_ps(c + 2 * ldc + 8, c21);
  _mm256_storeu_ps(c + 3 * ldc, c30), _mm256_storeu_ps(c + 3 * ldc + 8, c31);
  _mm256_storeu_ps(c + 4 * ldc, c40), _mm256_storeu_ps(c + 4 * ldc + 8, c41);
  _mm256_storeu_ps(c + 5 * ldc, c50), _mm256_storeu_ps(c + 5 * ldc + 8, c51);
}

__attribute__((target("avx2,fma"))) void kernel_avx2_6x16(int64_t kc, const float* a, const float* b, float* c,
                                                          int64_t ldc, bool accumulate, const float* next_b) {
  if (next_b) avx2_6x16<Broadcast::Packed, Prefetch::NextPanel>(kc, a, 0, b, c, ldc, accumulate, next_b);
  else avx2_6x16<Broadcast::Packed>(kc, a, 0, b, c, ldc, accumulate);
}

// The few-rows products (the UNet's deep layers: 32 or 128 rows for a CFG batch of 2) stream
// tens of MB of weights per call, each weight used by one Aᵀ panel's pass: the broadcast rows of
// every call are new data. The streaming kernel therefore prefetches, one line per row every 16 k,
// the rows the *next* call will broadcast (`next`, row stride next_ld: the same kc floats of the
// next 12 rows of W, or the first rows of the next K block) into L2 while it computes on the current
// ones, one call (~3,800 cycles at kc = 320) ahead. Measured on the Emerald Rapids VM, 2 threads, W
// from DRAM (2 MiB pages), the variants alternating call by call, three rounds: the Winograd
// products of the 640-channel 16×16 layers (36 × 32×640×640) 137-139 → 189-191 GFLOP/s, of the
// 1280-channel 8×8 ones (16 × 32×1280×1280) 154-173 → 190-229, 32×1280×11520 (4×4) 179-208 →
// 195-230, 128×10240×1280 +7-8%. The scheme it replaces prefetched each row 512 floats ahead of
// the current k, which never covered a row's first 512 floats and, with K blocks of 320, landed in
// the next K block: at K = 640 half of W arrived on demand. Keeping both was slower than this alone
// (more prefetches than lines needed), and an L1 hint slower than L2.

// R × 32 outputs in 2R zmm accumulators: c[i][j] (+)= Σ_k x(i, k) · v[k·32 + j].
template <int R, Broadcast kFrom, Prefetch kPrefetch = Prefetch::None>
__attribute__((target("avx512f"))) inline void avx512_rx32(int64_t kc, const float* x, int64_t ldx, const float* v,
                                                           float* c, int64_t ldc, bool accumulate,
                                                           const float* next = nullptr, int64_t next_ld = 0) {
  __m512 r[R][2];
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    r[i][0] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
    r[i][1] = accumulate ? _mm512_loadu_ps(c + i * ldc + 16) : _mm512_setzero_ps();
  }
  const int64_t si = kFrom == Broadcast::Packed ? 1 : ldx, sk = kFrom == Broadcast::Packed ? R : 1;
  for (int64_t k = 0; k < kc; ++k) {
    if constexpr (kPrefetch == Prefetch::NextRows) {
      if ((k & 15) == 0) {
#pragma GCC unroll 12
        for (int i = 0; i < R; ++i) _mm_prefetch(reinterpret_cast<const char*>(next + i * next_ld + k), _MM_HINT_T1);
      }
    } else if constexpr (kPrefetch == Prefetch::NextPanel) {
      _mm_prefetch(reinterpret_cast<const char*>(next + k * 32), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(next + k * 32 + 16), _MM_HINT_T1);
    }
    const __m512 v0 = _mm512_load_ps(v + k * 32), v1 = _mm512_load_ps(v + k * 32 + 16);
#pragma GCC unroll 12
    for (int i = 0; i < R; ++i) {
      const __m512 xi = _mm512_set1_ps(x[i * si + k * sk]);
      r[i][0] = _mm512_fmadd_ps(xi, v0, r[i][0]);
      r[i][1] = _mm512_fmadd_ps(xi, v1, r[i][1]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < R; ++i) {
    _mm512_storeu_ps(c + i * ldc, r[i][0]);
    _mm512_storeu_ps(c + i * ldc + 16, r[i][1]);
  }
}

__attribute__((target("avx512f"))) void kernel_avx512_12x32(int64_t kc, const float* a, const float* b, float* c,
                                                            int64_t ldc, bool accumulate, const float* next_b) {
  if (next_b) avx512_rx32<12, Broadcast::Packed, Prefetch::NextPanel>(kc, a, 0, b, c, ldc, accumulate, next_b);
  else avx512_rx32<12, Broadcast::Packed>(kc, a, 0, b, c, ldc, accumulate);
}
#endif

// Products with very few columns (the last convolution of the UNet and of the VAE: N = 4, 3) as
// dot products along K: 16 lanes each add up every 16th k as an FMA chain, then one fixed
// reduction of the lanes (reduce_16_lanes). C[r][j] = A[r]·W[j] for up to 4 rows r and n ≤ 4 rows
// j of W (both K-contiguous). The order depends on K only, so it is as batch-invariant as the
// panels; AVX2 keeps the 16 lanes as two 8-lane halves and the portable version as 16 floats, so
// every instruction set gives the same bits.

// Lanes l and l+8 first, then l and l+4, l and l+2, 0 and 1: written out rather than left to an
// intrinsic whose order is the compiler's.
float reduce_16_lanes(const float* lane) {
  float s8[8], s4[4];
  for (int l = 0; l < 8; ++l) s8[l] = lane[l] + lane[l + 8];
  for (int l = 0; l < 4; ++l) s4[l] = s8[l] + s8[l + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

void dot_portable_4xn(int64_t K, const float* a, int64_t lda, int64_t rows, const float* w, int64_t n, float* c,
                      int64_t ldc) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) {
      float lane[16] = {};
      for (int64_t k = 0; k < K; ++k) lane[k % 16] = std::fma(a[i * lda + k], w[j * K + k], lane[k % 16]);
      c[i * ldc + j] = reduce_16_lanes(lane);
    }
}

#ifdef SDMPI_X86

__attribute__((target("avx512f"))) void dot_avx512_4xn(int64_t K, const float* a, int64_t lda, int64_t rows,
                                                       const float* w, int64_t n, float* c, int64_t ldc) {
  __m512 acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 wv[4], av[4];
    for (int j = 0; j < 4; ++j) wv[j] = j < n ? _mm512_maskz_loadu_ps(m, w + j * K + k) : _mm512_setzero_ps();
    for (int i = 0; i < 4; ++i) av[i] = i < rows ? _mm512_maskz_loadu_ps(m, a + i * lda + k) : _mm512_setzero_ps();
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_fmadd_ps(av[i], wv[j], acc[i][j]);
  }
  alignas(64) float lane[16];
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < n; ++j) {
      _mm512_store_ps(lane, acc[i][j]);
      c[i * ldc + j] = reduce_16_lanes(lane);
    }
}

// One row at a time: 4 columns × 2 halves are 8 of the 16 ymm registers.
__attribute__((target("avx2,fma"))) void dot_avx2_4xn(int64_t K, const float* a, int64_t lda, int64_t rows,
                                                      const float* w, int64_t n, float* c, int64_t ldc) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* ai = a + i * lda;
    __m256 lo[4], hi[4];
    for (int j = 0; j < 4; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      // Lanes past K load zeros (maskload), as AVX-512's masked loads do.
      const int64_t left = K - k;
      const __m256i lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
      const __m256i m_lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(left, 16))), lane_ids);
      const __m256i m_hi =
          _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(left, 16)) - 8), lane_ids);
      const __m256 a_lo = _mm256_maskload_ps(ai + k, m_lo), a_hi = _mm256_maskload_ps(ai + k + 8, m_hi);
      for (int j = 0; j < 4; ++j) {
        if (j >= n) break;
        lo[j] = _mm256_fmadd_ps(a_lo, _mm256_maskload_ps(w + j * K + k, m_lo), lo[j]);
        hi[j] = _mm256_fmadd_ps(a_hi, _mm256_maskload_ps(w + j * K + k + 8, m_hi), hi[j]);
      }
    }
    alignas(32) float lane[16];
    for (int64_t j = 0; j < n; ++j) {
      _mm256_store_ps(lane, lo[j]);
      _mm256_store_ps(lane + 8, hi[j]);
      c[i * ldc + j] = reduce_16_lanes(lane);
    }
  }
}
#endif

#ifdef SDMPI_X86
// The same chain 16 columns wide, for packed-path products whose width pads less to 16 than to 32
// (N ≡ 1…16 mod 32: e.g. N = 40 computes 48 columns instead of 64). The loops over the 24
// accumulators must be unrolled: without the pragmas GCC 12 kept r[] on the stack and loaded and
// stored an accumulator around every FMA, which ran at half the 12×32 kernel's rate (70 against
// 140 GFLOP/s, one Emerald Rapids core, data in L1; 123 with them; the compiled loop is now 24
// FMAs with embedded broadcasts and one load).
template <Prefetch kPrefetch>
__attribute__((target("avx512f"))) inline void avx512_24x16(int64_t kc, const float* a, const float* b, float* c,
                                                            int64_t ldc, bool accumulate, const float* next_b) {
  __m512 r[24];
#pragma GCC unroll 24
  for (int i = 0; i < 24; ++i) r[i] = accumulate ? _mm512_loadu_ps(c + i * ldc) : _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    if constexpr (kPrefetch == Prefetch::NextPanel) _mm_prefetch(reinterpret_cast<const char*>(next_b + k * 16), _MM_HINT_T1);
    const __m512 b0 = _mm512_load_ps(b + k * 16);
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) r[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[k * 24 + i]), b0, r[i]);
  }
#pragma GCC unroll 24
  for (int i = 0; i < 24; ++i) _mm512_storeu_ps(c + i * ldc, r[i]);
}

__attribute__((target("avx512f"))) void kernel_avx512_24x16(int64_t kc, const float* a, const float* b, float* c,
                                                            int64_t ldc, bool accumulate, const float* next_b) {
  if (next_b) avx512_24x16<Prefetch::NextPanel>(kc, a, b, c, ldc, accumulate, next_b);
  else avx512_24x16<Prefetch::None>(kc, a, b, c, ldc, accumulate, nullptr);
}
#endif

const MicroKernel& micro_kernel() {
  static const MicroKernel chosen = [] {
#ifdef SDMPI_X86
    switch (simd_isa()) {  // the CPU's widest, or SDMPI_CPU_ISA's cap
      case SimdIsa::Avx512: return MicroKernel{12, 32, kernel_avx512_12x32, "AVX-512", "12x32"};
      case SimdIsa::Avx2: return MicroKernel{6, 16, kernel_avx2_6x16, "AVX2", "6x16"};
      case SimdIsa::Sse2: break;
    }
#endif
    return MicroKernel{4, 8, kernel_generic_4x8, "portable", "4x8"};
  }();
  return chosen;
}

// The micro-kernel for a product N columns wide: the default one, or on AVX-512 the 16-wide one
// when it pads N less. Every kernel adds up the same chain, so the choice changes no bits.
const MicroKernel& micro_kernel_for(int64_t N) {
#ifdef SDMPI_X86
  static const MicroKernel narrow{24, 16, kernel_avx512_24x16, "AVX-512", "24x16"};
  const MicroKernel& mk = micro_kernel();
  if (mk.nr == 32 && (N + 15) / 16 * 16 < (N + 31) / 32 * 32) return narrow;
  return mk;
#else
  (void)N;
  return micro_kernel();
#endif
}

// A[rows, kc] block (row stride lda) → panels of mr rows: dst[p][k][i], zero rows past `rows`.
void pack_a_scalar(int mr, int64_t rows, int64_t kc, const float* A, int64_t lda, float* dst) {
  for (int64_t p = 0; p < rows; p += mr) {
    int64_t n = std::min<int64_t>(mr, rows - p);
    float* d = dst + p * kc;
    if (n < mr) std::memset(d, 0, static_cast<size_t>(kc * mr) * sizeof(float));
    for (int64_t i = 0; i < n; ++i) {
      const float* src = A + (p + i) * lda;
      for (int64_t k = 0; k < kc; ++k) d[k * mr + i] = src[k];
    }
  }
}

#ifdef SDMPI_X86
// GCC 12's AVX-512 shuffle intrinsics pass _mm512_undefined_ps() as the unused merge source, which
// -Wuninitialized reports when inlined here (a known false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__  // clang has no such warning (and -Werror rejects unknown ones)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// r[j] (row j of a 16×16 block) → r[k] (column k), in registers.
__attribute__((target("avx512f"), always_inline)) inline void transpose16x16_regs(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4g + q] now holds, in each 128-bit lane L, column 4L + q of rows 4g..4g+3.
  for (int q = 0; q < 4; ++q) {
    t[q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);       // lanes 0,2 of rows 0-3 | 4-7
    t[4 + q] = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xdd);   // lanes 1,3
    t[8 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
    t[12 + q] = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xdd);
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);           // column q
    r[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xdd);       // column 8 + q
    r[4 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0x88);  // column 4 + q
    r[12 + q] = _mm512_shuffle_f32x4(t[4 + q], t[12 + q], 0xdd); // column 12 + q
  }
}

// 16 rows of 16 floats (row stride ld) → 16 columns: dst[k * ldd + j] = src[j * ld + k].
__attribute__((target("avx512f"))) void transpose16x16(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld);
  transpose16x16_regs(r);
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + i * ldd, r[i]);
}

// Rows i0 … i0+n-1 (n ≤ 16) of an A panel, 16 k at a time: dst[k * mr + i] = src[i * ld + k] for
// i < n, k < 16, each column written as one n-lane masked store. The 12-row panels of the 12×32
// kernel used to go through a 16-row buffer, 36 small memcpy/memset calls per 12×16 block, which
// cost 2-4 cycles per packed float: 60% of the multiplies where a tile has 160 columns (the
// packed-W products, one Emerald Rapids core: 76 against 127 GFLOP/s for the transposed path).
// Rows past `valid` (≤ n) are written as zeros (a panel's padding).
__attribute__((target("avx512f"))) void pack_a_block16(const float* src, int64_t ld, int valid, int n, float* dst,
                                                       int64_t mr) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = i < valid ? _mm512_loadu_ps(src + i * ld) : _mm512_setzero_ps();
  transpose16x16_regs(r);
  const __mmask16 lanes = static_cast<__mmask16>((1u << n) - 1);
  for (int k = 0; k < 16; ++k) _mm512_mask_storeu_ps(dst + k * mr, lanes, r[k]);
}

// dst[j·ldd + i] = src[i·lds + j] for i < ni ≤ 16, j < nj ≤ 16: masked loads and stores around one
// register transpose, so edge blocks cost what full ones do.
__attribute__((target("avx512f"))) void transpose_block16(const float* src, int64_t lds, int ni, int nj, float* dst,
                                                          int64_t ldd) {
  const __mmask16 cols = static_cast<__mmask16>((1u << nj) - 1), rows = static_cast<__mmask16>((1u << ni) - 1);
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = i < ni ? _mm512_maskz_loadu_ps(cols, src + i * lds) : _mm512_setzero_ps();
  transpose16x16_regs(r);
  for (int j = 0; j < nj; ++j) _mm512_mask_storeu_ps(dst + j * ldd, rows, r[j]);
}
#pragma GCC diagnostic pop
#endif

#ifdef SDMPI_X86
// 8 rows of 8 floats (row stride ld) → 8 columns, for AVX2 CPUs: dst[k * ldd + j] = src[j * ld + k].
__attribute__((target("avx2"))) void transpose8x8(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4g + q] holds, in 128-bit lane L, column 4L + q of rows 4g..4g+3.
  for (int q = 0; q < 4; ++q) {
    _mm256_storeu_ps(dst + q * ldd, _mm256_permute2f128_ps(r[q], r[4 + q], 0x20));
    _mm256_storeu_ps(dst + (4 + q) * ldd, _mm256_permute2f128_ps(r[q], r[4 + q], 0x31));
  }
}
#endif

// pack_a_scalar's result, on AVX-512 with every 16-column strip transposed in registers, 16 rows at
// a time (mr ≤ 32; the last, partial panel too, its padding rows zero): a small-N product packs as
// many A elements as it multiplies, so the pack must cost little per element.
void pack_a(int mr, int64_t rows, int64_t kc, const float* A, int64_t lda, float* dst) {
#ifdef SDMPI_X86
  if (mr % 4 == 0 && mr <= 32 && kc >= 16 && simd_isa() == SimdIsa::Avx512) {
    const int64_t k16 = kc / 16 * 16;
    for (int64_t p = 0; p < rows; p += mr) {
      const int64_t valid = std::min<int64_t>(mr, rows - p);  // the last panel may be partial
      float* d = dst + p * kc;
      for (int64_t k0 = 0; k0 < k16; k0 += 16)
        for (int i0 = 0; i0 < mr; i0 += 16) {
          const int n = std::min(16, mr - i0);
          const int v = static_cast<int>(std::clamp<int64_t>(valid - i0, 0, n));
          pack_a_block16(A + (p + i0) * lda + k0, lda, v, n, d + k0 * mr + i0, mr);
        }
      for (int64_t i = 0; i < mr; ++i)  // the last kc % 16 columns
        for (int64_t k = k16; k < kc; ++k) d[k * mr + i] = i < valid ? A[(p + i) * lda + k] : 0.0f;
    }
    return;
  }
#endif
  pack_a_scalar(mr, rows, kc, A, lda, dst);
}

// Panels [panel_begin, panel_end) of op(B)[K, N] → dst: panel p holds columns p·nr … p·nr+nr-1 as
// dst[p·K·nr + k·nr + j], zero past N. The whole of K per panel: a K block is then one contiguous
// run, and the pack is done once per product.
void pack_b_panels(int nr, bool b_transposed, int64_t N, int64_t K, const float* B, int64_t ldb, float* dst,
                   int64_t panel_begin, int64_t panel_end) {
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    const int64_t j0 = p * nr, n = std::min<int64_t>(nr, N - j0);
    float* d = dst + p * K * nr;
    if (!b_transposed) {  // element (k, j) at B[k * ldb + j]
      for (int64_t k = 0; k < K; ++k) {
        std::memcpy(d + k * nr, B + k * ldb + j0, static_cast<size_t>(n) * sizeof(float));
        if (n < nr) std::memset(d + k * nr + n, 0, static_cast<size_t>(nr - n) * sizeof(float));
      }
      continue;
    }
    // element (k, j) at B[j * ldb + k]: a transpose of n rows of B.
    int64_t k = 0;
#ifdef SDMPI_X86
    if (nr % 16 == 0 && n == nr && simd_isa() == SimdIsa::Avx512) {
      for (; k + 16 <= K; k += 16)
        for (int64_t j = 0; j < nr; j += 16) transpose16x16(B + (j0 + j) * ldb + k, ldb, d + k * nr + j, nr);
    } else if (nr % 8 == 0 && n == nr && simd_isa() == SimdIsa::Avx2) {
      for (; k + 8 <= K; k += 8)
        for (int64_t j = 0; j < nr; j += 8) transpose8x8(B + (j0 + j) * ldb + k, ldb, d + k * nr + j, nr);
    }
#endif
    if (n < nr) std::memset(d + k * nr, 0, static_cast<size_t>((K - k) * nr) * sizeof(float));
    for (int64_t j = 0; j < n; ++j) {
      const float* src = B + (j0 + j) * ldb;
      for (int64_t kk = k; kk < K; ++kk) d[kk * nr + j] = src[kk];
    }
  }
}

// Where a block of A comes from: memory (row stride lda) or a gatherer that writes rows × kc floats
// row-major into a buffer (im2col).
struct ASource {
  const float* A = nullptr;
  int64_t lda = 0;
  const std::function<void(int64_t row0, int64_t rows, int64_t k0, int64_t kc, float* dst)>* gather = nullptr;
};

// Where the block's B comes from: panels packed over the whole of K (bp, the panel of the block's
// first column), or W rows [N, K] (row stride ldw, the block's first row) packed one K block at a
// time into a per-thread buffer that stays in cache.
struct BSource {
  const float* packed = nullptr;
  const float* W = nullptr;
  int64_t ldw = 0;
};

// C[rows, cols] = A[rows, K] · B[K, cols] for rows ≤ kGemmMc.
void run_block(const MicroKernel& mk, const ASource& a, int64_t row0, int64_t rows, int64_t cols, int64_t K,
               const BSource& bsrc, float* C, int64_t ldc) {
  thread_local FloatScratch a_pack, a_rows, b_block;
  const int64_t kc_block = gemm_kc(K);
  float* Ap = a_pack.get(static_cast<size_t>(kGemmMc * kc_block));
  const int64_t panels = (cols + mk.nr - 1) / mk.nr;
  float* Bb = bsrc.packed ? nullptr : b_block.get(static_cast<size_t>(panels * mk.nr * kc_block));
  for (int64_t pc = 0; pc < K; pc += kc_block) {
    const int64_t kc = std::min(kc_block, K - pc);
    const bool accumulate = pc > 0;
    if (a.gather) {
      float* buf = a_rows.get(static_cast<size_t>(kGemmMc * kc_block));
      (*a.gather)(row0, rows, pc, kc, buf);
      pack_a(mk.mr, rows, kc, buf, kc, Ap);
    } else {
      pack_a(mk.mr, rows, kc, a.A + row0 * a.lda + pc, a.lda, Ap);
    }
    if (Bb) pack_b_panels(mk.nr, true, cols, kc, bsrc.W + pc, bsrc.ldw, Bb, 0, panels);
    // A micro-panel (MR × Kc, 12 KiB) stays in L1 while the B block's micro-panels (Kc × NR,
    // 32 KiB each: all of L1) stream from L2 past it; the other way round, B's micro-panel was
    // evicted by the A panels streaming past it. One thread, 2048³: 91.7-94.5 → 95.6-98.6 GFLOP/s,
    // the VAE's Winograd layers 9-17% faster (cpu_ops_bench). Each output is the same FMA chain.
    alignas(64) float edge[24 * 16 > 12 * 32 ? 24 * 16 : 12 * 32];
    for (int64_t ir = 0; ir < rows; ir += mk.mr) {
      const int64_t mm = std::min<int64_t>(mk.mr, rows - ir);
      for (int64_t jr = 0; jr < cols; jr += mk.nr) {
        const int64_t nn = std::min<int64_t>(mk.nr, cols - jr);
        const int64_t panel_stride = Bb ? kc * mk.nr : K * mk.nr;  // from one B micro-panel to the next
        const float* b = (Bb ? Bb : bsrc.packed + pc * mk.nr) + (jr / mk.nr) * panel_stride;
        // The first A micro-panel's pass reads each B micro-panel from memory (L3 or DRAM), the
        // next ones from L2: that pass prefetches the next panel.
        const float* next_b = ir == 0 && jr + mk.nr < cols ? b + panel_stride : nullptr;
        float* c = C + ir * ldc + jr;
        if (mm == mk.mr && nn == mk.nr) {
          mk.fn(kc, Ap + ir * kc, b, c, ldc, accumulate, next_b);
          continue;
        }
        // Edge tile: the same chain through a full-size buffer.
        if (accumulate)
          for (int64_t i = 0; i < mm; ++i)
            std::memcpy(edge + i * mk.nr, c + i * ldc, static_cast<size_t>(nn) * sizeof(float));
        mk.fn(kc, Ap + ir * kc, b, edge, mk.nr, accumulate, next_b);
        for (int64_t i = 0; i < mm; ++i)
          std::memcpy(c + i * ldc, edge + i * mk.nr, static_cast<size_t>(nn) * sizeof(float));
      }
    }
  }
}

void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

// SDMPI_CPU_GEMM=builtin|openblas; by default our kernels wherever the CPU has AVX-512 or AVX2
// (on a Zen 4 capped to AVX2, ours ran the SD 1.5 op mix 8% faster than OpenBLAS's Haswell kernels,
// bench/results/cpu/2026-12-05-kernels.md), OpenBLAS (when built with it) on older CPUs.
GemmEngine pick_engine() {
  const char* env = std::getenv("SDMPI_CPU_GEMM");
  const std::string want = env ? env : "";
#ifdef SDMPI_HAVE_BLAS
  const bool have_blas = true;
#else
  const bool have_blas = false;
#endif
  if (want == "builtin") return GemmEngine::Builtin;
  if (want == "openblas") {
    if (!have_blas) throw InputError("SDMPI_CPU_GEMM=openblas: this build has no OpenBLAS (built with SDMPI_WITH_BLAS=OFF)");
    return GemmEngine::OpenBlas;
  }
  if (!want.empty()) throw InputError("SDMPI_CPU_GEMM=" + want + ": expected 'builtin' or 'openblas'");
  return simd_isa() != SimdIsa::Sse2 || !have_blas ? GemmEngine::Builtin : GemmEngine::OpenBlas;
}

}  // namespace

GemmEngine gemm_engine() {
  static const GemmEngine engine = pick_engine();
  return engine;
}

void gemm_builtin(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  if (beta != 0.0f) {  // the product first, then C = alpha·P + beta·C
    thread_local FloatScratch product;
    float* P = product.get(static_cast<size_t>(M * N));
    gemm_builtin(b_transposed, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, P, N);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = alpha * P[i * N + j] + beta * C[i * ldc + j];
    return;
  }
  const MicroKernel& mk = micro_kernel_for(N);
  thread_local FloatScratch b_pack;
  const int64_t panels = (N + mk.nr - 1) / mk.nr;
  float* Bp = b_pack.get(static_cast<size_t>(panels * mk.nr * K));
  pack_b_panels(mk.nr, b_transposed, N, K, B, ldb, Bp, 0, panels);
  ASource a{A, lda, nullptr};
  for (int64_t jc = 0; jc < N; jc += kGemmNc)
    for (int64_t ic = 0; ic < M; ic += kGemmMc) {
      const int64_t rows = std::min(kGemmMc, M - ic), cols = std::min(kGemmNc, N - jc);
      float* c = C + ic * ldc + jc;
      run_block(mk, a, ic, rows, cols, K, BSource{Bp + (jc / mk.nr) * K * mk.nr, nullptr, 0}, c, ldc);
      if (alpha != 1.0f)  // alpha · (the chain), while the block is in cache
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) c[i * ldc + j] = alpha * c[i * ldc + j];
    }
}

void gemm(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  gemm_on(gemm_engine(), b_transposed, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_on(GemmEngine engine, bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
             int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
#ifndef SDMPI_HAVE_BLAS
  (void)engine;
#else
  if (engine == GemmEngine::OpenBlas) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
      scale_c(M, N, beta, C, ldc);
      return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
                static_cast<blasint>(N), static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B,
                static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
    return;
  }
#endif
  gemm_builtin(b_transposed, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

TileGrid gemm_tile_grid(int64_t M, int64_t N, int64_t /*K*/) {
  // Rows in tiles of 256 (enough work per call, A tile ≤ a few MB); when that leaves fewer than
  // 8 tiles, columns are cut too so a handful of threads still share small-M products (the deep
  // 1280-channel layers). Nothing here may depend on the thread count.
  constexpr int64_t kRowTile = 256, kMinTiles = 8;
  TileGrid g{};
  g.mc = std::max<int64_t>(1, std::min(M, kRowTile));
  g.mt = M > 0 ? (M + g.mc - 1) / g.mc : 0;
  g.nc = std::max<int64_t>(1, N);
  if (g.mt > 0 && g.mt < kMinTiles && N > 128) {
    int64_t want = (kMinTiles + g.mt - 1) / g.mt;
    int64_t nc = ((N + want - 1) / want + 15) / 16 * 16;
    g.nc = std::min(N, std::max<int64_t>(nc, 64));
  }
  g.nt = N > 0 ? (N + g.nc - 1) / g.nc : 0;
  return g;
}

TileGrid builtin_tile_grid(int64_t M, int64_t N, int64_t /*K*/, int64_t products) {
  // Rows in blocks of kGemmMc (one packed A block per tile), columns in blocks of at most kGemmNc,
  // a multiple of the micro-kernel's width; when all `products` together have few row blocks (the
  // deep 1280-channel layers), N is cut finer so that a handful of threads still share them; many
  // products (Winograd's 16 or 36) are enough tiles on their own, and cutting their columns only
  // made every tile pack its A again (10-18% of those convolutions' time, cpu_ops_bench). Any grid
  // gives the same bits (each output is one FMA chain); this one depends on the shape only.
  // (Tried: threads sharing one packed A per K block for single-row-block products: no gain
  // measured on the 4×4/8×8 UNet layers, which are bound by streaming W, not by packing A.)
  const int64_t nr = micro_kernel_for(N).nr;
  TileGrid g{};
  g.mc = std::max<int64_t>(1, std::min(M, kGemmMc));
  g.mt = M > 0 ? (M + g.mc - 1) / g.mc : 0;
  int64_t col_tiles = std::max<int64_t>(1, (N + kGemmNc - 1) / kGemmNc);
  const int64_t row_blocks = std::max<int64_t>(products, 1) * g.mt;
  if (g.mt > 0 && row_blocks * col_tiles < kBuiltinMinTiles)
    col_tiles = std::max(col_tiles, (kBuiltinMinTiles + row_blocks - 1) / row_blocks);
  int64_t nc = ((N + col_tiles - 1) / col_tiles + nr - 1) / nr * nr;
  g.nc = std::max<int64_t>(1, std::min(N, std::max<int64_t>(nc, 2 * nr)));
  g.nt = N > 0 ? (N + g.nc - 1) / g.nc : 0;
  return g;
}

namespace {

// The OpenBLAS driver: per-item tiles, one single-threaded cblas call each (see cpu_gemm.h).
void gemm_nt_parallel_blas(const GemmProblem& p, int threads) {
  const TileGrid g = gemm_tile_grid(p.M, p.N, p.K);
  const int64_t per_item = g.mt * g.nt;
  const int64_t total = p.items * per_item;
  if (total == 0) return;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && total > 1)
  for (int64_t t = 0; t < total; ++t) {
    GemmTile tile;
    tile.item = t / per_item;
    int64_t r = t % per_item;
    tile.m0 = (r / g.nt) * g.mc;
    tile.n0 = (r % g.nt) * g.nc;
    tile.mn = std::min(g.mc, p.M - tile.m0);
    tile.nn = std::min(g.nc, p.N - tile.n0);
    const float* a;
    int64_t lda;
    if (p.gather_a) {
      thread_local FloatScratch a_tile;
      float* buf = a_tile.get(static_cast<size_t>(tile.mn * std::max<int64_t>(p.K, 1)));
      p.gather_a(tile.item, tile.m0, tile.mn, 0, p.K, buf);
      a = buf;
      lda = p.K;
    } else {
      a = p.A + tile.item * p.a_item_stride + tile.m0 * p.lda;
      lda = p.lda;
    }
    float* c = p.C + tile.item * p.c_item_stride + tile.m0 * p.ldc + tile.n0;
    const float* w = p.W + tile.item * p.w_item_stride + tile.n0 * p.K;
    gemm(true, tile.mn, tile.nn, p.K, 1.0f, a, std::max<int64_t>(lda, 1), w, std::max<int64_t>(p.K, 1), 0.0f, c,
         p.ldc);
    if (p.epilogue) p.epilogue(tile, c);
  }
}

// N ≤ 4: rows in tiles of 64 per item, each gathered whole (K is small there) and run through
// the dot kernel of the instruction set (all three give the same bits).
void gemm_nt_parallel_dot(const GemmProblem& p, int threads) {
  constexpr int64_t kRows = 64;
  const int64_t row_tiles = (p.M + kRows - 1) / kRows, total = p.items * row_tiles;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && total > 1)
  for (int64_t t = 0; t < total; ++t) {
    const int64_t item = t / row_tiles, m0 = (t % row_tiles) * kRows, mn = std::min(kRows, p.M - m0);
    const float* a;
    int64_t lda;
    if (p.gather_a) {
      thread_local FloatScratch rows_buf;
      float* buf = rows_buf.get(static_cast<size_t>(kRows * p.K));
      p.gather_a(item, m0, mn, 0, p.K, buf);
      a = buf;
      lda = p.K;
    } else {
      a = p.A + item * p.a_item_stride + m0 * p.lda;
      lda = p.lda;
    }
    float* c = p.C + item * p.c_item_stride + m0 * p.ldc;
    const float* w = p.W + item * p.w_item_stride;
#ifdef SDMPI_X86
    const auto dot = simd_isa() == SimdIsa::Avx512 ? dot_avx512_4xn
                     : simd_isa() == SimdIsa::Avx2 ? dot_avx2_4xn
                                                   : dot_portable_4xn;
#else
    const auto dot = dot_portable_4xn;
#endif
    for (int64_t i = 0; i < mn; i += 4)
      dot(p.K, a + i * lda, lda, std::min<int64_t>(4, mn - i), w, p.N, c + i * p.ldc, p.ldc);
    if (p.epilogue) p.epilogue(GemmTile{item, m0, mn, 0, p.N}, c);
  }
}

// ---- Products with few rows ---------------------------------------------------------------------
// The deep UNet layers (4×4 and 8×8 latents: 32 or 128 rows for a CFG batch of 2) use each weight
// element for few rows, so packing W into panels, a read and a write of every weight on every call,
// cost about as much as the multiplies: 50 GFLOP/s at M = 32, against 74 with W packed in advance
// (one thread, Zen 4). Here such a product is computed transposed, Cᵀ = W · Aᵀ: twelve rows of W
// (six on AVX2) are the broadcast operand, read where they are (sequential streams), and Aᵀ, which
// is small, is packed once per call into panels of 32 rows (16 on AVX2). Each output is still one
// FMA chain k = 0 … K-1 from zero (fma(w, a, c) is fma(a, w, c) exactly), so the bits are the
// packed path's. The portable build takes the packed path, with the same bits.
constexpr int64_t kSmallRows = 256;  // products of at most this many (merged) rows
constexpr int64_t kSmallChunk = 96;  // rows of W per task: 8 AVX-512 or 16 AVX2 micro-tiles


// Portable: std::fma in the same order as the vector kernels (the attention's path on CPUs with
// neither AVX2 nor AVX-512 under SDMPI_CPU_GEMM=builtin).
void kernel_portable_wt_4x8(int64_t kc, const float* w, int64_t ldw, const float* a, float* ct, int64_t ldt,
                            bool accumulate) {
  float r[4][8];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j) r[i][j] = accumulate ? ct[i * ldt + j] : 0.0f;
  for (int64_t k = 0; k < kc; ++k)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 8; ++j) r[i][j] = std::fma(w[i * ldw + k], a[k * 8 + j], r[i][j]);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j) ct[i * ldt + j] = r[i][j];
}

#ifdef SDMPI_X86
// R rows of W × 32 rows of A (R = 12; R = 8 where 12 would pad, e.g. the attention's P·V with
// 40-float heads: 40 rows of Vᵀ, not 48), and on AVX2 six × 16: the packed path's kernels with W's
// rows read in place.
template <int R>
__attribute__((target("avx512f"))) void kernel_avx512_wt_rx32(int64_t kc, const float* w, int64_t ldw,
                                                              const float* a, float* ct, int64_t ldt,
                                                              bool accumulate) {
  avx512_rx32<R, Broadcast::InPlace>(kc, w, ldw, a, ct, ldt, accumulate);
}

__attribute__((target("avx512f"))) void kernel_avx512_wt_12x32_streaming(int64_t kc, const float* w, int64_t ldw,
                                                                         const float* a, float* ct, int64_t ldt,
                                                                         bool accumulate, const float* next,
                                                                         int64_t next_ld) {
  if (next) avx512_rx32<12, Broadcast::InPlace, Prefetch::NextRows>(kc, w, ldw, a, ct, ldt, accumulate, next, next_ld);
  else avx512_rx32<12, Broadcast::InPlace>(kc, w, ldw, a, ct, ldt, accumulate);
}

__attribute__((target("avx2,fma"))) void kernel_avx2_wt_6x16(int64_t kc, const float* w, int64_t ldw, const float* a,
                                                             float* ct, int64_t ldt, bool accumulate) {
  avx2_6x16<Broadcast::InPlace>(kc, w, ldw, a, ct, ldt, accumulate);
}

__attribute__((target("avx2,fma"))) void kernel_avx2_wt_6x16_streaming(int64_t kc, const float* w, int64_t ldw,
                                                                       const float* a, float* ct, int64_t ldt,
                                                                       bool accumulate, const float* next,
                                                                       int64_t next_ld) {
  if (next) avx2_6x16<Broadcast::InPlace, Prefetch::NextRows>(kc, w, ldw, a, ct, ldt, accumulate, next, next_ld);
  else avx2_6x16<Broadcast::InPlace>(kc, w, ldw, a, ct, ldt, accumulate);
}
#endif

void kernel_portable_wt_4x8_streaming(int64_t kc, const float* w, int64_t ldw, const float* a, float* ct, int64_t ldt,
                                      bool accumulate, const float* /*next*/, int64_t /*next_ld*/) {
  kernel_portable_wt_4x8(kc, w, ldw, a, ct, ldt, accumulate);
}

// The few-rows paths' (group, row) → (item, row of that item): with the items merged into one
// product, row r is row r % M of item r / M; otherwise each group is one item.
std::pair<int64_t, int64_t> locate_row(const GemmProblem& p, bool merge, int64_t group, int64_t r) {
  return merge ? std::pair<int64_t, int64_t>{r / p.M, r % p.M} : std::pair<int64_t, int64_t>{group, r};
}

// `groups` products of `rows` rows each (merged: one product of all items' rows, see below).
// Measured before changing how W is read (Emerald Rapids VM, 2 threads, 32 rows × 1284 × 11520 as
// 16 such weights in turn, 946 MB, so each call reads its W from DRAM): W in place 6.6-7.3 ms per
// call (130-144 GFLOP/s, ~8 GB/s of W); W as half floats converted per 12-row block into an L1
// buffer 7.2-7.6 ms; W stored 12 rows interleaved (one sequential stream per group) 7.0 ms, and
// interleaved half floats 7.2 ms. Half the bytes or one stream per group did not help: this path
// is not bound by the bytes of W (the machine reads 28 GB/s on 2 threads), so W stays float32 and
// in place. The same weights in L3: 4.6 ms (205 GFLOP/s). (Those copies were in 4 KiB pages; on
// 2 MiB pages, as the model's weights are, the same product from DRAM takes 4.2-4.8 ms against
// 4.1-4.5 in cache, session 13: close to its compute rate.)
void gemm_small_rows(const GemmProblem& p, bool merge, int64_t groups, int64_t rows, int threads) {
  const TransposedKernel& tk = transposed_kernel();
  const int64_t panel_rows = tk.panel, tile_rows = tk.group;  // A rows per Aᵀ panel, W rows per micro-tile
  const int64_t K = p.K, N = p.N;
  const int64_t m_panels = (rows + panel_rows - 1) / panel_rows;
  const int64_t panel_floats = K * panel_rows, group_floats = m_panels * panel_floats;
  thread_local FloatScratch a_packed;
  float* Ap = a_packed.get(static_cast<size_t>(groups * group_floats));
  const auto locate = [&](int64_t group, int64_t r) { return locate_row(p, merge, group, r); };
  const int64_t kc_block = gemm_kc(K), k_blocks = (K + kc_block - 1) / kc_block;
  const int64_t pack_tasks = groups * m_panels * k_blocks;
  const int64_t chunks = (N + kSmallChunk - 1) / kSmallChunk, tasks = groups * chunks;
  const bool parallel = threads > 1 && tasks > 1;
#pragma omp parallel num_threads(threads) if (parallel)
  {
    // Aᵀ panels: panel q of group g holds rows q·32 … q·32+31 as Ap[g][q][k][i], zero past `rows`.
#pragma omp for schedule(static)
    for (int64_t t = 0; t < pack_tasks; ++t) {
      const int64_t group = t / (m_panels * k_blocks), q = t / k_blocks % m_panels, kb = t % k_blocks;
      const int64_t k0 = kb * kc_block, kc = std::min(kc_block, K - k0);
      const int64_t r0 = q * panel_rows, n = std::min(panel_rows, rows - r0);
      thread_local FloatScratch rows_buf;
      float* buf = rows_buf.get(static_cast<size_t>(panel_rows * kc_block));
      for (int64_t done = 0; done < n;) {  // runs of rows that stay inside one item
        const auto [item, m] = locate(group, r0 + done);
        const int64_t len = merge ? std::min(n - done, p.M - m) : n - done;
        if (p.gather_a) {
          p.gather_a(item, m, len, k0, kc, buf + done * kc);
        } else {
          const float* src = p.A + item * p.a_item_stride + m * p.lda + k0;
          for (int64_t i = 0; i < len; ++i)
            std::memcpy(buf + (done + i) * kc, src + i * p.lda, static_cast<size_t>(kc) * sizeof(float));
        }
        done += len;
      }
      // One panel of pack_a's layout (zero rows past n): Ap[g][q][k][i].
      pack_a(static_cast<int>(panel_rows), n, kc, buf, kc, Ap + group * group_floats + q * panel_floats + k0 * panel_rows);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t group = t / chunks, n0 = (t % chunks) * kSmallChunk, nn = std::min(kSmallChunk, N - n0);
      const int64_t ldt = m_panels * panel_rows;
      thread_local FloatScratch ct_buf, edge_buf;
      float* ct = ct_buf.get(static_cast<size_t>(kSmallChunk * ldt));
      const float* W = p.W + (p.w_item_stride == 0 ? 0 : group * p.w_item_stride);
      for (int64_t k0 = 0; k0 < K; k0 += kc_block) {
        const int64_t kc = std::min(kc_block, K - k0);
        for (int64_t g = 0; g < nn; g += tile_rows) {
          const int64_t gn = std::min(tile_rows, nn - g);
          const float* w = W + (n0 + g) * K + k0;
          int64_t ldw = K;
          if (gn < tile_rows) {  // the last rows of W, zero-padded to a full micro-tile
            float* e = edge_buf.get(static_cast<size_t>(tile_rows * kc_block));
            for (int64_t i = 0; i < tile_rows; ++i) {
              if (i < gn) std::memcpy(e + i * kc, w + i * K, static_cast<size_t>(kc) * sizeof(float));
              else std::memset(e + i * kc, 0, static_cast<size_t>(kc) * sizeof(float));
            }
            w = e;
            ldw = kc;
          }
          // The rows the next micro-tile will broadcast, in W (an edge tile copies its rows from
          // there too): the next 12 rows at this K block, or the chunk's first rows at the next.
          const float* next = nullptr;
          if (g + tile_rows < nn) next = W + (n0 + g + tile_rows) * K + k0;
          else if (k0 + kc < K) next = W + n0 * K + k0 + kc;
          // Only the first Aᵀ panel's pass streams W and prefetches: the next panels (M > 32) read
          // the same rows, by then in cache.
          const float* ap = Ap + group * group_floats + k0 * panel_rows;
          tk.streaming_fn(kc, w, ldw, ap, ct + g * ldt, ldt, k0 > 0, next, K);
          for (int64_t q = 1; q < m_panels; ++q)
            tk.fn(kc, w, ldw, ap + q * panel_floats, ct + g * ldt + q * panel_rows, ldt, k0 > 0);
        }
      }
      // Cᵀ → C, then the epilogue on each run of rows inside one item.
      for (int64_t done = 0; done < rows;) {
        const auto [item, m] = locate(group, done);
        const int64_t len = merge ? std::min(rows - done, p.M - m) : rows - done;
        float* c = p.C + item * p.c_item_stride + m * p.ldc + n0;
        transpose_copy(ct + done, ldt, nn, len, c, p.ldc);
        if (p.epilogue) p.epilogue(GemmTile{item, m, len, n0, nn}, c);
        done += len;
      }
    }
  }
}

// ---- Products of at most four rows --------------------------------------------------------------
// The UNet's time-embedding projections, stacked into one product (2 rows for a CFG batch of 2
// against 20,160 rows of W for SD 1.5), would be padded to the transposed path's 32-row panel: 16×
// the multiplies, 14 ms a step at 7 GFLOP/s on the Emerald Rapids VM, for 103 MB of W that the
// machine reads in under 4. Here W is read in place 16 rows × 16 k at a time, transposed in
// registers (lane j = row n0 + j of W), and each of the ≤ 4 rows of A is broadcast per k: every
// output is still one FMA chain k = 0 … K-1 from zero, so the bits are the other paths'. AVX-512
// only; elsewhere these products take the transposed or packed path, with the same bits.
constexpr int64_t kTinyRows = 4;
constexpr int64_t kTinyChunk = 256;  // rows of W per task

#ifdef SDMPI_X86
#pragma GCC diagnostic push  // transpose16x16_regs inlined: see there
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// c_rows[m][j] = Σ_k a[m·K + k] · w[j·ldw + k] for m < R, j < n ≤ 16.
template <int R>
__attribute__((target("avx512f"))) void tiny_rows_avx512(const float* a, int64_t K, const float* w, int64_t ldw,
                                                         int64_t n, float* const* c_rows) {
  __m512 acc[R];
  for (int m = 0; m < R; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    const int64_t kn = std::min<int64_t>(16, K - k0);
    const __mmask16 kmask = static_cast<__mmask16>((1u << kn) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; ++i)
      r[i] = i < n ? _mm512_maskz_loadu_ps(kmask, w + i * ldw + k0) : _mm512_setzero_ps();
    transpose16x16_regs(r);  // r[k] lane j = w[j][k0 + k]
    if (kn == 16) {
#pragma GCC unroll 16
      for (int k = 0; k < 16; ++k)
        for (int m = 0; m < R; ++m) acc[m] = _mm512_fmadd_ps(r[k], _mm512_set1_ps(a[m * K + k0 + k]), acc[m]);
    } else {
      for (int64_t k = 0; k < kn; ++k)
        for (int m = 0; m < R; ++m) acc[m] = _mm512_fmadd_ps(r[k], _mm512_set1_ps(a[m * K + k0 + k]), acc[m]);
    }
  }
  const __mmask16 nmask = static_cast<__mmask16>((1u << n) - 1);
  for (int m = 0; m < R; ++m) _mm512_mask_storeu_ps(c_rows[m], nmask, acc[m]);
}
#pragma GCC diagnostic pop
#endif

// Which of the driver's paths a product of `rows` (merged) rows × N × K takes: the one place that
// decides, for the driver and for gemm_packs_weights_per_call. Weights packed in advance always
// take the packed path.
enum class BuiltinPath { Dot, TinyRows, SmallRows, Packed };

BuiltinPath builtin_path(int64_t rows, int64_t N, int64_t K, bool w_packed) {
  if (w_packed || K <= 0) return BuiltinPath::Packed;
  if (N <= 4) return BuiltinPath::Dot;
#ifdef SDMPI_X86
  if (rows <= kTinyRows && simd_isa() == SimdIsa::Avx512) return BuiltinPath::TinyRows;
#endif
  return gemm_reads_weights_in_place(rows, N, K) ? BuiltinPath::SmallRows : BuiltinPath::Packed;
}

// `groups` products of `rows` ≤ 4 rows each (merged as in gemm_small_rows), in tasks of kTinyChunk
// rows of W.
void gemm_tiny_rows(const GemmProblem& p, bool merge, int64_t groups, int64_t rows, int threads) {
#ifdef SDMPI_X86
  const int64_t K = p.K, N = p.N, chunks = (N + kTinyChunk - 1) / kTinyChunk, tasks = groups * chunks;
  const auto locate = [&](int64_t group, int64_t r) { return locate_row(p, merge, group, r); };
  // Each group's rows of A, contiguous (row stride K).
  thread_local FloatScratch a_rows;
  float* Ar = a_rows.get(static_cast<size_t>(groups * rows * K));
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t r = 0; r < rows; ++r) {
      const auto [item, m] = locate(g, r);
      float* dst = Ar + (g * rows + r) * K;
      if (p.gather_a) p.gather_a(item, m, 1, 0, K, dst);
      else std::memcpy(dst, p.A + item * p.a_item_stride + m * p.lda, static_cast<size_t>(K) * sizeof(float));
    }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t g = t / chunks, n0 = (t % chunks) * kTinyChunk, nn = std::min(kTinyChunk, N - n0);
    const float* W = p.W + (p.w_item_stride == 0 ? 0 : g * p.w_item_stride);
    float* c_row[kTinyRows];
    for (int64_t r = 0; r < rows; ++r) {
      const auto [item, m] = locate(g, r);
      c_row[r] = p.C + item * p.c_item_stride + m * p.ldc + n0;
    }
    const float* a = Ar + g * rows * K;
    for (int64_t j = 0; j < nn; j += 16) {
      float* c[kTinyRows];
      for (int64_t r = 0; r < rows; ++r) c[r] = c_row[r] + j;
      const float* w = W + (n0 + j) * K;
      const int64_t n = std::min<int64_t>(16, nn - j);
      switch (rows) {
        case 1: tiny_rows_avx512<1>(a, K, w, K, n, c); break;
        case 2: tiny_rows_avx512<2>(a, K, w, K, n, c); break;
        case 3: tiny_rows_avx512<3>(a, K, w, K, n, c); break;
        default: tiny_rows_avx512<4>(a, K, w, K, n, c); break;
      }
    }
    if (p.epilogue)
      for (int64_t r = 0; r < rows; ++r) {
        const auto [item, m] = locate(g, r);
        p.epilogue(GemmTile{item, m, 1, n0, nn}, c_row[r]);
      }
  }
#else
  (void)p, (void)merge, (void)groups, (void)rows, (void)threads;
#endif
}

// Our driver. The items' rows are one product (row r of item i is global row i·M + r) whenever A,
// C and W allow it: every output is its own FMA chain, so merging items changes no bits and reads
// the weights once per call instead of once per item.
void gemm_nt_parallel_builtin(const GemmProblem& p, int threads) {
  if (p.items <= 0 || p.M <= 0 || p.N <= 0) return;
  const MicroKernel& mk = micro_kernel_for(p.N);
  const bool prepacked = p.W_packed != nullptr;
  const bool merge = p.items > 1 && p.w_item_stride == 0 && p.c_item_stride == p.M * p.ldc &&
                     (p.gather_a || p.a_item_stride == p.M * p.lda);
  const int64_t groups = merge ? 1 : p.items;           // products with their own W
  const int64_t rows = merge ? p.items * p.M : p.M;     // rows per product
  switch (builtin_path(rows, p.N, p.K, prepacked)) {
    case BuiltinPath::Dot: gemm_nt_parallel_dot(p, threads); return;
    case BuiltinPath::TinyRows: gemm_tiny_rows(p, merge, groups, rows, threads); return;
    case BuiltinPath::SmallRows: gemm_small_rows(p, merge, groups, rows, threads); return;
    case BuiltinPath::Packed: break;
  }
  const TileGrid g = builtin_tile_grid(rows, p.N, p.K, groups);
  const int64_t per_group = g.mt * g.nt, total = groups * per_group;
  const int64_t panels = (p.N + mk.nr - 1) / mk.nr;
  const int64_t K = std::max<int64_t>(p.K, 1);
  const int64_t packed_floats = panels * mk.nr * K;
  // One row tile per product (small M: the deep layers): each column tile then meets its slice of
  // W once, so it packs it one K block at a time in cache instead of through a packed copy of all
  // of W in memory (which costs a write and a second read of the weights).
  // Weights packed once by the caller (gemm_pack_weights) are read from there.
  const bool stream_w = g.mt == 1 && !prepacked;
  const int64_t w_groups = p.w_item_stride == 0 ? 1 : groups;
  thread_local FloatScratch w_pack;
  float* Wp = stream_w || prepacked ? nullptr : w_pack.get(static_cast<size_t>(w_groups * packed_floats));
  const int64_t pack_tasks = stream_w || prepacked ? 0 : w_groups * panels;
  const float* Wpacked = prepacked ? p.W_packed : Wp;
  const bool parallel = threads > 1 && total > 1;

  // Row range [r0, r0 + n) of product `group` as calls that stay inside one item.
  auto for_item_runs = [&](int64_t group, int64_t r0, int64_t n, auto&& fn) {
    if (!merge) {
      fn(group, r0, n, int64_t{0});
      return;
    }
    for (int64_t done = 0; done < n;) {
      const int64_t r = r0 + done, item = r / p.M, m = r % p.M, len = std::min(n - done, p.M - m);
      fn(item, m, len, done);
      done += len;
    }
  };

#pragma omp parallel num_threads(threads) if (parallel)
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < pack_tasks; ++t) {
      const int64_t wg = t / panels, panel = t % panels;
      if (p.K > 0)
        pack_b_panels(mk.nr, true, p.N, p.K, p.W + wg * p.w_item_stride, p.K, Wp + wg * packed_floats, panel,
                      panel + 1);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < total; ++t) {
      const int64_t group = t / per_group, r = t % per_group;
      const int64_t m0 = (r / g.nt) * g.mc, n0 = (r % g.nt) * g.nc;
      const int64_t mn = std::min(g.mc, rows - m0), nn = std::min(g.nc, p.N - n0);
      float* c = p.C + group * p.c_item_stride + m0 * p.ldc + n0;  // merged: item i·M rows later
      if (p.K <= 0) {
        for (int64_t i = 0; i < mn; ++i) std::memset(c + i * p.ldc, 0, static_cast<size_t>(nn) * sizeof(float));
      } else {
        std::function<void(int64_t, int64_t, int64_t, int64_t, float*)> gather;
        ASource a;
        if (p.gather_a) {
          gather = [&](int64_t row0, int64_t n, int64_t k0, int64_t kc, float* dst) {
            for_item_runs(group, row0, n, [&](int64_t item, int64_t m, int64_t len, int64_t done) {
              p.gather_a(item, m, len, k0, kc, dst + done * kc);
            });
          };
          a.gather = &gather;
        } else {
          a.A = p.A + group * p.a_item_stride;
          a.lda = p.lda;
        }
        const int64_t wg = p.w_item_stride == 0 ? 0 : group;
        BSource b;
        if (stream_w) {
          b.W = p.W + wg * p.w_item_stride + n0 * p.K;
          b.ldw = p.K;
        } else {
          b.packed = Wpacked + wg * packed_floats + (n0 / mk.nr) * K * mk.nr;
        }
        run_block(mk, a, m0, mn, nn, p.K, b, c, p.ldc);
      }
      if (p.epilogue) {
        for_item_runs(group, m0, mn, [&](int64_t item, int64_t m, int64_t len, int64_t done) {
          p.epilogue(GemmTile{item, m, len, n0, nn}, c + done * p.ldc);
        });
      }
    }
  }
}

}  // namespace

void transpose_copy(const float* src, int64_t lds, int64_t rows, int64_t cols, float* dst, int64_t ldd) {
#ifdef SDMPI_X86
  if (simd_isa() == SimdIsa::Avx512) {
    for (int64_t i = 0; i < rows; i += 16)
      for (int64_t j = 0; j < cols; j += 16)
        transpose_block16(src + i * lds + j, lds, static_cast<int>(std::min<int64_t>(16, rows - i)),
                          static_cast<int>(std::min<int64_t>(16, cols - j)), dst + j * ldd + i, ldd);
    return;
  }
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
}

const TransposedKernel& transposed_kernel() {
  static const TransposedKernel portable{4, 8, kernel_portable_wt_4x8, 4, kernel_portable_wt_4x8,
                                        kernel_portable_wt_4x8_streaming};
#ifdef SDMPI_X86
  static const TransposedKernel avx512{12, 32, kernel_avx512_wt_rx32<12>, 8, kernel_avx512_wt_rx32<8>,
                                      kernel_avx512_wt_12x32_streaming},
      avx2{6, 16, kernel_avx2_wt_6x16, 6, kernel_avx2_wt_6x16, kernel_avx2_wt_6x16_streaming};
  switch (simd_isa()) {
    case SimdIsa::Avx512: return avx512;
    case SimdIsa::Avx2: return avx2;
    case SimdIsa::Sse2: break;
  }
#endif
  return portable;
}

bool gemm_reads_weights_in_place(int64_t rows, int64_t N, int64_t K) {
  // Not on the portable kernel: unvectorised, the packed path is as fast and gives the same bits.
  return gemm_engine() == GemmEngine::Builtin && simd_isa() != SimdIsa::Sse2 && rows <= kSmallRows &&
         N >= transposed_kernel().group && K > 0;
}

bool gemm_packs_weights_per_call(int64_t rows, int64_t N, int64_t K) {
  return gemm_engine() == GemmEngine::Builtin && rows > 0 && N > 0 && K > 0 &&
         builtin_path(rows, N, K, false) == BuiltinPath::Packed;
}

void gemm_nt_parallel(const GemmProblem& p, int threads) {
  if (p.W_packed && gemm_engine() != GemmEngine::Builtin)
    throw Error("gemm_nt_parallel: packed weights need the built-in GEMM");
  if (gemm_engine() == GemmEngine::OpenBlas) gemm_nt_parallel_blas(p, threads);
  else gemm_nt_parallel_builtin(p, threads);
}

int64_t gemm_packed_floats(int64_t N, int64_t K) {
  const int64_t nr = micro_kernel_for(N).nr;
  return (N + nr - 1) / nr * nr * std::max<int64_t>(K, 1);
}

void gemm_pack_weights(const float* W, int64_t N, int64_t K, float* dst) {
  const int64_t nr = micro_kernel_for(N).nr;
  if (K > 0) pack_b_panels(static_cast<int>(nr), true, N, K, W, K, dst, 0, (N + nr - 1) / nr);
}

int64_t gemm_pack_rows(int64_t N) { return micro_kernel_for(N).nr; }

void gemm_pack_weight_panel(const float* panel_rows, int64_t rows, int64_t N, int64_t K, float* panel_dst) {
  const int64_t nr = micro_kernel_for(N).nr;
  if (rows < 1 || rows > nr) throw Error("gemm_pack_weight_panel: " + std::to_string(rows) + " rows for a panel of " +
                                         std::to_string(nr));
  if (K > 0) pack_b_panels(static_cast<int>(nr), true, rows, K, panel_rows, K, panel_dst, 0, 1);
}

void set_blas_single_threaded() {
#ifdef SDMPI_HAVE_BLAS
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
#endif
}

std::string gemm_library_name() {
  if (gemm_engine() == GemmEngine::Builtin) {
    const MicroKernel& mk = micro_kernel();
    const bool narrow_too = micro_kernel_for(40).shape != mk.shape;
    return std::string("built-in GEMM (") + mk.isa + " " + mk.shape + (narrow_too ? "/24x16" : "") + ")";
  }
  return "OpenBLAS " + blas_name();
}

std::string blas_name() {
#ifdef SDMPI_HAVE_BLAS
  std::string config = openblas_get_config();
  std::string version = config.rfind("OpenBLAS ", 0) == 0 ? config.substr(9, config.find(' ', 9) - 9) : "";
  return version + " (" + openblas_get_corename() + ")";
#else
  return "(not built)";
#endif
}

}  // namespace sdmpi::cpu
