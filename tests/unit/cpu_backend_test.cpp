// The CPU backend, op by op:
//   - against naive references written here (double accumulation, the formulas of
//     docs/reference/sd15-semantics.md) on random inputs with odd shapes, relative error ≤ 1e-5;
//   - batch invariance: an item's result is bit-identical alone and inside a batch of 3 with other
//     neighbours, and with 1, 2 or 3 threads;
//   - against PyTorch float32 outputs (tests/data/golden/ops, tools/golden/make_ops_golden.py):
//     within 1e-5, and bit-exact for the elementwise arithmetic;
//   - argument checking: bad shapes are one-line errors, never crashes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_memory.h"
#include "backend/cpu/cpu_simd.h"
#include "sdmpi/backend.h"
#include "sdmpi/dtype.h"
#include "sdmpi/error.h"

using namespace sdmpi;

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

Vec randn(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Vec v(n);
  for (float& x : v) x = dist(gen) * scale + offset;
  return v;
}

Backend& backend(int threads = 2) {
  static std::unique_ptr<Backend> backends[4];
  if (!backends[threads]) backends[threads] = make_cpu_backend(threads);
  return *backends[threads];
}

Tensor tensor(const Vec& v, const Shape& s, int threads = 2) { return backend(threads).from_host(v.data(), s); }
Vec host(const Tensor& t) { return backend().to_host(t); }

// Every element: |got − ref| ≤ rtol·(|ref| + rms(ref)). The rms term keeps elements that cancel
// to nearly zero (a dot product of random vectors) from demanding more than float can give.
void expect_close(const Vec& got, const DVec& ref, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double ss = 0.0;
  for (double r : ref) ss += r * r;
  double rms = ref.empty() ? 0.0 : std::sqrt(ss / static_cast<double>(ref.size()));
  size_t worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    double ratio = err / (std::fabs(ref[i]) + rms + 1e-30);
    if (!(ratio <= worst_ratio)) {  // also catches NaN
      worst_ratio = ratio;
      worst = i;
    }
  }
  EXPECT_LE(worst_ratio, rtol) << what << ": element " << worst << " is " << got[worst] << ", reference "
                               << ref[worst] << " (rms " << rms << ")";
}

void expect_close(const Vec& got, const Vec& ref, double rtol, const std::string& what) {
  expect_close(got, DVec(ref.begin(), ref.end()), rtol, what);
}

::testing::AssertionResult same_bits(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (float_bits(a[i]) != float_bits(b[i]))
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i];
  return ::testing::AssertionSuccess();
}

// ---- naive references ----------------------------------------------------------------------------

DVec ref_linear(const Vec& x, int64_t rows, int64_t K, const Vec& w, int64_t N, const Vec* bias,
                const Vec* res) {
  DVec y(static_cast<size_t>(rows * N));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[r * K + k]) * w[n * K + k];
      if (bias) acc += (*bias)[n];
      if (res) acc += (*res)[r * N + n];
      y[r * N + n] = acc;
    }
  return y;
}

// NHWC input, OHWI weights.
DVec ref_conv(const Vec& x, int64_t B, int64_t H, int64_t W, int64_t Cin, const Vec& w, int64_t Cout,
              int64_t k, int stride, int pad, const Vec* bias, const Vec* res, int64_t* Ho_out,
              int64_t* Wo_out) {
  int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1;
  *Ho_out = Ho;
  *Wo_out = Wo;
  DVec y(static_cast<size_t>(B * Ho * Wo * Cout));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox)
        for (int64_t o = 0; o < Cout; ++o) {
          double acc = 0.0;
          for (int64_t ky = 0; ky < k; ++ky)
            for (int64_t kx = 0; kx < k; ++kx) {
              int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              for (int64_t c = 0; c < Cin; ++c)
                acc += static_cast<double>(x[((b * H + iy) * W + ix) * Cin + c]) *
                       w[((o * k + ky) * k + kx) * Cin + c];
            }
          int64_t idx = ((b * Ho + oy) * Wo + ox) * Cout + o;
          if (bias) acc += (*bias)[o];
          if (res) acc += (*res)[idx];
          y[idx] = acc;
        }
  return y;
}

double silu_d(double x) { return x / (1.0 + std::exp(-x)); }
double gelu_d(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }
double quick_gelu_d(double x) { return x / (1.0 + std::exp(-1.702 * x)); }

DVec ref_group_norm(const Vec& x, int64_t B, int64_t HW, int64_t C, int64_t G, const Vec& gamma,
                    const Vec& beta, double eps, bool silu) {
  DVec y(x.size());
  int64_t cg = C / G;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < G; ++g) {
      double n = static_cast<double>(HW * cg), mean = 0.0, var = 0.0;
      for (int64_t p = 0; p < HW; ++p)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) mean += x[(b * HW + p) * C + c];
      mean /= n;
      for (int64_t p = 0; p < HW; ++p)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          double d = x[(b * HW + p) * C + c] - mean;
          var += d * d;
        }
      var /= n;
      for (int64_t p = 0; p < HW; ++p)
        for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
          size_t i = static_cast<size_t>((b * HW + p) * C + c);
          double v = (x[i] - mean) / std::sqrt(var + eps) * gamma[c] + beta[c];
          y[i] = silu ? silu_d(v) : v;
        }
    }
  return y;
}

DVec ref_layer_norm(const Vec& x, int64_t rows, int64_t C, const Vec& gamma, const Vec& beta, double eps) {
  DVec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t c = 0; c < C; ++c) mean += x[r * C + c];
    mean /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) var += (x[r * C + c] - mean) * (x[r * C + c] - mean);
    var /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c)
      y[r * C + c] = (x[r * C + c] - mean) / std::sqrt(var + eps) * gamma[c] + beta[c];
  }
  return y;
}

