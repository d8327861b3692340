// SD 2.x against diffusers (tools/golden/make_sd2_golden.py): a tiny random pipeline with SD 2.x's
// structure (exact-GELU CLIP text tower, linear projections, per-block heads, upcast_attention) and
// stable-diffusion-2-1's v-prediction DDIM config, plus the same networks with SD 2 base's epsilon
// PNDM config. Components: the text encoder and one UNet call within 1e-5 relative. Whole
// generations (several samplers, CFG with negatives, guidance_rescale 0.7, guidance 1.0, non-square
// sizes): every uint8 pixel within 1 level of diffusers' image; each run made as a batch of 2 and
// item by item gives the same bytes. The SD 2.1 and tiny-sd2 rows of the config table are checked
// to parse into the networks they describe, and guidance_rescale to travel from a JSONL line to the
// PNG parameters and the archive.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden_util.h"
#include "io/sd_configs.h"
#include "sdmpi/archive.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/make_model.h"
#include "sdmpi/model_config.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/png.h"
#include "sdmpi/prompts.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/unet.h"

using namespace sdmpi;
using sdmpi::testing_util::compare_images;
using sdmpi::testing_util::nhwc_vs_nchw_rel_error;
using sdmpi::testing_util::rel_error;

namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/sd2/";

nlohmann::json load_doc() { return testing_util::load_json_or_null(kDir + "pipelines.json"); }
using testing_util::rebuild;

using testing_util::weight_recipes;

ModelSource build_model(const nlohmann::json& doc, const std::string& name) { return testing_util::golden_model(doc, name); }

std::vector<WorkItem> run_items(const nlohmann::json& run) {
  std::vector<WorkItem> items;
  for (size_t i = 0; i < run["prompts"].size(); ++i) {
    WorkItem it;
    it.index = static_cast<int64_t>(i);
    GenerationParams& p = it.params;
    p.prompt = run["prompts"][i];
    p.negative_prompt = run["negative_prompts"][i];
    p.seed = run["seeds"][i].get<uint64_t>();
    p.steps = run["steps"];
    p.guidance = run["guidance"].get<float>();
    p.guidance_rescale = run["guidance_rescale"].get<float>();
    p.width = run["width"];
    p.height = run["height"];
    p.eta = run["eta"].get<float>();
    p.sampler = run["sampler"];
    items.push_back(it);
  }
  return items;
}

}  // namespace

TEST(Sd2Golden, TableRowsDescribeSd2) {
  const UNetConfig u = UNetConfig::preset("sd21");
  EXPECT_EQ(u.num_attention_heads, (std::vector<int>{5, 10, 20, 20}));
  for (int i = 0; i < u.num_blocks(); ++i) EXPECT_EQ(u.block_out_channels[i] / u.num_attention_heads[i], 64);
  EXPECT_EQ(u.cross_attention_dim, (std::vector<int>{1024, 1024, 1024, 1024}));
  EXPECT_TRUE(u.use_linear_projection);
  EXPECT_TRUE(u.upcast_attention);
  const ClipTextConfig t = ClipTextConfig::preset("sd21");
  EXPECT_EQ(t.hidden_act, "gelu");
  EXPECT_EQ(t.hidden_size, 1024);
  EXPECT_EQ(t.num_hidden_layers, 23);
  EXPECT_EQ(t.num_attention_heads, 16);
  EXPECT_EQ(sd_config("sd21", "scheduler").value("prediction_type", ""), "v_prediction");
  // make-model --preset sd21's shapes: the parameter counts of stable-diffusion-2-1's UNet and of
  // its 23-layer OpenCLIP ViT-H text tower (49408x1024 + 77x1024 embeddings, 23 x 12596224, final LN).
  EXPECT_EQ(count_parameters(unet_parameters(u)), 865910724);
  EXPECT_EQ(count_parameters(clip_text_parameters(t)), 340387840);
  EXPECT_EQ(sd_family(sd_config("sd21", "unet"), sd_config("sd21", "text_encoder")), "SD 2.x");
  EXPECT_EQ(sd_family(sd_config("tiny-sd2", "unet"), sd_config("tiny-sd2", "text_encoder")), "SD 2.x");
  EXPECT_EQ(sd_family(sd_config("sd15", "unet"), sd_config("sd15", "text_encoder")), "SD 1.x");
  // The tiny row runs end to end (make-model's in-memory model), with guidance rescale.
  InMemoryModel m = make_model_in_memory("tiny-sd2", 3);
  std::map<std::string, nlohmann::json> configs{{"unet", m.configs.unet.to_json()},
                                                {"vae", m.configs.vae.to_json()},
                                                {"text_encoder", m.configs.text_encoder.to_json()},
                                                {"scheduler", m.configs.scheduler}};
  ModelSource model = ModelSource::from_memory("tiny-sd2", configs,
                                               {{"unet", m.unet}, {"vae", m.vae}, {"text_encoder", m.text_encoder}});
  EXPECT_EQ(model.family(), "SD 2.x");
  auto backend = make_cpu_backend();
  Txt2ImgPipeline pipe(model, *backend);
  WorkItem item;
  item.params.prompt = "a lighthouse";
  item.params.steps = 2;
  item.params.width = item.params.height = 64;
  item.params.sampler = default_sampler(m.configs.scheduler);
  EXPECT_EQ(item.params.sampler, "ddim");
  WorkItem rescaled = item;
  rescaled.params.guidance_rescale = 0.7f;
  auto plain = pipe.generate({item});
  auto with_rescale = pipe.generate({rescaled});
  ASSERT_TRUE(plain[0].ok && with_rescale[0].ok);
  EXPECT_NE(plain[0].rgb, with_rescale[0].rgb) << "guidance_rescale 0.7 changed nothing";
}

