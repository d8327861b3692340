// Matrix products for the CPU backend (see cpu_gemm.h for the invariance argument).
//
// The built-in GEMM follows the usual Goto/BLIS scheme: a K×N block of B is packed into panels of
// NR columns, an M×K block of A into panels of MR rows, and a register-blocked micro-kernel
// computes MR×NR outputs with one accumulator chain per output along the block's K. Edge panels are
// zero-padded, so edge outputs are added up exactly like interior ones.
#include "backend/cpu/cpu_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SDMPI_X86 1
#endif

#ifdef SDMPI_HAVE_BLAS
#include <cblas.h>
#endif

namespace sdmpi::cpu {

namespace {

constexpr int64_t kGemmKc = 256;   // K block: one A panel + one B panel stay in L1/L2
constexpr int64_t kGemmMc = 144;   // rows of A packed at once (a multiple of every MR below)
constexpr int64_t kGemmNc = 2048;  // columns of B packed at once (a multiple of every NR below)

using KernelFn = void (*)(int64_t kc, const float* a, const float* b, float* acc);

struct MicroKernel {
  int mr, nr;
  KernelFn fn;
  const char* isa;
};

// Portable kernel: plain multiply then add (the build forbids contraction).
void kernel_generic_4x8(int64_t kc, const float* a, const float* b, float* acc) {
  float c[4][8] = {};
  for (int64_t k = 0; k < kc; ++k) {
    const float* ak = a + k * 4;
    const float* bk = b + k * 8;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 8; ++j) c[i][j] += ak[i] * bk[j];
  }
  std::memcpy(acc, c, sizeof c);
}

#ifdef SDMPI_X86
__attribute__((target("avx2,fma"))) void kernel_avx2_6x16(int64_t kc, const float* a, const float* b,
                                                          float* acc) {
  __m256 c[6][2];
  for (int i = 0; i < 6; ++i) c[i][0] = c[i][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m256 b0 = _mm256_loadu_ps(b + k * 16), b1 = _mm256_loadu_ps(b + k * 16 + 8);
    for (int i = 0; i < 6; ++i) {
      __m256 ai = _mm256_broadcast_ss(a + k * 6 + i);
      c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
    }
  }
  for (int i = 0; i < 6; ++i) {
    _mm256_storeu_ps(acc + i * 16, c[i][0]);
    _mm256_storeu_ps(acc + i * 16 + 8, c[i][1]);
  }
}

__attribute__((target("avx512f"))) void kernel_avx512_12x32(int64_t kc, const float* a, const float* b,
                                                            float* acc) {
  __m512 c[12][2];
  for (int i = 0; i < 12; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b0 = _mm512_loadu_ps(b + k * 32), b1 = _mm512_loadu_ps(b + k * 32 + 16);
    for (int i = 0; i < 12; ++i) {
      __m512 ai = _mm512_set1_ps(a[k * 12 + i]);
      c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
    }
  }
  for (int i = 0; i < 12; ++i) {
    _mm512_storeu_ps(acc + i * 32, c[i][0]);
    _mm512_storeu_ps(acc + i * 32 + 16, c[i][1]);
  }
}
#endif

const MicroKernel& micro_kernel() {
  static const MicroKernel chosen = [] {
#ifdef SDMPI_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return MicroKernel{12, 32, kernel_avx512_12x32, "AVX-512"};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return MicroKernel{6, 16, kernel_avx2_6x16, "AVX2"};
#endif
    return MicroKernel{4, 8, kernel_generic_4x8, "portable"};
  }();
  return chosen;
}

// 64-byte aligned scratch that grows and is kept per thread.
struct Scratch {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data;
  size_t size = 0;
  float* get(size_t n) {
    if (n > size) {
      size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!data) throw std::bad_alloc();
      size = n;
    }
    return data.get();
  }
};

// A[rows, kc] block (row stride lda) → panels of mr rows: dst[p][k][i], zero rows past `rows`.
void pack_a(int mr, int64_t rows, int64_t kc, const float* A, int64_t lda, float* dst) {
  for (int64_t p = 0; p < rows; p += mr) {
    int64_t n = std::min<int64_t>(mr, rows - p);
    for (int64_t k = 0; k < kc; ++k) {
      float* d = dst + p * kc + k * mr;
      int64_t i = 0;
      for (; i < n; ++i) d[i] = A[(p + i) * lda + k];
      for (; i < mr; ++i) d[i] = 0.0f;
    }
  }
}

