// Winograd 3×3 convolutions of the CPU backend (src/backend/cpu/cpu_winograd.cpp) against a
// double-precision direct convolution, on odd sizes, both paddings, channel counts that are not
// multiples of any vector width, bias and residual; and their batch/thread invariance.
//
// Tolerance: max |winograd − exact| ≤ tol · max |exact| with tol = 2e-6 for F(2,3) and 2e-5 for
// F(4,3). Measured on these cases: F(2,3) ≤ 4e-7, F(4,3) ≤ 6e-6 (its transforms, with coefficients
// up to 8 and 1/24, lose about three more bits); the error grows with the channel count.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_gemm.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_memory.h"
#include "sdmpi/backend.h"
#include "sdmpi/tensor.h"

using namespace sdmpi;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

struct ConvCase {
  int64_t B, H, W, Cin, Cout;
  int pad;
};

// y = x ⊛ w + bias + residual in double (NHWC, OHWI).
std::vector<double> reference(const ConvCase& s, const std::vector<float>& x, const std::vector<float>& w,
                              const std::vector<float>& bias, const std::vector<float>& res) {
  const int64_t Ho = s.H + 2 * s.pad - 2, Wo = s.W + 2 * s.pad - 2;
  std::vector<double> y(static_cast<size_t>(s.B * Ho * Wo * s.Cout));
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox)
        for (int64_t o = 0; o < s.Cout; ++o) {
          double acc = bias[o];
          for (int64_t ky = 0; ky < 3; ++ky)
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t iy = oy - s.pad + ky, ix = ox - s.pad + kx;
              if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
              const float* xp = x.data() + ((b * s.H + iy) * s.W + ix) * s.Cin;
              const float* wp = w.data() + ((o * 3 + ky) * 3 + kx) * s.Cin;
              for (int64_t c = 0; c < s.Cin; ++c) acc += static_cast<double>(xp[c]) * wp[c];
            }
          const size_t at = static_cast<size_t>(((b * Ho + oy) * Wo + ox) * s.Cout + o);
          y[at] = acc + res[at];
        }
  return y;
}

std::vector<float> run(int m, const ConvCase& s, const std::vector<float>& x, const std::vector<float>& w,
                       const float* bias, const float* res, int threads) {
  const int64_t Ho = s.H + 2 * s.pad - 2, Wo = s.W + 2 * s.pad - 2;
  std::vector<float> y(static_cast<size_t>(s.B * Ho * Wo * s.Cout), NAN);
  cpu::conv3x3_winograd_nhwc(m, x.data(), s.B, s.H, s.W, s.Cin, w.data(), s.Cout, s.pad, bias, res, y.data(), Ho,
                             Wo, threads);
  return y;
}

}  // namespace

TEST(CpuWinograd, MatchesTheExactConvolution) {
  for (const ConvCase& s : {ConvCase{2, 7, 9, 37, 19, 1}, ConvCase{1, 13, 6, 5, 33, 1}, ConvCase{3, 10, 11, 64, 17, 0},
                         ConvCase{1, 3, 3, 19, 7, 1}, ConvCase{2, 16, 16, 48, 40, 1}}) {
    const int64_t Ho = s.H + 2 * s.pad - 2, Wo = s.W + 2 * s.pad - 2;
    auto x = randn(static_cast<size_t>(s.B * s.H * s.W * s.Cin), 1);
    auto w = randn(static_cast<size_t>(s.Cout * 9 * s.Cin), 2, 0.1f);
    auto bias = randn(static_cast<size_t>(s.Cout), 3);
    auto res = randn(static_cast<size_t>(s.B * Ho * Wo * s.Cout), 4);
    const auto exact = reference(s, x, w, bias, res);
    double scale = 0.0;
    for (double v : exact) scale = std::max(scale, std::fabs(v));
    for (int m : {2, 4}) {
      const auto y = run(m, s, x, w, bias.data(), res.data(), 2);
      double worst = 0.0;
      for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - exact[i]));
      const double tol = m == 2 ? 2e-6 : 2e-5;
      EXPECT_LE(worst, tol * scale) << "F(" << m << ",3) " << s.B << "x" << s.H << "x" << s.W << " Cin " << s.Cin
                                    << " Cout " << s.Cout << " pad " << s.pad << ": max error " << worst
                                    << " against max |y| " << scale;
    }
  }
}

