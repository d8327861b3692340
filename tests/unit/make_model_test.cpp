// make-model: parameter lists against diffusers' counts, agreement with the model classes (every
// tensor a model asks for exists with its shape, and none is left over), the folder it writes,
// determinism, and the tiny preset end to end on the CPU backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "golden_util.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/error.h"
#include "sdmpi/make_model.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

namespace sdmpi {
namespace {

using namespace sdmpi::testing_util;

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  fs::path p = fs::path(SDMPI_BINARY_DIR) / "make_model_test_output" / name;
  fs::remove_all(p);
  return p;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(MakeModel, Sd15ParameterCountsMatchDiffusers) {
  // diffusers 0.42.1 / transformers 5.24.0: UNet2DConditionModel(SD 1.5) 859,520,964 (also the
  // number in diffusers' docs), AutoencoderKL(SD 1.5) 83,653,863, CLIPTextModel(ViT-L/14) 123,060,480.
  const ModelPreset p = model_preset("sd15");
  EXPECT_EQ(count_parameters(unet_parameters(p.unet)), 859520964);
  EXPECT_EQ(count_parameters(vae_parameters(p.vae)), 83653863);
  EXPECT_EQ(count_parameters(clip_text_parameters(p.text_encoder)), 123060480);
}

TEST(MakeModel, NamesAreUniqueAndNothingIsZero) {
  for (const char* preset : {"tiny", "sd15"}) {
    const ModelPreset p = model_preset(preset);
    for (const auto& list : {unet_parameters(p.unet), vae_parameters(p.vae), clip_text_parameters(p.text_encoder)}) {
      std::set<std::string> names;
      for (const ParamSpec& s : list) EXPECT_TRUE(names.insert(s.name).second) << s.name;
    }
  }
  const ModelPreset tiny = model_preset("tiny");
  for (const ParamSpec& s : unet_parameters(tiny.unet)) {
    const std::vector<float> v = random_parameter(s, 7);
    double sum2 = 0, max_abs = 0;
    for (float x : v) {
      sum2 += double(x) * x;
      max_abs = std::max(max_abs, double(std::fabs(x)));
    }
    EXPECT_GT(sum2, 0.0) << s.name;
    const double bound = 1.0 / std::sqrt(double(s.fan_in));
    if (s.init == ParamInit::Weight || s.init == ParamInit::Bias) {
      EXPECT_LE(max_abs, bound) << s.name;
    }
    if (s.init == ParamInit::NormWeight) {
      EXPECT_LE(max_abs, 1.2) << s.name;
    }
  }
}

TEST(MakeModel, ValuesDependOnSeedAndNameOnly) {
  const ParamSpec a{"down_blocks.0.resnets.0.conv1.weight", {32, 32, 3, 3}, ParamInit::Weight, 288};
  ParamSpec b = a;
  b.name = "down_blocks.0.resnets.1.conv1.weight";
  EXPECT_EQ(random_parameter(a, 1), random_parameter(a, 1));
  EXPECT_NE(random_parameter(a, 1), random_parameter(a, 2));
  EXPECT_NE(random_parameter(a, 1), random_parameter(b, 1));
  // Embeddings: N(0, 1).
  const ParamSpec e{"embeddings.token_embedding.weight", {1000, 100}, ParamInit::Embedding, 1};
  const std::vector<float> v = random_parameter(e, 3);
  double mean = 0, var = 0;
  for (float x : v) mean += x;
  mean /= v.size();
  for (float x : v) var += (x - mean) * (x - mean);
  var /= v.size();
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(var, 1.0, 0.02);
}

TEST(MakeModel, UnknownPresetIsAnInputError) {
  EXPECT_NE(message_of([] { model_preset("sd3"); }).find("sd3"), std::string::npos);  // sdxl(-refiner) are rows now
  EXPECT_THROW(make_model("sd99", 0, (fresh_dir("bad") / "x").string()), InputError);  // sd21 is a row now
}

TEST(MakeModel, TinyInMemoryLoadsAndRuns) {
  // The parameter lists and the models agree: WeightLoader::finish() passes (no missing,
  // mis-shaped or unexpected tensor; the VAE encoder is ignored).
  const InMemoryModel m = make_model_in_memory("tiny", 42);
  auto backend = make_cpu_backend(2);
  const ClipTextModel text = ClipTextModel::load(m.configs.text_encoder, *m.text_encoder, *backend);
  const UNet2DConditionModel unet = UNet2DConditionModel::load(m.configs.unet, *m.unet, *backend);
  const AutoencoderKLDecoder vae = AutoencoderKLDecoder::load(m.configs.vae, *m.vae, *backend);

  const ClipTokenizer tok = ClipTokenizer::builtin();
  std::vector<int32_t> ids = tok.encode_padded("");
  const std::vector<int32_t> cond = tok.encode_padded("a photo of a cat");
  ids.insert(ids.end(), cond.begin(), cond.end());

  auto t0 = std::chrono::steady_clock::now();
  Tensor context = text.forward(*backend, ids, 2);
  const double t_text = seconds_since(t0);

  std::vector<float> latents(2 * 8 * 8 * 4);
  for (size_t i = 0; i < latents.size(); ++i) latents[i] = std::sin(0.37 * double(i));
  t0 = std::chrono::steady_clock::now();
  Tensor eps = unet.forward(*backend, backend->from_host(latents.data(), {2, 8, 8, 4}), {981, 981}, context);
  const double t_unet = seconds_since(t0);
  t0 = std::chrono::steady_clock::now();
  Tensor image = vae.decode(*backend, backend->from_host(latents.data(), {1, 8, 8, 4}));
  const double t_vae = seconds_since(t0);
  std::printf("tiny on %s: text encoder (2 x 77) %.1f ms, UNet (2 x 8x8) %.1f ms, VAE decode (64x64) %.1f ms\n",
              backend->name().c_str(), 1e3 * t_text, 1e3 * t_unet, 1e3 * t_vae);
  EXPECT_EQ(image.shape(), (Shape{1, 64, 64, 3}));

  // Activations stay O(1): random weights at PyTorch's default scales neither explode nor vanish.
  for (const Tensor* t : {&context, &eps, &image}) {
    const std::vector<float> v = backend->to_host(*t);
    double sum2 = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x));
      sum2 += double(x) * x;
    }
    const double rms = std::sqrt(sum2 / v.size());
    EXPECT_GT(rms, 1e-3) << t->describe();
    EXPECT_LT(rms, 1e2) << t->describe();
  }
}

