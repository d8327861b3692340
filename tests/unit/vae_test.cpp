// The AutoencoderKL decoder and the uint8 postprocess against diffusers
// (tests/data/golden/models/vae_*, made by tools/golden/make_models_golden.py), plus the loader's
// handling of VAE files and the config parser.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "golden_util.h"
#include "sdmpi/backend.h"
#include "sdmpi/error.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/vae.h"
#include "sdmpi/weights.h"

namespace sdmpi {
namespace {

using namespace sdmpi::testing_util;

const std::string kGolden = std::string(SDMPI_TEST_DATA) + "/golden/models/";

class VaeGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(VaeGolden, MatchesDiffusers) {
  const std::string dir = kGolden + GetParam() + "/";
  auto backend = make_cpu_backend(2);
  const VAEConfig config = VAEConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const AutoencoderKLDecoder vae = AutoencoderKLDecoder::load(config, *weights, *backend);

  const nlohmann::json meta = read_json_file(dir + "io.json");
  EXPECT_EQ(config.scaling_factor, meta["scaling_factor"].get<double>());
  auto io = SafetensorsFile::open(dir + "io.safetensors");
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const std::string k = std::to_string(i);
    const std::vector<float> latents = io->to_f32("latents" + k);
    // The pipeline's step: latents / scaling_factor, one float32 division.
    Tensor z = backend->binary_scalar(BinaryOp::Div,
                                      backend->from_host(latents.data(), io->entries().at("latents" + k).shape),
                                      static_cast<float>(config.scaling_factor));
    Tensor image = vae.decode(*backend, z);
    EXPECT_EQ(image.shape(), io->entries().at("decoded" + k).shape);
    const std::vector<float> ours = backend->to_host(image);
    const double err = rel_error(ours, io->to_f32("decoded" + k));
    std::printf("%s case %zu: latents %s: |ours - ref| / |ref| = %.3g\n", GetParam().c_str(), i,
                shape_str(io->entries().at("latents" + k).shape).c_str(), err);
    EXPECT_LE(err, 1e-5);

