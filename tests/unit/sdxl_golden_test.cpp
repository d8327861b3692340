// SDXL against diffusers (tools/golden/make_sdxl_golden.py): a tiny random StableDiffusionXLPipeline
// with SDXL base's structure (CLIP + OpenCLIP-style CLIPTextModelWithProjection, penultimate hidden
// states concatenated, pooled projection, "text_time" added conditioning with micro-conditioning,
// no attention in the first down block, transformer depth [1, 2, 3], VAE scaling 0.13025) and SDXL
// base's EulerDiscrete config, plus the same networks with SDXL-Turbo's schedule (Euler ancestral,
// trailing, guidance 0). Components: tokenizer_2's ids with "!" padding, both encoders' hidden
// states, the pooled projection, diffusers' encode_prompt and one UNet call within 1e-5 relative.
// Whole generations (Euler/Euler a/DPM++ 2M/DDIM, CFG with negatives and with
// force_zeros_for_empty_prompt's zero negatives, guidance 1 and 0, non-square sizes, micro-
// conditioning values): every uint8 pixel within 1 level of diffusers' image; each run made as a
// batch of 2 and item by item gives the same bytes.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden_util.h"
#include "io/sd_configs.h"
#include "pipeline/memory_plan.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/unet.h"

using namespace sdmpi;
using sdmpi::testing_util::compare_images;
using sdmpi::testing_util::nhwc_vs_nchw_rel_error;
using sdmpi::testing_util::rel_error;
using sdmpi::testing_util::rebuild;

namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/sdxl/";

nlohmann::json load_doc() { return testing_util::load_json_or_null(kDir + "pipelines.json"); }

using testing_util::weight_recipes;

ClipTokenizer bang_padded_tokenizer() { return testing_util::bang_padded_tokenizer("sdxl_golden_tokenizer_2"); }

ModelSource build_model(const nlohmann::json& doc, const std::string& name) {
  return testing_util::golden_model(doc, name, {{"tokenizer", ClipTokenizer::builtin()}, {"tokenizer_2", bang_padded_tokenizer()}});
}

std::vector<WorkItem> run_items(const nlohmann::json& run) {
  std::vector<WorkItem> items;
  const std::vector<int> micro = run["micro"].get<std::vector<int>>();
  for (size_t i = 0; i < run["prompts"].size(); ++i) {
    WorkItem it;
    it.index = static_cast<int64_t>(i);
    GenerationParams& p = it.params;
    p.prompt = run["prompts"][i];
    // No negative prompt given: "" (force_zeros_for_empty_prompt then zeroes the negative half).
    p.negative_prompt = run["negative_prompts"].is_null() ? "" : run["negative_prompts"][i].get<std::string>();
    p.seed = run["seeds"][i].get<uint64_t>();
    p.steps = run["steps"];
    p.guidance = run["guidance"].get<float>();
    p.width = run["width"];
    p.height = run["height"];
    p.eta = run["eta"].get<float>();
    p.sampler = run["sampler"];
    p.original_height = micro[0];
    p.original_width = micro[1];
    p.crop_top = micro[2];
    p.crop_left = micro[3];
    p.target_height = micro[4];
    p.target_width = micro[5];
    items.push_back(it);
  }
  return items;
}

std::vector<int32_t> flat_ids(const nlohmann::json& rows) {
  std::vector<int32_t> ids;
  for (const auto& row : rows)
    for (const auto& id : row) ids.push_back(id.get<int32_t>());
  return ids;
}

}  // namespace