TEST(MakeModel, VaeEncoderAndDecoderEachLoadTheirPart) {
  // vae_parameters() is the encoder's and the decoder's declarations together: each class loads
  // its own part of the full file, ignoring the other's, and needs nothing of the other part.
  const InMemoryModel m = make_model_in_memory("tiny", 3);
  auto backend = make_cpu_backend(1);
  EXPECT_NO_THROW(AutoencoderKLEncoder::load(m.configs.vae, *m.vae, *backend));
  EXPECT_NO_THROW(AutoencoderKLDecoder::load(m.configs.vae, *m.vae, *backend));
  MemoryWeightSource decoder_only("decoder only");
  size_t encoder_tensors = 0;
  for (const ParamSpec& p : vae_parameters(m.configs.vae)) {
    const bool encoder = p.name.rfind("encoder.", 0) == 0 || p.name.rfind("quant_conv.", 0) == 0;
    encoder_tensors += encoder;
    if (!encoder) decoder_only.add_f32(p.name, p.shape, random_parameter(p, 3));
  }
  EXPECT_GT(encoder_tensors, 0u);
  EXPECT_NO_THROW(AutoencoderKLDecoder::load(m.configs.vae, decoder_only, *backend));
  const std::string msg = message_of([&] { AutoencoderKLEncoder::load(m.configs.vae, decoder_only, *backend); });
  EXPECT_NE(msg.find(std::to_string(encoder_tensors) + " missing tensors"), std::string::npos) << msg;
}

