// A1111 prompt weighting against its reference (tools/golden/make_prompt_weighting_golden.py, A1111's
// rules on transformers' tokenizer and CLIPTextModel): the parsed (text, weight) lists and the
// chunks of a corpus of tricky prompts exactly, the weighted contexts within 1e-5, and one whole
// generation (diffusers' StableDiffusionPipeline given the reference's embeddings) within 1 level.
// Also: the parser's errors, the mode names, and that weighting is off by default.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "golden_util.h"
#include "pipeline/weighted_prompt.h"
#include "sdmpi/archive.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/make_model.h"
#include "sdmpi/cluster.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/png.h"
#include "sdmpi/prompt_weighting.h"
#include "sdmpi/prompts.h"
#include "sdmpi/safetensors.h"

using namespace sdmpi;

namespace {

const std::string kDir = std::string(SDMPI_TEST_DATA) + "/golden/prompt_weighting/";

const nlohmann::json& doc() {
  static const nlohmann::json d = testing_util::load_json_or_null(kDir + "cases.json");
  return d;
}

ModelSource golden_model() {
  const auto& p = doc()["pipeline"];
  std::map<std::string, nlohmann::json> configs;
  for (auto& [k, v] : p["configs"].items()) configs[k] = v;
  std::map<std::string, std::shared_ptr<WeightSource>> weights;
  for (const char* c : {"unet", "vae", "text_encoder"}) weights[c] = testing_util::rebuild(p["weights"][c], c);
  return ModelSource::from_memory("prompt_weighting", configs, weights);
}

std::string shown(const std::string& prompt) { return "prompt \"" + prompt + "\""; }

}  // namespace

TEST(PromptWeighting, ParserMatchesReferenceCorpus) {
  ASSERT_FALSE(doc().is_null()) << "missing " << kDir << "cases.json";
  size_t cases = 0;
  for (const auto& c : doc()["corpus"]) {
    const std::string prompt = c["prompt"];
    const std::vector<WeightedFragment> got = parse_prompt_attention(prompt);
    const auto& want = c["fragments"];
    ASSERT_EQ(got.size(), want.size()) << shown(prompt);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].text, want[i][0].get<std::string>()) << shown(prompt) << " fragment " << i;
      EXPECT_EQ(got[i].weight, want[i][1].get<double>()) << shown(prompt) << " fragment " << i;  // Python floats, exactly
    }
    ++cases;
  }
  EXPECT_GE(cases, 30u);
}

TEST(PromptWeighting, ChunksMatchReference) {
  ASSERT_FALSE(doc().is_null()) << "missing " << kDir << "cases.json";
  const ClipTokenizer tokenizer = ClipTokenizer::builtin();
  size_t multi = 0;
  for (const auto& c : doc()["corpus"]) {
    const std::string prompt = c["prompt"];
    const std::vector<WeightedChunk> got = a1111_prompt_chunks(tokenizer, prompt);
    const auto& want = c["chunks"];
    ASSERT_EQ(got.size(), want.size()) << shown(prompt);
    for (size_t k = 0; k < got.size(); ++k) {
      EXPECT_EQ(got[k].ids, want[k]["ids"].get<std::vector<int32_t>>()) << shown(prompt) << " chunk " << k;
      EXPECT_EQ(got[k].multipliers, want[k]["multipliers"].get<std::vector<double>>()) << shown(prompt) << " chunk " << k;
    }
    multi += got.size() > 1;
  }
  EXPECT_GE(multi, 8u);  // BREAK, > 75 tokens, the comma backtrack
}

TEST(PromptWeighting, ContextsWithin1e5OfReference) {
  ASSERT_FALSE(doc().is_null()) << "missing " << kDir << "cases.json";
  auto contexts = SafetensorsFile::open(kDir + "contexts.safetensors");
  auto backend = make_cpu_backend();
  const auto& p = doc()["pipeline"];
  const ClipTextConfig config = ClipTextConfig::from_json(p["configs"]["text_encoder"], "golden text_encoder");
  const ClipTextModel model = ClipTextModel::load(config, *testing_util::rebuild(p["weights"]["text_encoder"], "text"), *backend);
  const ClipTokenizer tokenizer = ClipTokenizer::builtin();
  double worst = 0;
  for (const auto& c : doc()["contexts"]) {
    const std::string prompt = c["prompt"], name = c["tensor"];
    const int clip_skip = c["clip_skip"];
    const std::vector<float> want = contexts->to_f32(name);
    const size_t chunks = a1111_prompt_chunks(tokenizer, prompt).size();
    const Tensor got_t = a1111_weighted_context(*backend, tokenizer, {prompt}, chunks,
                                                [&](const std::vector<int32_t>& ids, int rows) {
                                                  return model.forward(*backend, ids, rows, clip_skip);
                                                });
    const std::vector<float> got = backend->to_host(got_t);
    ASSERT_EQ(got.size(), want.size()) << shown(prompt) << " " << name;
    double diff = 0;
    for (size_t i = 0; i < got.size(); ++i) diff = std::max(diff, std::abs(double(got[i]) - want[i]));
    EXPECT_LE(diff, 1e-5) << shown(prompt) << " clip_skip " << clip_skip;
    worst = std::max(worst, diff);
  }
  std::printf("weighted contexts: max |ours - reference| %.2e\n", worst);
}

