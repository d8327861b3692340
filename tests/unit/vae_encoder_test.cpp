// The AutoencoderKL encoder (img2img's first half) against diffusers: quant_conv(encoder(image))
// and latent_dist.sample(generator) (tests/data/golden/vae_encoder, made by
// tools/golden/make_vae_encoder_golden.py), on the CPU backend in float32.
#include <gtest/gtest.h>

#include <cstdio>

#include "golden_util.h"
#include "sdmpi/backend.h"
#include "sdmpi/noise.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/vae.h"
#include "sdmpi/weights.h"

namespace sdmpi {
namespace {

using namespace sdmpi::testing_util;

const std::string kGolden = std::string(SDMPI_TEST_DATA) + "/golden/vae_encoder/";

class VaeEncoderGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(VaeEncoderGolden, MatchesDiffusers) {
  const std::string dir = kGolden + GetParam() + "/";
  auto backend = make_cpu_backend(2);
  const VAEConfig config = VAEConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const AutoencoderKLEncoder encoder = AutoencoderKLEncoder::load(config, *weights, *backend);

  const nlohmann::json meta = read_json_file(dir + "io.json");
  auto io = SafetensorsFile::open(dir + "io.safetensors");
  ASSERT_FALSE(meta["cases"].empty());
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const std::string k = std::to_string(i);
    const std::vector<float> image = io->to_f32("image" + k);
    const Shape image_shape = io->entries().at("image" + k).shape;
    const Tensor moments = encoder.encode(*backend, backend->from_host(image.data(), image_shape));
    EXPECT_EQ(moments.shape(), io->entries().at("moments" + k).shape);
    const std::vector<float> ours = backend->to_host(moments);
    const double err = rel_error(ours, io->to_f32("moments" + k));
    std::printf("%s case %zu: image %s: moments |ours - ref| / |ref| = %.3g\n", GetParam().c_str(), i,
                shape_str(image_shape).c_str(), err);
    EXPECT_LE(err, 1e-5);

    // latent_dist.sample(generator): each item's randn of the mean's shape from its own generator.
    const int64_t B = moments.dim(0), h = moments.dim(1), w = moments.dim(2), c = config.latent_channels;
    const size_t per_item = static_cast<size_t>(h * w * c);
    std::vector<float> noise;
    for (int64_t b = 0; b < B; ++b) {
      TorchGenerator gen(meta["cases"][i]["seeds"][static_cast<size_t>(b)].get<uint64_t>());
      const std::vector<float> n = randn_nhwc(gen, c, h, w);
      noise.insert(noise.end(), n.begin(), n.end());
    }
    const std::vector<float> sample = sample_latent_distribution(ours, noise, static_cast<int>(c));
    ASSERT_EQ(sample.size(), per_item * static_cast<size_t>(B));
    const double sample_err = rel_error(sample, io->to_f32("sample" + k));
    std::printf("%s case %zu: latent_dist.sample |ours - ref| / |ref| = %.3g\n", GetParam().c_str(), i, sample_err);
    EXPECT_LE(sample_err, 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, VaeEncoderGolden, ::testing::Values("vae_a", "vae_b"));

// The distribution's arithmetic on crafted values: the log-variance is clamped to [-30, 20] before
// exp(0.5 * logvar), and a zero noise gives the mean exactly.
TEST(VaeLatentDistribution, ClampsLogVarianceAndAddsScaledNoise) {
  // One pixel, two channels: means (1, -2), logvars (100 → 20, -100 → -30).
  const std::vector<float> moments = {1.0f, -2.0f, 100.0f, -100.0f};
  const std::vector<float> sample = sample_latent_distribution(moments, {1.0f, 1.0f}, 2);
  ASSERT_EQ(sample.size(), 2u);
  EXPECT_FLOAT_EQ(sample[0], 1.0f + std::exp(10.0f));
  EXPECT_FLOAT_EQ(sample[1], -2.0f + std::exp(-15.0f));
  EXPECT_EQ(sample_latent_distribution(moments, {0.0f, 0.0f}, 2), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_THROW(sample_latent_distribution(moments, {0.0f}, 2), Error);
}

}  // namespace
}  // namespace sdmpi