    // uint8 after postprocess: equal, except where float noise moves a value across a .5 rounding
    // point (then by one level).
    const std::vector<uint8_t> ours_u8 = image_to_uint8(ours);
    const std::vector<float> ref_u8 = io->to_f32("image" + k);
    ASSERT_EQ(ours_u8.size(), ref_u8.size());
    size_t off_by_one = 0, worse = 0;
    for (size_t j = 0; j < ref_u8.size(); ++j) {
      const int d = std::abs(int(ours_u8[j]) - int(ref_u8[j]));
      off_by_one += d == 1;
      worse += d > 1;
    }
    std::printf("%s case %zu: uint8 image: %zu of %zu values differ by one level, %zu by more\n",
                GetParam().c_str(), i, off_by_one, ref_u8.size(), worse);
    EXPECT_EQ(worse, 0u);
    EXPECT_LE(off_by_one, ref_u8.size() / 1000 + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, VaeGolden, ::testing::Values("vae_a", "vae_b"));

TEST(VaePostprocess, BitExactWithDiffusers) {
  // Crafted values: clamps at both ends and products landing exactly on k + 0.5 (numpy rounds
  // half to even), then random ones.
  auto io = SafetensorsFile::open(kGolden + "vae_a/io.safetensors");
  const std::vector<float> in = io->to_f32("post_in"), ref = io->to_f32("post_out");
  const std::vector<uint8_t> ours = image_to_uint8(in);
  ASSERT_EQ(ours.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) EXPECT_EQ(int(ours[i]), int(ref[i])) << "value " << in[i];
}

TEST(VaePostprocess, RoundsHalfToEven) {
  EXPECT_EQ(pixel_to_uint8(0.0f), 128);  // 0.5 * 255 = 127.5 → 128 (even)
  EXPECT_EQ(pixel_to_uint8(-1.0f), 0);
  EXPECT_EQ(pixel_to_uint8(1.0f), 255);
  EXPECT_EQ(pixel_to_uint8(7.0f), 255);
  EXPECT_EQ(pixel_to_uint8(-7.0f), 0);
  EXPECT_EQ(pixel_to_uint8(std::nanf("")), 0);
  EXPECT_EQ(pixel_to_uint8(INFINITY), 255);
}

TEST(VaeWeights, EncoderTensorsAreIgnoredOthersReported) {
  const std::string dir = kGolden + "vae_b/";
  auto backend = make_cpu_backend(1);
  const VAEConfig config = VAEConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  // A full AutoencoderKL file also has the encoder and quant_conv: fine.
  weights->add_f32("encoder.conv_in.weight", {16, 3, 3, 3}, std::vector<float>(16 * 27, 0.1f));
  weights->add_f32("quant_conv.weight", {8, 8, 1, 1}, std::vector<float>(64, 0.1f));
  EXPECT_NO_THROW(AutoencoderKLDecoder::load(config, *weights, *backend));
  // A stray decoder tensor is not.
  weights->add_f32("decoder.mid_block.attentions.0.query.weight", {24, 24}, std::vector<float>(576, 0.f));
  const std::string msg = message_of([&] { AutoencoderKLDecoder::load(config, *weights, *backend); });
  EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("decoder.mid_block.attentions.0.query.weight"), std::string::npos) << msg;
}

TEST(VaeWeights, MissingTensorIsNamed) {
  const std::string dir = kGolden + "vae_a/";
  auto backend = make_cpu_backend(1);
  const VAEConfig config = VAEConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors",
                             {"decoder.mid_block.attentions.0.to_v.bias", "post_quant_conv.weight"});
  const std::string msg = message_of([&] { AutoencoderKLDecoder::load(config, *weights, *backend); });
  EXPECT_NE(msg.find("2 missing tensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("decoder.mid_block.attentions.0.to_v.bias"), std::string::npos) << msg;
  EXPECT_NE(msg.find("post_quant_conv.weight"), std::string::npos) << msg;
}

// diffusers upcasts a force_upcast VAE to float32 only in its SDXL pipelines and only from fp16
// (pipeline_stable_diffusion_xl.py: vae.dtype == float16 and vae.config.force_upcast).
TEST(VaeComputeDtype, UpcastsOnlyAnSdxlForceUpcastVaeUnderFp16) {
  VAEConfig c = VAEConfig::sd15();
  c.force_upcast = true;
  EXPECT_EQ(vae_compute_dtype(c, true, DType::F16), DType::F32);
  EXPECT_EQ(vae_compute_dtype(c, true, DType::BF16), DType::BF16);
  EXPECT_EQ(vae_compute_dtype(c, true, DType::F32), DType::F32);
  EXPECT_EQ(vae_compute_dtype(c, false, DType::F16), DType::F16);  // StableDiffusionPipeline never upcasts
  c.force_upcast = false;
  EXPECT_EQ(vae_compute_dtype(c, true, DType::F16), DType::F16);
}

// A model computes in the backend's dtype or in float32; the CPU backend has only float32, so an
// explicit F32 load is the ordinary one and a float16 one is refused by the op contract.
TEST(VaeWeights, LoadsInAnExplicitDtypeTheBackendAccepts) {
  const std::string dir = kGolden + "vae_a/";
  auto backend = make_cpu_backend(1);
  const VAEConfig config = VAEConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  EXPECT_NO_THROW(AutoencoderKLDecoder::load(config, *weights, *backend, DType::F32));
  const std::string msg = message_of([&] { AutoencoderKLDecoder::load(config, *weights, *backend, DType::F16); });
  EXPECT_NE(msg.find("or upcast in F32, not F16"), std::string::npos) << msg;
}

TEST(VaeConfig, ParsesAndWritesDiffusersFiles) {
  for (const char* name : {"vae_a", "vae_b"}) {
    const std::string path = kGolden + name + "/config.json";
    const nlohmann::json file = read_json_file(path);
    EXPECT_EQ(VAEConfig::from_json(file, path).to_json(), file) << name;
  }
  const VAEConfig sd = VAEConfig::from_json(VAEConfig::sd15().to_json(), "x");
  EXPECT_EQ(sd.block_out_channels, (std::vector<int>{128, 256, 512, 512}));
  EXPECT_EQ(sd.scale_factor(), 8);
  EXPECT_EQ(sd.scaling_factor, 0.18215);
  // Left-out keys: diffusers' class defaults.
  const VAEConfig d = VAEConfig::from_json(nlohmann::json::object(), "x");
  EXPECT_EQ(d.block_out_channels, (std::vector<int>{64}));
  EXPECT_EQ(d.layers_per_block, 1);
}

TEST(VaeConfig, UnsupportedValuesNameFileKeyAndValue) {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"up_block_types", {"UpDecoderBlock2D", "AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"},
       "AttnUpDecoderBlock2D"},
      {"shift_factor", 0.1159, "SD3/Flux"},
      {"act_fn", "relu", "silu"},
      {"scaling_factor", -1.0, "positive"},
      {"scaling_factor", "0.18215", "expected a number"},
      {"layers_per_block", {2, 2}, "expected integers"},
      {"block_out_channels", {128, 256, 512}, "one type per entry"},
      {"norm_num_groups", 30, "multiple of norm_num_groups"},
      {"_class_name", "AutoencoderTiny", "AutoencoderKL"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = VAEConfig::sd15().to_json();
    j[c.key] = c.value;
    const std::string msg = message_of([&] { VAEConfig::from_json(j, "m/vae/config.json"); });
    EXPECT_NE(msg.find("m/vae/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sdmpi
