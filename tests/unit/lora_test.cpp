// LoRA reader, key mapping (kohya and diffusers/PEFT), the float32 delta and the merged weight
// source: every key form lands on the right weight, every bad key is named at once, the delta is
// up @ down · alpha / rank · scale, and merging never touches the original bytes; kohya's SDXL
// names in the LDM layout land through the checkpoint key table; other adapter kinds (LoHa, LoKr,
// DoRA, IA3, ...) are refused by name. Golden: whole generations against diffusers'
// load_lora_weights + fuse_lora (tools/golden/make_lora_golden.py, tests/data/golden/lora) on the
// two tiny SD 1.x pipelines of the txt2img golden and the tiny SDXL and SD 2.x ones (kohya and
// PEFT files, stacked LoRAs), within 1 level.
#include "sdmpi/lora.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <tuple>

#include "golden_util.h"
#include "pipeline/lora_model.h"
#include "sdmpi/cluster.h"
#include "sdmpi/dtype.h"
#include "sdmpi/error.h"
#include "sdmpi/hash.h"
#include "sdmpi/png.h"
#include "sdmpi/prompts.h"

using namespace sdmpi;

namespace {

std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A tiny stand-in for a UNet and a text encoder, under diffusers names.
std::shared_ptr<MemoryWeightSource> tiny_unet() {
  auto s = std::make_shared<MemoryWeightSource>("tiny unet");
  const std::string attn = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.";
  s->add_f32(attn + "to_q.weight", {8, 6}, random_values(48, 1));
  s->add_f32(attn + "to_out.0.weight", {6, 8}, random_values(48, 2));
  s->add_f32(attn + "to_out.0.bias", {6}, random_values(6, 3));
  s->add_f32("down_blocks.0.attentions.0.proj_in.weight", {6, 4, 1, 1}, random_values(24, 4));
  s->add_f32("down_blocks.0.resnets.0.conv1.weight", {5, 3, 3, 3}, random_values(135, 5));
  s->add_f32("down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight", {12, 6}, random_values(72, 6));
  return s;
}
std::shared_ptr<MemoryWeightSource> tiny_text_encoder(bool with_text_model_level) {
  auto s = std::make_shared<MemoryWeightSource>("tiny text encoder");
  const std::string p = with_text_model_level ? "text_model.encoder.layers.0." : "encoder.layers.0.";
  s->add_f32(p + "self_attn.q_proj.weight", {4, 4}, random_values(16, 7));
  s->add_f32(p + "mlp.fc1.weight", {8, 4}, random_values(32, 8));
  return s;
}

struct TempFile {
  std::string path;
  explicit TempFile(const std::string& name)
      : path((std::filesystem::temp_directory_path() / ("sdmpi_lora_test_" + std::to_string(::getpid()) + "_" + name)).string()) {}
  ~TempFile() { std::filesystem::remove(path); }
};

void add_pair(SafetensorsWriter& w, const std::string& stem, const std::string& down_suffix, const std::string& up_suffix,
              const Shape& down, const Shape& up, uint32_t seed) {
  w.add_f32(stem + down_suffix, down, random_values(static_cast<size_t>(shape_numel(down)), seed));
  w.add_f32(stem + up_suffix, up, random_values(static_cast<size_t>(shape_numel(up)), seed + 100));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

const LoraLayer& layer_for(const LoraFile& f, const std::string& target) {
  for (const LoraLayer& l : f.layers)
    if (l.target == target) return l;
  throw std::runtime_error("no layer for " + target);
}

}  // namespace

TEST(LoraSpec, ParsesPathAndScale) {
  EXPECT_EQ(parse_lora_spec("a/b.safetensors", "--lora").scale, 1.0f);
  LoraSpec s = parse_lora_spec("a/b.safetensors:0.8", "--lora");
  EXPECT_EQ(s.path, "a/b.safetensors");
  EXPECT_FLOAT_EQ(s.scale, 0.8f);
  EXPECT_EQ(parse_lora_spec("x:y/b.safetensors", "--lora").path, "x:y/b.safetensors");
  EXPECT_NE(error_of([] { parse_lora_spec(":0.5", "--lora"); }).find("names no file"), std::string::npos);
  EXPECT_NE(error_of([] { parse_lora_spec("a.safetensors:inf", "--lora"); }).find("'inf'"), std::string::npos);
}

TEST(LoraReader, KohyaKeysMapOntoDiffusersNames) {
  auto unet = tiny_unet();
  auto te = tiny_text_encoder(true);
  SafetensorsWriter w;
  const std::string k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_";
  add_pair(w, k + "attn1_to_q", ".lora_down.weight", ".lora_up.weight", {2, 6}, {8, 2}, 10);
  add_pair(w, k + "attn1_to_out_0", ".lora_down.weight", ".lora_up.weight", {2, 8}, {6, 2}, 11);
  add_pair(w, k + "ff_net_0_proj", ".lora_down.weight", ".lora_up.weight", {3, 6}, {12, 3}, 12);
  add_pair(w, "lora_unet_down_blocks_0_attentions_0_proj_in", ".lora_down.weight", ".lora_up.weight", {2, 4, 1, 1}, {6, 2, 1, 1}, 13);
  add_pair(w, "lora_unet_down_blocks_0_resnets_0_conv1", ".lora_down.weight", ".lora_up.weight", {2, 3, 3, 3}, {5, 2, 1, 1}, 14);
  add_pair(w, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", ".lora_down.weight", ".lora_up.weight", {1, 4}, {4, 1}, 15);
  w.add_f32(k + "attn1_to_q.alpha", {}, {1.0f});
  TempFile file("kohya.safetensors");
  w.write(file.path);

  LoraFile lora = read_lora(file.path, {{"unet", unet.get()}, {"text_encoder", te.get()}});
  EXPECT_EQ(lora.name, std::filesystem::path(file.path).stem().string());
  ASSERT_EQ(lora.layers.size(), 6u);
  const std::string t = "down_blocks.0.attentions.0.transformer_blocks.0.";
  EXPECT_FLOAT_EQ(layer_for(lora, t + "attn1.to_q.weight").alpha, 1.0f);
  EXPECT_FLOAT_EQ(layer_for(lora, t + "attn1.to_out.0.weight").alpha, 2.0f);  // no alpha: rank
  EXPECT_EQ(layer_for(lora, t + "ff.net.0.proj.weight").rank(), 3);
  EXPECT_EQ(layer_for(lora, "down_blocks.0.resnets.0.conv1.weight").component, "unet");
  EXPECT_EQ(layer_for(lora, "text_model.encoder.layers.0.self_attn.q_proj.weight").component, "text_encoder");
}

TEST(LoraReader, PeftAndOldDiffusersKeysMapWhateverTheTextEncoderNaming) {
  auto unet = tiny_unet();
  auto te = tiny_text_encoder(false);  // transformers >= 5.6 names, without text_model.
  auto te2 = tiny_text_encoder(true);
  SafetensorsWriter w;
  const std::string u = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.";
  add_pair(w, u + "to_q", ".lora_A.weight", ".lora_B.weight", {2, 6}, {8, 2}, 20);
  add_pair(w, u + "to_out.0", ".lora.down.weight", ".lora.up.weight", {2, 8}, {6, 2}, 21);
  add_pair(w, "text_encoder.text_model.encoder.layers.0.mlp.fc1", ".lora_A.weight", ".lora_B.weight", {2, 4}, {8, 2}, 22);
  add_pair(w, "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj", ".lora_A.weight", ".lora_B.weight", {2, 4}, {4, 2}, 23);
  w.add_f32(u + "to_q.alpha", {}, {4.0f});
  TempFile file("peft.safetensors");
  w.write(file.path);

  LoraFile lora = read_lora(file.path, {{"unet", unet.get()}, {"text_encoder", te.get()}, {"text_encoder_2", te2.get()}});
  ASSERT_EQ(lora.layers.size(), 4u);
  EXPECT_FLOAT_EQ(layer_for(lora, "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight").alpha, 4.0f);
  EXPECT_EQ(layer_for(lora, "encoder.layers.0.mlp.fc1.weight").component, "text_encoder");  // the source's own name
  EXPECT_EQ(layer_for(lora, "text_model.encoder.layers.0.self_attn.q_proj.weight").component, "text_encoder_2");
}

TEST(LoraReader, NamesEveryBadKeyAtOnce) {
  auto unet = tiny_unet();
  SafetensorsWriter w;
  add_pair(w, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", ".lora_down.weight",
           ".lora_up.weight", {2, 7}, {8, 2}, 30);  // in 7, weight has 6
  add_pair(w, "lora_unet_mid_block_nothing_here", ".lora_down.weight", ".lora_up.weight", {2, 6}, {8, 2}, 31);
  w.add_f32("lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", {2, 3, 3, 3}, random_values(54, 32));
  w.add_f32("something_else.weight", {1}, {0.0f});
  add_pair(w, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", ".lora_down.weight", ".lora_up.weight", {1, 4}, {4, 1}, 33);
  TempFile file("bad.safetensors");
  w.write(file.path);

  std::string msg = error_of([&] { read_lora(file.path, {{"unet", unet.get()}}); });
  EXPECT_NE(msg.find(file.path), std::string::npos) << msg;
  EXPECT_NE(msg.find("something_else.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lora_unet_mid_block_nothing_here"), std::string::npos) << msg;
  EXPECT_NE(msg.find("do not fit unet down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight [8, 6]"),
            std::string::npos) << msg;
  EXPECT_NE(msg.find("lora_unet_down_blocks_0_resnets_0_conv1: has no up"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the model has no text_encoder"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
}

TEST(LoraDelta, LinearIsScaledUpTimesDown) {
  LoraLayer l;
  l.module = "m";
  l.down_shape = {2, 3};
  l.up_shape = {2, 2};
  l.down = {1, 2, 3, 4, 5, 6};
  l.up = {1, 0, 2, -1};
  l.alpha = 1.0f;  // factor alpha / rank = 0.5
  std::vector<float> d = lora_delta(l, {2, 3}, 2.0f);
  std::vector<float> expect = {1, 2, 3, 2 * 1 - 4, 2 * 2 - 5, 2 * 3 - 6};  // up @ down · 0.5 · 2
  EXPECT_EQ(d, expect);
}

TEST(LoraDelta, ConvThreeByThreeFlattensDown) {
  LoraLayer l;
  l.module = "m";
  l.down_shape = {2, 3, 3, 3};
  l.up_shape = {5, 2, 1, 1};
  l.down = random_values(54, 40);
  l.up = random_values(10, 41);
  l.alpha = 2.0f;
  std::vector<float> d = lora_delta(l, {5, 3, 3, 3}, 0.75f);
  for (int o = 0; o < 5; ++o)
    for (int i = 0; i < 27; ++i) {
      float expect = (l.up[o * 2] * l.down[i] + l.up[o * 2 + 1] * l.down[27 + i]) * 0.75f;
      EXPECT_NEAR(d[o * 27 + i], expect, 1e-6f);
    }
}

TEST(LoraMergedWeightSource, MergesCopiesAndLeavesTheOriginalBytes) {
  auto unet = tiny_unet();
  SafetensorsWriter w;
  add_pair(w, "lora_unet_down_blocks_0_resnets_0_conv1", ".lora_down.weight", ".lora_up.weight", {2, 3, 3, 3}, {5, 2, 1, 1}, 50);
  add_pair(w, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", ".lora_A.weight", ".lora_B.weight", {2, 6}, {8, 2}, 51);
  TempFile a("a.safetensors"), b("b.safetensors");
  w.write(a.path);
  SafetensorsWriter w2;
  add_pair(w2, "lora_unet_down_blocks_0_resnets_0_conv1", ".lora_down.weight", ".lora_up.weight", {1, 3, 3, 3}, {5, 1, 1, 1}, 52);
  w2.write(b.path);
  auto la = std::make_shared<const LoraFile>(read_lora(a.path, {{"unet", unet.get()}}));
  auto lb = std::make_shared<const LoraFile>(read_lora(b.path, {{"unet", unet.get()}}));

  const std::string conv = "down_blocks.0.resnets.0.conv1.weight";
  const std::string q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
  const std::string out0 = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight";
  std::vector<uint8_t> conv_before(135 * 4), q_before(48 * 4);
  std::memcpy(conv_before.data(), unet->get(conv).data, conv_before.size());
  std::memcpy(q_before.data(), unet->get(q).data, q_before.size());

  std::vector<float> expect(135);
  std::memcpy(expect.data(), conv_before.data(), conv_before.size());
  {
    std::vector<float> d1 = lora_delta(layer_for(*la, conv), {5, 3, 3, 3}, 0.8f);
    std::vector<float> d2 = lora_delta(layer_for(*lb, conv), {5, 3, 3, 3}, -0.5f);
    for (size_t i = 0; i < expect.size(); ++i) expect[i] += d1[i];  // one adapter after the other
    for (size_t i = 0; i < expect.size(); ++i) expect[i] += d2[i];
  }
  {
    LoraMergedWeightSource merged(unet, "unet", {{la, 0.8f}, {lb, -0.5f}});
    EXPECT_EQ(merged.merged_count(), 2u);
    WeightView m = merged.get(conv);
    ASSERT_EQ(m.dtype, DType::F32);
    EXPECT_EQ(std::memcmp(m.data, expect.data(), 135 * 4), 0);
    EXPECT_NE(std::memcmp(merged.get(q).data, q_before.data(), q_before.size()), 0);
    EXPECT_EQ(merged.get(out0).data, unet->get(out0).data);  // untouched weights pass through
    EXPECT_NE(merged.describe().find("with LoRA"), std::string::npos);
  }
  // The original weights are the original bytes, during and after.
  EXPECT_EQ(std::memcmp(unet->get(conv).data, conv_before.data(), conv_before.size()), 0);
  EXPECT_EQ(std::memcmp(unet->get(q).data, q_before.data(), q_before.size()), 0);
  // Scale 0 gives back the original values.
  LoraMergedWeightSource zero(unet, "unet", {{la, 0.0f}});
  EXPECT_EQ(std::memcmp(zero.get(q).data, q_before.data(), q_before.size()), 0);
}

TEST(LoraMergedWeightSource, BackendLayoutConvGetsThePermutedDelta) {
  // A conv weight already in [out, kh, kw, in] (node-shared weights) merges like the PyTorch one.
  auto plain = tiny_unet();
  const std::string conv = "down_blocks.0.resnets.0.conv1.weight";
  std::vector<float> oihw(135);
  std::memcpy(oihw.data(), plain->get(conv).data, 135 * 4);
  std::vector<float> ohwi(135);
  for (int o = 0; o < 5; ++o)
    for (int i = 0; i < 3; ++i)
      for (int p = 0; p < 9; ++p) ohwi[(o * 9 + p) * 3 + i] = oihw[(o * 3 + i) * 9 + p];

  class LayoutSource : public WeightSource {
   public:
    std::vector<float> values;
    std::vector<std::string> names() const override { return {"down_blocks.0.resnets.0.conv1.weight"}; }
    bool has(const std::string& n) const override { return n == names()[0]; }
    WeightView get(const std::string& n) const override {
      WeightView v(n, DType::F32, {5, 3, 3, 3}, values.data());
      v.backend_layout = true;
      return v;
    }
    std::string describe() const override { return "layout"; }
  };
  auto laid = std::make_shared<LayoutSource>();
  laid->values = ohwi;

  SafetensorsWriter w;
  add_pair(w, "lora_unet_down_blocks_0_resnets_0_conv1", ".lora_down.weight", ".lora_up.weight", {2, 3, 3, 3}, {5, 2, 1, 1}, 60);
  TempFile f("c.safetensors");
  w.write(f.path);
  auto lora = std::make_shared<const LoraFile>(read_lora(f.path, {{"unet", plain.get()}}));
  LoraMergedWeightSource a(plain, "unet", {{lora, 1.0f}});
  LoraMergedWeightSource b(laid, "unet", {{lora, 1.0f}});
  const float* pa = static_cast<const float*>(a.get(conv).data);
  WeightView vb = b.get(conv);
  EXPECT_TRUE(vb.backend_layout);
  const float* pb = static_cast<const float*>(vb.data);
  for (int o = 0; o < 5; ++o)
    for (int i = 0; i < 3; ++i)
      for (int p = 0; p < 9; ++p) EXPECT_EQ(pb[(o * 9 + p) * 3 + i], pa[(o * 3 + i) * 9 + p]);
}

namespace {

const std::string kLoraDir = std::string(SDMPI_TEST_DATA) + "/golden/lora/";
const std::string kPipelines = std::string(SDMPI_TEST_DATA) + "/golden/pipeline/pipelines.json";

}  // namespace

TEST(LoraGolden, GenerationsWithinOneLevelOfDiffusersFuseLora) {
  const nlohmann::json doc = testing_util::load_json_or_null(kLoraDir + "runs.json");
  const nlohmann::json models = testing_util::load_json_or_null(kPipelines);
  ASSERT_FALSE(doc.is_null()) << "missing " << kLoraDir << "runs.json";
  ASSERT_FALSE(models.is_null()) << "missing " << kPipelines;
  std::ifstream f(kLoraDir + "images.u8", std::ios::binary);
  const std::vector<uint8_t> ref((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto backend = make_cpu_backend();
  int runs = 0;
  for (const auto& run : doc["runs"]) {
    const std::string pname = run["pipeline"], id = run["id"];
    const ModelSource base = testing_util::golden_model(models, pname);
    const LoraSpec spec{kLoraDir + run["lora"].get<std::string>(), run["scale"].get<float>()};
    const ModelSource merged = with_loras(base, {spec});
    size_t merged_weights = 0;
    for (const char* c : {"unet", "text_encoder"})
      if (auto* m = dynamic_cast<const LoraMergedWeightSource*>(merged.weights(c).get())) merged_weights += m->merged_count();
    EXPECT_EQ(merged_weights, run["lora_weights"].get<size_t>()) << id << ": weights diffusers changed";

    const std::vector<WorkItem> items = testing_util::golden_run_items(run);
    Txt2ImgPipeline pipe(merged, *backend);
    const std::vector<ImageResult> got = pipe.generate(items);
    const auto [worst, off_by_one, values] = testing_util::compare_images(
        got, ref, run["images_offset"].get<size_t>(), run["images_shape"].get<std::vector<size_t>>(), id);
    EXPECT_LE(worst, 1) << id << ": max pixel difference " << worst;
    std::printf("%-28s scale %5.2f: %zu merged weights, max |Δpixel| %d, %zu of %zu values off by one\n", id.c_str(),
                spec.scale, merged_weights, worst, off_by_one, values);
    // The LoRA changes the picture: the same items without it differ (the test could fail).
    Txt2ImgPipeline plain(base, *backend);
    EXPECT_NE(plain.generate({items[0]})[0].rgb, got[0].rgb) << id << ": the LoRA changed nothing";
    ++runs;
  }
  EXPECT_EQ(runs, 4);
}

TEST(LoraGolden, UnknownKeysOfARealFileAreNamed) {
  // The kohya file of the four-level pipeline does not fit the two-level one: every mismatch named.
  const nlohmann::json models = testing_util::load_json_or_null(kPipelines);
  ASSERT_FALSE(models.is_null());
  const ModelSource other = testing_util::golden_model(models, "two_level");
  const std::string msg = testing_util::message_of([&] { with_loras(other, {{kLoraDir + "four_level_kohya.safetensors", 1.0f}}); });
  EXPECT_NE(msg.find("four_level_kohya.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("key(s) map to no weight of the model: lora_unet_down_blocks_0_attentions_1_proj_in"), std::string::npos) << msg;
  EXPECT_NE(msg.find("do not fit unet down_blocks.0.attentions.0.proj_in.weight [24, 24]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("more"), std::string::npos) << "long lists are cut: " << msg;
}

TEST(LoraTags, RemovedFromThePromptInOrder) {
  std::string prompt = "a <lora:style:0.8>castle, <hypernet:x:1> <lora:detail> at dawn";
  const auto tags = extract_lora_tags(prompt, "p");
  ASSERT_EQ(tags.size(), 2u);
  EXPECT_EQ(tags[0].first, "style");
  EXPECT_FLOAT_EQ(tags[0].second, 0.8f);
  EXPECT_EQ(tags[1].first, "detail");
  EXPECT_FLOAT_EQ(tags[1].second, 1.0f);
  EXPECT_EQ(prompt, "a castle, <hypernet:x:1>  at dawn");  // A1111 replaces a tag by nothing
  std::string bad = "a <lora:style:lots>";
  EXPECT_NE(testing_util::message_of([&] { extract_lora_tags(bad, "prompts.txt:3"); }).find("prompts.txt:3: <lora:style:lots>: scale 'lots'"),
            std::string::npos);
}

TEST(LoraHash, IsTheTensorDataAfterTheHeader) {
  SafetensorsWriter a, b;
  a.add_f32("lora_unet_x.lora_down.weight", {1, 2}, {1.0f, 2.0f});
  b.add_f32("lora_unet_x.lora_down.weight", {1, 2}, {1.0f, 2.0f});
  b.set_metadata("ss_note", "metadata does not change A1111's hash");
  TempFile fa("ha.safetensors"), fb("hb.safetensors");
  a.write(fa.path);
  b.write(fb.path);
  const std::string h = lora_file_hash(fa.path);
  if (h.empty()) GTEST_SKIP() << "built without OpenSSL";
  EXPECT_EQ(h, lora_file_hash(fb.path));
  EXPECT_EQ(h, sha256_hex(std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8)));  // 1.0f, 2.0f little-endian
}

TEST(LoraArchiveText, RoundTripsNameHashAndScale) {
  EXPECT_EQ(loras_to_archive_text({}), "");
  EXPECT_TRUE(loras_from_archive_text("", "row").empty());
  const std::vector<ItemLora> in{{"/x/style.safetensors", 0.8f, "ab12"}, {"detail.safetensors", -1.5f, "cd34"}};
  const std::string text = loras_to_archive_text(in);
  EXPECT_NE(text.find("\"scale\":0.8,"), std::string::npos) << text;
  const std::vector<ItemLora> out = loras_from_archive_text(text, "row");
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].path, "style");
  EXPECT_EQ(out[0].scale, 0.8f);
  EXPECT_EQ(out[1].sha256, "cd34");
  EXPECT_NE(testing_util::message_of([] { loras_from_archive_text("[1]", "a.h5 row 3"); }).find("a.h5 row 3"), std::string::npos);
}

TEST(LoraJsonl, ListOfStringsOrObjects) {
  const auto records = parse_prompts_jsonl(
      "{\"prompt\": \"a\", \"lora\": [\"s.safetensors:0.5\", {\"path\": \"d.safetensors\", \"scale\": 2}]}\n"
      "{\"prompt\": \"b\"}\n",
      "p.jsonl");
  ASSERT_TRUE(records[0].loras.has_value());
  ASSERT_EQ(records[0].loras->size(), 2u);
  EXPECT_EQ((*records[0].loras)[0].path, "s.safetensors");
  EXPECT_FLOAT_EQ((*records[0].loras)[0].scale, 0.5f);
  EXPECT_FLOAT_EQ((*records[0].loras)[1].scale, 2.0f);
  EXPECT_FALSE(records[1].loras.has_value());
  EXPECT_NE(testing_util::message_of([] { parse_prompts_jsonl("{\"prompt\": \"a\", \"lora\": [3]}\n", "p.jsonl"); })
                .find("p.jsonl:1: each \"lora\" entry"),
            std::string::npos);
}

TEST(LoraBatches, SetsNeverShareABatchAndComeTogether) {
  std::vector<WorkItem> items;
  for (int i = 0; i < 6; ++i) {
    WorkItem it;
    it.index = i;
    if (i % 2) it.params.loras = {{"/l/style.safetensors", 0.8f, "h"}};
    items.push_back(it);
  }
  items[5].params.loras[0].scale = 0.5f;  // another set
  const auto batches = make_batches(items, 4);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].size(), 3u);  // the plain items first, in their order
  for (const auto& b : batches)
    for (const WorkItem& it : b) EXPECT_EQ(lora_set_key(it.params.loras), lora_set_key(b.front().params.loras));
  EXPECT_EQ(batches[1].size() + batches[2].size(), 3u);
}

TEST(LoraReader, SdxlKohyaTextEncodersByNumber) {
  auto te1 = tiny_text_encoder(true);
  auto te2 = tiny_text_encoder(false);
  SafetensorsWriter w;
  add_pair(w, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", ".lora_down.weight", ".lora_up.weight", {1, 4}, {4, 1}, 70);
  add_pair(w, "lora_te2_text_model_encoder_layers_0_mlp_fc1", ".lora_down.weight", ".lora_up.weight", {1, 4}, {8, 1}, 71);
  TempFile f("sdxl_te.safetensors");
  w.write(f.path);
  const LoraFile lora = read_lora(f.path, {{"text_encoder", te1.get()}, {"text_encoder_2", te2.get()}});
  EXPECT_EQ(layer_for(lora, "text_model.encoder.layers.0.self_attn.q_proj.weight").component, "text_encoder");
  EXPECT_EQ(layer_for(lora, "encoder.layers.0.mlp.fc1.weight").component, "text_encoder_2");
}

TEST(LoraReader, SdxlKohyaLdmNamesGoThroughTheCheckpointTable) {
  // kohya trains SDXL on the LDM UNet: its keys spell LDM paths (input/middle/output blocks,
  // in_layers/emb_layers/out_layers/skip_connection, op, label_emb, time_embed, out.2) with '_'.
  // Two ResNets per down block, as SDXL: input block 4 is down block 1's first layer.
  auto unet = std::make_shared<MemoryWeightSource>("sdxl-like unet");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"input_blocks_0_0", "conv_in"},
      {"input_blocks_1_0_in_layers_2", "down_blocks.0.resnets.0.conv1"},
      {"input_blocks_2_0_emb_layers_1", "down_blocks.0.resnets.1.time_emb_proj"},
      {"input_blocks_3_0_op", "down_blocks.0.downsamplers.0.conv"},
      {"input_blocks_4_1_transformer_blocks_0_attn1_to_q", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"},
      {"input_blocks_5_1_transformer_blocks_1_attn2_to_out_0", "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_out.0"},
      {"input_blocks_7_0_skip_connection", "down_blocks.2.resnets.0.conv_shortcut"},
      {"middle_block_0_out_layers_3", "mid_block.resnets.0.conv2"},
      {"middle_block_1_proj_in", "mid_block.attentions.0.proj_in"},
      {"middle_block_2_emb_layers_1", "mid_block.resnets.1.time_emb_proj"},
      {"output_blocks_2_2_conv", "up_blocks.0.upsamplers.0.conv"},
      {"output_blocks_5_1_transformer_blocks_0_ff_net_0_proj", "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj"},
      {"output_blocks_8_0_skip_connection", "up_blocks.2.resnets.2.conv_shortcut"},
      {"time_embed_0", "time_embedding.linear_1"},
      {"label_emb_0_2", "add_embedding.linear_2"},
      {"out_2", "conv_out"},
  };
  for (int l = 0; l < 2; ++l) unet->add_f32("down_blocks.0.resnets." + std::to_string(l) + ".norm1.weight", {4}, random_values(4, 80));
  SafetensorsWriter w;
  uint32_t seed = 81;
  for (const auto& [ldm, diffusers] : cases) {
    unet->add_f32(diffusers + ".weight", {4, 4}, random_values(16, seed));
    add_pair(w, "lora_unet_" + ldm, ".lora_down.weight", ".lora_up.weight", {1, 4}, {4, 1}, ++seed);
  }
  TempFile f("sdxl_ldm.safetensors");
  w.write(f.path);
  const LoraFile lora = read_lora(f.path, {{"unet", unet.get()}});
  ASSERT_EQ(lora.layers.size(), cases.size());
  for (const auto& [ldm, diffusers] : cases)
    EXPECT_EQ(layer_for(lora, diffusers + ".weight").module, "lora_unet_" + ldm) << ldm;

  // An LDM path the UNet does not have is named as unknown, with its LDM spelling.
  SafetensorsWriter bad;
  add_pair(bad, "lora_unet_input_blocks_4_1_transformer_blocks_7_attn1_to_q", ".lora_down.weight", ".lora_up.weight", {1, 4}, {4, 1}, 99);
  TempFile fb("sdxl_ldm_bad.safetensors");
  bad.write(fb.path);
  const std::string msg = testing_util::message_of([&] { read_lora(fb.path, {{"unet", unet.get()}}); });
  EXPECT_NE(msg.find("lora_unet_input_blocks_4_1_transformer_blocks_7_attn1_to_q (no unet weight"), std::string::npos) << msg;
}

TEST(LoraReader, OtherAdapterKindsAreRefusedByName) {
  // LyCORIS and PEFT variants that are not up @ down: one line naming the file, a key and the kind,
  // never a wrong merge (diffusers, for one, drops dora_scale and merges the rest as a plain LoRA).
  auto unet = tiny_unet();
  const std::string stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  const std::vector<std::tuple<std::string, std::string, bool>> kinds = {  // key, kind, with a plain pair
      {stem + ".hada_w1_a", "LoHa (LyCORIS)", false},
      {stem + ".lokr_w1", "LoKr (LyCORIS)", false},
      {stem + ".dora_scale", "DoRA", true},
      {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector", "DoRA (PEFT)", true},
      {stem + ".on_input", "IA3 (LyCORIS)", false},
      {stem + ".oft_blocks", "OFT (LyCORIS)", false},
  };
  for (const auto& [key, kind, with_pair] : kinds) {
    SafetensorsWriter w;
    if (with_pair) add_pair(w, stem, ".lora_down.weight", ".lora_up.weight", {2, 6}, {8, 2}, 90);
    w.add_f32(key, {8, 2}, random_values(16, 91));
    TempFile f("kind.safetensors");
    w.write(f.path);
    const std::string msg = testing_util::message_of([&] { read_lora(f.path, {{"unet", unet.get()}}); });
    EXPECT_NE(msg.find("LoRA " + f.path + ": key " + key + " is " + kind + ", not a plain LoRA (1 such key(s))"),
              std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
  }
}

TEST(LoraGolden, SdxlAndSd2WithinOneLevelOfDiffusersFuseLora) {
  // tools/golden/make_lora_golden.py: the tiny SDXL and SD 2.x pipelines of make_sdxl_golden.py and
  // make_sd2_golden.py with kohya (LDM- and diffusers-named UNet, lora_te1_/lora_te2_/lora_te_) and
  // PEFT LoRAs on the UNet and every text encoder, one at a time and two stacked with their own
  // scales, against diffusers' load_lora_weights + set_adapters + fuse_lora.
  const nlohmann::json doc = testing_util::load_json_or_null(kLoraDir + "families.json");
  ASSERT_FALSE(doc.is_null()) << "missing " << kLoraDir << "families.json";
  const std::vector<uint8_t> ref = testing_util::read_golden_images(kLoraDir + "families.u8");
  auto backend = make_cpu_backend();
  std::map<std::string, nlohmann::json> models;
  int runs = 0, stacked = 0;
  std::set<std::string> families, files;
  for (const auto& run : doc["runs"]) {
    const std::string family = run["family"], pname = run["pipeline"], id = run["id"];
    if (!models.count(family))
      models[family] = testing_util::load_json_or_null(std::string(SDMPI_TEST_DATA) + "/golden/" + family + "/pipelines.json");
    ASSERT_FALSE(models[family].is_null()) << "missing tests/data/golden/" << family << "/pipelines.json";
    std::map<std::string, ClipTokenizer> tokenizers;
    if (family == "sdxl")
      tokenizers = {{"tokenizer", ClipTokenizer::builtin()}, {"tokenizer_2", testing_util::bang_padded_tokenizer("lora_golden_tokenizer_2")}};
    const ModelSource base = testing_util::golden_model(models[family], pname, tokenizers);
    std::vector<LoraSpec> specs;
    for (const auto& l : run["loras"]) {
      specs.push_back({kLoraDir + l["file"].get<std::string>(), l["scale"].get<float>()});
      files.insert(l["file"].get<std::string>());
    }
    const ModelSource merged = with_loras(base, specs);
    for (const auto& [component, count] : run["lora_weights"].items()) {
      const auto* m = dynamic_cast<const LoraMergedWeightSource*>(merged.weights(component).get());
      ASSERT_NE(m, nullptr) << id << ": no LoRA merged into " << component;
      EXPECT_EQ(m->merged_count(), count.get<size_t>()) << id << " " << component << ": weights diffusers changed";
    }
    const std::vector<WorkItem> items = testing_util::golden_run_items(run);  // SDXL micro-conditioning: defaults
    Txt2ImgPipeline pipe(merged, *backend);
    const std::vector<ImageResult> got = pipe.generate(items);
    const auto [worst, off_by_one, values] = testing_util::compare_images(
        got, ref, run["images_offset"].get<size_t>(), run["images_shape"].get<std::vector<size_t>>(), id);
    EXPECT_LE(worst, 1) << id << ": max pixel difference " << worst;
    std::printf("%-52s max |Δpixel| %d, %zu of %zu values off by one\n", id.c_str(), worst, off_by_one, values);
    Txt2ImgPipeline plain(base, *backend);
    EXPECT_NE(plain.generate({items[0]})[0].rgb, got[0].rgb) << id << ": the LoRA changed nothing";
    ++runs;
    stacked += specs.size() > 1;
    families.insert(family);
  }
  EXPECT_EQ(runs, 7);
  EXPECT_GE(stacked, 2);
  EXPECT_EQ(families, (std::set<std::string>{"sdxl", "sd2"}));
  EXPECT_EQ(files.size(), 5u) << "kohya LDM, kohya diffusers, PEFT (SDXL); kohya, PEFT (SD 2.x)";
}

TEST(LoraRecord, SdxlItemsCarryTheTagsHashesAndArchiveColumn) {
  // What an SDXL item with two LoRAs records: the <lora:> tags after its prompt and A1111's "Lora
  // hashes" in the PNG parameters (beside the SDXL fields), and the archive's /loras text.
  if (!kPngSupported) GTEST_SKIP() << "built without libpng: no PNG parameters";
  const std::string hash = lora_file_hash(kLoraDir + "sdxl_kohya_ldm.safetensors");
  if (hash.empty()) GTEST_SKIP() << "built without OpenSSL: no LoRA hash";
  GenerationParams p;
  p.prompt = "a photo of a cat";
  p.width = p.height = 1024;
  p.original_width = p.original_height = 2048;
  p.loras = {{kLoraDir + "sdxl_kohya_ldm.safetensors", 0.7f, hash},
             {kLoraDir + "sdxl_peft.safetensors", -0.5f, lora_file_hash(kLoraDir + "sdxl_peft.safetensors")}};
  const std::string text = a1111_parameters(p, "sdxl-base", "0123456789", "", "SDXL");
  EXPECT_NE(text.find("a photo of a cat <lora:sdxl_kohya_ldm:0.7> <lora:sdxl_peft:-0.5>"), std::string::npos) << text;
  EXPECT_NE(text.find("Lora hashes: \"sdxl_kohya_ldm: " + hash.substr(0, 12) + ", sdxl_peft: "), std::string::npos) << text;
  EXPECT_NE(text.find("SDXL"), std::string::npos) << text;
  const std::vector<ItemLora> back = loras_from_archive_text(loras_to_archive_text(p.loras), "row");
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].path, "sdxl_kohya_ldm");
  EXPECT_EQ(back[0].sha256, hash);
  EXPECT_EQ(back[1].scale, -0.5f);
}
