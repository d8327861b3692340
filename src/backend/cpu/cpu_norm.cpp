// GroupNorm (+SiLU) and LayerNorm of the CPU backend, statistics in double.
//
// GroupNorm on channels-last data: a group's channels are interleaved with the other groups' at
// every pixel, so one pass gathers per-channel sums and sums of squares (double, vectorised across
// channels) over fixed blocks of pixels; the blocks are combined in order, channels into groups,
// and each (item, channel) gets scale = γ·rstd and shift = β − mean·scale. The output is
// x·scale + shift evaluated in double and rounded once, then SiLU in float as torch applies it
// after the norm. The block size depends on nothing but the shape, so the sums are added in the
// same order whatever the thread count; items never mix.
//
// LayerNorm: per row, sums in double, y = ((x − mean)·rstd·γ + β) in double, rounded once.
// Both use the biased variance E[x²] − mean² (clamped at 0), like torch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_simd.h"

namespace sdmpi::cpu {

namespace {

constexpr int64_t kPixelBlock = 256;

struct SiluInPlace {
  template <int W> SDMPI_SIMD_INLINE static void run(float* y, int64_t n) {
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      auto v = vload<W>(y + i);
      vstore<W>(y + i, v / (1.0f + vexp<W>(-v)));
    }
    if (i < n) {
      float tmp[W] = {};
      std::memcpy(tmp, y + i, static_cast<size_t>(n - i) * sizeof(float));
      auto v = vload<W>(tmp);
      vstore<W>(tmp, v / (1.0f + vexp<W>(-v)));
      std::memcpy(y + i, tmp, static_cast<size_t>(n - i) * sizeof(float));
    }
  }
};

// Per-channel sums and sums of squares (double) of `pixels` rows of C floats (row stride C), added
// to s[c] and q[c] pixel by pixel in order: W channels at a time in registers, then the channels
// past the last full vector one by one with the same operations, so every channel's two chains
// are the scalar loop's whatever W is. (Compiled for plain x86-64 the scalar loop ran two doubles
// per instruction: the VAE's 128-channel GroupNorms at 256² took 11 ms each.)
struct ChannelSums {
  template <int W> SDMPI_SIMD_INLINE static void run(const float* x, int64_t pixels, int64_t C, double* s, double* q) {
    using D = typename DoubleVec<W>::d;
    int64_t c = 0;
    for (; c + W <= C; c += W) {
      D sv, qv;
      std::memcpy(&sv, s + c, sizeof sv);
      std::memcpy(&qv, q + c, sizeof qv);
      for (int64_t p = 0; p < pixels; ++p) {
        const D v = __builtin_convertvector(vload<W>(x + p * C + c), D);
        sv = sv + v;
        qv = qv + v * v;
      }
      std::memcpy(s + c, &sv, sizeof sv);
      std::memcpy(q + c, &qv, sizeof qv);
    }
    for (; c < C; ++c)
      for (int64_t p = 0; p < pixels; ++p) {
        const double v = x[p * C + c];
        s[c] += v;
        q[c] += v * v;
      }
  }
};

// out = float(in·scale + shift) per channel, in double (rounded once), for `pixels` rows of C.
struct ChannelAffine {
  template <int W>
  SDMPI_SIMD_INLINE static void run(const float* in, float* out, int64_t pixels, int64_t C, const double* scale,
                                    const double* shift) {
    using D = typename DoubleVec<W>::d;
    for (int64_t p = 0; p < pixels; ++p) {
      const float* row = in + p * C;
      float* dst = out + p * C;
      int64_t c = 0;
      for (; c + W <= C; c += W) {
        D sc, sh;
        std::memcpy(&sc, scale + c, sizeof sc);
        std::memcpy(&sh, shift + c, sizeof sh);
        const D v = __builtin_convertvector(vload<W>(row + c), D) * sc + sh;
        vstore<W>(dst + c, __builtin_convertvector(v, typename Vec<W>::f));
      }
      for (; c < C; ++c) dst[c] = static_cast<float>(row[c] * scale[c] + shift[c]);
    }
  }
};

// One row of C floats: the sum and the sum of squares in double over 16 fixed lanes (element c in
// lane c % 16, the lanes then combined in a fixed tree), so every instruction set adds the same
// numbers in the same order; then out = float((x - mean)·rstd·gamma + beta) in double, one rounding
// per operation. (A serial double chain per row, compiled for plain x86-64, had cost 0.9 ms for the
// UNet's [2, 1024, 320] LayerNorm: 48 of them a step at 256².)
struct LayerNormRow {
  template <int W>
  SDMPI_SIMD_INLINE static void run(const float* in, float* out, int64_t C, const float* gamma, const float* beta,
                                    float eps) {
    using D = typename DoubleVec<W>::d;
    constexpr int kParts = 16 / W;  // vectors of W lanes per 16 lanes
    double lane_s[16] = {}, lane_q[16] = {};
    int64_t c = 0;
    if (C >= 16) {
      D s[kParts], q[kParts];
      for (int p = 0; p < kParts; ++p) s[p] = q[p] = D{};
      for (; c + 16 <= C; c += 16)
        for (int p = 0; p < kParts; ++p) {
          const D v = __builtin_convertvector(vload<W>(in + c + p * W), D);
          s[p] += v;
          q[p] += v * v;
        }
      for (int p = 0; p < kParts; ++p) {
        std::memcpy(lane_s + p * W, &s[p], sizeof s[p]);
        std::memcpy(lane_q + p * W, &q[p], sizeof q[p]);
      }
    }
    for (int l = 0; c < C; ++c, ++l) {
      const double v = in[c];
      lane_s[l] += v;
      lane_q[l] += v * v;
    }
    const auto combine = [](double* lane) {
      for (int l = 0; l < 8; ++l) lane[l] += lane[l + 8];
      for (int l = 0; l < 4; ++l) lane[l] += lane[l + 4];
      return (lane[0] + lane[2]) + (lane[1] + lane[3]);
    };
    const double n = static_cast<double>(C);
    const double mean = combine(lane_s) / n;
    const double var = std::max(combine(lane_q) / n - mean * mean, 0.0);
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    D mv, rv;
    for (int i = 0; i < W; ++i) mv[i] = mean, rv[i] = rstd;
    c = 0;
    for (; c + W <= C; c += W) {
      const D v = __builtin_convertvector(vload<W>(in + c), D);
      const D g = __builtin_convertvector(vload<W>(gamma + c), D), b = __builtin_convertvector(vload<W>(beta + c), D);
      vstore<W>(out + c, __builtin_convertvector((v - mv) * rv * g + b, typename Vec<W>::f));
    }
    for (; c < C; ++c)
      out[c] = static_cast<float>((static_cast<double>(in[c]) - mean) * rstd * gamma[c] + beta[c]);
  }
};

}  // namespace