DVec ref_attention(const Vec& q, const Vec& k, const Vec& v, int64_t B, int64_t Nq, int64_t Nk,
                   int64_t heads, bool causal) {
  int64_t C = static_cast<int64_t>(q.size()) / (B * Nq), d = C / heads;
  DVec out(q.size());
  std::vector<double> s(static_cast<size_t>(Nk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < Nq; ++i) {
        double m = -INFINITY;
        for (int64_t j = 0; j < Nk; ++j) {
          double acc = 0.0;
          for (int64_t t = 0; t < d; ++t)
            acc += static_cast<double>(q[(b * Nq + i) * C + h * d + t]) * k[(b * Nk + j) * C + h * d + t];
          s[j] = (causal && j > i) ? -INFINITY : acc / std::sqrt(static_cast<double>(d));
          m = std::max(m, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < Nk; ++j) sum += (s[j] = std::exp(s[j] - m));
        for (int64_t t = 0; t < d; ++t) {
          double acc = 0.0;
          for (int64_t j = 0; j < Nk; ++j) acc += s[j] * v[(b * Nk + j) * C + h * d + t];
          out[(b * Nq + i) * C + h * d + t] = acc / sum;
        }
      }
  return out;
}

// torch's nearest index, written out again here: floor(dst * (float(in) / out)), capped.
int64_t ref_nearest(int64_t dst, int64_t in, int64_t out) {
  float scale = static_cast<float>(in) / static_cast<float>(out);
  return std::min<int64_t>(static_cast<int64_t>(std::floor(static_cast<float>(dst) * scale)), in - 1);
}

}  // namespace

// ================================ ops against naive references ===================================

TEST(CpuOps, LinearMatchesNaive) {
  struct Case { Shape x; int64_t N; bool bias, res; };
  for (const Case& c : {Case{{3, 7, 37}, 29, true, true}, Case{{1, 5, 13}, 3, false, false},
                        Case{{4, 19}, 11, true, false}, Case{{2, 300, 65}, 130, true, true},
                        Case{{1, 1, 1280}, 1280, true, false}, Case{{37}, 5, false, true}}) {
    int64_t K = c.x.back(), rows = shape_numel(c.x) / K;
    Vec x = randn(static_cast<size_t>(rows * K), 1), w = randn(static_cast<size_t>(c.N * K), 2, 0.2f);
    Vec b = randn(static_cast<size_t>(c.N), 3), r = randn(static_cast<size_t>(rows * c.N), 4);
    Shape ys = c.x;
    ys.back() = c.N;
    Tensor tb = tensor(b, {c.N}), tr = tensor(r, ys);
    Tensor y = backend().linear(tensor(x, c.x), tensor(w, {c.N, K}), c.bias ? &tb : nullptr, c.res ? &tr : nullptr);
    ASSERT_EQ(y.shape(), ys);
    expect_close(host(y), ref_linear(x, rows, K, w, c.N, c.bias ? &b : nullptr, c.res ? &r : nullptr), 1e-5,
                 "linear " + shape_str(c.x));
  }
}

TEST(CpuOps, Conv2dMatchesNaive) {
  struct Case { int64_t B, H, W, Cin, Cout, k; int stride, pad; bool bias, res; };
  for (const Case& c : {Case{1, 7, 9, 5, 6, 3, 1, 1, true, false}, Case{3, 9, 7, 3, 13, 3, 2, 1, true, false},
                        Case{2, 5, 6, 12, 7, 1, 1, 0, true, true}, Case{1, 6, 5, 4, 3, 1, 2, 0, false, false},
                        Case{1, 17, 19, 11, 20, 3, 1, 1, true, true}, Case{1, 23, 25, 9, 70, 3, 1, 1, true, false},
                        Case{2, 8, 8, 4, 5, 3, 1, 0, false, false},
                        Case{2, 6, 5, 7, 150, 3, 1, 1, true, true},    // columns cut: patches gathered up front
                        Case{1, 9, 8, 16, 200, 3, 2, 1, true, false}}) {
    Vec x = randn(static_cast<size_t>(c.B * c.H * c.W * c.Cin), 5);
    Vec w = randn(static_cast<size_t>(c.Cout * c.k * c.k * c.Cin), 6, 0.2f);
    Vec b = randn(static_cast<size_t>(c.Cout), 7);
    int64_t Ho = 0, Wo = 0;
    DVec ref0 = ref_conv(x, c.B, c.H, c.W, c.Cin, w, c.Cout, c.k, c.stride, c.pad, nullptr, nullptr, &Ho, &Wo);
    Vec r = randn(static_cast<size_t>(c.B * Ho * Wo * c.Cout), 8);
    DVec ref = ref_conv(x, c.B, c.H, c.W, c.Cin, w, c.Cout, c.k, c.stride, c.pad, c.bias ? &b : nullptr,
                        c.res ? &r : nullptr, &Ho, &Wo);
    Tensor tb = tensor(b, {c.Cout}), tr = tensor(r, {c.B, Ho, Wo, c.Cout});
    Tensor y = backend().conv2d(tensor(x, {c.B, c.H, c.W, c.Cin}), tensor(w, {c.Cout, c.k, c.k, c.Cin}),
                            c.bias ? &tb : nullptr, c.stride, c.pad, c.res ? &tr : nullptr);
    ASSERT_EQ(y.shape(), (Shape{c.B, Ho, Wo, c.Cout}));
    expect_close(host(y), ref, 1e-5,
                 "conv " + std::to_string(c.k) + "x" + std::to_string(c.k) + " s" + std::to_string(c.stride) +
                     " on " + shape_str({c.B, c.H, c.W, c.Cin}));
  }
}

TEST(CpuOps, GroupNormMatchesNaive) {
  struct Case { int64_t B, HW, C, G; float eps; bool silu; float offset; };
  for (const Case& c : {Case{3, 35, 40, 8, 1e-5f, true, 0.0f}, Case{1, 33, 96, 32, 1e-6f, false, 5.0f},
                        Case{2, 323, 24, 4, 1e-5f, true, -3.0f}, Case{1, 1, 64, 32, 1e-5f, false, 0.0f},
                        Case{2, 600, 6, 3, 1e-6f, true, 100.0f}}) {
    Vec x = randn(static_cast<size_t>(c.B * c.HW * c.C), 9, 2.0f, c.offset);
    Vec g = randn(static_cast<size_t>(c.C), 10, 0.5f, 1.0f), b = randn(static_cast<size_t>(c.C), 11, 0.3f);
    Tensor y = backend().group_norm(tensor(x, {c.B, c.HW, c.C}), static_cast<int>(c.G), tensor(g, {c.C}),
                                tensor(b, {c.C}), c.eps, c.silu);
    expect_close(host(y), ref_group_norm(x, c.B, c.HW, c.C, c.G, g, b, c.eps, c.silu), 1e-5,
                 "group_norm " + shape_str({c.B, c.HW, c.C}) + " groups " + std::to_string(c.G));
  }
  // Rank 4 (NHWC) gives the same as the token view.
  Vec x = randn(2 * 5 * 3 * 32, 12);
  Vec g = randn(32, 13), b = randn(32, 14);
  Tensor y4 = backend().group_norm(tensor(x, {2, 5, 3, 32}), 8, tensor(g, {32}), tensor(b, {32}), 1e-6f, true);
  EXPECT_EQ(y4.shape(), (Shape{2, 5, 3, 32}));
  expect_close(host(y4), ref_group_norm(x, 2, 15, 32, 8, g, b, 1e-6, true), 1e-5, "group_norm NHWC");
}

TEST(CpuOps, LayerNormMatchesNaive) {
  for (const Shape& s : {Shape{3, 11, 77}, Shape{2, 1280}, Shape{1, 4, 320}, Shape{5, 3}}) {
    int64_t C = s.back(), rows = shape_numel(s) / C;
    Vec x = randn(static_cast<size_t>(shape_numel(s)), 15, 1.5f, 2.0f);
    Vec g = randn(static_cast<size_t>(C), 16, 0.5f, 1.0f), b = randn(static_cast<size_t>(C), 17);
    Tensor y = backend().layer_norm(tensor(x, s), tensor(g, {C}), tensor(b, {C}), 1e-5f);
    expect_close(host(y), ref_layer_norm(x, rows, C, g, b, 1e-5), 1e-5, "layer_norm " + shape_str(s));
  }
}

TEST(CpuOps, AttentionMatchesNaive) {
  struct Case { int64_t B, Nq, Nk, heads, d; bool causal; };
  for (const Case& c : {Case{1, 77, 77, 2, 64, true}, Case{3, 13, 7, 3, 40, false}, Case{2, 300, 300, 1, 24, false},
                        Case{1, 5, 9, 2, 8, true}, Case{1, 100, 5000, 1, 8, false}, Case{2, 33, 77, 8, 20, false},
                        Case{1, 9, 4, 1, 16, true},
                        // several key blocks (256 ours, 512 OpenBLAS's: the online softmax rescales),
                        // 64- and 256-row query blocks, a causal mask that skips whole key blocks,
                        // partial last blocks and query panels
                        Case{1, 1100, 1100, 1, 8, true}, Case{2, 600, 1300, 16, 8, false}}) {
    int64_t C = c.heads * c.d;
    Vec q = randn(static_cast<size_t>(c.B * c.Nq * C), 18, 1.5f), k = randn(static_cast<size_t>(c.B * c.Nk * C), 19);
    Vec v = randn(static_cast<size_t>(c.B * c.Nk * C), 20);
    Tensor y = backend().attention(tensor(q, {c.B, c.Nq, C}), tensor(k, {c.B, c.Nk, C}), tensor(v, {c.B, c.Nk, C}),
                               static_cast<int>(c.heads), c.causal);
    expect_close(host(y), ref_attention(q, k, v, c.B, c.Nq, c.Nk, c.heads, c.causal), 1e-5,
                 "attention Nq " + std::to_string(c.Nq) + " Nk " + std::to_string(c.Nk) + " heads " +
                     std::to_string(c.heads) + (c.causal ? " causal" : ""));
  }
}

TEST(CpuOps, ActivationsMatchNaive) {
  Vec x = randn(1001, 21, 4.0f);
  for (float e : {0.0f, -0.0f, 1e-30f, -1e-30f, 30.0f, -30.0f, 88.0f, -88.0f, 100.0f, -100.0f, 0.5f, -0.5f})
    x.push_back(e);
  struct Case { Activation act; double (*f)(double); const char* name; };
  for (const Case& c : {Case{Activation::SiLU, silu_d, "silu"}, Case{Activation::GELU, gelu_d, "gelu"},
                        Case{Activation::QuickGELU, quick_gelu_d, "quick_gelu"}}) {
    Vec y = host(backend().activation(tensor(x, {static_cast<int64_t>(x.size())}), c.act));
    DVec ref(x.size());
    for (size_t i = 0; i < x.size(); ++i) ref[i] = c.f(x[i]);
    expect_close(y, ref, 1e-5, c.name);
    // Element by element too: relative 1e-5 with an absolute floor of 1e-6 (the tails).
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_NEAR(y[i], ref[i], 1e-5 * std::fabs(ref[i]) + 1e-6) << c.name << " of " << x[i];
  }
}

TEST(CpuOps, GegluMatchesNaive) {
  for (const Shape& s : {Shape{2, 5, 2 * 37}, Shape{1, 3, 2 * 1280}, Shape{4, 2}}) {
    int64_t C = s.back() / 2, rows = shape_numel(s) / (2 * C);
    Vec x = randn(static_cast<size_t>(shape_numel(s)), 22, 2.0f);
    Tensor y = backend().geglu(tensor(x, s));
    Shape ys = s;
    ys.back() = C;
    ASSERT_EQ(y.shape(), ys);
    DVec ref(static_cast<size_t>(rows * C));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) ref[r * C + c] = x[r * 2 * C + c] * gelu_d(x[r * 2 * C + C + c]);
    expect_close(host(y), ref, 1e-5, "geglu " + shape_str(s));
  }
}