// op(B)[kc, cols] block → panels of nr columns: dst[p][k][j], zero columns past `cols`.
void pack_b(int nr, bool b_transposed, int64_t cols, int64_t kc, const float* B, int64_t ldb,
            float* dst) {
  for (int64_t p = 0; p < cols; p += nr) {
    int64_t n = std::min<int64_t>(nr, cols - p);
    float* d = dst + p * kc;
    if (b_transposed) {  // element (k, j) at B[j * ldb + k]
      for (int64_t k = 0; k < kc; ++k) {
        int64_t j = 0;
        for (; j < n; ++j) d[k * nr + j] = B[(p + j) * ldb + k];
        for (; j < nr; ++j) d[k * nr + j] = 0.0f;
      }
    } else {  // element (k, j) at B[k * ldb + j]
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = B + k * ldb + p;
        int64_t j = 0;
        for (; j < n; ++j) d[k * nr + j] = src[j];
        for (; j < nr; ++j) d[k * nr + j] = 0.0f;
      }
    }
  }
}

void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

}  // namespace

void gemm_builtin(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const MicroKernel& mk = micro_kernel();
  thread_local Scratch a_scratch, b_scratch;
  float* Ap = a_scratch.get(static_cast<size_t>(kGemmMc * kGemmKc));
  float* Bp = b_scratch.get(static_cast<size_t>(kGemmNc * kGemmKc));
  alignas(64) float acc[12 * 32];

  for (int64_t jc = 0; jc < N; jc += kGemmNc) {
    int64_t nc = std::min(kGemmNc, N - jc);
    for (int64_t pc = 0; pc < K; pc += kGemmKc) {
      int64_t kc = std::min(kGemmKc, K - pc);
      bool first = pc == 0;
      const float* Bblock = b_transposed ? B + jc * ldb + pc : B + pc * ldb + jc;
      pack_b(mk.nr, b_transposed, nc, kc, Bblock, ldb, Bp);
      for (int64_t ic = 0; ic < M; ic += kGemmMc) {
        int64_t mc = std::min(kGemmMc, M - ic);
        pack_a(mk.mr, mc, kc, A + ic * lda + pc, lda, Ap);
        for (int64_t jr = 0; jr < nc; jr += mk.nr) {
          int64_t nn = std::min<int64_t>(mk.nr, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += mk.mr) {
            int64_t mm = std::min<int64_t>(mk.mr, mc - ir);
            mk.fn(kc, Ap + ir * kc, Bp + jr * kc, acc);
            for (int64_t i = 0; i < mm; ++i) {
              float* c = C + (ic + ir + i) * ldc + jc + jr;
              const float* r = acc + i * mk.nr;
              for (int64_t j = 0; j < nn; ++j) {
                float v = alpha == 1.0f ? r[j] : alpha * r[j];
                if (!first) c[j] = c[j] + v;
                else c[j] = beta == 0.0f ? v : v + beta * c[j];
              }
            }
          }
        }
      }
    }
  }
}

void gemm(bool b_transposed, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
#ifdef SDMPI_HAVE_BLAS
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, b_transposed ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
              static_cast<blasint>(ldc));
#else
  gemm_builtin(b_transposed, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
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

void gemm_nt_parallel(const GemmProblem& p, int threads) {
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
    if (p.produce_a) {
      thread_local Scratch a_tile;
      a = p.produce_a(tile, a_tile.get(static_cast<size_t>(tile.mn * std::max<int64_t>(p.K, 1))));
      lda = p.K;
    } else {
      a = p.A + tile.item * p.a_item_stride + tile.m0 * p.lda;
      lda = p.lda;
    }
    float* c = p.C + tile.item * p.c_item_stride + tile.m0 * p.ldc + tile.n0;
    gemm(true, tile.mn, tile.nn, p.K, 1.0f, a, std::max<int64_t>(lda, 1), p.W + tile.n0 * p.K,
         std::max<int64_t>(p.K, 1), 0.0f, c, p.ldc);
    if (p.epilogue) p.epilogue(tile, c);
  }
}

void set_blas_single_threaded() {
#ifdef SDMPI_HAVE_BLAS
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
#endif
}

std::string gemm_library_name() {
#ifdef SDMPI_HAVE_BLAS
  std::string config = openblas_get_config();
  std::string version = config.rfind("OpenBLAS ", 0) == 0 ? config.substr(9, config.find(' ', 9) - 9) : "";
  return "OpenBLAS " + version + " (" + openblas_get_corename() + ")";
#else
  return std::string("built-in GEMM (") + micro_kernel().isa + ")";
#endif
}

}  // namespace sdmpi::cpu