TEST(PromptWeighting, GenerationWithinOneLevelOfDiffusers) {
  ASSERT_FALSE(doc().is_null()) << "missing " << kDir << "cases.json";
  std::ifstream imf(kDir + "images.u8", std::ios::binary);
  const std::vector<uint8_t> ref((std::istreambuf_iterator<char>(imf)), std::istreambuf_iterator<char>());
  const auto& g = doc()["generation"];
  auto backend = make_cpu_backend();
  const ModelSource model = golden_model();
  Txt2ImgPipeline pipe(model, *backend);
  std::vector<WorkItem> items;
  for (const auto& it : g["items"]) {
    WorkItem w;
    w.index = static_cast<int64_t>(items.size());
    GenerationParams& q = w.params;
    q.prompt = it["prompt"];
    q.negative_prompt = it["negative_prompt"];
    q.seed = it["seed"].get<uint64_t>();
    q.steps = g["steps"];
    q.guidance = g["guidance"].get<float>();
    q.width = g["width"];
    q.height = g["height"];
    q.sampler = g["sampler"];
    q.prompt_weighting = "a1111";
    items.push_back(w);
  }
  // One batch whose items need 3 and 1 chunks: the pipeline runs them as two groups.
  const std::vector<ImageResult> got = pipe.generate(items);
  const std::vector<size_t> shape = g["image_shape"].get<std::vector<size_t>>();
  for (size_t i = 0; i < items.size(); ++i) {
    const auto c = testing_util::compare_images({got[i]}, ref, g["items"][i]["images_offset"].get<size_t>(),
                                                {1, shape[0], shape[1], shape[2]}, "item " + std::to_string(i));
    EXPECT_LE(c.worst, 1) << "item " << i << " (" << g["items"][i]["chunks"] << " chunks)";
    std::printf("weighted item %zu (%d chunks): max |Δpixel| %d, %zu of %zu values off by one\n", i,
                g["items"][i]["chunks"].get<int>(), c.worst, c.off_by_one, c.values);
    EXPECT_EQ(pipe.generate({items[i]})[0].rgb, got[i].rgb) << "item " << i << " differs when generated alone";
  }
  // Off (the default), the same prompts are plain text: another image.
  WorkItem plain = items[1];
  plain.params.prompt_weighting = "none";
  EXPECT_NE(pipe.generate({plain})[0].rgb, got[1].rgb);
}

TEST(PromptWeighting, Errors) {
  EXPECT_NE(testing_util::message_of([] { parse_prompt_attention("a (b:1.2.3) c"); }).find("\"1.2.3\""),
            std::string::npos);
  EXPECT_NE(testing_util::message_of([] { parse_prompt_attention("(b:.)"); }).find("is not a number"), std::string::npos);
  // Without an open "(" the same text is just text, as in A1111.
  EXPECT_EQ(parse_prompt_attention("b:1.2.3)").front().text, "b:1.2.3)");
  EXPECT_EQ(testing_util::message_of([] { check_prompt_weighting("A1111", "prompts.jsonl:3"); }),
            "prompts.jsonl:3: unknown prompt weighting \"A1111\" (known: none, a1111)");
  EXPECT_EQ(testing_util::message_of([] { check_prompt_weighting("a1111", "x"); }), "no exception");
  EXPECT_EQ(GenerationParams{}.prompt_weighting, "none");
}

TEST(PromptWeighting, PadAfterFirstEosWhereThePadDiffers) {
  // SD 2.x and SDXL's tokenizer_2 pad with "!" (id 0): A1111's process_tokens writes the pad id
  // after the first eos. The builtin tokenizer's files with pad_token "!" stand in for them.
  ClipTokenizer::Files files = ClipTokenizer::builtin().to_files(ClipTokenizer::FolderFormat::VocabMerges);
  nlohmann::json special = nlohmann::json::parse(files.at("special_tokens_map.json"));
  special["pad_token"] = "!";
  files["special_tokens_map.json"] = special.dump();
  nlohmann::json config = nlohmann::json::parse(files.at("tokenizer_config.json"));
  config["pad_token"] = "!";
  files["tokenizer_config.json"] = config.dump();
  const ClipTokenizer tokenizer = ClipTokenizer::from_files(files, "pad_bang");
  ASSERT_EQ(tokenizer.pad_id(), 0);
  const std::vector<WeightedChunk> chunks = a1111_prompt_chunks(tokenizer, "a (cat:1.5)");
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0].ids, tokenizer.encode_padded("a cat"));  // [bos] a cat [eos] ! ! ...
  EXPECT_EQ(chunks[0].multipliers[2], 1.5);
  EXPECT_EQ(empty_weighted_chunk(tokenizer).ids, tokenizer.encode_padded(""));
}