TEST(MakeModel, PresetsAreTheConfigTablesRows) {
  // sd15's typed configs are the table's JSON parsed; tiny is SD 1.5 at small width.
  const ModelPreset sd15 = model_preset("sd15"), tiny = model_preset("tiny");
  EXPECT_EQ(sd15.unet.to_json(), UNetConfig::sd15().to_json());
  EXPECT_EQ(sd15.unet.cross_attention_dim, (std::vector<int>{768, 768, 768, 768}));
  EXPECT_EQ(sd15.vae.block_out_channels, (std::vector<int>{128, 256, 512, 512}));
  EXPECT_EQ(sd15.text_encoder.eos_token_id, 2);
  EXPECT_EQ(tiny.unet.block_out_channels, (std::vector<int>{32, 64, 64, 64}));
  EXPECT_EQ(tiny.unet.num_attention_heads, (std::vector<int>{4, 4, 4, 4}));
  EXPECT_EQ(tiny.unet.down_block_types, sd15.unet.down_block_types);
  EXPECT_EQ(tiny.text_encoder.num_hidden_layers, 5);
  EXPECT_EQ(tiny.text_encoder.vocab_size, 49408);
  EXPECT_EQ(tiny.scheduler, sd15.scheduler);
  EXPECT_EQ(tiny.scheduler["_class_name"], "PNDMScheduler");
}

TEST(MakeModel, WritesALoadableDiffusersFolder) {
  const fs::path dir = fresh_dir("tiny");
  make_model("tiny", 5, dir.string());
  for (const char* f : {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                        "text_encoder/config.json", "text_encoder/model.safetensors",
                        "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"})
    EXPECT_TRUE(fs::is_regular_file(dir / f)) << f;
  const nlohmann::json index = read_json_file((dir / "model_index.json").string());
  EXPECT_EQ(index["_class_name"], "StableDiffusionPipeline");
  EXPECT_EQ(index["unet"], nlohmann::json({"diffusers", "UNet2DConditionModel"}));
  EXPECT_TRUE(index["safety_checker"][0].is_null());
  EXPECT_EQ(read_json_file((dir / "scheduler/scheduler_config.json").string())["_class_name"], "PNDMScheduler");

  // Configs parse back to the preset; the weights load (F32) into our models with nothing missing
  // or left over; they equal the in-memory variant.
  const ModelPreset p = model_preset("tiny");
  EXPECT_EQ(UNetConfig::load((dir / "unet/config.json").string()).to_json(), p.unet.to_json());
  EXPECT_EQ(VAEConfig::load((dir / "vae/config.json").string()).to_json(), p.vae.to_json());
  EXPECT_EQ(ClipTextConfig::load((dir / "text_encoder/config.json").string()).to_json(),
            p.text_encoder.to_json());
  auto unet_file = SafetensorsFile::open((dir / "unet/diffusion_pytorch_model.safetensors").string());
  auto text_file = SafetensorsFile::open((dir / "text_encoder/model.safetensors").string());
  EXPECT_EQ(unet_file->metadata().at("format"), "pt");
  const InMemoryModel m = make_model_in_memory("tiny", 5);
  for (const char* name : {"conv_in.weight", "mid_block.attentions.0.proj_in.weight", "up_blocks.3.resnets.2.conv2.bias"}) {
    EXPECT_EQ(unet_file->entries().at(name).dtype, DType::F32);
    WeightView v = m.unet->get(name);
    const std::vector<float> mem(static_cast<const float*>(v.data), static_cast<const float*>(v.data) + shape_numel(v.shape));
    EXPECT_EQ(unet_file->to_f32(name), mem) << name;
  }
  EXPECT_TRUE(text_file->contains("text_model.embeddings.token_embedding.weight"));
  EXPECT_EQ(text_file->entries().at("text_model.embeddings.token_embedding.weight").shape, (Shape{49408, 32}));
  EXPECT_TRUE(ClipTokenizer::from_dir((dir / "tokenizer").string()) == ClipTokenizer::builtin());

  // Same seed → the same bytes; the folder must be new.
  const fs::path again = fresh_dir("tiny_again");
  make_model("tiny", 5, again.string());
  for (const char* f : {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}) {
    std::ifstream a(dir / f, std::ios::binary), b(again / f, std::ios::binary);
    EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), std::istreambuf_iterator<char>(),
                           std::istreambuf_iterator<char>(b), std::istreambuf_iterator<char>()))
        << f;
  }
  const std::string msg = message_of([&] { make_model("tiny", 5, dir.string()); });
  EXPECT_NE(msg.find("not empty"), std::string::npos) << msg;
  fs::remove_all(again);
}

}  // namespace
}  // namespace sdmpi
