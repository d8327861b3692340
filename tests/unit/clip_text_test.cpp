// CLIPTextModel against transformers (tests/data/golden/models/clip_*, made by
// tools/golden/make_models_golden.py): last_hidden_state and clip skip for 5 prompts tokenised by
// the real tokenizer, both weight namings, and the config parser.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>

#include "golden_util.h"
#include "sdmpi/backend.h"
#include "sdmpi/clip_text.h"
#include "sdmpi/error.h"
#include "sdmpi/safetensors.h"
#include "sdmpi/weights.h"

namespace sdmpi {
namespace {

using namespace sdmpi::testing_util;

const std::string kGolden = std::string(SDMPI_TEST_DATA) + "/golden/models/";

// The golden model: its file, plus the token table rebuilt from the stored rows (all other rows
// zero, as in the reference run).
struct GoldenClip {
  ClipTextConfig config;
  std::shared_ptr<MemoryWeightSource> weights;
  nlohmann::json meta;
  std::shared_ptr<SafetensorsFile> io;
  std::vector<int32_t> ids;
  int batch = 0;
};

GoldenClip golden(const std::string& name, bool with_token_table = true) {
  const std::string dir = kGolden + name + "/";
  GoldenClip g;
  g.config = ClipTextConfig::load(dir + "config.json");
  g.meta = read_json_file(dir + "io.json");
  g.io = SafetensorsFile::open(dir + "io.safetensors");
  auto file = SafetensorsFile::open(dir + "model.safetensors");
  g.weights = std::make_shared<MemoryWeightSource>(dir + "model.safetensors");
  for (const auto& [tensor, entry] : file->entries()) g.weights->add_f32(tensor, entry.shape, file->to_f32(tensor));
  if (with_token_table) {
    const int H = g.config.hidden_size;
    std::vector<float> table(size_t(g.config.vocab_size) * H, 0.0f);
    const std::vector<float> rows = g.io->to_f32("token_embedding_rows");
    const auto used = g.meta["token_embedding_ids"].get<std::vector<int>>();
    for (size_t r = 0; r < used.size(); ++r)
      std::copy(rows.begin() + r * H, rows.begin() + (r + 1) * H, table.begin() + size_t(used[r]) * H);
    g.weights->add_f32(g.meta["weight_prefix"].get<std::string>() + "embeddings.token_embedding.weight",
                       {g.config.vocab_size, H}, table);
  }
  for (const auto& row : g.meta["input_ids"]) {
    for (int id : row.get<std::vector<int>>()) g.ids.push_back(id);
    ++g.batch;
  }
  return g;
}

class ClipGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ClipGolden, MatchesTransformers) {
  GoldenClip g = golden(GetParam());
  auto backend = make_cpu_backend(2);
  EXPECT_EQ(ClipTextModel::weight_prefix(*g.weights), g.meta["weight_prefix"].get<std::string>());
  const ClipTextModel model = ClipTextModel::load(g.config, *g.weights, *backend);
  ASSERT_EQ(g.ids.size(), size_t(g.batch) * 77);
  for (int skip : {0, 1, 2}) {
    const std::string ref_name = skip == 0 ? "last_hidden_state" : "clip_skip" + std::to_string(skip);
    Tensor out = model.forward(*backend, g.ids, g.batch, skip);
    EXPECT_EQ(out.shape(), (Shape{g.batch, 77, g.config.hidden_size}));
    const double err = rel_error(backend->to_host(out), g.io->to_f32(ref_name));
    std::printf("%s %s (%d prompts): |ours - ref| / |ref| = %.3g\n", GetParam().c_str(),
                ref_name.c_str(), g.batch, err);
    EXPECT_LE(err, 1e-5) << ref_name;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ClipGolden, ::testing::Values("clip_a", "clip_b"));

TEST(ClipText, PromptsAreIndependentAndShorterSequencesWork) {
  GoldenClip g = golden("clip_a");
  auto backend = make_cpu_backend(1);
  const ClipTextModel model = ClipTextModel::load(g.config, *g.weights, *backend);
  // Prompt 2 alone equals row 2 of the batch.
  const std::vector<int32_t> one(g.ids.begin() + 2 * 77, g.ids.begin() + 3 * 77);
  const std::vector<float> all = backend->to_host(model.forward(*backend, g.ids, g.batch));
  const std::vector<float> single = backend->to_host(model.forward(*backend, one, 1));
  const size_t row = 77 * size_t(g.config.hidden_size);
  EXPECT_EQ(single, std::vector<float>(all.begin() + 2 * row, all.begin() + 3 * row));
  // The causal mask: the first 10 positions of a 10-token sequence equal those of the 77-token one.
  const std::vector<int32_t> prefix(one.begin(), one.begin() + 10);
  const std::vector<float> short_out = backend->to_host(model.forward(*backend, prefix, 1));
  ASSERT_EQ(short_out.size(), 10 * size_t(g.config.hidden_size));
  const double err = rel_error(short_out, std::vector<float>(single.begin(), single.begin() + short_out.size()));
  EXPECT_LE(err, 1e-6);
}

TEST(ClipText, BadCallsAreErrors) {
  GoldenClip g = golden("clip_b");
  auto backend = make_cpu_backend(1);
  const ClipTextModel model = ClipTextModel::load(g.config, *g.weights, *backend);
  const std::vector<int32_t> ids(g.ids.begin(), g.ids.begin() + 77);
  EXPECT_THROW(model.forward(*backend, ids, 2), Error);                    // 77 ids, 2 rows
  EXPECT_THROW(model.forward(*backend, std::vector<int32_t>(78, 1), 1), Error);  // > 77 positions
  EXPECT_THROW(model.forward(*backend, {49406, 49408}, 1), Error);         // outside the vocabulary
  EXPECT_NE(message_of([&] { model.forward(*backend, ids, 1, 5); }).find("clip skip 5"), std::string::npos);
  EXPECT_THROW(model.forward(*backend, ids, 1, -1), InputError);
  // clip skip = all layers: the embeddings, final-normed.
  EXPECT_NO_THROW(model.forward(*backend, ids, 1, g.config.num_hidden_layers));
}

TEST(ClipTextWeights, ReportsByName) {
  auto backend = make_cpu_backend(1);
  // Without the token table: one missing tensor, named with its prefix.
  GoldenClip g = golden("clip_a", /*with_token_table=*/false);
  std::string msg = message_of([&] { ClipTextModel::load(g.config, *g.weights, *backend); });
  EXPECT_NE(msg.find("text_encoder"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
  EXPECT_NE(msg.find("text_model.embeddings.token_embedding.weight"), std::string::npos) << msg;
  // position_ids (an int buffer many files carry) is no problem; a stray tensor is.
  g = golden("clip_b");
  g.weights->add_f32("embeddings.position_ids", {1, 77}, std::vector<float>(77, 0.0f));
  EXPECT_NO_THROW(ClipTextModel::load(g.config, *g.weights, *backend));
  g.weights->add_f32("encoder.layers.4.mlp.fc1.weight", {40, 24}, std::vector<float>(960, 0.0f));
  msg = message_of([&] { ClipTextModel::load(g.config, *g.weights, *backend); });
  EXPECT_NE(msg.find("unexpected"), std::string::npos) << msg;
  EXPECT_NE(msg.find("encoder.layers.4.mlp.fc1.weight"), std::string::npos) << msg;
  // A config with another width: mis-shaped, named.
  ClipTextConfig wrong = g.config;
  wrong.intermediate_size = 48;
  msg = message_of([&] { ClipTextModel::load(wrong, *g.weights, *backend); });
  EXPECT_NE(msg.find("encoder.layers.0.mlp.fc1.weight: file [40, 24] expected [48, 24]"), std::string::npos) << msg;
}

TEST(ClipTextConfig, ParsesTransformersFiles) {
  for (const char* name : {"clip_a", "clip_b"}) {
    const std::string path = kGolden + name + "/config.json";
    const ClipTextConfig c = ClipTextConfig::load(path);
    const nlohmann::json file = read_json_file(path);
    EXPECT_EQ(c.hidden_size, file["hidden_size"].get<int>());
    EXPECT_EQ(c.hidden_act, file["hidden_act"].get<std::string>());
    EXPECT_EQ(c.layer_norm_eps, file["layer_norm_eps"].get<double>());
    nlohmann::json written = c.to_json();
    written.erase("architectures");  // written by save_pretrained, not by to_json_file
    written.erase("dtype");
    EXPECT_EQ(written, file) << name;
  }
  const ClipTextConfig sd = ClipTextConfig::from_json(ClipTextConfig::sd15().to_json(), "x");
  EXPECT_EQ(sd.hidden_size, 768);
  EXPECT_EQ(sd.num_attention_heads, 12);
  EXPECT_EQ(sd.head_dim(), 64);
  // A full CLIPConfig: the text tower's part is read.
  nlohmann::json full = {{"model_type", "clip"}, {"text_config", ClipTextConfig::sd15().to_json()}};
  EXPECT_EQ(ClipTextConfig::from_json(full, "x").hidden_size, 768);
  // Left-out keys: transformers' defaults.
  EXPECT_EQ(ClipTextConfig::from_json(nlohmann::json::object(), "x").hidden_size, 512);
}

TEST(ClipTextConfig, UnsupportedValuesNameFileKeyAndValue) {
  struct Case {
    const char* key;
    nlohmann::json value;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"hidden_act", "gelu_new", "quick_gelu"},
      {"model_type", "t5", "clip_text_model"},
      {"architectures", {"T5EncoderModel"}, "CLIPTextModel"},
      {"num_attention_heads", 10, "divide hidden_size"},
      {"hidden_size", -768, "values must lie in"},
      {"layer_norm_eps", 0, "positive"},
      {"max_position_embeddings", "77", "expected integers"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = ClipTextConfig::sd15().to_json();
    j[c.key] = c.value;
    const std::string msg = message_of([&] { ClipTextConfig::from_json(j, "m/text_encoder/config.json"); });
    EXPECT_NE(msg.find("m/text_encoder/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(std::string("\"") + c.key + "\""), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sdmpi
