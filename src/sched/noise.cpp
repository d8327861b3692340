// TorchGenerator: torch's CPU generator (MT19937 + its normal kernels), replayed in scalar C++.
//
// The float32 kernel for numel >= 16 is torch's AVX2 `normal_fill_AVX2`: all uniforms are drawn
// first, then every 16-block pairs lane j with lane j+8 in a Box-Muller transform whose log and
// sincos are Pommier's Cephes-derived AVX routines. The wheel's compiler fused some of those
// multiply/add pairs into FMAs; which ones was found by comparing against the pinned wheel's output
// (tests/data/golden/noise), and each fused step below is an explicit std::fma. The project builds
// with -ffp-contract=off, so every other step rounds exactly as written.
#include "sdmpi/noise.h"

#include <cmath>
#include <cstring>

#include "sdmpi/dtype.h"

namespace sdmpi {

namespace {

constexpr int kN = 624;  // MT19937 state words
constexpr int kM = 397;

// ---- Cephes natural log for x in (0, 1], as torch's log256_ps computes it --------------------------
float cephes_log(float x) {
  x = std::fmax(x, bits_float(0x00800000u));  // clamp away denormals (never hit for u1 in (0, 1])
  const uint32_t xb = float_bits(x);
  float e = static_cast<float>(static_cast<int32_t>(xb >> 23) - 0x7f);
  x = bits_float((xb & ~0x7f800000u) | float_bits(0.5f));  // mantissa in [0.5, 1)
  e = e + 1.0f;
  // if x < sqrt(1/2): e -= 1, x = x + x - 1; else x = x - 1 (done branch-free, as the kernel does)
  const bool below = x < 0.707106781186547524f;
  const float keep = below ? x : 0.0f;
  x = x - 1.0f;
  e = e - (below ? 1.0f : 0.0f);
  x = x + keep;

  const float z = x * x;
  float y = 7.0376836292E-2f;
  y = std::fma(y, x, -1.1514610310E-1f);
  y = std::fma(y, x, 1.1676998740E-1f);
  y = std::fma(y, x, -1.2420140846E-1f);
  y = std::fma(y, x, 1.4249322787E-1f);
  y = std::fma(y, x, -1.6668057665E-1f);
  y = std::fma(y, x, 2.0000714765E-1f);
  y = std::fma(y, x, -2.4999993993E-1f);
  y = std::fma(y, x, 3.3333331174E-1f);
  y = y * x;
  y = std::fma(y, z, e * -2.12194440e-4f);  // (y*z) fused with the separately rounded e*q1
  y = std::fma(z, -0.5f, y);                // y - z/2 (z*0.5 is exact: fused or not, same bits)
  x = x + y;
  x = std::fma(e, 0.693359375f, x);         // + e*q2, fused
  return x;
}

// ---- Cephes sincos for x >= 0, as torch's sincos256_ps computes it ----------------------------------
void cephes_sincos(float x, float* s, float* c) {
  // x >= 0 here (theta = 2*pi*u2), so the sine's input sign bit is clear.
  int32_t j = static_cast<int32_t>(x * 1.27323954473516f);  // truncation, like cvttps
  j = (j + 1) & ~1;
  const float y = static_cast<float>(j);
  const uint32_t sin_sign = static_cast<uint32_t>(j & 4) << 29;
  const bool sine_poly_for_sin = (j & 2) == 0;
  const uint32_t cos_sign = static_cast<uint32_t>(~(j - 2) & 4) << 29;

  // Extended-precision range reduction x - y*pi/4 in three pieces.
  x = std::fma(y, -0.78515625f, x);
  x = std::fma(y, -2.4187564849853515625e-4f, x);
  x = std::fma(y, -3.77489497744594108e-8f, x);

  const float z = x * x;
  float yc = 2.443315711809948E-005f;  // cosine polynomial
  yc = std::fma(yc, z, -1.388731625493765E-003f);
  yc = std::fma(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = std::fma(yc, z, -(z * 0.5f));  // second *z fused with the rounded z*0.5
  yc = yc + 1.0f;

  float ys = -1.9515295891E-4f;  // sine polynomial
  ys = std::fma(ys, z, 8.3321608736E-3f);
  ys = std::fma(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = std::fma(ys, x, x);

  // Blend exactly as the kernel does: masked values and additions of +0.
  const float ysin2 = sine_poly_for_sin ? ys : 0.0f;
  const float ysin1 = sine_poly_for_sin ? 0.0f : yc;
  const float rest_s = ys - ysin2;
  const float rest_c = yc - ysin1;
  *s = bits_float(float_bits(ysin1 + ysin2) ^ sin_sign);
  *c = bits_float(float_bits(rest_c + rest_s) ^ cos_sign);
}

// One 16-block of normal_fill_16_AVX2: lanes j and j+8 hold uniforms u, v; they become
// r*cos(2*pi*v) and r*sin(2*pi*v) with r = sqrt(-2 log(1-u)).
void normal_fill_16(float* data, float mean, float std) {
  const float two_pi = static_cast<float>(2.0f * 3.14159265358979323846);
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * cephes_log(u1));
    const float theta = two_pi * u2;
    float s, c;
    cephes_sincos(theta, &s, &c);
    data[j] = std::fma(radius * c, std, mean);
    data[j + 8] = std::fma(radius * s, std, mean);
  }
}

}  // namespace

TorchGenerator::TorchGenerator(uint64_t seed) { manual_seed(seed); }

void TorchGenerator::manual_seed(uint64_t seed) {
  seed_ = seed;
  cached_double_normal_.reset();
  state_[0] = static_cast<uint32_t>(seed & 0xffffffffu);
  for (int j = 1; j < kN; ++j)
    state_[j] = 1812433253u * (state_[j - 1] ^ (state_[j - 1] >> 30)) + static_cast<uint32_t>(j);
  left_ = 1;
  next_ = 0;
}

void TorchGenerator::twist() {
  auto mix = [](uint32_t u, uint32_t v) {
    const uint32_t y = (u & 0x80000000u) | (v & 0x7fffffffu);
    return (y >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
  };
  for (int i = 0; i < kN - kM; ++i) state_[i] = state_[i + kM] ^ mix(state_[i], state_[i + 1]);
  for (int i = kN - kM; i < kN - 1; ++i) state_[i] = state_[i + kM - kN] ^ mix(state_[i], state_[i + 1]);
  state_[kN - 1] = state_[kM - 1] ^ mix(state_[kN - 1], state_[0]);
  left_ = kN;
  next_ = 0;
}

uint32_t TorchGenerator::random() {
  if (--left_ == 0) twist();
  uint32_t y = state_[next_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

uint64_t TorchGenerator::random64() {
  const uint64_t hi = random();
  const uint64_t lo = random();
  return (hi << 32) | lo;
}

float TorchGenerator::uniform_float() {
  return static_cast<float>(random() & 0xffffffu) * (1.0f / 16777216.0f);  // low 24 bits, [0, 1)
}

double TorchGenerator::next_double_normal() {
  if (cached_double_normal_) {
    const double v = *cached_double_normal_;
    cached_double_normal_.reset();
    return v;
  }
  constexpr double kTwoPow53Inv = 1.0 / 9007199254740992.0;
  const double u1 = static_cast<double>(random64() & ((uint64_t{1} << 53) - 1)) * kTwoPow53Inv;
  const double u2 = static_cast<double>(random64() & ((uint64_t{1} << 53) - 1)) * kTwoPow53Inv;
  const double r = std::sqrt(-2.0 * std::log1p(-u2));
  const double theta = 2.0 * 3.14159265358979323846 * u1;
  cached_double_normal_ = r * std::sin(theta);
  return r * std::cos(theta);
}

void TorchGenerator::randn(float* out, size_t n) {
  if (n < 16) {
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(next_double_normal());
    return;
  }
  for (size_t i = 0; i < n; ++i) out[i] = uniform_float();
  for (size_t i = 0; i + 16 <= n; i += 16) normal_fill_16(out + i, 0.0f, 1.0f);
  if (n % 16 != 0) {
    // torch redraws the last 16 values (overlapping the previous block) from fresh uniforms.
    float* tail = out + n - 16;
    for (int i = 0; i < 16; ++i) tail[i] = uniform_float();
    normal_fill_16(tail, 0.0f, 1.0f);
  }
}

std::vector<float> TorchGenerator::randn(size_t n) {
  std::vector<float> v(n);
  randn(v.data(), n);
  return v;
}

void TorchGenerator::randn_half(uint16_t* out, size_t n) {
  if (n < 16) {
    // static_cast<Half>(double) goes through float: c10::Half's constructor takes a float.
    for (size_t i = 0; i < n; ++i) out[i] = float_to_half(static_cast<float>(next_double_normal()));
    return;
  }
  // The wheel transforms each 16-block in float32 right after drawing its own 16 uniforms, then
  // rounds to half. For a multiple of 16 this equals randn(n).half(); the tail block differs from
  // the float32 path because its fresh uniforms follow the last *full* block, not all n draws.
  float block[16];
  auto fill_block = [&](uint16_t* dst) {
    for (int i = 0; i < 16; ++i) block[i] = uniform_float();
    normal_fill_16(block, 0.0f, 1.0f);
    for (int i = 0; i < 16; ++i) dst[i] = float_to_half(block[i]);
  };
  for (size_t i = 0; i + 16 <= n; i += 16) fill_block(out + i);
  if (n % 16 != 0) fill_block(out + n - 16);
}

void randn_nhwc(TorchGenerator& gen, int64_t channels, int64_t height, int64_t width, float* out) {
  const size_t plane = static_cast<size_t>(height * width);
  std::vector<float> nchw = gen.randn(static_cast<size_t>(channels) * plane);
  for (int64_t c = 0; c < channels; ++c)
    for (size_t p = 0; p < plane; ++p)
      out[p * static_cast<size_t>(channels) + static_cast<size_t>(c)] = nchw[static_cast<size_t>(c) * plane + p];
}

std::vector<float> randn_nhwc(TorchGenerator& gen, int64_t channels, int64_t height, int64_t width) {
  std::vector<float> v(static_cast<size_t>(channels * height * width));
  randn_nhwc(gen, channels, height, width, v.data());
  return v;
}

}  // namespace sdmpi
