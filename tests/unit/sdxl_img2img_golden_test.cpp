// SDXL img2img, the SDXL refiner and the base → refiner hand-off against diffusers'
// StableDiffusionXLImg2ImgPipeline (tools/golden/make_sdxl_img2img_golden.py,
// tests/data/golden/sdxl_img2img): the tiny SDXL base of the SDXL golden (rebuilt from
// tests/data/golden/sdxl/pipelines.json) given init images (Euler at strength 0.75 and 0.3, DPM++ 2M
// non-square with micro-conditioning, zero negatives, SDXL-Turbo's schedule); a tiny refiner-layout
// pipeline (text_encoder_2 only, 5 time ids with aesthetic scores) given init images; and the two
// stages (base with denoising_end → refiner with denoising_start on its latents) for Euler, DPM++ 2M
// and Euler a. Acceptance: every uint8 pixel within 1 level of diffusers', final latents within
// 1e-3, each item alone gives its batch's bytes (check_golden_run). Also: the hand-off's cutoff
// rule, the refiner's refusal without an init image, and the refiner rows of the config table.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "golden_util.h"
#include "io/sd_configs.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/job.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/safetensors.h"

using namespace sdmpi;

namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/sdxl_img2img/";
const std::string kBaseJson = std::string(SDMPI_TEST_DATA) + "/golden/sdxl/pipelines.json";

// The models' tokenizer_2: the CLIP vocabulary padded with "!".
ClipTokenizer bang_padded_tokenizer() { return testing_util::bang_padded_tokenizer("sdxl_img2img_golden_tokenizer_2"); }

// golden_run_items plus what these runs add: micro-conditioning, aesthetic scores, the init image
// and strength (img2img, refiner) or the refiner's start (two stages).
std::vector<WorkItem> run_items(const nlohmann::json& run) {
  std::vector<WorkItem> items = testing_util::golden_run_items(run);
  const std::vector<int> micro = run["micro"].get<std::vector<int>>();
  const std::vector<float> aesthetic = run["aesthetic"].get<std::vector<float>>();
  for (size_t i = 0; i < items.size(); ++i) {
    GenerationParams& p = items[i].params;
    p.original_height = micro[0], p.original_width = micro[1];
    p.crop_top = micro[2], p.crop_left = micro[3];
    p.target_height = micro[4], p.target_width = micro[5];
    p.aesthetic_score = aesthetic[0], p.negative_aesthetic_score = aesthetic[1];
    if (run.contains("init_images")) {
      p.init_image = kDir + run["init_images"][i].get<std::string>();
      p.strength = run["strength"].get<float>();
    }
    if (run.contains("refiner_start")) p.refiner_start = run["refiner_start"].get<float>();
  }
  return items;
}

}  // namespace

TEST(SdxlImg2ImgGolden, EveryRunWithinOneLevelOfDiffusers) {
  const nlohmann::json doc = testing_util::load_json_or_null(kDir + "pipelines.json");
  const nlohmann::json base_doc = testing_util::load_json_or_null(kBaseJson);
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "pipelines.json";
  ASSERT_FALSE(base_doc.is_null()) << "missing " << kBaseJson;
  const std::vector<uint8_t> ref_images = testing_util::read_golden_images(kDir + "images.u8");
  auto latents = SafetensorsFile::open(kDir + "latents.safetensors");
  auto backend = make_cpu_backend();
  const ClipTokenizer tok2 = bang_padded_tokenizer();
  std::map<std::string, ModelSource> models;
  std::map<std::string, std::unique_ptr<Txt2ImgPipeline>> pipes;
  auto pipe_of = [&](const std::string& name) -> Txt2ImgPipeline& {
    if (!pipes.count(name)) {
      models.emplace(name, name == "refiner"
                               ? testing_util::golden_model(doc, name, {{"tokenizer_2", tok2}})
                               : testing_util::golden_model(base_doc, name, {{"tokenizer", ClipTokenizer::builtin()},
                                                                             {"tokenizer_2", tok2}}));
      pipes[name] = std::make_unique<Txt2ImgPipeline>(models.at(name), *backend);
    }
    return *pipes[name];
  };
  Txt2ImgPipeline& refiner = pipe_of("refiner");
  EXPECT_TRUE(refiner.is_refiner());
  EXPECT_EQ(models.at("refiner").family(), "SDXL refiner");
  std::map<std::string, int> kinds;
  for (const auto& run : doc["runs"]) {
    Txt2ImgPipeline& pipe = pipe_of(run["pipeline"]);
    EXPECT_FALSE(&pipe != &refiner && pipe.is_refiner());
    pipe.set_refiner(&refiner);
    const int64_t calls_before = pipe.timings().unet_calls;
    testing_util::check_golden_run(pipe, run_items(run), run, ref_images, *latents);
    // The two stages split the schedule: together they make every call once (the batch, then each
    // of its 2 items alone), counted in the first stage's timings.
    if (run["kind"] == "two_stage") {
      EXPECT_EQ(pipe.timings().unet_calls - calls_before, 3 * run["steps"].get<int64_t>()) << run["id"];
    }
    ++kinds[run["kind"]];
  }
  EXPECT_GE(kinds["img2img"], 5);
  EXPECT_GE(kinds["refiner"], 2);
  EXPECT_GE(kinds["two_stage"], 3);
}