TEST(Sd2Golden, ComponentsWithin1e5OfDiffusers) {
  nlohmann::json doc = load_doc();
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "pipelines.json";
  const nlohmann::json& comp = doc["components"];
  const std::string name = comp["pipeline"];
  const auto& configs = doc["pipelines"][name]["configs"];
  auto io = SafetensorsFile::open(kDir + "components.safetensors");
  auto backend = make_cpu_backend(2);

  const ClipTextConfig tc = ClipTextConfig::from_json(configs["text_encoder"], "golden text_encoder");
  EXPECT_EQ(tc.hidden_act, "gelu");
  auto text_weights = rebuild(weight_recipes(doc, name)["text_encoder"], "text_encoder");
  const ClipTextModel text = ClipTextModel::load(tc, *text_weights, *backend);
  std::vector<int32_t> ids;
  for (const auto& row : comp["text_ids"])
    for (const auto& id : row) ids.push_back(id.get<int32_t>());
  const int rows = static_cast<int>(comp["text_ids"].size());
  Tensor hidden = text.forward(*backend, ids, rows);
  EXPECT_EQ(hidden.shape(), io->entries().at("text_out").shape);
  const std::vector<float> hidden_host = backend->to_host(hidden);
  const double text_err = rel_error(hidden_host, io->to_f32("text_out"));
  std::printf("text encoder (gelu, %d prompts): |ours - ref| / |ref| = %.3g\n", rows, text_err);
  EXPECT_LE(text_err, 1e-5);

  const UNetConfig uc = UNetConfig::from_json(configs["unet"], "golden unet");
  EXPECT_TRUE(uc.use_linear_projection && uc.upcast_attention);
  auto unet_weights = rebuild(weight_recipes(doc, name)["unet"], "unet");
  const UNet2DConditionModel unet = UNet2DConditionModel::load(uc, *unet_weights, *backend);
  const Shape sample_shape = io->entries().at("unet_sample").shape;
  const std::vector<float> sample = io->to_f32("unet_sample");
  // The context: the reference's text embeddings of the first two prompts.
  const std::vector<float> ref_hidden = io->to_f32("text_out");
  const Shape hs = io->entries().at("text_out").shape;
  const std::vector<float> ctx(ref_hidden.begin(), ref_hidden.begin() + 2 * hs[1] * hs[2]);
  Tensor out = unet.forward(*backend, backend->from_host(sample.data(), sample_shape),
                            comp["unet_timesteps"].get<std::vector<float>>(),
                            backend->from_host(ctx.data(), {2, hs[1], hs[2]}));
  EXPECT_EQ(out.shape(), io->entries().at("unet_out").shape);
  const double unet_err = rel_error(backend->to_host(out), io->to_f32("unet_out"));
  std::printf("unet (linear projections, heads %s, upcast): |ours - ref| / |ref| = %.3g\n",
              nlohmann::json(uc.num_attention_heads).dump().c_str(), unet_err);
  EXPECT_LE(unet_err, 1e-5);
}

