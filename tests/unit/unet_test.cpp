// UNet2DConditionModel against diffusers (tests/data/golden/models/unet_*, made by
// tools/golden/make_models_golden.py), the weight loader's reports on a UNet, and the config parser.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "golden_util.h"
#include "sdmpi/backend.h"
#include "sdmpi/error.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/unet.h"
#include "sdmpi/weights.h"

namespace sdmpi {
namespace {

using namespace sdmpi::testing_util;

const std::string kGolden = std::string(SDMPI_TEST_DATA) + "/golden/models/";

class UNetGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetGolden, MatchesDiffusers) {
  const std::string dir = kGolden + GetParam() + "/";
  auto backend = make_cpu_backend(2);
  const UNetConfig config = UNetConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const UNet2DConditionModel unet = UNet2DConditionModel::load(config, *weights, *backend);

  const nlohmann::json meta = read_json_file(dir + "io.json");
  auto io = SafetensorsFile::open(dir + "io.safetensors");
  for (size_t i = 0; i < meta["cases"].size(); ++i) {
    const std::string k = std::to_string(i);
    const std::vector<float> timesteps = meta["cases"][i]["timesteps"].get<std::vector<float>>();
    const Shape sample_shape = io->entries().at("sample" + k).shape;
    const Shape ctx_shape = io->entries().at("encoder_hidden_states" + k).shape;
    const std::vector<float> sample = io->to_f32("sample" + k);
    const std::vector<float> ctx = io->to_f32("encoder_hidden_states" + k);

    // The sinusoidal embedding on the host: torch's SLEEF exp/sin/cos are within 1 ulp of ours.
    const std::vector<float> t_ref = io->to_f32("t_emb" + k);
    const std::vector<float> t_ours = timestep_embedding(timesteps, config.block_out_channels[0],
                                                         config.flip_sin_to_cos, config.freq_shift);
    ASSERT_EQ(t_ours.size(), t_ref.size());
    int differ = 0;
    for (size_t j = 0; j < t_ref.size(); ++j) {
      EXPECT_NEAR(t_ours[j], t_ref[j], 2.5e-7f) << "t_emb" << k << "[" << j << "]";
      differ += t_ours[j] != t_ref[j];
    }
    std::printf("%s case %zu: time embedding: %d of %zu values differ from torch (by <= 1 ulp)\n",
                GetParam().c_str(), i, differ, t_ref.size());

    Tensor out = unet.forward(*backend, backend->from_host(sample.data(), sample_shape), timesteps,
                              backend->from_host(ctx.data(), ctx_shape));
    EXPECT_EQ(out.shape(), io->entries().at("out" + k).shape);
    const double err = rel_error(backend->to_host(out), io->to_f32("out" + k));
    std::printf("%s case %zu: sample %s, timesteps [%g, %g]: |ours - ref| / |ref| = %.3g\n",
                GetParam().c_str(), i, shape_str(sample_shape).c_str(), timesteps[0],
                timesteps[1], err);
    EXPECT_LE(err, 1e-5) << GetParam() << " case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, UNetGolden, ::testing::Values("unet_a", "unet_b"));

TEST(UNet, BatchItemsAreIndependent) {
  // Item 1 of a batch equals the same item run alone (per-item timesteps, no cross-talk).
  const std::string dir = kGolden + "unet_b/";
  auto backend = make_cpu_backend(2);
  const UNetConfig config = UNetConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const UNet2DConditionModel unet = UNet2DConditionModel::load(config, *weights, *backend);
  auto io = SafetensorsFile::open(dir + "io.safetensors");
  const std::vector<float> sample = io->to_f32("sample1"), ctx = io->to_f32("encoder_hidden_states1");
  const Shape s = io->entries().at("sample1").shape, c = io->entries().at("encoder_hidden_states1").shape;
  Tensor both = unet.forward(*backend, backend->from_host(sample.data(), s), {637.25f, 3.0f},
                             backend->from_host(ctx.data(), c));
  Tensor x = backend->from_host(sample.data(), s).rows(1, 2);
  Tensor y = backend->from_host(ctx.data(), c).rows(1, 2);
  Tensor one = unet.forward(*backend, backend->copy(x), {3.0f}, backend->copy(y));
  EXPECT_EQ(backend->to_host(one), backend->to_host(both.rows(1, 2)));
}

TEST(UNet, CrossAttentionKVComputedOnceGiveTheSameBits) {
  // The pipeline computes every attn2's K/V of the context once per batch and reuses them each
  // step: the same linear ops on the same context, so forward() bit for bit, at every step.
  const std::string dir = kGolden + "unet_a/";
  auto backend = make_cpu_backend(2);
  const UNetConfig config = UNetConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const UNet2DConditionModel unet = UNet2DConditionModel::load(config, *weights, *backend);
  auto io = SafetensorsFile::open(dir + "io.safetensors");
  const std::vector<float> sample = io->to_f32("sample0"), ctx = io->to_f32("encoder_hidden_states0");
  const Shape s = io->entries().at("sample0").shape, c = io->entries().at("encoder_hidden_states0").shape;
  const Tensor context = backend->from_host(ctx.data(), c);
  const std::vector<Tensor> kv = unet.cross_attention_kv(*backend, context);
  size_t transformer_blocks = 0;
  for (const ParamSpec& p : unet_parameters(config))
    transformer_blocks += p.name.find(".attn2.to_k.weight") != std::string::npos;
  EXPECT_EQ(kv.size(), 2 * transformer_blocks);
  for (float t : {901.0f, 17.5f}) {
    std::vector<float> shifted = sample;
    for (float& v : shifted) v *= t / 500.0f;
    const Tensor x = backend->from_host(shifted.data(), s);
    const std::vector<float> timesteps(static_cast<size_t>(s[0]), t);
    const std::vector<float> want = backend->to_host(unet.forward(*backend, x, timesteps, context));
    const std::vector<float> got =
        backend->to_host(unet.forward_embedded(*backend, x, unet.time_proj(*backend, timesteps), kv));
    EXPECT_EQ(got, want) << "timestep " << t;
  }
  const std::vector<Tensor> too_few(kv.begin(), kv.end() - 1);
  const Tensor x = backend->from_host(sample.data(), s);
  const std::vector<float> timesteps(static_cast<size_t>(s[0]), 1.0f);
  EXPECT_THROW(unet.forward_embedded(*backend, x, unet.time_proj(*backend, timesteps), too_few), Error);
}

TEST(UNet, WrongInputsAreErrors) {
  const std::string dir = kGolden + "unet_b/";
  auto backend = make_cpu_backend(1);
  const UNetConfig config = UNetConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const UNet2DConditionModel unet = UNet2DConditionModel::load(config, *weights, *backend);
  Tensor sample = backend->empty({2, 8, 8, 4}, DType::F32);
  Tensor ctx = backend->empty({2, 77, 20}, DType::F32);
  EXPECT_THROW(unet.forward(*backend, sample, {1.0f}, ctx), Error);  // 1 timestep for 2 items
  EXPECT_THROW(unet.forward(*backend, backend->empty({2, 8, 8, 3}, DType::F32), {1, 2}, ctx), Error);
  EXPECT_THROW(unet.forward(*backend, sample, {1, 2}, backend->empty({1, 77, 20}, DType::F32)), Error);
}

// ---- the weight loader on a UNet ------------------------------------------------------------------

TEST(UNetWeights, MissingTensorIsNamed) {
  const std::string dir = kGolden + "unet_a/";
  auto backend = make_cpu_backend(1);
  const UNetConfig config = UNetConfig::load(dir + "config.json");
  const std::string dropped = "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight";
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors", {dropped});
  const std::string msg = message_of([&] { UNet2DConditionModel::load(config, *weights, *backend); });
  EXPECT_NE(msg.find("1 missing tensor"), std::string::npos) << msg;
  EXPECT_NE(msg.find(dropped), std::string::npos) << msg;
  EXPECT_NE(msg.find("unet"), std::string::npos) << msg;
}

TEST(UNetWeights, WrongConfigShowsAsMisshapedNames) {
  // The same weights with a config claiming another cross_attention_dim: every attn2.to_k/to_v is
  // mis-shaped, and the message says which and how.
  const std::string dir = kGolden + "unet_a/";
  auto backend = make_cpu_backend(1);
  UNetConfig config = UNetConfig::load(dir + "config.json");
  config.cross_attention_dim.assign(config.cross_attention_dim.size(), 16);
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  const std::string msg = message_of([&] { UNet2DConditionModel::load(config, *weights, *backend); });
  EXPECT_NE(msg.find("mis-shaped"), std::string::npos) << msg;
  EXPECT_NE(msg.find("attn2.to_k.weight: file [8, 12] expected [8, 16]"), std::string::npos) << msg;
}

TEST(UNetWeights, UnexpectedTensorIsNamed) {
  const std::string dir = kGolden + "unet_b/";
  auto backend = make_cpu_backend(1);
  const UNetConfig config = UNetConfig::load(dir + "config.json");
  auto weights = file_source(dir + "diffusion_pytorch_model.safetensors");
  weights->add_f32("add_embedding.linear_1.weight", {4, 4}, std::vector<float>(16, 0.5f));
  const std::string msg = message_of([&] { UNet2DConditionModel::load(config, *weights, *backend); });
  EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("add_embedding.linear_1.weight"), std::string::npos) << msg;
}

// ---- config parsing -----------------------------------------------------------------------------

nlohmann::json sd15_json() { return UNetConfig::sd15().to_json(); }

TEST(UNetConfig, Sd15DefaultsAndQuirk) {
  // SD 1.5's file: "attention_head_dim": 8 means 8 heads at every level.
  const UNetConfig c = UNetConfig::from_json(sd15_json(), "sd15/unet/config.json");
  EXPECT_EQ(c.num_attention_heads, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(c.cross_attention_dim, (std::vector<int>{768, 768, 768, 768}));
  EXPECT_EQ(c.time_embed_dim(), 1280);
  EXPECT_EQ(c.overall_up_factor(), 8);
  // Keys left out get diffusers' defaults (cross_attention_dim 1280, not SD's 768).
  const UNetConfig d = UNetConfig::from_json(nlohmann::json::object(), "empty.json");
  EXPECT_EQ(d.cross_attention_dim, (std::vector<int>{1280, 1280, 1280, 1280}));
  EXPECT_EQ(d.block_out_channels, (std::vector<int>{320, 640, 1280, 1280}));
  EXPECT_EQ(d.sample_size, 0);
  // Per-block lists, and num_attention_heads taking precedence.
  nlohmann::json j = sd15_json();
  j["attention_head_dim"] = {5, 10, 20, 20};
  EXPECT_EQ(UNetConfig::from_json(j, "x").num_attention_heads, (std::vector<int>{5, 10, 20, 20}));
  j["num_attention_heads"] = 4;
  EXPECT_EQ(UNetConfig::from_json(j, "x").num_attention_heads, (std::vector<int>{4, 4, 4, 4}));
}

TEST(UNetConfig, ToJsonReproducesDiffusersFiles) {
  // diffusers' own save_config output for both golden models, key for key.
  for (const char* name : {"unet_a", "unet_b"}) {
    const std::string path = kGolden + name + "/config.json";
    const nlohmann::json file = read_json_file(path);
    EXPECT_EQ(UNetConfig::from_json(file, path).to_json(), file) << name;
  }
}

struct BadKey {
  const char* key;
  nlohmann::json value;
  const char* expect;  // a piece of the message
};

TEST(UNetConfig, UnsupportedValuesNameFileKeyAndValue) {
  const std::vector<BadKey> cases = {
      {"addition_embed_type", "image", "only SDXL's \"text_time\" added conditioning"},
      {"down_block_types", {"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"},
       "SimpleCrossAttnDownBlock2D"},
      {"up_block_types", {"UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"}, "AttnUpBlock2D"},
      {"mid_block_type", "UNetMidBlock2DSimpleCrossAttn", "only UNetMidBlock2DCrossAttn"},
      {"mid_block_type", nullptr, "without a mid block"},
      {"act_fn", "gelu", "silu"},
      {"resnet_time_scale_shift", "scale_shift", "default"},
      {"class_embed_type", "timestep", "class embeddings"},
      {"num_class_embeds", 10, "class embeddings"},
      {"time_cond_proj_dim", -256, "lie in"},
      {"encoder_hid_dim", 1024, "encoder_hid_proj"},
      {"only_cross_attention", true, "only false"},
      {"dual_cross_attention", true, "only false"},
      {"transformer_layers_per_block", {{1, 1}, {2, 2}, {10, 10}, {10, 10}}, "nested"},
      {"downsample_padding", 0, "only 1"},
      {"block_out_channels", "320", "list of integers"},
      {"block_out_channels", {320, 640.5, 1280, 1280}, "expected integers"},
      {"block_out_channels", {320, 640, 1280}, "one type per entry"},
      {"layers_per_block", {2, 2}, "one value per block"},
      {"layers_per_block", 0, "values must lie in"},
      {"norm_eps", "small", "expected a number"},
      {"use_linear_projection", 1, "true or false"},
      {"conv_in_kernel", 4, "odd"},
      {"_class_name", "UNet2DModel", "UNet2DConditionModel"},
  };
  for (const BadKey& c : cases) {
    nlohmann::json j = sd15_json();
    j[c.key] = c.value;
    const std::string msg = message_of([&] { UNetConfig::from_json(j, "m/unet/config.json"); });
    EXPECT_NE(msg.find("m/unet/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::string("\"") + c.key + "\""), std::string::npos) << msg;
    if (!c.value.is_null() && c.value.dump().size() < 60) {
      EXPECT_NE(msg.find(c.value.dump()), std::string::npos) << msg;
    }
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
}

TEST(UNetConfig, InconsistentConfigs) {
  nlohmann::json j = sd15_json();
  j["norm_num_groups"] = 48;  // 320 is not a multiple of 48
  EXPECT_NE(message_of([&] { UNetConfig::from_json(j, "f"); }).find("multiple of norm_num_groups"),
            std::string::npos);
  j = sd15_json();
  j["attention_head_dim"] = 400;  // more heads than channels
  EXPECT_NE(message_of([&] { UNetConfig::from_json(j, "f"); }).find("heads"), std::string::npos);
  EXPECT_NE(message_of([&] { UNetConfig::from_json(nlohmann::json::array(), "f"); }).find("JSON object"),
            std::string::npos);
}

TEST(UNetConfig, FileErrors) {
  const std::string path = std::string(SDMPI_BINARY_DIR) + "/unet_test_bad_config.json";
  {
    std::ofstream out(path);
    out << "{\"in_channels\": 4,\n \"block_out_channels\": [320, 640,]\n}";
  }
  const std::string msg = message_of([&] { UNetConfig::load(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 2"), std::string::npos) << msg;
  std::remove(path.c_str());
  EXPECT_NE(message_of([&] { UNetConfig::load(path); }).find("cannot open"), std::string::npos);
}

}  // namespace
}  // namespace sdmpi