TEST(SdxlGolden, ComponentsWithin1e5OfDiffusers) {
  nlohmann::json doc = load_doc();
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "pipelines.json";
  const nlohmann::json& comp = doc["components"];
  const std::string name = comp["pipeline"];
  const auto& configs = doc["pipelines"][name]["configs"];
  auto io = SafetensorsFile::open(kDir + "components.safetensors");
  auto backend = make_cpu_backend(2);

  // tokenizer_2 pads with "!" and treats it as a special token ("!!" is two tokens).
  const ClipTokenizer tok2 = bang_padded_tokenizer();
  const ClipTokenizer tok1 = ClipTokenizer::builtin();
  std::vector<int32_t> ours1, ours2;
  for (const auto& text : comp["texts"]) {
    const auto a = tok1.encode_padded(text.get<std::string>(), 77), b = tok2.encode_padded(text.get<std::string>(), 77);
    ours1.insert(ours1.end(), a.begin(), a.end());
    ours2.insert(ours2.end(), b.begin(), b.end());
  }
  const std::vector<int32_t> ids1 = flat_ids(comp["text_ids"]), ids2 = flat_ids(comp["text_ids_2"]);
  EXPECT_EQ(ours1, ids1);
  EXPECT_EQ(ours2, ids2);
  const int rows = static_cast<int>(comp["text_ids"].size());

  const ClipTextConfig c1 = ClipTextConfig::from_json(configs["text_encoder"], "golden text_encoder");
  const ClipTextConfig c2 = ClipTextConfig::from_json(configs["text_encoder_2"], "golden text_encoder_2");
  EXPECT_FALSE(c1.with_projection);
  EXPECT_TRUE(c2.with_projection);
  const ClipTextModel te1 = ClipTextModel::load(c1, *rebuild(weight_recipes(doc, name)["text_encoder"], "te1"), *backend);
  const ClipTextModel te2 = ClipTextModel::load(c2, *rebuild(weight_recipes(doc, name)["text_encoder_2"], "te2"), *backend);
  const auto out1 = te1.forward_hidden(*backend, ids1, rows);
  const auto out2 = te2.forward_hidden(*backend, ids2, rows);
  EXPECT_FALSE(out1.text_embeds.defined());
  ASSERT_TRUE(out2.text_embeds.defined());
  const double e1 = rel_error(backend->to_host(out1.hidden_state), io->to_f32("text1_penultimate"));
  const double e2 = rel_error(backend->to_host(out2.hidden_state), io->to_f32("text2_penultimate"));
  const double ep = rel_error(backend->to_host(out2.text_embeds), io->to_f32("text2_pooled"));
  std::printf("text encoders (%d texts): penultimate 1 %.3g, penultimate 2 %.3g, pooled projection %.3g\n", rows, e1,
              e2, ep);
  EXPECT_LE(e1, 1e-5);
  EXPECT_LE(e2, 1e-5);
  EXPECT_LE(ep, 1e-5);

  const UNetConfig uc = UNetConfig::from_json(configs["unet"], "golden unet");
  EXPECT_TRUE(uc.has_text_time());
  EXPECT_EQ(uc.pooled_text_dim(), c2.projection_dim);
  const UNet2DConditionModel unet = UNet2DConditionModel::load(uc, *rebuild(weight_recipes(doc, name)["unet"], "unet"), *backend);
  const std::vector<float> ctx = io->to_f32("prompt_embeds"), pooled = io->to_f32("pooled_prompt_embeds");
  const Shape cs = io->entries().at("prompt_embeds").shape, ps = io->entries().at("pooled_prompt_embeds").shape;
  AddedConditioning added;
  added.text_embeds = backend->from_host(pooled.data(), ps);
  for (const auto& row : comp["unet_time_ids"])
    for (const auto& v : row) added.time_ids.push_back(v.get<float>());
  const Shape sample_shape = io->entries().at("unet_sample").shape;
  const std::vector<float> sample = io->to_f32("unet_sample");
  Tensor out = unet.forward(*backend, backend->from_host(sample.data(), sample_shape),
                            comp["unet_timesteps"].get<std::vector<float>>(), backend->from_host(ctx.data(), cs), &added);
  EXPECT_EQ(out.shape(), io->entries().at("unet_out").shape);
  const double unet_err = rel_error(backend->to_host(out), io->to_f32("unet_out"));
  std::printf("unet (text_time, transformer depth %s): |ours - ref| / |ref| = %.3g\n",
              nlohmann::json(uc.transformer_layers_per_block).dump().c_str(), unet_err);
  EXPECT_LE(unet_err, 1e-5);
  // A UNet with added conditioning refuses a call without it.
  EXPECT_THROW(unet.forward(*backend, backend->from_host(sample.data(), sample_shape),
                            comp["unet_timesteps"].get<std::vector<float>>(), backend->from_host(ctx.data(), cs)),
               Error);
}

TEST(SdxlGolden, EveryRunWithinOneLevelOfDiffusers) {
  nlohmann::json doc = load_doc();
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "pipelines.json";
  const std::vector<uint8_t> ref_images = testing_util::read_golden_images(kDir + "images.u8");
  auto latents = SafetensorsFile::open(kDir + "latents.safetensors");
  auto backend = make_cpu_backend();
  std::map<std::string, std::unique_ptr<Txt2ImgPipeline>> pipes;
  std::map<std::string, ModelSource> models;
  int runs = 0, zero_negative_runs = 0, micro_runs = 0, turbo_runs = 0;
  for (const auto& run : doc["runs"]) {
    const std::string pname = run["pipeline"];
    if (!pipes.count(pname)) {
      models.emplace(pname, build_model(doc, pname));
      EXPECT_EQ(models.at(pname).family(), "SDXL");
      pipes[pname] = std::make_unique<Txt2ImgPipeline>(models.at(pname), *backend);
    }
    testing_util::check_golden_run(*pipes[pname], run_items(run), run, ref_images, *latents);
    ++runs;
    zero_negative_runs += run["negative_prompts"].is_null() && run["guidance"].get<double>() > 1;
    const std::vector<int> m = run["micro"].get<std::vector<int>>();
    micro_runs += m[0] != run["height"].get<int>() || m[2] != 0;
    turbo_runs += pname == "sdxl_turbo";
  }
  EXPECT_GE(runs, 7);
  EXPECT_GE(zero_negative_runs, 1);
  EXPECT_GE(micro_runs, 2);
  EXPECT_GE(turbo_runs, 2);
}