// The fused linear_geglu gives the bits of linear then geglu (fused on our GEMM; on OpenBLAS the
// backend runs the two ops): rows that take the few-row
// (transposed) and the packed GEMM paths, items merged or not, odd C (vector tails), with and
// without bias, a zero gate (gelu(±0) keeps its sign only without the bias add), 1 and 2 threads.
TEST(CpuOps, LinearGegluIsLinearThenGeglu) {
  struct Case {
    Shape x;
    int64_t C;
  };
  for (const Case& c : {Case{{2, 7, 40}, 37}, Case{{1, 300, 64}, 96}, Case{{3, 5, 33}, 5}, Case{{2, 64, 48}, 1280},
                        Case{{9, 24}, 40}}) {
    const int64_t K = c.x.back();
    Vec xv = randn(static_cast<size_t>(shape_numel(c.x)), 31, 1.0f);
    Vec wv = randn(static_cast<size_t>(2 * c.C * K), 32, 0.2f), bv = randn(static_cast<size_t>(2 * c.C), 33, 0.5f);
    for (size_t i = 0; i < wv.size(); i += 7) wv[i] = 0.0f;
    // A gate row of zero weights: its outputs are exact zeros (gelu(0) = 0).
    std::fill(wv.begin() + static_cast<ptrdiff_t>(c.C * K), wv.begin() + static_cast<ptrdiff_t>(c.C * K + K), -0.0f);
    for (int threads : {1, 2}) {
      Backend& be = backend(threads);
      Tensor x = be.from_host(xv.data(), c.x), w = be.from_host(wv.data(), {2 * c.C, K});
      Tensor b = be.from_host(bv.data(), {2 * c.C});
      for (bool with_bias : {true, false}) {
        const Tensor* bias = with_bias ? &b : nullptr;
        const Vec fused = host(be.linear_geglu(x, w, bias));
        const Vec split = host(be.geglu(be.linear(x, w, bias)));
        ASSERT_EQ(fused.size(), split.size());
        EXPECT_EQ(std::memcmp(fused.data(), split.data(), fused.size() * sizeof(float)), 0)
            << shape_str(c.x) << " C " << c.C << " bias " << with_bias << " threads " << threads;
      }
    }
  }
}

TEST(CpuOps, ElementwiseIsExactFloatArithmetic) {
  Vec a = randn(40011, 23, 3.0f), b = randn(40011, 24, 3.0f);
  Tensor ta = tensor(a, {3, 13337}), tb = tensor(b, {3, 13337});
  const float s = 0.18215f;
  Vec add = host(backend().binary(BinaryOp::Add, ta, tb)), sub = host(backend().binary(BinaryOp::Sub, ta, tb));
  Vec mul = host(backend().binary(BinaryOp::Mul, ta, tb)), dv = host(backend().binary(BinaryOp::Div, ta, tb));
  Vec adds = host(backend().binary_scalar(BinaryOp::Add, ta, s)), rsub = host(backend().binary_scalar(BinaryOp::Sub, ta, s, true));
  Vec divs = host(backend().binary_scalar(BinaryOp::Div, ta, s)), rdiv = host(backend().binary_scalar(BinaryOp::Div, ta, s, true));
  Vec cl = host(backend().clamp(ta, -1.0f, 2.0f));
  for (size_t i = 0; i < a.size(); ++i) {
    volatile float x = a[i], y = b[i];  // plain IEEE single operations
    ASSERT_EQ(float_bits(add[i]), float_bits(x + y));
    ASSERT_EQ(float_bits(sub[i]), float_bits(x - y));
    ASSERT_EQ(float_bits(mul[i]), float_bits(x * y));
    ASSERT_EQ(float_bits(dv[i]), float_bits(x / y));
    ASSERT_EQ(float_bits(adds[i]), float_bits(x + s));
    ASSERT_EQ(float_bits(rsub[i]), float_bits(s - x));
    ASSERT_EQ(float_bits(divs[i]), float_bits(x / s));
    ASSERT_EQ(float_bits(rdiv[i]), float_bits(s / x));
    ASSERT_EQ(cl[i], std::min(2.0f, std::max(-1.0f, a[i])));
  }
  Vec nan_in{NAN, -5.0f, 5.0f};
  Vec nan_out = host(backend().clamp(tensor(nan_in, {3}), 0.0f, 1.0f));
  EXPECT_TRUE(std::isnan(nan_out[0]));  // torch.clamp propagates NaN
  EXPECT_EQ(nan_out[1], 0.0f);
  EXPECT_EQ(nan_out[2], 1.0f);
}

TEST(CpuOps, AddBatchChannel) {
  Vec x = randn(3 * 4 * 5 * 7, 25), t = randn(3 * 7, 26);
  Vec y = host(backend().add_batch_channel(tensor(x, {3, 4, 5, 7}), tensor(t, {3, 7})));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t p = 0; p < 20; ++p)
      for (int64_t c = 0; c < 7; ++c) {
        size_t i = static_cast<size_t>((b * 20 + p) * 7 + c);
        ASSERT_EQ(float_bits(y[i]), float_bits(x[i] + t[b * 7 + c]));
      }
}

TEST(CpuOps, UpsampleNearest) {
  Vec x = randn(2 * 5 * 7 * 3, 27);
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{10, 14}, {8, 12}, {13, 10}, {3, 4}, {5, 7}, {1, 1}, {17, 3}}) {
    Vec y = host(backend().upsample_nearest(tensor(x, {2, 5, 7, 3}), oh, ow));
    ASSERT_EQ(y.size(), static_cast<size_t>(2 * oh * ow * 3));
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t c = 0; c < 3; ++c)
            ASSERT_EQ(y[((b * oh + oy) * ow + ox) * 3 + c],
                      x[((b * 5 + ref_nearest(oy, 5, oh)) * 7 + ref_nearest(ox, 7, ow)) * 3 + c])
                << oh << "x" << ow << " at " << oy << "," << ox;
  }
  // Doubling is exactly in[y/2][x/2].
  for (int64_t d = 0; d < 64; ++d) EXPECT_EQ(cpu::nearest_source_index(d, 32, 64), d / 2);
}

// pad2d against the definition: the input at its offset, zero everywhere else (and a poisoned
// output buffer reused from the pool would show through as non-zero padding).
TEST(CpuOps, Pad2d) {
  Vec x = randn(2 * 5 * 7 * 3, 41);
  struct Pads {
    int top, bottom, left, right;
  };
  for (Pads p : {Pads{0, 1, 0, 1}, Pads{1, 1, 1, 1}, Pads{2, 0, 3, 0}, Pads{0, 0, 0, 0}}) {
    backend().binary_scalar(BinaryOp::Add, tensor(Vec(2 * 8 * 11 * 3, 7.0f), {2, 8, 11, 3}), 1.0f);  // dirty the pool
    const int64_t oh = 5 + p.top + p.bottom, ow = 7 + p.left + p.right;
    Tensor out = backend().pad2d(tensor(x, {2, 5, 7, 3}), p.top, p.bottom, p.left, p.right);
    ASSERT_EQ(out.shape(), (Shape{2, oh, ow, 3}));
    Vec y = host(out);
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox)
          for (int64_t c = 0; c < 3; ++c) {
            const int64_t iy = oy - p.top, ix = ox - p.left;
            const float want = iy >= 0 && iy < 5 && ix >= 0 && ix < 7 ? x[((b * 5 + iy) * 7 + ix) * 3 + c] : 0.0f;
            ASSERT_EQ(y[((b * oh + oy) * ow + ox) * 3 + c], want) << p.top << p.bottom << p.left << p.right;
          }
  }
  EXPECT_THROW(backend().pad2d(tensor(x, {2, 5, 7, 3}), 0, -1, 0, 1), Error);
  EXPECT_THROW(backend().pad2d(tensor(x, {10, 7, 3}), 0, 1, 0, 1), Error);
}

TEST(CpuOps, ConcatEmbeddingCopy) {
  Vec a = randn(2 * 3 * 4, 28), b = randn(2 * 3 * 5, 29);
  Vec y = host(backend().concat_channels(tensor(a, {2, 3, 4}), tensor(b, {2, 3, 5})));
  for (int r = 0; r < 6; ++r)
    for (int c = 0; c < 9; ++c) ASSERT_EQ(y[r * 9 + c], c < 4 ? a[r * 4 + c] : b[r * 5 + c - 4]);

  Vec p0 = randn(1 * 6, 30), p1 = randn(2 * 6, 31);
  Tensor cb = backend().concat_batch({tensor(p0, {1, 2, 3}), tensor(p1, {2, 2, 3})});
  EXPECT_EQ(cb.shape(), (Shape{3, 2, 3}));
  Vec cbh = host(cb);
  EXPECT_TRUE(same_bits(cbh.data(), p0.data(), 6));
  EXPECT_TRUE(same_bits(cbh.data() + 6, p1.data(), 12));

  Vec table = randn(10 * 4, 32);
  Vec e = host(backend().embedding({3, 0, 9, 3}, tensor(table, {10, 4})));
  for (int i = 0; i < 4; ++i) {
    int id = std::vector<int>{3, 0, 9, 3}[static_cast<size_t>(i)];
    EXPECT_TRUE(same_bits(e.data() + i * 4, table.data() + id * 4, 4));
  }
  EXPECT_THROW(backend().embedding({10}, tensor(table, {10, 4})), Error);
  EXPECT_THROW(backend().embedding({-1}, tensor(table, {10, 4})), Error);

  Tensor orig = tensor(a, {2, 3, 4});
  Tensor c = backend().copy(orig);
  EXPECT_NE(c.raw(), orig.raw());
  Vec ch = host(c);
  EXPECT_TRUE(same_bits(ch.data(), a.data(), a.size()));
  // Views: rows of a batch.
  Vec half = host(orig.rows(1, 2));
  EXPECT_TRUE(same_bits(half.data(), a.data() + 12, 12));
}

