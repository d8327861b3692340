// img2img against diffusers' StableDiffusionImg2ImgPipeline (tools/golden/make_img2img_golden.py,
// tests/data/golden/img2img): the two tiny pipelines of the txt2img golden (rebuilt from
// tests/data/golden/pipeline/pipelines.json), per-item PNG init images, five samplers, strengths
// 0.3 to 1.0, a non-square size. Acceptance: every uint8 pixel within 1 level of diffusers'; each
// run is made as a batch of 2 and item by item, with bit-identical images either way. Also: our
// JPEG decode against Pillow's, the timestep offset from strength, and the refusals.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "golden_util.h"
#include "pipeline/img2img.h"
#include "sdmpi/archive.h"
#include "sdmpi/backend.h"
#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/image_file.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/png.h"
#include "sdmpi/prompts.h"

using namespace sdmpi;
using sdmpi::testing_util::compare_images;

namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/img2img/";
const std::string kPipelines = std::string(SDMPI_TEST_DATA) + "/golden/pipeline/pipelines.json";

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
    p.sampler = run["sampler"];
    p.init_image = kDir + run["init_images"][i].get<std::string>();
    p.strength = run["strength"].get<float>();
    items.push_back(it);
  }
  return items;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST(Img2ImgGolden, EveryRunWithinOneLevelOfDiffusers) {
  const nlohmann::json doc = testing_util::load_json_or_null(kDir + "runs.json");
  const nlohmann::json models = testing_util::load_json_or_null(kPipelines);
  ASSERT_FALSE(doc.is_null()) << "missing " << kDir << "runs.json";
  ASSERT_FALSE(models.is_null()) << "missing " << kPipelines;
  const std::vector<uint8_t> ref_images = read_bytes(kDir + "images.u8");
  auto backend = make_cpu_backend();
  std::map<std::string, std::unique_ptr<Txt2ImgPipeline>> pipes;
  std::map<std::string, ModelSource> sources;
  int runs = 0;
  for (const auto& run : doc["runs"]) {
    const std::string pname = run["pipeline"], id = run["id"];
    if (!pipes.count(pname)) {
      sources.emplace(pname, build_model(models, pname));
      pipes[pname] = std::make_unique<Txt2ImgPipeline>(sources.at(pname), *backend);
    }
    Txt2ImgPipeline& pipe = *pipes[pname];
    const std::vector<WorkItem> items = run_items(run);
    int calls = 0;
    const std::vector<ImageResult> got = pipe.generate(items, [&](int, int) { return ++calls, true; });
    const auto [worst, off_by_one, values] = compare_images(
        got, ref_images, run["images_offset"].get<size_t>(), run["images_shape"].get<std::vector<size_t>>(), id);
    EXPECT_LE(worst, 1) << id << ": max pixel difference " << worst;
    std::printf("%-30s strength %.2f: %d UNet calls, max |Δpixel| %d, %zu of %zu values off by one\n", id.c_str(),
                run["strength"].get<double>(), calls, worst, off_by_one, values);
    // Fewer calls than txt2img's below strength 1 (the schedule's head is skipped).
    if (run["strength"].get<double>() < 1.0) {
      EXPECT_LT(calls, run["steps"].get<int>()) << id;
    }

    for (size_t i = 0; i < items.size(); ++i) {
      auto alone = pipe.generate({items[i]});
      EXPECT_EQ(alone[0].rgb, got[i].rgb) << id << ": item " << i << " differs when generated alone";
    }
    ++runs;
  }
  EXPECT_GE(runs, 10);
}

// Our libjpeg decode of the golden JPEG equals Pillow's, value for value.
TEST(Img2ImgGolden, JpegDecodesAsPillowDoes) {
  const nlohmann::json doc = testing_util::load_json_or_null(kDir + "runs.json");
  ASSERT_FALSE(doc.is_null());
  const auto& j = doc["jpeg"];
  const DecodedImage image = read_image_file(kDir + j["file"].get<std::string>());
  ASSERT_EQ(image.width, j["width"].get<int>());
  ASSERT_EQ(image.height, j["height"].get<int>());
  const std::vector<uint8_t> ref = read_bytes(kDir + "images.u8");
  const size_t offset = j["pixels_offset"].get<size_t>();
  ASSERT_LE(offset + image.rgb.size(), ref.size());
  EXPECT_TRUE(std::equal(image.rgb.begin(), image.rgb.end(), ref.begin() + static_cast<ptrdiff_t>(offset)));
}

// get_timesteps: t_start = steps - min(int(steps * strength), steps), with strength as the decimal
// the user wrote (Python float): int(10 * 0.7) is 7, not int(10 * 0.699999988f) = 6.
TEST(Img2Img, FirstCallFromStrength) {
  EXPECT_EQ(img2img_first_call(10, 0.7f), 3u);
  EXPECT_EQ(img2img_first_call(5, 0.5f), 3u);   // int(2.5) = 2 steps run
  EXPECT_EQ(img2img_first_call(5, 0.8f), 1u);
  EXPECT_EQ(img2img_first_call(50, 1.0f), 0u);
  EXPECT_EQ(img2img_first_call(5, 0.2f), 4u);
  EXPECT_NE(testing_util::message_of([] { img2img_first_call(5, 0.1f); }).find("leaves no denoising step"),
            std::string::npos);
  EXPECT_NE(testing_util::message_of([] { img2img_first_call(5, 0.0f); }).find("outside (0, 1]"), std::string::npos);
  EXPECT_NE(testing_util::message_of([] { img2img_first_call(5, 1.5f); }).find("outside (0, 1]"), std::string::npos);
}