TEST(Sd2Golden, EveryRunWithinOneLevelOfDiffusers) {
  nlohmann::json doc = load_doc();
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "pipelines.json";
  const std::vector<uint8_t> ref_images = testing_util::read_golden_images(kDir + "images.u8");
  auto latents = SafetensorsFile::open(kDir + "latents.safetensors");
  auto backend = make_cpu_backend();
  std::map<std::string, std::unique_ptr<Txt2ImgPipeline>> pipes;
  std::map<std::string, ModelSource> models;
  int runs = 0, rescaled_cfg_runs = 0, v_prediction_runs = 0, turbo_runs = 0;
  for (const auto& run : doc["runs"]) {
    const std::string pname = run["pipeline"];
    if (!pipes.count(pname)) {
      models.emplace(pname, build_model(doc, pname));
      pipes[pname] = std::make_unique<Txt2ImgPipeline>(models.at(pname), *backend);
    }
    testing_util::check_golden_run(*pipes[pname], run_items(run), run, ref_images, *latents);
    ++runs;
    rescaled_cfg_runs += run["guidance_rescale"].get<double>() > 0 && run["guidance"].get<double>() > 1;
    v_prediction_runs += doc["pipelines"][pname]["configs"]["scheduler"].value("prediction_type", "") == "v_prediction";
    // SD-Turbo: trailing spacing, 1-4 steps, guidance 0.
    turbo_runs += doc["pipelines"][pname]["configs"]["scheduler"].value("timestep_spacing", "") == "trailing" &&
                  run["guidance"].get<double>() == 0.0;
  }
  EXPECT_GE(runs, 8);
  EXPECT_GE(rescaled_cfg_runs, 3);
  EXPECT_GE(v_prediction_runs, 5);
  EXPECT_GE(turbo_runs, 3);
}

// guidance_rescale on its way through the job: a JSONL key (range-checked), the PNG parameters'
// "CFG Rescale phi" and "Model family", and the archive's /guidance_rescale column.
TEST(GuidanceRescale, PromptsPngAndArchiveCarryIt) {
  auto records = parse_prompts_jsonl("{\"prompt\": \"a\", \"guidance_rescale\": 0.7}\n{\"prompt\": \"b\"}\n", "p.jsonl");
  GenerationParams defaults;
  defaults.width = defaults.height = 64;
  std::vector<WorkItem> items = expand_job(records, 1, 5, defaults);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].params.guidance_rescale, 0.7f);
  EXPECT_EQ(items[1].params.guidance_rescale, 0.0f);
  try {
    expand_job(parse_prompts_jsonl("{\"prompt\": \"a\", \"guidance_rescale\": 1.5}\n", "q.jsonl"), 1, 5, defaults);
    ADD_FAILURE() << "guidance_rescale 1.5 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("q.jsonl:1: guidance_rescale must lie in [0, 1]"), std::string::npos) << e.what();
  }

  const std::string with = a1111_parameters(items[0].params, "m", "", "sd_mpi 0.1.0", "SD 2.x");
  EXPECT_NE(with.find("RNG: CPU, CFG Rescale phi: 0.7, Model family: SD 2.x, Version: sd_mpi 0.1.0"), std::string::npos)
      << with;
  EXPECT_EQ(a1111_parameters(items[1].params, "m", "", "sd_mpi 0.1.0").find("CFG Rescale"), std::string::npos);

  const std::string path = std::string(SDMPI_BINARY_DIR) + "/sd2_golden_rescale.h5";
  std::remove(path.c_str());
  ArchiveInfo info;
  info.model_path = "tiny-sd2";
  info.weights_hash = "x";
  info.config_json = "{}";
  info.fingerprint = "fp";
  info.total_items = 2;
  ArchiveWriter::create(path, items, info).close();
  ArchiveReader reader(path);
  ASSERT_EQ(reader.rows().size(), 2u);
  EXPECT_EQ(reader.rows()[0].item.params.guidance_rescale, 0.7f);
  EXPECT_EQ(reader.rows()[1].item.params.guidance_rescale, 0.0f);
  std::remove(path.c_str());
}