TEST(CpuWinograd, NoBiasNoResidual) {
  const ConvCase s{1, 5, 8, 21, 9, 1};
  auto x = randn(static_cast<size_t>(s.H * s.W * s.Cin), 5);
  auto w = randn(static_cast<size_t>(s.Cout * 9 * s.Cin), 6, 0.1f);
  std::vector<float> zeros_bias(static_cast<size_t>(s.Cout), 0.0f), zeros_res(static_cast<size_t>(s.H * s.W * s.Cout), 0.0f);
  const auto exact = reference(s, x, w, zeros_bias, zeros_res);
  const auto y = run(4, s, x, w, nullptr, nullptr, 1);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], exact[i], 1e-4) << i;
}

TEST(CpuWinograd, ItemsAndThreadsDoNotChangeTheBits) {
  // Item 1 of a batch of 3 equals the same image alone, on 1, 2 and 3 threads (tiles are
  // transformed alone; the GEMM adds each output as one chain).
  const ConvCase batch{3, 12, 9, 40, 24, 1}, one{1, 12, 9, 40, 24, 1};
  const int64_t in_item = batch.H * batch.W * batch.Cin, out_item = batch.H * batch.W * batch.Cout;
  auto x = randn(static_cast<size_t>(3 * in_item), 7);
  auto w = randn(static_cast<size_t>(batch.Cout * 9 * batch.Cin), 8, 0.1f);
  auto bias = randn(static_cast<size_t>(batch.Cout), 9);
  auto res = randn(static_cast<size_t>(3 * out_item), 10);
  for (int m : {2, 4}) {
    const auto all = run(m, batch, x, w, bias.data(), res.data(), 2);
    std::vector<float> x1(x.begin() + in_item, x.begin() + 2 * in_item);
    std::vector<float> r1(res.begin() + out_item, res.begin() + 2 * out_item);
    for (int threads : {1, 2, 3}) {
      const auto alone = run(m, one, x1, w, bias.data(), r1.data(), threads);
      ASSERT_EQ(0, std::memcmp(alone.data(), all.data() + out_item, alone.size() * sizeof(float)))
          << "F(" << m << ",3) on " << threads << " threads";
    }
  }
}

// The convolution's transforms (the matrices fixed at compile time: unrolled, zeros and ±1 folded)
// give the generic transform's bits, on every channel count (vector tails), with signed zeros,
// infinities and NaN among the inputs, on every instruction set the CPU has.
TEST(CpuWinograd, FixedTransformsGiveTheGenericBits) {
  using Kind = cpu::WinogradTransform;
  for (int m : {2, 4}) {
    const int64_t alpha = m + 2;
    for (Kind kind : {Kind::Input, Kind::Output, Kind::Filter}) {
      const int64_t n_in = kind == Kind::Filter ? 3 : alpha, n_out = kind == Kind::Output ? m : alpha;
      const char* name = kind == Kind::Input ? "input" : kind == Kind::Output ? "output" : "filter";
      for (int64_t C : {1, 3, 8, 16, 17, 40, 129}) {
        auto x = randn(static_cast<size_t>(n_in * n_in * C), 40 + static_cast<uint32_t>(C), 3.0f);
        x[0] = -0.0f;
        if (x.size() > 7) x[7] = std::numeric_limits<float>::infinity();
        if (x.size() > 20) x[20] = std::numeric_limits<float>::quiet_NaN();
        for (size_t i = 30; i < x.size(); i += 11) x[i] = 0.0f;
        std::vector<float> fixed(static_cast<size_t>(n_out * n_out * C), -1.0f), generic(fixed.size(), -2.0f);
        // Patch rows of n_in·C floats, positions of C; outputs the same way.
        cpu::winograd_tile_transform(m, kind, false, x.data(), n_in * C, C, fixed.data(), n_out * C, C, C);
        cpu::winograd_tile_transform(m, kind, true, x.data(), n_in * C, C, generic.data(), n_out * C, C, C);
        EXPECT_EQ(std::memcmp(fixed.data(), generic.data(), fixed.size() * sizeof(float)), 0)
            << "F(" << m << ",3) " << name << " transform, C " << C;
      }
    }
  }
}

