// TorchGenerator against torch.randn dumps of the pinned wheel (tools/golden/make_noise_golden.py):
// every case compares bit for bit, including the cached second normal of the scalar path, the
// 16-block tail rule, the stream position across calls and the float16 stream.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sdmpi/dtype.h"
#include "sdmpi/noise.h"
#include "sdmpi/safetensors.h"

namespace sdmpi {
namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/noise";

nlohmann::json load_cases() {
  std::ifstream f(kDir + "/noise.json");
  EXPECT_TRUE(f.good()) << "missing " << kDir << "/noise.json";
  return nlohmann::json::parse(f);
}

// Index of the first element whose bits differ, or -1.
int64_t first_bit_difference(const float* a, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (float_bits(a[i]) != float_bits(b[i])) return static_cast<int64_t>(i);
  return -1;
}

TEST(TorchGenerator, Mt19937MatchesTheReferenceEngine) {
  // genrand_int32 of the reference MT19937 with init_genrand(0) / (5489).
  TorchGenerator g(0);
  EXPECT_EQ(g.random(), 2357136044u);
  EXPECT_EQ(g.random(), 2546248239u);
  EXPECT_EQ(g.random(), 3071714933u);
  EXPECT_EQ(g.random(), 3626093760u);
  TorchGenerator d(5489);
  EXPECT_EQ(d.random(), 3499211612u);
  // random64: first draw is the high half.
  TorchGenerator a(7), b(7);
  const uint64_t hi = a.random(), lo = a.random();
  EXPECT_EQ(b.random64(), (hi << 32) | lo);
}

TEST(TorchGenerator, OnlyTheLow32BitsOfTheSeedMatter) {
  TorchGenerator a((uint64_t{1} << 32) + 7), b(7);
  EXPECT_EQ(a.randn(100), b.randn(100));
  EXPECT_EQ(a.seed(), (uint64_t{1} << 32) + 7);
}

TEST(TorchGenerator, ManualSeedRestartsTheStreamAndClearsTheCache) {
  TorchGenerator g(3);
  const std::vector<float> first = g.randn(1);  // leaves a cached sine in the generator
  g.manual_seed(3);
  EXPECT_EQ(g.randn(1), first);
}

TEST(TorchGenerator, GoldenDumpsBitExact) {
  const nlohmann::json meta = load_cases();
  auto file = SafetensorsFile::open(kDir + "/noise.safetensors");
  size_t compared = 0;
  for (const auto& c : meta.at("cases")) {
    const std::string name = c.at("name");
    TorchGenerator g(c.at("seed").get<uint64_t>());
    for (const auto& call : c.at("calls")) {
      const size_t n = call.at("n");
      const std::string dtype = call.at("dtype");
      if (dtype == "F16") {
        std::vector<uint16_t> got(n);
        g.randn_half(got.data(), n);
        if (call.at("tensor").is_null()) continue;
        const WeightView ref = file->view(call.at("tensor"));
        ASSERT_EQ(ref.dtype, DType::F16);
        ASSERT_EQ(static_cast<size_t>(shape_numel(ref.shape)), n);
        const uint16_t* r = static_cast<const uint16_t*>(ref.data);
        for (size_t i = 0; i < n; ++i)
          ASSERT_EQ(got[i], r[i]) << name << " call " << call.at("tensor") << " element " << i;
        compared += n;
      } else {
        const std::vector<float> got = g.randn(n);
        if (call.at("tensor").is_null()) continue;
        const std::vector<float> ref = file->to_f32(call.at("tensor"));
        ASSERT_EQ(ref.size(), n);
        const int64_t bad = first_bit_difference(got.data(), ref.data(), n);
        ASSERT_EQ(bad, -1) << name << " " << call.at("tensor") << " first difference at " << bad
                           << ": got " << got[static_cast<size_t>(bad)] << ", torch "
                           << ref[static_cast<size_t>(bad)];
        compared += n;
      }
    }
  }
  EXPECT_GT(compared, 200000u);  // the file really held the big cases
}

TEST(TorchGenerator, NhwcNoiseIsThePermutedNchwDraw) {
  auto file = SafetensorsFile::open(kDir + "/noise.safetensors");
  const std::vector<float> nchw = file->to_f32("single_42_16384.0");  // randn(1, 4, 64, 64)
  TorchGenerator g(42);
  const std::vector<float> nhwc = randn_nhwc(g, 4, 64, 64);
  ASSERT_EQ(nhwc.size(), nchw.size());
  for (int64_t c = 0; c < 4; ++c)
    for (int64_t y = 0; y < 64; ++y)
      for (int64_t x = 0; x < 64; ++x)
        ASSERT_EQ(float_bits(nhwc[static_cast<size_t>((y * 64 + x) * 4 + c)]),
                  float_bits(nchw[static_cast<size_t>((c * 64 + y) * 64 + x)]))
            << "c=" << c << " y=" << y << " x=" << x;
}

TEST(TorchGenerator, HalfStreamEqualsRoundedFloatForFullBlocks) {
  // In the pinned wheel, randn(dtype=float16) of a multiple of 16 is randn(float32) rounded.
  TorchGenerator a(11), b(11);
  std::vector<uint16_t> h(64);
  a.randn_half(h.data(), h.size());
  const std::vector<float> f = b.randn(64);
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(h[i], float_to_half(f[i])) << i;
}

}  // namespace
}  // namespace sdmpi
