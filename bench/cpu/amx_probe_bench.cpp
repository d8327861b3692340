// Can AMX's bfloat16 unit beat our float32 GEMM at float32's accuracy? A probe, not a kernel of the
// product (docs/design.md, "CPU backend": why the CPU backend stays on
// float32 FMA units).
//
// The idea ("bf16x6"): split each float32 operand into three bfloat16 parts, x = x0 + x1 + x2
// (round to nearest each time, so the parts carry the 24-bit significand 8 bits at a time), and
// add up the six cross products that matter (x0y0, x0y1, x1y0, x0y2, x1y1, x2y0; the dropped ones
// are below 2^-24 of the product) in one float32 accumulator with TDPBF16PS. A bf16×bf16 product
// is exact in float32, so the error is float32's accumulation error. It costs six tile products
// per float32 one: it pays only where the tile unit runs more than 6× faster than the FMA units.
//
// Printed, in one run on this machine: (1) TDPBF16PS's rate per thread with register-resident tiles
// (the ceiling; bf16x6 can reach at most a sixth of it in float32-equivalent GFLOP/s), (2) a
// bf16x6 kernel's rate on an SD 1.5 feed-forward shape from cache-blocked packed operands, and its
// relative RMS error against float64 next to our float32 GEMM's, (3) our float32 GEMM on the same
// shape, on one thread and on all. Usage: amx_probe_bench [M N K] (default 1024 2560 320).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_simd.h"
#include "sdmpi/dtype.h"

#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) || __GNUC__ >= 11)
#define SDMPI_AMX_PROBE 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#ifdef SDMPI_AMX_PROBE
using bf16 = uint16_t;

// Operands in 1 KiB tiles: block b (16 rows of A, or 16 columns of W), part q, K step s (32 values
// of k) at ((b·3 + q)·steps + s)·512. A tiles are [row][k]; W tiles are the "VNNI" B operand,
// [k/2][column][k%2].
struct Packed {
  std::vector<bf16> data;
  int64_t steps;
};
Packed pack(const float* x, int64_t rows, int64_t K, bool as_b) {
  const int64_t steps = (K + 31) / 32, blocks = (rows + 15) / 16;
  Packed p{std::vector<bf16>(static_cast<size_t>(blocks * 3 * steps * 512), 0), steps};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) {
      float rest = x[r * K + k];
      const int64_t kk = k % 32;
      const int64_t in_tile = as_b ? (kk / 2) * 32 + (r % 16) * 2 + (kk & 1) : (r % 16) * 32 + kk;
      for (int64_t q = 0; q < 3; ++q) {
        const bf16 part = sdmpi::float_to_bf16(rest);
        rest -= sdmpi::bf16_to_float(part);
        p.data[static_cast<size_t>((((r / 16) * 3 + q) * steps + k / 32) * 512 + in_tile)] = part;
      }
    }
  return p;
}

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

bool amx_usable() {
  if (sdmpi::cpu::bf16_units_name().find("AMX-BF16") == std::string::npos) return false;
  // Linux hands out the 8 KiB tile state only on request (ARCH_REQ_XCOMP_PERM, XTILEDATA).
  return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
}

__attribute__((target("amx-tile,amx-bf16"))) void configure_tiles() {
  static TileConfig config;  // static: GCC 12 dropped the stores to a local one before ldtilecfg
  std::memset(&config, 0, sizeof config);
  config.palette = 1;
  for (int t = 0; t < 8; ++t) config.colsb[t] = 64, config.rows[t] = 16;
  _tile_loadconfig(&config);
}

// `iterations` × 4 independent TDPBF16PS on register-resident tiles; returns flop/s.
__attribute__((target("amx-tile,amx-bf16"))) double tile_peak(int64_t iterations) {
  configure_tiles();
  alignas(64) static thread_local bf16 ones[512];
  std::fill(ones, ones + 512, sdmpi::float_to_bf16(1e-3f));
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64); _tile_loadd(6, ones, 64); _tile_loadd(7, ones, 64);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iterations; ++i) {
    _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) static thread_local float sink[256];
  _tile_stored(0, sink, 64);
  const double s = seconds_since(t0);
  _tile_release();
  return 4.0 * iterations * 16 * 16 * 32 * 2 / s;
}