TEST(CpuWinograd, PlanReadsTheShapeOnly) {
  // SD 1.5 at 256²: the 32×32 and 16×16 UNet levels and the VAE's 32…256 levels take F(4,3), the
  // 8×8 level F(2,3); the 4×4 level, strided, 1×1 and few-channel convolutions stay direct.
  if (std::getenv("SDMPI_CPU_CONV")) GTEST_SKIP() << "SDMPI_CPU_CONV is set: " << cpu::conv_mode_name();
  EXPECT_EQ(cpu::winograd_plan(32, 32, 320, 320, 3, 3, 1), 4);
  EXPECT_EQ(cpu::winograd_plan(256, 256, 128, 128, 3, 3, 1), 4);
  EXPECT_EQ(cpu::winograd_plan(16, 16, 640, 640, 3, 3, 1), 4);
  EXPECT_EQ(cpu::winograd_plan(12, 12, 640, 640, 3, 3, 1), 2);
  EXPECT_EQ(cpu::winograd_plan(8, 8, 1280, 1280, 3, 3, 1), 2);
  EXPECT_EQ(cpu::winograd_plan(4, 4, 1280, 1280, 3, 3, 1), 0);
  EXPECT_EQ(cpu::winograd_plan(16, 16, 320, 320, 3, 3, 2), 0);
  EXPECT_EQ(cpu::winograd_plan(32, 32, 320, 320, 1, 1, 1), 0);
  EXPECT_EQ(cpu::winograd_plan(32, 32, 4, 320, 3, 3, 1), 0);
  EXPECT_EQ(cpu::winograd_plan(256, 256, 128, 3, 3, 3, 1), 0);
}

// The kept transformed weights (KeptWeightCache) give the bits of the per-call transform, hit
// after the first call, respect the budget, never keep pooled op outputs, and never serve a freed
// weight's transform to a new weight at the same address.
namespace {

// A conv weight as a model loads it (upload_weight: the backend's weight storage, OHWI).
Tensor host_weight(int64_t cout, int64_t cin, uint32_t seed) {
  static auto be = make_cpu_backend(1, 0);
  std::vector<float> oihw(static_cast<size_t>(cout * cin * 9));
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 0.1f);
  for (float& v : oihw) v = dist(gen);
  return be->upload_weight(WeightView("w", DType::F32, {cout, cin, 3, 3}, oihw.data()), WeightKind::Conv);
}

// Packed only where our GEMM runs (SDMPI_CPU_GEMM=openblas keeps the plain transform).
bool packing_possible() { return cpu::gemm_engine() == cpu::GemmEngine::Builtin; }

std::vector<float> transform_per_call(int m, const Tensor& w, bool packed) {
  std::vector<float> u(static_cast<size_t>(cpu::winograd_kept_floats(m, w.dim(0), w.dim(3), packed)), -1.0f);
  cpu::winograd_prepare_weights(m, w.f32(), w.dim(0), w.dim(3), packed, u.data(), 2);
  return u;
}

bool same_bits(const float* a, const std::vector<float>& b) { return std::memcmp(a, b.data(), b.size() * 4) == 0; }

}  // namespace

TEST(CpuWinogradCache, KeepsTheSameBitsAndHits) {
  cpu::KeptWeightCache cache(int64_t{64} << 20);
  Tensor w = host_weight(40, 33, 1);
  int64_t floats = 0;
  for (bool packed : {false, true}) {
    if (packed && !packing_possible()) continue;
    for (int m : {2, 4}) {
      const float* u = cache.winograd(w, m, packed, 2);
      ASSERT_NE(u, nullptr);
      EXPECT_TRUE(same_bits(u, transform_per_call(m, w, packed))) << "F(" << m << ",3), packed " << packed;
      EXPECT_EQ(cache.winograd(w, m, packed, 1), u) << "second call: the kept copy";
      floats += cpu::winograd_kept_floats(m, 40, 33, packed);
    }
  }
  // Each form is its own entry (a layer's form depends on its batch: both may be asked for).
  EXPECT_EQ(cache.bytes(), floats * 4);
  EXPECT_EQ(transform_per_call(4, w, false).size(), static_cast<size_t>(cpu::winograd_weight_floats(4, 40, 33)));
}