TEST(CpuOps, UploadWeightConvertsAndPermutes) {
  const int64_t O = 3, I = 4, KH = 2, KW = 3;
  Vec w = randn(static_cast<size_t>(O * I * KH * KW), 33);
  std::vector<uint16_t> w16(w.size()), wbf(w.size());
  for (size_t i = 0; i < w.size(); ++i) {
    w16[i] = float_to_half(w[i]);
    wbf[i] = float_to_bf16(w[i]);
  }
  struct Src { DType dt; const void* data; };
  for (const Src& s : {Src{DType::F32, w.data()}, Src{DType::F16, w16.data()}, Src{DType::BF16, wbf.data()}}) {
    Tensor t = backend().upload_weight({"conv.weight", s.dt, {O, I, KH, KW}, s.data}, WeightKind::Conv);
    ASSERT_EQ(t.shape(), (Shape{O, KH, KW, I}));
    ASSERT_EQ(t.dtype(), DType::F32);
    Vec h = host(t);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i)
        for (int64_t y = 0; y < KH; ++y)
          for (int64_t x = 0; x < KW; ++x) {
            size_t src = static_cast<size_t>(((o * I + i) * KH + y) * KW + x);
            float expect = s.dt == DType::F32 ? w[src] : s.dt == DType::F16 ? half_to_float(w16[src]) : bf16_to_float(wbf[src]);
            ASSERT_EQ(h[static_cast<size_t>(((o * KH + y) * KW + x) * I + i)], expect) << dtype_name(s.dt);
          }
  }
  Tensor lin = backend().upload_weight({"proj.weight", DType::F16, {4, 6}, w16.data()}, WeightKind::Linear);
  EXPECT_EQ(lin.shape(), (Shape{4, 6}));
  EXPECT_EQ(host(lin)[5], half_to_float(w16[5]));
  Tensor lin1x1 = backend().upload_weight({"attn.query.weight", DType::F32, {4, 6, 1, 1}, w.data()}, WeightKind::Linear);
  EXPECT_EQ(lin1x1.shape(), (Shape{4, 6}));
  Tensor vec = backend().upload_weight({"norm.bias", DType::BF16, {5}, wbf.data()}, WeightKind::Vector);
  EXPECT_EQ(host(vec)[4], bf16_to_float(wbf[4]));

  EXPECT_THROW(backend().upload_weight({"c.weight", DType::F32, {3, 4, 2}, w.data()}, WeightKind::Conv), InputError);
  EXPECT_THROW(backend().upload_weight({"l.weight", DType::F32, {3, 4, 2, 1}, w.data()}, WeightKind::Linear), InputError);
  EXPECT_THROW(backend().upload_weight({"n.bias", DType::F32, {3, 4}, w.data()}, WeightKind::Vector), InputError);
  EXPECT_THROW(backend().upload_weight({"e.weight", DType::F32, {3, 4}, nullptr}, WeightKind::Embedding), InputError);
  try {
    backend().upload_weight({"down.0.weight", DType::F32, {3, 4, 2}, w.data()}, WeightKind::Conv);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("down.0.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[3, 4, 2]"), std::string::npos) << e.what();
  }
}