// C[32×32] (row stride ldc) (+)= the bf16x6 product of A rows a0/a1 (16 each) and W columns w0/w1
// over `steps` K steps; part strides are `part` elements. Tiles: 0-3 C, 4-5 A, 6-7 W.
__attribute__((target("amx-tile,amx-bf16"))) void kernel_32x32(const bf16* a0, const bf16* a1, const bf16* w0,
                                                               const bf16* w1, int64_t part, int64_t steps, float* C,
                                                               int64_t ldc, bool accumulate) {
  const int64_t stride = ldc * 4;
  if (accumulate) {
    _tile_loadd(0, C, stride); _tile_loadd(1, C + 16, stride);
    _tile_loadd(2, C + 16 * ldc, stride); _tile_loadd(3, C + 16 * ldc + 16, stride);
  } else {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  }
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t o = s * 512;
    // A part p against W parts 0 … 2-p: the six products with p + q ≤ 2.
    for (int64_t p = 0; p < 3; ++p) {
      _tile_loadd(4, a0 + p * part + o, 64); _tile_loadd(5, a1 + p * part + o, 64);
      for (int64_t q = 0; q + p < 3; ++q) {
        _tile_loadd(6, w0 + q * part + o, 64); _tile_loadd(7, w1 + q * part + o, 64);
        _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  _tile_stored(0, C, stride); _tile_stored(1, C + 16, stride);
  _tile_stored(2, C + 16 * ldc, stride); _tile_stored(3, C + 16 * ldc + 16, stride);
}

// Columns [n_begin, n_end) of C = A·Wᵀ (M, N multiples of 32): K blocks of 8 steps (256 values;
// a 32-column W panel, 48 KiB, stays in L1/L2 while A's block streams past it).
__attribute__((target("amx-tile,amx-bf16"))) void bf16x6_gemm(const Packed& a, const Packed& w, int64_t M, int64_t N,
                                                              float* C, int64_t n_begin, int64_t n_end) {
  configure_tiles();
  const int64_t steps = a.steps, part = steps * 512, block = 3 * part, kc = 8;
  for (int64_t s0 = 0; s0 < steps; s0 += kc)
    for (int64_t n = n_begin; n < n_end; n += 32)
      for (int64_t m = 0; m < M; m += 32) {
        const bf16* ab = a.data.data() + (m / 16) * block + s0 * 512;
        const bf16* wb = w.data.data() + (n / 16) * block + s0 * 512;
        kernel_32x32(ab, ab + block, wb, wb + block, part, std::min(kc, steps - s0), C + m * N + n, N, s0 > 0);
      }
  _tile_release();
}
#endif

}  // namespace

int main(int argc, char** argv) {
  const int64_t M = argc > 3 ? std::atoll(argv[1]) : 1024, N = argc > 3 ? std::atoll(argv[2]) : 2560,
                K = argc > 3 ? std::atoll(argv[3]) : 320;
  if (M <= 0 || N <= 0 || K <= 0 || M % 32 || N % 32) {
    std::fprintf(stderr, "amx_probe_bench: M and N must be positive multiples of 32, K positive\n");
    return 2;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> A(static_cast<size_t>(M * K)), W(static_cast<size_t>(N * K)), C(static_cast<size_t>(M * N));
  for (float& x : A) x = normal(rng);
  for (float& x : W) x = 0.05f * normal(rng);
  const double flops = 2.0 * M * N * K;
  const int threads = omp_get_max_threads();
  std::printf("shape M=%lld N=%lld K=%lld, %d threads\n", static_cast<long long>(M), static_cast<long long>(N),
              static_cast<long long>(K), threads);

  // Every 7th column's exact value, for the error of each product.
  auto rel_rms_error = [&](const std::vector<float>& c) {
    double err = 0, ref = 0;
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; n += 7) {
        double exact = 0;
        for (int64_t k = 0; k < K; ++k) exact += static_cast<double>(A[m * K + k]) * W[n * K + k];
        err += (c[m * N + n] - exact) * (c[m * N + n] - exact), ref += exact * exact;
      }
    return std::sqrt(err / ref);
  };
  // Our float32 product as the backend runs it (the tiled parallel driver, W packed per call).
  sdmpi::cpu::GemmProblem problem;
  problem.M = M, problem.N = N, problem.K = K, problem.A = A.data(), problem.lda = K, problem.W = W.data();
  problem.C = C.data(), problem.ldc = N;
  for (int t : {1, threads}) {
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      sdmpi::cpu::gemm_nt_parallel(problem, t);
      best = std::min(best, seconds_since(t0));
    }
    std::printf("float32 built-in GEMM (%s), %d thread(s): %.2f ms, %.1f GFLOP/s, rel RMS error %.3g\n",
                sdmpi::cpu::simd_isa_name(), t, best * 1e3, flops / best / 1e9, rel_rms_error(C));
    if (t == threads) break;
  }

#ifdef SDMPI_AMX_PROBE
  if (!amx_usable()) {
    std::printf("AMX-BF16: not on this CPU, or the kernel refused the tile state\n");
    return 0;
  }
  for (int t : {1, threads}) {
    std::vector<double> rate(static_cast<size_t>(t));
#pragma omp parallel num_threads(t)
    rate[static_cast<size_t>(omp_get_thread_num())] = tile_peak(20'000'000 / t);
    double lowest = rate[0];
    for (double r : rate) lowest = std::min(lowest, r);
    std::printf("TDPBF16PS peak, %d thread(s): %.0f GFLOP/s per thread (bf16x6 ceiling %.0f float32-equivalent)\n",
                t, lowest / 1e9, lowest / 6e9);
    if (t == threads) break;
  }
  const Packed a = pack(A.data(), M, K, false), w = pack(W.data(), N, K, true);
  for (int t : {1, threads}) {
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(t)
      {
        const int64_t i = omp_get_thread_num(), panels = N / 32;
        bf16x6_gemm(a, w, M, N, C.data(), panels * i / t * 32, panels * (i + 1) / t * 32);
      }
      best = std::min(best, seconds_since(t0));
    }
    std::printf("bf16x6 AMX product, %d thread(s): %.2f ms, %.1f float32-equivalent GFLOP/s, rel RMS error %.3g\n", t,
                best * 1e3, flops / best / 1e9, rel_rms_error(C));
    if (t == threads) break;
  }
#else
  std::printf("AMX-BF16: probe not built for this compiler or platform\n");
#endif
  return 0;
}