TEST(CpuWinogradCache, RespectsTheBudgetAndSkipsPooledTensors) {
  Tensor w = host_weight(64, 64, 2);
  const int64_t one = cpu::winograd_kept_floats(4, 64, 64, false) * 4;
  cpu::KeptWeightCache small(one - 1);
  EXPECT_EQ(small.winograd(w, 4, false, 2), nullptr);
  EXPECT_EQ(small.bytes(), 0);
  cpu::KeptWeightCache none(0);
  EXPECT_EQ(none.winograd(w, 4, false, 2), nullptr);
  // Only uploaded weights are kept: an op output or any other host tensor may be written or reused.
  auto be = make_cpu_backend(1, 0);
  std::vector<float> host(static_cast<size_t>(w.numel()), 0.5f);
  cpu::KeptWeightCache cache(int64_t{64} << 20);
  for (int64_t cout : {64, 4096}) {  // below and above the pool's smallest block
    std::vector<float> data(static_cast<size_t>(cout * 9 * 64), 0.5f);
    EXPECT_EQ(cache.winograd(be->from_host(data.data(), {cout, 3, 3, 64}), 4, false, 2), nullptr) << cout;
  }
  Tensor plain = Tensor::host({64, 3, 3, 64});
  EXPECT_EQ(cache.winograd(plain, 4, false, 2), nullptr);
  EXPECT_EQ(cache.bytes(), 0);
}

TEST(CpuWinogradCache, AFreedWeightsEntryIsNeverReused) {
  cpu::KeptWeightCache cache(int64_t{64} << 20);
  // Weights freed and allocated again (one size, so malloc likely hands back the same address):
  // each must get its own transform, whatever the address.
  for (uint32_t seed = 10; seed < 16; ++seed) {
    Tensor w = host_weight(48, 40, seed);
    const float* u = cache.winograd(w, 2, packing_possible(), 2);
    ASSERT_NE(u, nullptr);
    EXPECT_TRUE(same_bits(u, transform_per_call(2, w, packing_possible()))) << "seed " << seed;
  }
  // Entries of freed weights are dropped when the budget needs room (not before): a budget of
  // one entry still serves every new weight.
  cpu::KeptWeightCache one(cpu::winograd_kept_floats(2, 48, 40, false) * 4);
  for (uint32_t seed = 20; seed < 23; ++seed) {
    Tensor w = host_weight(48, 40, seed);
    const float* u = one.winograd(w, 2, false, 2);
    ASSERT_NE(u, nullptr) << "seed " << seed;
    EXPECT_TRUE(same_bits(u, transform_per_call(2, w, false))) << "seed " << seed;
  }
}

TEST(CpuWinogradCache, BackendGivesTheSameBitsWithAndWithoutKeptWeights) {
  // SD 1.5's 8×8 level shape at reduced channels through the backend's conv2d: kept (second call
  // hits the cache) and never kept.
  if (std::getenv("SDMPI_CPU_CONV")) GTEST_SKIP() << "SDMPI_CPU_CONV is set: " << cpu::conv_mode_name();
  // Cout 40: the packed panels' zero padding; 32×32 outputs: F(4,3). Batch 2 of 8×8 (32 tiles)
  // keeps the plain transform, read in place by the GEMM; 32×32 (128 tiles) keeps it packed.
  auto kept = make_cpu_backend(2, int64_t{256} << 20), per_call = make_cpu_backend(2, 0);
  if (cpu::gemm_reads_weights_in_place(32, 40, 64)) {
    EXPECT_FALSE(cpu::winograd_kept_packed(2, 2, 8, 8, 64, 40));
  }
  EXPECT_EQ(cpu::winograd_kept_packed(4, 2, 32, 32, 64, 40), packing_possible());
  for (auto [side, cout] : {std::pair<int64_t, int64_t>{8, 96}, {8, 40}, {32, 40}}) {
    Tensor w = host_weight(cout, 64, 3);
    std::vector<float> xs(static_cast<size_t>(2 * side * side * 64)), bs(static_cast<size_t>(cout));
    std::mt19937 gen(4);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (float& v : xs) v = dist(gen);
    for (float& v : bs) v = dist(gen);
    ASSERT_EQ(cpu::winograd_plan(side, side, 64, cout, 3, 3, 1), side == 8 ? 2 : 4);
    Tensor xa = kept->from_host(xs.data(), {2, side, side, 64}), ba = kept->from_host(bs.data(), {cout});
    Tensor xb = per_call->from_host(xs.data(), {2, side, side, 64}), bb = per_call->from_host(bs.data(), {cout});
    const std::vector<float> want = per_call->to_host(per_call->conv2d(xb, w, &bb, 1, 1));
    for (int call = 0; call < 2; ++call) {
      const std::vector<float> got = kept->to_host(kept->conv2d(xa, w, &ba, 1, 1));
      ASSERT_EQ(got.size(), want.size());
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0)
          << side << "x" << side << ", Cout " << cout << ", call " << call;
    }
  }
}