TEST(CpuOps, BadArgumentsAreErrors) {
  Tensor x = tensor(randn(2 * 3 * 4 * 5, 34), {2, 3, 4, 5});
  Tensor w = tensor(randn(6 * 5, 35), {6, 5});
  Tensor v5 = tensor(randn(5, 36), {5}), v6 = tensor(randn(6, 37), {6});
  EXPECT_THROW(backend().linear(x, tensor(randn(6 * 4, 1), {6, 4}), nullptr), Error);  // K mismatch
  EXPECT_THROW(backend().linear(x, w, &v5), Error);                                     // bias size
  EXPECT_THROW(backend().conv2d(x, w, nullptr, 1, 1), Error);                           // weight rank
  EXPECT_THROW(backend().conv2d(x, tensor(randn(6 * 9 * 5, 1), {6, 3, 3, 5}), nullptr, 0, 1), Error);  // stride
  EXPECT_THROW(backend().conv2d(x, tensor(randn(6 * 49 * 5, 1), {6, 7, 7, 5}), nullptr, 1, 0), Error);  // kernel > input
  EXPECT_THROW(backend().group_norm(x, 2, v5, v5, 1e-5f, false), Error);                // 5 % 2
  EXPECT_THROW(backend().group_norm(x, 5, v6, v5, 1e-5f, false), Error);                // gamma size
  EXPECT_THROW(backend().layer_norm(x, v6, v6, 1e-5f), Error);
  Tensor q = tensor(randn(2 * 3 * 8, 1), {2, 3, 8});
  EXPECT_THROW(backend().attention(q, q, q, 3, false), Error);                          // 8 % 3
  EXPECT_THROW(backend().attention(q, tensor(randn(2 * 3 * 4, 1), {2, 3, 4}), q, 2, false), Error);
  EXPECT_THROW(backend().geglu(tensor(randn(7, 1), {7})), Error);
  EXPECT_THROW(backend().binary(BinaryOp::Add, x, q), Error);
  EXPECT_THROW(backend().add_batch_channel(x, v5), Error);
  EXPECT_THROW(backend().upsample_nearest(q, 4, 4), Error);
  EXPECT_THROW(backend().upsample_nearest(x, 0, 4), Error);
  EXPECT_THROW(backend().concat_channels(x, q), Error);
  EXPECT_THROW(backend().concat_batch({}), Error);
  EXPECT_THROW(backend().concat_batch({x, q}), Error);
  EXPECT_THROW(backend().clamp(x, 1.0f, 0.0f), Error);
  Tensor half = backend().empty({2, 3}, DType::F16);
  EXPECT_THROW(backend().activation(half, Activation::SiLU), Error);  // F32 only
  EXPECT_THROW(backend().activation(Tensor(), Activation::SiLU), Error);
  try {
    backend().linear(x, w, &v5);
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("linear"), std::string::npos) << m;
    EXPECT_NE(m.find("bias"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(CpuOps, MemoryAndName) {
  Backend& be = backend();
  EXPECT_EQ(be.device(), Device::CPU);
  EXPECT_EQ(be.compute_dtype(), DType::F32);
  EXPECT_NE(be.name().find("cpu (2 threads"), std::string::npos) << be.name();
  Vec v = randn(10, 38);
  Tensor t = be.from_host(v.data(), {2, 5});
  Vec back = be.to_host(t);
  EXPECT_TRUE(same_bits(back.data(), v.data(), 10));
  Tensor e = be.empty({0, 4});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_TRUE(be.to_host(e).empty());
  std::vector<uint16_t> h{float_to_half(1.5f), float_to_half(-2.0f)};
  Tensor ht = be.empty({2}, DType::F16);
  std::memcpy(ht.raw(), h.data(), 4);
  EXPECT_EQ(be.to_host(ht), (Vec{1.5f, -2.0f}));
}

TEST(CpuMemory, LargeOutputsAreRecycled) {
  auto pool = std::make_shared<cpu::HostBlockPool>(size_t{64} << 20);
  void* first = nullptr;
  {
    Tensor a = pool->tensor({1 << 20});  // 4 MiB
    first = a.raw();
    EXPECT_EQ(pool->cached_bytes(), 0u);
  }
  EXPECT_EQ(pool->cached_bytes(), size_t{4} << 20);
  {
    Tensor b = pool->tensor({(1 << 20) - 1000});  // a little smaller: same block
    EXPECT_EQ(b.raw(), first);
    EXPECT_EQ(pool->cached_bytes(), 0u);
    Tensor c = pool->tensor({1 << 18});  // 1 MiB: too small a fit for nothing cached, new block
    EXPECT_NE(c.raw(), first);
  }
  EXPECT_EQ(pool->cached_bytes(), size_t{5} << 20);
  {
    Tensor big = pool->tensor({4 << 20});  // 16 MiB: the cached 4 MiB block is too small
    EXPECT_NE(big.raw(), first);
  }
  {
    std::vector<Tensor> many;
    for (int i = 0; i < 5; ++i) many.push_back(pool->tensor({4 << 20}));
  }
  EXPECT_LE(pool->cached_bytes(), size_t{64} << 20);  // the cap holds
  Tensor small = pool->tensor({100});
  EXPECT_EQ(small.numel(), 100);
  // Tensors may outlive the backend that made them.
  Tensor kept;
  {
    auto be = make_cpu_backend(1);
    Vec v = randn(1 << 19, 60);
    kept = be->activation(be->from_host(v.data(), {1 << 19}), Activation::SiLU);
  }
  Vec h = host(kept);
  EXPECT_EQ(h.size(), size_t{1} << 19);
}

// ================================= batch and thread invariance ====================================

namespace {

// Runs `op` on each of three items alone, then on the batch of all three in two orders, with 1, 2
// and 3 threads, and checks that every item's result is the same bits everywhere.
// make_input(item_seed, batch) builds the op's batch-major inputs for the given item seeds.
using BatchOp = std::function<Tensor(Backend&, const std::vector<uint32_t>& seeds)>;

void expect_batch_invariant(const BatchOp& op, const std::string& what) {
  const std::vector<uint32_t> seeds{101, 202, 303};
  Tensor full = op(backend(1), seeds);
  const int64_t per_item = full.numel() / 3;
  Vec full_h = host(full);
  for (int threads : {2, 3}) {
    Vec other = host(op(backend(threads), seeds));
    EXPECT_TRUE(same_bits(other.data(), full_h.data(), full_h.size())) << what << ": 1 vs " << threads << " threads";
  }
  for (int i = 0; i < 3; ++i) {
    Vec alone = host(op(backend(2), {seeds[static_cast<size_t>(i)]}));
    ASSERT_EQ(static_cast<int64_t>(alone.size()), per_item) << what;
    EXPECT_TRUE(same_bits(alone.data(), full_h.data() + i * per_item, static_cast<size_t>(per_item)))
        << what << ": item " << i << " alone vs in a batch of 3";
  }
  // Other neighbours and position: item 2 first, between new items.
  Vec mixed = host(op(backend(2), {202, 999, 101}));
  EXPECT_TRUE(same_bits(mixed.data(), full_h.data() + per_item, static_cast<size_t>(per_item)))
      << what << ": item moved to position 0";
  EXPECT_TRUE(same_bits(mixed.data() + 2 * per_item, full_h.data(), static_cast<size_t>(per_item)))
      << what << ": item moved to position 2";
}

Tensor batch_tensor(Backend& be, const std::vector<uint32_t>& seeds, const Shape& item_shape, float scale = 1.0f) {
  Vec all;
  for (uint32_t s : seeds) {
    Vec v = randn(static_cast<size_t>(shape_numel(item_shape)), s, scale);
    all.insert(all.end(), v.begin(), v.end());
  }
  Shape s = item_shape;
  s.insert(s.begin(), static_cast<int64_t>(seeds.size()));
  return be.from_host(all.data(), s);
}

std::vector<uint32_t> shifted(const std::vector<uint32_t>& seeds, uint32_t d) {
  std::vector<uint32_t> r = seeds;
  for (uint32_t& s : r) s += d;
  return r;
}

}  // namespace

TEST(CpuInvariance, Linear) {
  // {40, 40, 12} and {64, 320, 8}: alone these take OpenBLAS's small-matrix kernels, three items
  // together would not, and the two add up differently; so merging items would show here.
  struct Case { int64_t N, K, M; };
  for (const Case& c : {Case{320, 320, 256}, Case{1280, 768, 77}, Case{77, 40, 5}, Case{640, 2560, 300},
                        Case{4, 1280, 3}, Case{40, 40, 12}, Case{64, 320, 8}}) {
    const int64_t N = c.N, K = c.K, M = c.M;  // plain variables: lambdas may capture them
    Vec w = randn(static_cast<size_t>(N * K), 40, 0.05f), b = randn(static_cast<size_t>(N), 41);
    expect_batch_invariant(
        [&](Backend& be, const std::vector<uint32_t>& seeds) {
          Tensor tw = be.from_host(w.data(), {N, K}), tb = be.from_host(b.data(), {N});
          Tensor r = batch_tensor(be, shifted(seeds, 7), {M, N});
          return be.linear(batch_tensor(be, seeds, {M, K}), tw, &tb, &r);
        },
        "linear [B, " + std::to_string(M) + ", " + std::to_string(K) + "] -> " + std::to_string(N));
  }
  // Rank 2: each row is an item (time embeddings [B, 1280]).
  Vec w = randn(1280 * 320, 42, 0.05f);
  expect_batch_invariant(
      [&](Backend& be, const std::vector<uint32_t>& seeds) {
        return be.linear(batch_tensor(be, seeds, {320}), be.from_host(w.data(), {1280, 320}), nullptr);
      },
      "linear [B, 320] -> 1280");
}

TEST(CpuInvariance, Conv2d) {
  struct Case { int64_t H, W, Cin, Cout, k; int stride, pad; };
  for (const Case& c : {Case{16, 16, 64, 64, 3, 1, 1}, Case{17, 15, 32, 48, 3, 2, 1}, Case{16, 16, 96, 40, 1, 1, 0},
                        Case{8, 8, 320, 320, 3, 1, 1}, Case{4, 4, 4, 320, 3, 1, 1}, Case{33, 31, 8, 3, 3, 1, 1}}) {
    Vec w = randn(static_cast<size_t>(c.Cout * c.k * c.k * c.Cin), 43, 0.05f), b = randn(static_cast<size_t>(c.Cout), 44);
    int64_t Ho = (c.H + 2 * c.pad - c.k) / c.stride + 1, Wo = (c.W + 2 * c.pad - c.k) / c.stride + 1;
    expect_batch_invariant(
        [&](Backend& be, const std::vector<uint32_t>& seeds) {
          Tensor tw = be.from_host(w.data(), {c.Cout, c.k, c.k, c.Cin}), tb = be.from_host(b.data(), {c.Cout});
          Tensor r = batch_tensor(be, shifted(seeds, 5), {Ho, Wo, c.Cout});
          return be.conv2d(batch_tensor(be, seeds, {c.H, c.W, c.Cin}), tw, &tb, c.stride, c.pad, &r);
        },
        "conv " + std::to_string(c.k) + "x" + std::to_string(c.k) + " s" + std::to_string(c.stride) + " " +
            shape_str({c.H, c.W, c.Cin}) + " -> " + std::to_string(c.Cout));
  }
}

TEST(CpuInvariance, Norms) {
  struct Case { int64_t HW, C; int G; };
  for (const Case& c : {Case{1024, 320, 32}, Case{35, 40, 8}, Case{700, 24, 4}}) {
    const int64_t HW = c.HW, C = c.C;
    const int G = c.G;
    Vec g = randn(static_cast<size_t>(C), 45, 0.5f, 1.0f), b = randn(static_cast<size_t>(C), 46);
    expect_batch_invariant(
        [&](Backend& be, const std::vector<uint32_t>& seeds) {
          return be.group_norm(batch_tensor(be, seeds, {HW, C}, 3.0f), G, be.from_host(g.data(), {C}),
                               be.from_host(b.data(), {C}), 1e-5f, true);
        },
        "group_norm " + shape_str({HW, C}));
  }
  Vec g = randn(768, 47, 0.5f, 1.0f), b = randn(768, 48);
  expect_batch_invariant(
      [&](Backend& be, const std::vector<uint32_t>& seeds) {
        return be.layer_norm(batch_tensor(be, seeds, {77, 768}), be.from_host(g.data(), {768}),
                             be.from_host(b.data(), {768}), 1e-5f);
      },
      "layer_norm [77, 768]");
}

TEST(CpuInvariance, Attention) {
  struct Case { int64_t Nq, Nk, heads, d; bool causal; };
  for (const Case& c : {Case{77, 77, 12, 64, true}, Case{256, 256, 8, 40, false}, Case{256, 77, 8, 40, false},
                        Case{64, 77, 8, 160, false}, Case{1024, 1024, 1, 64, false}}) {
    int64_t C = c.heads * c.d;
    expect_batch_invariant(
        [&](Backend& be, const std::vector<uint32_t>& seeds) {
          return be.attention(batch_tensor(be, seeds, {c.Nq, C}), batch_tensor(be, shifted(seeds, 1), {c.Nk, C}),
                              batch_tensor(be, shifted(seeds, 2), {c.Nk, C}), static_cast<int>(c.heads), c.causal);
        },
        "attention Nq " + std::to_string(c.Nq) + " Nk " + std::to_string(c.Nk) + " d " + std::to_string(c.d));
  }
}

TEST(CpuInvariance, Elementwise) {
  expect_batch_invariant(
      [](Backend& be, const std::vector<uint32_t>& seeds) {
        return be.geglu(be.activation(batch_tensor(be, seeds, {33, 2 * 641}, 3.0f), Activation::SiLU));
      },
      "silu + geglu");
  expect_batch_invariant(
      [](Backend& be, const std::vector<uint32_t>& seeds) {
        return be.activation(be.activation(batch_tensor(be, seeds, {5, 7, 9}, 3.0f), Activation::GELU),
                             Activation::QuickGELU);
      },
      "gelu + quick_gelu");
}

// ===================================== the matrix product ==========================================

TEST(CpuGemm, BuiltinAndLibraryMatchNaive) {
  struct Case { int64_t M, N, K; bool bt; float alpha, beta; };
  for (const Case& c : {Case{1, 1, 1, true, 1, 0}, Case{7, 13, 29, true, 1, 0}, Case{37, 45, 300, false, 0.5f, 0},
                        Case{150, 70, 513, true, 1, 1}, Case{13, 33, 5, false, 2, 0.5f}, Case{5, 1, 70, true, 1, 0},
                        Case{3, 2050, 9, false, 1, 0}, Case{4, 3, 0, true, 1, 0}}) {
    int64_t lda = c.K + 3, ldb = (c.bt ? c.K : c.N) + 2, ldc = c.N + 5;
    Vec A = randn(static_cast<size_t>(c.M * lda), 50), B = randn(static_cast<size_t>((c.bt ? c.N : c.K) * ldb), 51);
    Vec C0 = randn(static_cast<size_t>(c.M * ldc), 52);
    DVec ref(static_cast<size_t>(c.M * c.N));
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        double acc = 0.0;
        for (int64_t k = 0; k < c.K; ++k) acc += static_cast<double>(A[i * lda + k]) * (c.bt ? B[j * ldb + k] : B[k * ldb + j]);
        ref[i * c.N + j] = c.alpha * acc + (c.beta == 0.0f ? 0.0 : c.beta * C0[i * ldc + j]);
      }
    for (bool builtin : {true, false}) {
      Vec C = C0;
      (builtin ? cpu::gemm_builtin : cpu::gemm)(c.bt, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta,
                                                C.data(), ldc);
      Vec got(static_cast<size_t>(c.M * c.N));
      for (int64_t i = 0; i < c.M; ++i)
        for (int64_t j = 0; j < c.N; ++j) got[i * c.N + j] = C[i * ldc + j];
      expect_close(got, ref, 1e-5, std::string(builtin ? "builtin" : "library") + " gemm " + std::to_string(c.M) +
                                       "x" + std::to_string(c.N) + "x" + std::to_string(c.K));
      for (int64_t i = 0; i < c.M; ++i)  // padding columns untouched
        for (int64_t j = c.N; j < ldc; ++j) ASSERT_EQ(C[i * ldc + j], C0[i * ldc + j]);
    }
  }
}

TEST(CpuGemm, BuiltinRowsDoNotDependOnTheirNeighbours) {
  // Our own kernel adds each element up in one fixed order: row i alone and inside 1..300 rows,
  // at any offset, gives the same bits (this is what makes the no-BLAS build batch-invariant).
  const int64_t N = 77, K = 700;
  Vec A = randn(static_cast<size_t>(300 * K), 53), B = randn(static_cast<size_t>(N * K), 54);
  Vec full(static_cast<size_t>(300 * N));
  cpu::gemm_builtin(true, 300, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, full.data(), N);
  for (int64_t m : {1, 2, 5, 13, 144, 145}) {
    for (int64_t r0 : {0, 1, 150}) {
      Vec part(static_cast<size_t>(m * N));
      cpu::gemm_builtin(true, m, N, K, 1.0f, A.data() + r0 * K, K, B.data(), K, 0.0f, part.data(), N);
      ASSERT_TRUE(same_bits(part.data(), full.data() + r0 * N, part.size())) << m << " rows from " << r0;
    }
  }
}

// Products of at most 256 rows run transposed on AVX-512 (W read in place, Aᵀ packed; see
// gemm_small_rows in cpu_gemm.cpp), those of at most 4 with W transposed in registers
// (gemm_tiny_rows). Weights packed in advance force the packed path: both must give
// the same bits, for items merged or not, A in memory or gathered, every edge of M, N and K, with
// the epilogue seeing every output exactly once, on any thread count. This runs the CPU's widest
// kernel (SDMPI_CPU_ISA=avx2 runs the AVX2 one, 6×16); tests/cli/check_isa.sh compares whole
// images across the instruction sets, and the tiny model's 8×8 layers take this path.
TEST(CpuGemm, FewRowsTransposedPathGivesThePackedBits) {
  if (cpu::gemm_engine() != cpu::GemmEngine::Builtin)
    GTEST_SKIP() << "the GEMM engine here is OpenBLAS (no AVX2, or SDMPI_CPU_GEMM=openblas): no packed weights";
  struct Case { int64_t items, M, N, K; bool gather, own_w; };
  for (const Case& c : {Case{1, 1, 12, 1, false, false}, Case{1, 7, 13, 17, false, false},
                        Case{1, 31, 100, 333, true, false}, Case{2, 16, 1280, 600, true, false},
                        Case{2, 64, 97, 257, false, false}, Case{1, 256, 40, 520, false, false},
                        Case{3, 33, 25, 70, false, true}, Case{1, 257, 50, 64, false, false},
                        Case{2, 100, 37, 1000, true, false},
                        // At most 4 rows (merged): W transposed in registers (gemm_tiny_rows).
                        Case{1, 1, 5, 1, false, false}, Case{1, 2, 1000, 1280, false, false},
                        Case{2, 2, 33, 15, true, false}, Case{4, 1, 257, 40, false, true},
                        Case{1, 4, 20, 17, true, false}, Case{2, 1, 16, 16, false, false}}) {
    const std::string name = std::to_string(c.items) + "x" + std::to_string(c.M) + "x" + std::to_string(c.N) + "x" +
                             std::to_string(c.K) + (c.gather ? " gathered" : "") + (c.own_w ? " own W" : "");
    const int64_t lda = c.K + 3, ldc = c.N + 2, w_items = c.own_w ? c.items : 1;
    Vec A = randn(static_cast<size_t>(c.items * c.M * lda), 60), W = randn(static_cast<size_t>(w_items * c.N * c.K), 61);
    Vec bias = randn(static_cast<size_t>(c.N), 62);
    const int64_t packed_floats = cpu::gemm_packed_floats(c.N, c.K);
    // 64-byte aligned, as the packed panels' loads need.
    std::unique_ptr<float, decltype(&std::free)> packed(
        static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>((w_items * packed_floats * 4 + 63) / 64 * 64))),
        &std::free);
    for (int64_t i = 0; i < w_items; ++i)
      cpu::gemm_pack_weights(W.data() + i * c.N * c.K, c.N, c.K, packed.get() + i * packed_floats);
    auto run = [&](bool prepacked, int threads, std::vector<int>* seen) {
      Vec C(static_cast<size_t>(c.items * c.M * ldc), std::numeric_limits<float>::quiet_NaN());
      cpu::GemmProblem p;
      p.items = c.items, p.M = c.M, p.N = c.N, p.K = c.K;
      p.lda = lda, p.a_item_stride = c.M * lda;
      if (c.gather)
        p.gather_a = [&](int64_t item, int64_t m0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t k = 0; k < kc; ++k) dst[r * kc + k] = A[(item * c.M + m0 + r) * lda + k0 + k];
        };
      else
        p.A = A.data();
      p.W = W.data(), p.w_item_stride = c.own_w ? c.N * c.K : 0;
      if (prepacked) p.W_packed = packed.get();
      p.C = C.data(), p.ldc = ldc, p.c_item_stride = c.M * ldc;
      std::mutex mu;
      p.epilogue = [&](const cpu::GemmTile& t, float* tile) {
        for (int64_t r = 0; r < t.mn; ++r)
          for (int64_t j = 0; j < t.nn; ++j) tile[r * ldc + j] += bias[static_cast<size_t>(t.n0 + j)];
        std::lock_guard<std::mutex> lock(mu);
        for (int64_t r = 0; r < t.mn; ++r)
          for (int64_t j = 0; j < t.nn; ++j) (*seen)[static_cast<size_t>((t.item * c.M + t.m0 + r) * c.N + t.n0 + j)]++;
      };
      cpu::gemm_nt_parallel(p, threads);
      return C;
    };
    std::vector<int> seen_packed(static_cast<size_t>(c.items * c.M * c.N)), seen(seen_packed.size());
    const Vec ref = run(true, 1, &seen_packed);
    for (int threads : {1, 2, 3}) {
      std::fill(seen.begin(), seen.end(), 0);
      const Vec got = run(false, threads, &seen);
      ASSERT_TRUE(same_bits(got.data(), ref.data(), got.size())) << name << ", " << threads << " threads";
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << name << " output " << i;
    }
    for (size_t i = 0; i < seen_packed.size(); ++i) ASSERT_EQ(seen_packed[i], 1) << name << " output " << i;
    // Against the naive product (the padding columns of C stay untouched: NaN).
    for (int64_t it = 0; it < c.items; ++it)
      for (int64_t m = 0; m < c.M; ++m) {
        const float* w = W.data() + (c.own_w ? it * c.N * c.K : 0);
        for (int64_t n = 0; n < c.N; ++n) {
          double acc = bias[static_cast<size_t>(n)];
          for (int64_t k = 0; k < c.K; ++k) acc += static_cast<double>(A[(it * c.M + m) * lda + k]) * w[n * c.K + k];
          const float v = ref[static_cast<size_t>((it * c.M + m) * ldc + n)];
          ASSERT_NEAR(v, acc, 1e-4 * (1.0 + std::sqrt(static_cast<double>(c.K)))) << name;
        }
        for (int64_t n = c.N; n < ldc; ++n) ASSERT_TRUE(std::isnan(ref[static_cast<size_t>((it * c.M + m) * ldc + n)])) << name;
      }
  }
}