// Files that are not usable images: one InputError naming the file.
TEST(Img2Img, BadImageFilesAreNamed) {
  const std::string dir = ::testing::TempDir() + "img2img_bad_" + std::to_string(::getpid()) + "/";
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + name, std::ios::binary) << bytes;
    return dir + name;
  };
  const std::string png = kDir + "init_two_level_32x32_0.png";
  const std::vector<uint8_t> bytes = read_bytes(png);
  ASSERT_GT(bytes.size(), 200u) << png;
  const std::string truncated = write("truncated.png", std::string(bytes.begin(), bytes.begin() + 200));
  const std::string text = write("text.png", "hello, not an image");
  const std::string empty = write("empty.jpg", "");
  const std::string bad_jpeg = write("bad.jpg", std::string("\xff\xd8\xff\xe0 garbage garbage", 20));
  for (const std::string& f : {truncated, text, empty, bad_jpeg, dir + "missing.png", dir}) {
    const std::string m = testing_util::message_of([&] { read_image_file(f); });
    EXPECT_EQ(m.rfind(f + ": ", 0), 0u) << m;
  }
  const DecodedImage ok = read_image_file(png);
  EXPECT_EQ(ok.width, 32);
  EXPECT_EQ(ok.height, 32);
  std::filesystem::remove_all(dir);
}

// init_image and strength on their way through the job: JSONL keys (the path relative to the
// prompt file, the strength range-checked), resolve_init_images (the image's size becomes the
// item's, the file's SHA-256 is recorded, a differing explicit size is refused), the PNG parameters
// ("Denoising strength", "Init image hash") and the archive's /strength and /init_image_sha256.
TEST(Img2Img, PromptsPngAndArchiveCarryIt) {
  const std::string dir = ::testing::TempDir() + "img2img_job_" + std::to_string(::getpid()) + "/";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kDir + "init_four_level_64x48_0.png", dir + "street.png",
                             std::filesystem::copy_options::overwrite_existing);
  {
    std::ofstream(dir + "p.jsonl") << "{\"prompt\": \"a\", \"init_image\": \"street.png\", \"strength\": 0.6}\n"
                                   << "{\"prompt\": \"b\"}\n";
  }
  const std::vector<PromptRecord> records = read_prompt_file(dir + "p.jsonl");
  GenerationParams defaults;
  defaults.width = defaults.height = 64;
  defaults.steps = 5;
  std::vector<WorkItem> items = expand_job(records, 1, 5, defaults);
  resolve_init_images(items, records, 0, 0);
  ASSERT_EQ(items.size(), 2u);
  const GenerationParams& img = items[0].params;
  EXPECT_EQ(std::filesystem::path(img.init_image), std::filesystem::absolute(dir + "street.png").lexically_normal());
  EXPECT_EQ(img.width, 64);
  EXPECT_EQ(img.height, 48);
  EXPECT_EQ(img.strength, 0.6f);
  EXPECT_EQ(img.init_image_sha256, sha256_file(dir + "street.png"));
  EXPECT_FALSE(items[1].params.img2img());
  EXPECT_EQ(items[1].params.width, 64);
  EXPECT_EQ(items[1].params.height, 64);

  std::vector<WorkItem> asked = expand_job(records, 1, 5, defaults);
  EXPECT_NE(testing_util::message_of([&] { resolve_init_images(asked, records, 64, 64); })
                .find("p.jsonl:1: init image " + img.init_image + " is 64x48 but the item asks for 64x64"),
            std::string::npos);
  EXPECT_NE(testing_util::message_of([&] {
              expand_job(parse_prompts_jsonl("{\"prompt\": \"a\", \"strength\": 1.5}\n", "q.jsonl"), 1, 5, defaults);
            }).find("q.jsonl:1: strength 1.5 is outside (0, 1]"),
            std::string::npos);

  const std::string with = a1111_parameters(img, "m", "", "");
  EXPECT_NE(with.find("Model: m, Denoising strength: 0.6, Init image hash: " + img.init_image_sha256 + ", RNG: CPU"),
            std::string::npos)
      << with;
  EXPECT_EQ(a1111_parameters(items[1].params, "m", "", "").find("Denoising"), std::string::npos);

  const std::string path = std::string(SDMPI_BINARY_DIR) + "/img2img_metadata.h5";
  std::remove(path.c_str());
  ArchiveInfo info;
  info.model_path = "tiny";
  info.weights_hash = "x";
  info.config_json = "{}";
  info.fingerprint = "fp";
  info.total_items = 2;
  ArchiveWriter::create(path, items, info).close();
  ArchiveReader reader(path);
  ASSERT_EQ(reader.rows().size(), 2u);
  EXPECT_EQ(reader.rows()[0].item.params.strength, 0.6f);
  EXPECT_EQ(reader.rows()[0].item.params.init_image_sha256, img.init_image_sha256);
  EXPECT_TRUE(reader.rows()[0].item.params.img2img());
  EXPECT_FALSE(reader.rows()[1].item.params.img2img());
  std::remove(path.c_str());
  std::filesystem::remove_all(dir);
}
