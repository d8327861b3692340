// Host conversions between float32, float16 and bfloat16 (round to nearest even).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "sdmpi/dtype.h"

using namespace sdmpi;

TEST(DType, HalfRoundTripIsExactForEveryHalf) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(half_to_float(float_to_half(f)))) << h;
      continue;
    }
    EXPECT_EQ(float_to_half(f), h) << "half bits " << h;
  }
}

TEST(DType, HalfKnownValues) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);           // ties to even: overflows to inf
  EXPECT_EQ(float_to_half(65519.99f), 0x7bff);
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -25)), 0x0000);  // tie rounds to even 0
  EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie to even (up)
  EXPECT_FLOAT_EQ(half_to_float(0x3555), 0.333251953125f);
}

TEST(DType, HalfRoundingMatchesMidpointRule) {
  // Every float between two adjacent halves rounds to the nearer one (ties to even).
  for (uint32_t h = 0x0400; h < 0x7bff; h += 37) {
    float lo = half_to_float(static_cast<uint16_t>(h)), hi = half_to_float(static_cast<uint16_t>(h + 1));
    float mid = lo + (hi - lo) / 2;
    EXPECT_EQ(float_to_half(std::nextafter(mid, 0.0f)), h);
    EXPECT_EQ(float_to_half(std::nextafter(mid, 1e9f)), h + 1);
    EXPECT_EQ(float_to_half(mid), (h & 1u) ? h + 1 : h);
  }
}

TEST(DType, BFloat16) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // tie to even (down)
  EXPECT_EQ(float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // tie to even (up)
  EXPECT_EQ(float_to_bf16(bits_float(0x3f808001u)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(DType, Parse) {
  DType t;
  EXPECT_TRUE(parse_dtype("fp16", &t));
  EXPECT_EQ(t, DType::F16);
  EXPECT_TRUE(parse_dtype("BF16", &t));
  EXPECT_EQ(t, DType::BF16);
  EXPECT_FALSE(parse_dtype("F64", &t));
}