// The transposing copy behind the few-rows products' Cᵀ → C and the attention's Vᵀ and Qᵀ panels:
// AVX-512 blocks with masked edges (SDMPI_CPU_ISA=avx2 runs the scalar loop). Every element
// lands where the definition says, and nothing outside the rows × cols region (or between the
// destination's rows) is written: the destination starts poisoned.
TEST(CpuGemm, TransposeCopyMatchesItsDefinition) {
  struct Case { int64_t rows, cols; };
  for (const Case& c : {Case{1, 1}, Case{16, 16}, Case{17, 40}, Case{1024, 40}, Case{32, 80}, Case{5, 33},
                        Case{96, 31}, Case{3, 1}, Case{40, 1024}}) {
    const int64_t lds = c.cols + 5, ldd = c.rows + 3;
    const Vec src = randn(static_cast<size_t>(c.rows * lds), 63);
    Vec dst(static_cast<size_t>(c.cols * ldd), std::numeric_limits<float>::quiet_NaN());
    cpu::transpose_copy(src.data(), lds, c.rows, c.cols, dst.data(), ldd);
    for (int64_t j = 0; j < c.cols; ++j)
      for (int64_t i = 0; i < ldd; ++i) {
        const float v = dst[static_cast<size_t>(j * ldd + i)];
        if (i < c.rows) ASSERT_EQ(v, src[static_cast<size_t>(i * lds + j)]) << c.rows << "x" << c.cols << " at " << i << "," << j;
        else ASSERT_TRUE(std::isnan(v)) << c.rows << "x" << c.cols << ": padding written at " << i << "," << j;
      }
  }
}