// The packed kept form is made one panel of output channels at a time (winograd_prepare_weights):
// it must equal transforming every channel and then packing each position's [Cout, Cin] matrix
// (gemm_pack_weights), bit for bit, also where the last panel is partial.
TEST(CpuWinogradCache, PackedFormEqualsTransformThenPack) {
  if (!packing_possible()) GTEST_SKIP() << "the GEMM engine here is OpenBLAS: no packed form";
  for (const auto& [cout, cin] : {std::pair<int64_t, int64_t>{40, 33}, {33, 17}, {70, 64}, {16, 5}}) {
    Tensor w = host_weight(cout, cin, 7);
    for (int m : {2, 4}) {
      const int64_t positions = (m + 2) * (m + 2), packed_floats = cpu::gemm_packed_floats(cout, cin);
      std::vector<float> u(static_cast<size_t>(cpu::winograd_weight_floats(m, cout, cin)));
      cpu::winograd_transform_weights(m, w.f32(), cout, cin, u.data(), 1);
      std::vector<float> expected(static_cast<size_t>(positions * packed_floats), -1.0f);
      for (int64_t xi = 0; xi < positions; ++xi)
        cpu::gemm_pack_weights(u.data() + xi * cout * cin, cout, cin, expected.data() + xi * packed_floats);
      for (int threads : {1, 2, 3}) {
        std::vector<float> got(expected.size(), -2.0f);
        cpu::winograd_prepare_weights(m, w.f32(), cout, cin, true, got.data(), threads);
        EXPECT_TRUE(same_bits(got.data(), expected)) << cout << "x" << cin << ", F(" << m << ",3), " << threads << " threads";
      }
    }
  }
}

namespace {

Tensor linear_weight(int64_t n, int64_t k, uint32_t seed) {
  static auto be = make_cpu_backend(1, 0);
  std::vector<float> v(static_cast<size_t>(n * k));
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 0.1f);
  for (float& x : v) x = dist(gen);
  return be->upload_weight(WeightView("w", DType::F32, {n, k}, v.data()), WeightKind::Linear);
}

}  // namespace

// The GEMM's kept panels (KeptWeightCache::gemm_panels): each of the `parts` blocks of rows packed
// exactly as gemm_pack_weights packs it, one entry per (weight, parts), the kept copy on the next
// call; nothing for tensors that are not uploaded weights or rows that do not split evenly.
TEST(CpuKeptPanels, EachPartIsPackWeightsOfItsRows) {
  if (!packing_possible()) GTEST_SKIP() << "the GEMM engine here is OpenBLAS: no packed panels";
  cpu::KeptWeightCache cache(int64_t{64} << 20);
  uint32_t seed = 30;
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{80, 99}, {40, 7}, {66, 320}, {2560, 32}}) {
    Tensor w = linear_weight(n, k, seed++);
    for (int parts : {1, 2}) {
      const float* got = cache.gemm_panels(w, parts);
      ASSERT_NE(got, nullptr) << n << "x" << k << ", " << parts << " parts";
      const int64_t rows = n / parts, part_floats = cpu::gemm_packed_floats(rows, k);
      for (int p = 0; p < parts; ++p) {
        std::vector<float> want(static_cast<size_t>(part_floats), -1.0f);
        cpu::gemm_pack_weights(w.f32() + p * rows * k, rows, k, want.data());
        EXPECT_TRUE(same_bits(got + p * part_floats, want)) << n << "x" << k << ", part " << p << " of " << parts;
      }
      EXPECT_EQ(cache.gemm_panels(w, parts), got) << "second call: the kept copy";
    }
  }
  EXPECT_EQ(cache.gemm_panels(Tensor::host({64, 64}), 1), nullptr) << "not an uploaded weight";
  EXPECT_EQ(cache.gemm_panels(linear_weight(33, 8, 5), 2), nullptr) << "33 rows in 2 parts";
  cpu::KeptWeightCache none(0);
  EXPECT_EQ(none.gemm_panels(linear_weight(64, 64, 6), 1), nullptr);
  // Panels take at most a quarter of the budget; Winograd's transforms may use the rest.
  Tensor w = linear_weight(64, 64, 7);
  const int64_t panel_bytes = cpu::gemm_packed_floats(64, 64) * 4;
  cpu::KeptWeightCache quarter(4 * panel_bytes), short_of_it(4 * panel_bytes - 64);
  EXPECT_NE(quarter.gemm_panels(w, 1), nullptr);
  EXPECT_EQ(short_of_it.gemm_panels(w, 1), nullptr);
  EXPECT_EQ(short_of_it.bytes(), 0);
}