// A prompt without brackets fits one chunk whose ids are diffusers' and whose multipliers are all
// 1, so the A1111 encoding gives the same context bit for bit (z * 1, ratio mean / mean = 1): the
// same image as with weighting off, on SD 1.x (CLIP-L) and SDXL (both encoders, the pooled output,
// zeros for an empty negative). A weight changes it.
TEST(PromptWeighting, PlainPromptSameImageAsOffOnSd1AndSdxl) {
  auto backend = make_cpu_backend();
  const std::string sdxl_dir = ::testing::TempDir() + "prompt_weighting_tiny_sdxl_" + std::to_string(::getpid());
  std::filesystem::remove_all(sdxl_dir);
  make_model("tiny-sdxl", 0, sdxl_dir);
  for (const std::string& spec : {std::string("tiny"), sdxl_dir}) {
    const ModelSource model = ModelSource::open(spec);
    Txt2ImgPipeline pipe(model, *backend);
    auto item = [](const std::string& prompt, const std::string& negative, const std::string& mode) {
      WorkItem w;
      w.params.prompt = prompt;
      w.params.negative_prompt = negative;
      w.params.seed = 5;
      w.params.steps = 2;
      w.params.width = w.params.height = 64;
      w.params.sampler = "euler";
      w.params.prompt_weighting = mode;
      return w;
    };
    for (const char* negative : {"blurry, low quality", ""}) {
      const auto off = pipe.generate({item("a photo of a cat", negative, "none")});
      const auto on = pipe.generate({item("a photo of a cat", negative, "a1111")});
      EXPECT_EQ(on[0].rgb, off[0].rgb) << spec << " negative \"" << negative << "\"";
      const auto weighted = pipe.generate({item("a (photo:1.3) of a [cat]", negative, "a1111")});
      EXPECT_NE(weighted[0].rgb, off[0].rgb) << spec;
      // Two chunks (BREAK) against one: the longer context runs too.
      const auto two = pipe.generate({item("a photo BREAK of a cat", negative, "a1111")});
      EXPECT_TRUE(two[0].ok) << spec << ": " << two[0].error;
      EXPECT_NE(two[0].rgb, off[0].rgb) << spec;
    }
  }
  std::filesystem::remove_all(sdxl_dir);
}

// The mode from a JSONL line or the defaults, in the batch key, the PNG parameters and the archive.
TEST(PromptWeighting, RecordedPerItem) {
  const std::vector<PromptRecord> records =
      parse_prompts_jsonl("{\"prompt\": \"a (cat)\", \"prompt_weighting\": \"a1111\"}\n{\"prompt\": \"a (cat)\"}\n", "p.jsonl");
  GenerationParams defaults;
  const std::vector<WorkItem> items = expand_job(records, 2, 7, defaults);
  ASSERT_EQ(items.size(), 4u);
  EXPECT_EQ(items[0].params.prompt_weighting, "a1111");
  EXPECT_EQ(items[2].params.prompt_weighting, "none");
  defaults.prompt_weighting = "a1111";  // --prompt-weighting a1111: items without the key
  EXPECT_EQ(expand_job(records, 1, 7, defaults)[1].params.prompt_weighting, "a1111");

  // Different modes never share a batch.
  const auto batches = make_batches(items, 4);
  ASSERT_EQ(batches.size(), 2u);
  for (const auto& b : batches)
    for (const WorkItem& w : b) EXPECT_EQ(w.params.prompt_weighting, b.front().params.prompt_weighting);

  const std::string on = a1111_parameters(items[0].params, "m", "", "");
  EXPECT_NE(on.find(", Prompt weighting: a1111"), std::string::npos) << on;
  EXPECT_EQ(a1111_parameters(items[2].params, "m", "", "").find("Prompt weighting"), std::string::npos);

#ifdef SDMPI_HAVE_HDF5
  const std::string path = ::testing::TempDir() + "prompt_weighting_" + std::to_string(::getpid()) + ".h5";
  std::filesystem::remove(path);
  ArchiveInfo info;
  info.total_items = 4;
  ArchiveWriter::create(path, items, info).close();
  {
    ArchiveReader r(path);
    ASSERT_EQ(r.rows().size(), 4u);
    for (size_t i = 0; i < 4; ++i) EXPECT_EQ(r.rows()[i].item.params.prompt_weighting, items[i].params.prompt_weighting);
  }
  // An archive written before the column existed reads as "none".
  if (std::system(("/usr/bin/python3 -c \"import h5py; f = h5py.File('" + path + "', 'r+'); del f['prompt_weighting']\"").c_str()) == 0) {
    ArchiveReader r(path);
    for (const ArchiveRow& row : r.rows()) EXPECT_EQ(row.item.params.prompt_weighting, "none");
  } else {
    std::printf("no h5py: the older-archive case is skipped\n");
  }
  std::filesystem::remove(path);
#endif
}