TEST(CpuGemm, TileGridDependsOnShapeOnly) {
  auto g = cpu::gemm_tile_grid(1024, 320, 2880);
  EXPECT_EQ(g.mc, 256);
  EXPECT_EQ(g.mt, 4);
  EXPECT_GE(g.mt * g.nt, 8);
  auto small = cpu::gemm_tile_grid(16, 1280, 11520);
  EXPECT_EQ(small.mt, 1);
  EXPECT_GE(small.nt, 8);  // deep layers still spread over threads
  auto one = cpu::gemm_tile_grid(1, 5, 3);
  EXPECT_EQ(one.mt * one.nt, 1);
  EXPECT_FALSE(cpu::gemm_library_name().empty());
}

// SDMPI_CPU_ISA caps the instruction set; it never raises it past the CPU's (tests/cli/check_isa.sh
// runs whole jobs under each cap and checks that the images are the same bits).
TEST(CpuIsa, RequestedCapIsCheckedAgainstTheCpu) {
  using cpu::SimdIsa;
  EXPECT_EQ(cpu::simd_isa_from(nullptr, SimdIsa::Avx512), SimdIsa::Avx512);
  EXPECT_EQ(cpu::simd_isa_from("", SimdIsa::Avx2), SimdIsa::Avx2);
  EXPECT_EQ(cpu::simd_isa_from("avx512", SimdIsa::Avx512), SimdIsa::Avx512);
  EXPECT_EQ(cpu::simd_isa_from("avx2", SimdIsa::Avx512), SimdIsa::Avx2);
  EXPECT_EQ(cpu::simd_isa_from("portable", SimdIsa::Avx512), SimdIsa::Sse2);
  EXPECT_EQ(cpu::simd_isa_from("portable", SimdIsa::Sse2), SimdIsa::Sse2);
  try {
    (void)cpu::simd_isa_from("avx512", SimdIsa::Avx2);
    ADD_FAILURE() << "a cap above the CPU was accepted";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "SDMPI_CPU_ISA=avx512: this CPU has only AVX2");
  }
  try {
    (void)cpu::simd_isa_from("AVX2", SimdIsa::Avx512);
    ADD_FAILURE() << "an unknown value was accepted";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "SDMPI_CPU_ISA=AVX2: expected 'avx512', 'avx2' or 'portable'");
  }
}

TEST(CpuMath, ExpAndErfAreAccurate) {
  std::vector<float> x;
  for (float v = -90.0f; v < 90.0f; v += 0.0137f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-20f, 88.72f, -87.33f, -87.34f, -100.0f, 100.0f}) x.push_back(v);
  Vec y(x.size());
  cpu::exp_floats(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    double r = std::exp(static_cast<double>(x[i]));
    if (r < 1.2e-38) {
      EXPECT_LE(y[i], 1.2e-38f) << x[i];  // subnormal results flush to 0
      continue;
    }
    if (r > 3.4e38) {
      EXPECT_TRUE(std::isinf(y[i])) << x[i];
      continue;
    }
    ASSERT_LE(std::fabs(y[i] - r), 1.0 * std::fabs(r) * 1.19e-7) << "exp(" << x[i] << ")";
  }
  Vec special{INFINITY, -INFINITY, NAN}, out(3);
  cpu::exp_floats(special.data(), out.data(), 3);
  EXPECT_TRUE(std::isinf(out[0]));
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_TRUE(std::isnan(out[2]));

  x.clear();
  for (float v = -6.0f; v < 6.0f; v += 0.00037f) x.push_back(v);
  for (float v : {0.0f, -0.0f, 1e-30f, 0.999999f, 1.0f, 3.99f, 4.0f, 1e10f, -1e10f}) x.push_back(v);
  y.assign(x.size(), 0.0f);
  cpu::erf_floats(x.data(), y.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    double r = std::erf(static_cast<double>(x[i]));
    // 2.5 ulp of the result, and never more than 1.5e-7 absolute.
    double ulp = std::max(std::fabs(r), 1e-38) * 1.19e-7;
    ASSERT_LE(std::fabs(y[i] - r), std::min(2.5 * ulp + 1e-45, 1.5e-7)) << "erf(" << x[i] << ")";
  }
  EXPECT_EQ(float_bits(y[y.size() - 8]), float_bits(-0.0f));  // erf(-0) = -0
}

namespace {

// The vector formulas of cpu_simd.h (exp, erf, and the fused multiply-add they are built on) over n
// floats, n a multiple of 16, compiled inside whichever instruction set's wrapper runs it.
struct TranscendentalsKernel {
  template <int W>
  SDMPI_SIMD_INLINE static void run(const float* x, float* e, float* f, float* m, int64_t n) {
    for (int64_t i = 0; i + W <= n; i += W) {
      const auto v = cpu::vload<W>(x + i);
      cpu::vstore<W>(e + i, cpu::vexp<W>(v));
      cpu::vstore<W>(f + i, cpu::verf<W>(v));
      cpu::vstore<W>(m + i, cpu::vfma<W>(v, v, cpu::vsplat<W>(0.1f)));
    }
  }
};

}  // namespace

// The portable build (the C library's fmaf per lane) and the AVX2 and AVX-512 ones (one vfmadd)
// must round alike: the images may not depend on the instruction set (tests/cli/check_isa.sh checks
// whole jobs; this checks the formulas on inputs picked to expose a multiply and an add left
// unfused, fused in another order, or rounded differently).
TEST(CpuMath, TranscendentalsGiveTheSameBitsOnEveryInstructionSet) {
#if defined(__x86_64__)
  std::mt19937 gen(20261206);
  std::uniform_real_distribution<float> wide(-90.0f, 90.0f), narrow(-4.5f, 4.5f);
  Vec x;
  for (int i = 0; i < 4096; ++i) x.push_back(i % 2 ? wide(gen) : narrow(gen));
  for (float v : {0.0f, -0.0f, 1e-20f, 0.3465735f, -0.3465736f, 1.0f, 3.99f, 4.0f, 88.72f, -87.34f, INFINITY,
                  -INFINITY, NAN})
    x.push_back(v);
  x.resize((x.size() + 15) / 16 * 16, 0.5f);
  const int64_t n = static_cast<int64_t>(x.size());
  Vec e0(x.size()), f0(x.size()), m0(x.size());
  cpu::simd_run_sse2<TranscendentalsKernel>(static_cast<const float*>(x.data()), e0.data(), f0.data(), m0.data(), n);
  for (size_t i = 0; i < x.size(); ++i)  // fused: one rounding, as std::fma
    ASSERT_EQ(float_bits(m0[i]), float_bits(std::fma(x[i], x[i], 0.1f))) << "vfma at x = " << x[i];
  int checked = 0;
  const auto compare = [&](const char* isa, auto run) {
    Vec e(x.size()), f(x.size()), m(x.size());
    run(static_cast<const float*>(x.data()), e.data(), f.data(), m.data(), n);
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(float_bits(e[i]), float_bits(e0[i])) << isa << " exp(" << x[i] << ")";
      ASSERT_EQ(float_bits(f[i]), float_bits(f0[i])) << isa << " erf(" << x[i] << ")";
      ASSERT_EQ(float_bits(m[i]), float_bits(m0[i])) << isa << " fma at " << x[i];
    }
    ++checked;
  };
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    compare("AVX2", cpu::simd_run_avx2<TranscendentalsKernel, const float*, float*, float*, float*, int64_t>);
  if (__builtin_cpu_supports("avx512f"))
    compare("AVX-512", cpu::simd_run_avx512<TranscendentalsKernel, const float*, float*, float*, float*, int64_t>);
  if (checked == 0) GTEST_SKIP() << "this CPU has neither AVX2 with FMA nor AVX-512: only the portable formulas ran";