// The hand-off's cutoff (diffusers: int(round(T - fraction * T)), Python's round) and the calls each
// stage runs on a 10-step Euler schedule; a refiner alone needs an init image.
TEST(SdxlImg2ImgGolden, CutoffAndRefinerRefusal) {
  EXPECT_EQ(denoising_cutoff(1000, 0.8f), 200);
  EXPECT_EQ(denoising_cutoff(1000, 0.7f), 300);
  EXPECT_EQ(denoising_cutoff(1000, 0.8125f), 188);  // 187.5: half to even
  EXPECT_EQ(denoising_cutoff(1000, 0.8115f), 188);  // 188.5: half to even, the decimal as written
  EXPECT_NE(testing_util::message_of([] { denoising_cutoff(1000, 1.0f); }).find("outside (0, 1)"), std::string::npos);
  EXPECT_NE(testing_util::message_of([] { denoising_cutoff(1000, 0.0f); }).find("outside (0, 1)"), std::string::npos);

  const nlohmann::json doc = testing_util::load_json_or_null(kDir + "pipelines.json");
  ASSERT_FALSE(doc.is_null());
  auto backend = make_cpu_backend();
  const ModelSource model = testing_util::golden_model(doc, "refiner", {{"tokenizer_2", bang_padded_tokenizer()}});
  Txt2ImgPipeline refiner(model, *backend);
  WorkItem item;
  item.params.prompt = "a cat";
  item.params.steps = 2;
  item.params.width = item.params.height = 64;
  item.params.sampler = "euler";
  EXPECT_NE(testing_util::message_of([&] { refiner.generate({item}); }).find("an SDXL refiner runs img2img only"),
            std::string::npos);
}

// The sdxl-refiner and tiny-sdxl-refiner rows of the config table: sdxl-refiner's UNet has
// stable-diffusion-xl-refiner-1.0's shapes (the parameter count diffusers gives for its
// unet/config.json, counted on the meta device), tiny-sdxl-refiner is the golden refiner's
// structure, and a make-model tiny-sdxl-refiner folder opens as an SDXL refiner (no text_encoder/,
// requires_aesthetics_score), runs img2img and gives the in-memory preset's image.
TEST(SdxlImg2ImgGolden, RefinerRowsAndMakeModelFolder) {
  const UNetConfig real = UNetConfig::preset("sdxl-refiner");
  EXPECT_EQ(count_parameters(unet_parameters(real)), 2259526660);
  EXPECT_EQ(real.pooled_text_dim(UNetConfig::kRefinerTimeIds), 1280);
  EXPECT_EQ(real.cross_attention_dim.front(), 1280);
  const ModelPreset preset = model_preset("sdxl-refiner");
  EXPECT_FALSE(preset.has_text_encoder);
  ASSERT_TRUE(preset.text_encoder_2.has_value());
  EXPECT_TRUE(preset.model_index.value("requires_aesthetics_score", false));
  EXPECT_FALSE(preset.model_index.value("force_zeros_for_empty_prompt", true));
  EXPECT_EQ(sd_family(sd_config("sdxl-refiner", "unet"), nlohmann::json()), "SDXL refiner");
  EXPECT_FALSE(sd_config_has("sdxl-refiner", "text_encoder"));

  const nlohmann::json doc = testing_util::load_json_or_null(kDir + "pipelines.json");
  ASSERT_FALSE(doc.is_null());
  const UNetConfig golden = UNetConfig::from_json(doc["pipelines"]["refiner"]["configs"]["unet"], "golden refiner unet");
  EXPECT_EQ(UNetConfig::preset("tiny-sdxl-refiner").to_json(), golden.to_json());

  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SDMPI_BINARY_DIR) / "sdxl_refiner_make_model";
  fs::remove_all(dir);
  make_model("tiny-sdxl-refiner", 4, dir.string());
  EXPECT_FALSE(fs::exists(dir / "text_encoder"));
  EXPECT_FALSE(fs::exists(dir / "tokenizer"));
  const ModelSource folder = ModelSource::open(dir.string());
  EXPECT_EQ(folder.family(), "SDXL refiner");
  EXPECT_FALSE(folder.has("text_encoder"));
  EXPECT_TRUE(folder.config("model_index").value("requires_aesthetics_score", false));

  InMemoryModel m = make_model_in_memory("tiny-sdxl-refiner", 4);
  EXPECT_EQ(m.text_encoder, nullptr);
  const ModelSource memory = ModelSource::from_memory(
      "tiny-sdxl-refiner",
      {{"unet", m.configs.unet.to_json()}, {"vae", m.configs.vae.to_json()},
       {"text_encoder_2", m.configs.text_encoder_2->to_json()}, {"scheduler", m.configs.scheduler},
       {"model_index", m.configs.model_index}},
      {{"unet", m.unet}, {"vae", m.vae}, {"text_encoder_2", m.text_encoder_2}}, {{"tokenizer_2", sdxl_tokenizer_2()}});
  auto backend = make_cpu_backend();
  Txt2ImgPipeline from_folder(folder, *backend), in_memory(memory, *backend);
  EXPECT_TRUE(from_folder.is_refiner());
  WorkItem item;
  item.params.prompt = "a lighthouse";
  item.params.steps = 4;
  item.params.guidance = 5.0f;
  item.params.width = 64;
  item.params.height = 64;
  item.params.sampler = "euler";
  item.params.init_image = kDir + "init_64x64_0.png";
  item.params.strength = 0.5f;
  const auto a = from_folder.generate({item}), b = in_memory.generate({item});
  ASSERT_TRUE(a[0].ok && b[0].ok);
  EXPECT_EQ(a[0].rgb, b[0].rgb);
  WorkItem other_score = item;
  other_score.params.aesthetic_score = 9.0f;
  EXPECT_NE(from_folder.generate({other_score})[0].rgb, a[0].rgb);  // it enters through add_embedding
  fs::remove_all(dir);
}