// The sdxl and tiny-sdxl rows of the config table: make-model --preset sdxl's shapes are
// stable-diffusion-xl-base-1.0's (the parameter counts diffusers / transformers give for its
// unet and text_encoder_2 configs), and a tiny-sdxl folder written by make-model opens as SDXL,
// runs end to end, and gives the same image as the in-memory preset with the same seed.
TEST(SdxlGolden, TableRowsAndMakeModelFolder) {
  const UNetConfig u = UNetConfig::preset("sdxl");
  EXPECT_TRUE(u.has_text_time());
  EXPECT_EQ(u.transformer_layers_per_block, (std::vector<int>{1, 2, 10}));
  EXPECT_EQ(u.pooled_text_dim(), 1280);
  EXPECT_EQ(count_parameters(unet_parameters(u)), 2567463684);
  const ModelPreset preset = model_preset("sdxl");
  ASSERT_TRUE(preset.text_encoder_2.has_value());
  EXPECT_EQ(count_parameters(clip_text_parameters(*preset.text_encoder_2)), 694659840);
  EXPECT_EQ(count_parameters(clip_text_parameters(preset.text_encoder)), 123060480);
  EXPECT_EQ(VAEConfig::preset("sdxl").scaling_factor, 0.13025);
  EXPECT_EQ(sd_config("sdxl", "scheduler").value("_class_name", ""), "EulerDiscreteScheduler");
  EXPECT_EQ(sd_family(sd_config("sdxl", "unet"), sd_config("sdxl", "text_encoder")), "SDXL");
  EXPECT_TRUE(preset.model_index.value("force_zeros_for_empty_prompt", false));
  // The memory plan counts text_encoder_2's weights: SDXL at 1024^2 in float32 needs its
  // 3.4 G parameters (13.7 GB with the VAE decoder) before any activation.
  MemoryRequest request;
  request.width = request.height = 1024;
  request.dtype = DType::F32;
  const MemoryNeed without = estimate_memory(u, VAEConfig::preset("sdxl"), preset.text_encoder, request);
  const MemoryNeed with = estimate_memory(u, VAEConfig::preset("sdxl"), preset.text_encoder, request, &*preset.text_encoder_2);
  EXPECT_EQ(with.weight_bytes - without.weight_bytes, int64_t{694659840} * 4);
  EXPECT_GT(with.weight_bytes, int64_t{13600000000});

  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SDMPI_BINARY_DIR) / "sdxl_make_model";
  fs::remove_all(dir);
  make_model("tiny-sdxl", 4, dir.string());
  EXPECT_TRUE(fs::is_regular_file(dir / "text_encoder_2" / "model.safetensors"));
  const ModelSource folder = ModelSource::open(dir.string());
  EXPECT_EQ(folder.family(), "SDXL");
  EXPECT_TRUE(folder.has("text_encoder_2"));
  EXPECT_EQ(folder.tokenizer("tokenizer_2").pad_id(), 0);  // "!"
  EXPECT_EQ(folder.tokenizer("tokenizer_2"), sdxl_tokenizer_2());

  InMemoryModel m = make_model_in_memory("tiny-sdxl", 4);
  std::map<std::string, nlohmann::json> configs{{"unet", m.configs.unet.to_json()},
                                                {"vae", m.configs.vae.to_json()},
                                                {"text_encoder", m.configs.text_encoder.to_json()},
                                                {"text_encoder_2", m.configs.text_encoder_2->to_json()},
                                                {"scheduler", m.configs.scheduler},
                                                {"model_index", m.configs.model_index}};
  const ModelSource memory = ModelSource::from_memory(
      "tiny-sdxl", configs,
      {{"unet", m.unet}, {"vae", m.vae}, {"text_encoder", m.text_encoder}, {"text_encoder_2", m.text_encoder_2}},
      {{"tokenizer_2", sdxl_tokenizer_2()}});
  auto backend = make_cpu_backend();
  WorkItem item;
  item.params.prompt = "a lighthouse!!";
  item.params.steps = 2;
  item.params.guidance = 5.0f;
  item.params.width = item.params.height = 64;
  item.params.sampler = default_sampler(m.configs.scheduler);
  EXPECT_EQ(item.params.sampler, "euler");
  Txt2ImgPipeline from_folder(folder, *backend), in_memory(memory, *backend);
  EXPECT_EQ(from_folder.default_size(), 64);
  const auto a = from_folder.generate({item}), b = in_memory.generate({item});
  ASSERT_TRUE(a[0].ok && b[0].ok);
  EXPECT_EQ(a[0].rgb, b[0].rgb);
  // Micro-conditioning changes the image (it enters through add_embedding).
  WorkItem cropped = item;
  cropped.params.crop_top = 32;
  EXPECT_NE(from_folder.generate({cropped})[0].rgb, a[0].rgb);
  fs::remove_all(dir);
}