// The backend's products that would pack W on every call (more rows than the few-rows path takes)
// read the kept panels instead: the same bits as packing per call (a backend with no budget), on
// the first call (which makes the panels) and the next (which reads them).
TEST(CpuKeptPanels, BackendGivesTheSameBitsWithAndWithoutKeptPanels) {
  if (!packing_possible()) GTEST_SKIP() << "the GEMM engine here is OpenBLAS: no packed panels";
  auto kept = make_cpu_backend(2, int64_t{256} << 20), per_call = make_cpu_backend(2, 0);
  std::mt19937 gen(8);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  auto values = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(gen);
    return v;
  };
  auto check = [&](const std::string& what, auto&& op) {
    const std::vector<float> want = per_call->to_host(op(*per_call));
    for (int call = 0; call < 2; ++call) {
      const std::vector<float> got = kept->to_host(op(*kept));
      ASSERT_EQ(got.size(), want.size()) << what;
      EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0) << what << ", call " << call;
    }
  };
  // linear: 2 items × 300 rows, N = 50 (a partial panel), K = 70; with a residual too.
  {
    ASSERT_TRUE(cpu::gemm_packs_weights_per_call(600, 50, 70));
    Tensor w = linear_weight(50, 70, 40);
    const std::vector<float> xs = values(2 * 300 * 70), bs = values(50), rs = values(2 * 300 * 50);
    check("linear", [&](Backend& be) {
      Tensor x = be.from_host(xs.data(), {2, 300, 70}), b = be.from_host(bs.data(), {50});
      Tensor r = be.from_host(rs.data(), {2, 300, 50});
      return be.linear(x, w, &b, &r);
    });
  }
  // GEGLU: the two halves of W [2·40, 96] kept as two parts.
  {
    ASSERT_TRUE(cpu::gemm_packs_weights_per_call(2 * 260, 40, 96));
    Tensor w = linear_weight(80, 96, 41);
    const std::vector<float> xs = values(2 * 260 * 96), bs = values(80);
    check("linear_geglu", [&](Backend& be) {
      Tensor x = be.from_host(xs.data(), {2, 260, 96}), b = be.from_host(bs.data(), {80});
      return be.linear_geglu(x, w, &b);
    });
  }
  // Convolutions on the product path: 1×1 (2 × 20×20 pixels) and 3×3 stride 2 (16×16 outputs).
  for (const auto& shape : {std::tuple<int64_t, int, int64_t>{1, 1, 20}, {3, 2, 32}}) {
    // Plain locals, not structured bindings: the lambda below captures them (clang 14 refuses).
    const int64_t k = std::get<0>(shape), side = std::get<2>(shape);
    const int stride = std::get<1>(shape);
    const int64_t cin = 24, cout = 36, out_side = side / stride;
    ASSERT_TRUE(cpu::gemm_packs_weights_per_call(2 * out_side * out_side, cout, k * k * cin));
    static auto uploader = make_cpu_backend(1, 0);
    const std::vector<float> ws = values(cout * cin * k * k), xs = values(2 * side * side * cin), bs = values(cout);
    Tensor w = uploader->upload_weight(WeightView("w", DType::F32, {cout, cin, k, k}, ws.data()), WeightKind::Conv);
    const int pad = k == 3 ? 1 : 0;
    check("conv " + std::to_string(k) + "x" + std::to_string(k) + " stride " + std::to_string(stride), [&](Backend& be) {
      Tensor x = be.from_host(xs.data(), {2, side, side, cin}), b = be.from_host(bs.data(), {cout});
      return be.conv2d(x, w, &b, stride, pad);
    });
  }
}