void group_norm_nhwc(const float* x, int64_t B, int64_t HW, int64_t C, int64_t groups,
                     const float* gamma, const float* beta, float eps, bool silu, float* y, int threads) {
  const int64_t blocks = std::max<int64_t>(1, (HW + kPixelBlock - 1) / kPixelBlock);
  const int64_t tasks = B * blocks;
  // Per (item, block): C sums then C sums of squares.
  std::vector<double> partial(static_cast<size_t>(tasks * 2 * C), 0.0);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    int64_t b = t / blocks, blk = t % blocks;
    int64_t p0 = blk * kPixelBlock, p1 = std::min(HW, p0 + kPixelBlock);
    double* s = partial.data() + t * 2 * C;
    simd_dispatch<ChannelSums>(x + (b * HW + p0) * C, p1 - p0, C, s, s + C);
  }

  // Per (item, channel) affine coefficients, serial and in a fixed order.
  const int64_t cg = C / groups;
  const double count = static_cast<double>(cg) * static_cast<double>(HW);
  std::vector<double> scale(static_cast<size_t>(B * C)), shift(static_cast<size_t>(B * C));
  std::vector<double> ch_sum(static_cast<size_t>(C)), ch_sq(static_cast<size_t>(C));
  for (int64_t b = 0; b < B; ++b) {
    std::fill(ch_sum.begin(), ch_sum.end(), 0.0);
    std::fill(ch_sq.begin(), ch_sq.end(), 0.0);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const double* s = partial.data() + (b * blocks + blk) * 2 * C;
      for (int64_t c = 0; c < C; ++c) {
        ch_sum[static_cast<size_t>(c)] += s[c];
        ch_sq[static_cast<size_t>(c)] += s[C + c];
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      double sum = 0.0, sq = 0.0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
        sum += ch_sum[static_cast<size_t>(c)];
        sq += ch_sq[static_cast<size_t>(c)];
      }
      double mean = sum / count;
      double var = std::max(sq / count - mean * mean, 0.0);
      double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
        double sc = static_cast<double>(gamma[c]) * rstd;
        scale[static_cast<size_t>(b * C + c)] = sc;
        shift[static_cast<size_t>(b * C + c)] = static_cast<double>(beta[c]) - mean * sc;
      }
    }
  }

#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && tasks > 1)
  for (int64_t t = 0; t < tasks; ++t) {
    int64_t b = t / blocks, blk = t % blocks;
    int64_t p0 = blk * kPixelBlock, p1 = std::min(HW, p0 + kPixelBlock);
    const double* sc = scale.data() + b * C;
    const double* sh = shift.data() + b * C;
    simd_dispatch<ChannelAffine>(x + (b * HW + p0) * C, y + (b * HW + p0) * C, p1 - p0, C, sc, sh);
    if (silu) simd_dispatch<SiluInPlace>(y + (b * HW + p0) * C, (p1 - p0) * C);
  }
}

void layer_norm_rows(const float* x, int64_t rows, int64_t C, const float* gamma, const float* beta,
                     float eps, float* y, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && rows * C > 16384)
  for (int64_t r = 0; r < rows; ++r) simd_dispatch<LayerNormRow>(x + r * C, y + r * C, C, gamma, beta, eps);
}

}  // namespace sdmpi::cpu
