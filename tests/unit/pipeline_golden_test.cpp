// Whole generations against diffusers (tools/golden/make_pipeline_golden.py): two tiny random
// pipelines of different topology, every scheduler, CFG 7.5 with a negative prompt, guidance 1.0,
// non-square sizes. Acceptance: every uint8 pixel within 1 level of diffusers' image; we also
// report the final latents' relative difference. Each run is made as a batch of 2 and item by
// item: the CPU backend must give bit-identical images either way.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "sdmpi/backend.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "golden_util.h"
#include "sdmpi/safetensors.h"

using namespace sdmpi;
using sdmpi::testing_util::compare_images;
using sdmpi::testing_util::nhwc_vs_nchw_rel_error;

namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/pipeline/";

nlohmann::json load_doc() { return testing_util::load_json_or_null(kDir + "pipelines.json"); }
using testing_util::rebuild;

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
    p.width = run["width"];
    p.height = run["height"];
    p.eta = run["eta"].get<float>();
    std::string s = run["sampler"];
    p.sampler = s == "dpm++2m karras" ? "dpm++2m" : s;
    p.schedule = s == "dpm++2m karras" ? "karras" : "default";
    items.push_back(it);
  }
  return items;
}

}  // namespace

TEST(PipelineGolden, EveryRunWithinOneLevelOfDiffusers) {
  nlohmann::json doc = load_doc();
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "pipelines.json";
  std::ifstream imf(kDir + "images.u8", std::ios::binary);
  std::vector<uint8_t> ref_images((std::istreambuf_iterator<char>(imf)), std::istreambuf_iterator<char>());
  auto latents = SafetensorsFile::open(kDir + "latents.safetensors");
  auto backend = make_cpu_backend();
  std::map<std::string, std::unique_ptr<Txt2ImgPipeline>> pipes;
  std::map<std::string, ModelSource> models;
  int runs = 0;
  for (const auto& run : doc["runs"]) {
    std::string pname = run["pipeline"], id = run["id"];
    if (!pipes.count(pname)) {
      models.emplace(pname, build_model(doc, pname));
      pipes[pname] = std::make_unique<Txt2ImgPipeline>(models.at(pname), *backend);
    }
    Txt2ImgPipeline& pipe = *pipes[pname];
    std::vector<WorkItem> items = run_items(run);
    std::vector<ImageResult> got = pipe.generate(items);
    std::vector<float> lat = pipe.last_latents();

    const double rel = nhwc_vs_nchw_rel_error(lat, latents->to_f32(id), latents->entries().at(id).shape);
    const auto [worst, off_by_one, values] = compare_images(
        got, ref_images, run["images_offset"].get<size_t>(), run["images_shape"].get<std::vector<size_t>>(), id);
    EXPECT_LE(worst, 1) << id << ": max pixel difference " << worst << " (latents rel " << rel << ")";
    EXPECT_LT(rel, 1e-3) << id;
    std::printf("%-34s latents rel %.2e, max |Δpixel| %d, %zu of %zu values off by one\n", id.c_str(), rel, worst,
                off_by_one, values);

    // Batch invariance: each item alone gives the same bytes.
    for (size_t i = 0; i < items.size(); ++i) {
      auto alone = pipe.generate({items[i]});
      EXPECT_EQ(alone[0].rgb, got[i].rgb) << id << ": item " << i << " differs when generated alone";
    }
    ++runs;
  }
  EXPECT_GE(runs, 20);
}