#else
  GTEST_SKIP() << "x86-64 only";
#endif
}

// ======================================== PyTorch golden ============================================

namespace {

// Minimal float32 safetensors reader for the fixtures (header JSON + little-endian data).
class Golden {
 public:
  Golden() {
    std::string dir = std::string(SDMPI_TEST_DATA) + "/golden/ops/";
    std::ifstream f(dir + "ops.safetensors", std::ios::binary);
    if (!f) return;
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    f.read(header.data(), static_cast<std::streamsize>(n));
    header_ = nlohmann::json::parse(header);
    data_.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    std::ifstream p(dir + "ops.json");
    params_ = nlohmann::json::parse(p)["cases"];
    ok_ = true;
  }
  bool ok() const { return ok_; }
  Vec get(const std::string& name, Shape* shape = nullptr) const {
    const auto& e = header_.at(name);
    EXPECT_EQ(e.at("dtype"), "F32") << name;
    uint64_t b = e.at("data_offsets")[0], end = e.at("data_offsets")[1];
    Vec v((end - b) / 4);
    std::memcpy(v.data(), data_.data() + b, end - b);
    if (shape) *shape = e.at("shape").get<Shape>();
    return v;
  }
  Tensor tensor(const std::string& name) const {
    Shape s;
    Vec v = get(name, &s);
    return backend().from_host(v.data(), s);
  }
  const nlohmann::json& params(const std::string& c) const { return params_.at(c); }

 private:
  bool ok_ = false;
  nlohmann::json header_, params_;
  std::string data_;
};

const Golden& golden() {
  static Golden g;
  return g;
}

Tensor golden_conv_weight(const std::string& name) {
  Shape s;
  Vec w = golden().get(name, &s);
  return backend().upload_weight({name, DType::F32, s, w.data()}, WeightKind::Conv);
}

void expect_bit_exact(const Tensor& got, const std::string& name) {
  Vec g = host(got), r = golden().get(name);
  ASSERT_EQ(g.size(), r.size()) << name;
  EXPECT_TRUE(same_bits(g.data(), r.data(), g.size())) << name << " differs from torch";
}

}  // namespace

class GoldenOps : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(golden().ok()) << "missing tests/data/golden/ops (tools/golden/make_ops_golden.py)"; }
  const Golden& g() { return golden(); }
};

TEST_F(GoldenOps, GroupNormAndSilu) {
  for (const char* c : {"gn_silu", "gn_plain", "gn_vae"}) {
    const auto& p = g().params(c);
    std::string n = c;
    Tensor y = backend().group_norm(g().tensor(n + ".x"), p["groups"].get<int>(), g().tensor(n + ".gamma"),
                                g().tensor(n + ".beta"), p["eps"].get<float>(), p["silu"].get<bool>());
    expect_close(host(y), g().get(n + ".y"), 1e-5, n);
  }
}

TEST_F(GoldenOps, LayerNorm) {
  Tensor y = backend().layer_norm(g().tensor("ln.x"), g().tensor("ln.gamma"), g().tensor("ln.beta"),
                              g().params("ln")["eps"].get<float>());
  expect_close(host(y), g().get("ln.y"), 1e-5, "layer_norm");
}

TEST_F(GoldenOps, Activations) {
  Tensor x = g().tensor("act.x");
  expect_close(host(backend().activation(x, Activation::SiLU)), g().get("act.silu"), 1e-5, "silu");
  expect_close(host(backend().activation(x, Activation::GELU)), g().get("act.gelu"), 1e-5, "gelu");
  expect_close(host(backend().activation(x, Activation::QuickGELU)), g().get("act.quick_gelu"), 1e-5, "quick_gelu");
  expect_close(host(backend().geglu(g().tensor("geglu.x"))), g().get("geglu.y"), 1e-5, "geglu");
}

TEST_F(GoldenOps, Convolutions) {
  for (const char* c : {"conv_s2", "conv_res", "conv_1x1"}) {
    std::string n = c;
    const auto& p = g().params(c);
    Tensor b = g().tensor(n + ".b");
    Tensor r = n == "conv_res" ? g().tensor(n + ".r") : Tensor();
    Tensor y = backend().conv2d(g().tensor(n + ".x"), golden_conv_weight(n + ".w"), &b, p["stride"].get<int>(),
                            p["pad"].get<int>(), r.defined() ? &r : nullptr);
    Shape ys;
    g().get(n + ".y", &ys);
    ASSERT_EQ(y.shape(), ys) << n;
    expect_close(host(y), g().get(n + ".y"), 1e-5, n);
  }
}

TEST_F(GoldenOps, Linear) {
  Tensor b = g().tensor("linear.b"), r = g().tensor("linear.r");
  Tensor y = backend().linear(g().tensor("linear.x"), g().tensor("linear.w"), &b, &r);
  expect_close(host(y), g().get("linear.y"), 1e-5, "linear");
}

TEST_F(GoldenOps, Attention) {
  for (const char* c : {"attn_causal", "attn_cross"}) {
    std::string n = c;
    const auto& p = g().params(c);
    Tensor y = backend().attention(g().tensor(n + ".q"), g().tensor(n + ".k"), g().tensor(n + ".v"),
                               p["heads"].get<int>(), p["causal"].get<bool>());
    expect_close(host(y), g().get(n + ".y"), 1e-5, n);
  }
}

TEST_F(GoldenOps, UpsampleNearestIsExact) {
  for (const char* c : {"up_2x", "up_frac", "up_odd", "up_down"}) {
    const auto& p = g().params(c);
    expect_bit_exact(backend().upsample_nearest(g().tensor("up.x"), p["out_h"].get<int64_t>(), p["out_w"].get<int64_t>()),
                     std::string(c) + ".y");
  }
}

TEST_F(GoldenOps, ElementwiseIsBitExact) {
  Tensor a = g().tensor("ew.a"), b = g().tensor("ew.b");
  const float s = g().params("ew")["scalar"].get<float>();
  expect_bit_exact(backend().binary(BinaryOp::Add, a, b), "ew.add");
  expect_bit_exact(backend().binary(BinaryOp::Sub, a, b), "ew.sub");
  expect_bit_exact(backend().binary(BinaryOp::Mul, a, b), "ew.mul");
  expect_bit_exact(backend().binary(BinaryOp::Div, a, b), "ew.div");
  expect_bit_exact(backend().binary_scalar(BinaryOp::Add, a, s), "ew.add_s");
  expect_bit_exact(backend().binary_scalar(BinaryOp::Sub, a, s), "ew.sub_s");
  expect_bit_exact(backend().binary_scalar(BinaryOp::Sub, a, s, true), "ew.rsub_s");
  expect_bit_exact(backend().binary_scalar(BinaryOp::Mul, a, s), "ew.mul_s");
  expect_bit_exact(backend().binary_scalar(BinaryOp::Div, a, s), "ew.div_s");
  expect_bit_exact(backend().binary_scalar(BinaryOp::Div, a, s, true), "ew.sdiv");
  // Python's `s / tensor` is reciprocal(a) * s: two ops here too.
  expect_bit_exact(backend().binary_scalar(BinaryOp::Mul, backend().binary_scalar(BinaryOp::Div, a, 1.0f, true), s),
                   "ew.py_rdiv");
  // (a / 2 + 0.5).clamp(0, 1), the VAE image postprocess.
  expect_bit_exact(backend().clamp(backend().binary_scalar(BinaryOp::Add, backend().binary_scalar(BinaryOp::Div, a, 2.0f), 0.5f),
                               0.0f, 1.0f),
                   "ew.clamp");
  expect_bit_exact(backend().add_batch_channel(g().tensor("abc.x"), g().tensor("abc.t")), "abc.y");
}
