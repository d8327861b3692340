// Model discovery and the single-file key conversion.
//
// The golden pair tests/data/golden/checkpoint/tiny-sd1{/,.safetensors} holds one tiny random
// SD 1.x pipeline twice: as diffusers saved it, and as an LDM single-file checkpoint that diffusers'
// own single-file loader reads back identical (tools/golden/make_checkpoint_golden.py). Opening
// both must give the same tensors under the same diffusers names, byte for byte.
#include "sdmpi/model_files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/checkpoint_keys.h"
#include "sdmpi/error.h"

namespace fs = std::filesystem;
using namespace sdmpi;

namespace {

const std::string kGolden = std::string(SDMPI_TEST_DATA) + "/golden/checkpoint";
const std::string kFolder = kGolden + "/tiny-sd1";
const std::string kSingle = kGolden + "/tiny-sd1.safetensors";

std::string tmp_dir(const std::string& name) {
  std::string d = std::string(SDMPI_BINARY_DIR) + "/test_tmp/model_files_" + std::to_string(::getpid()) + "/" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  }
  return "(no error)";
}

bool same_bytes(const WeightView& a, const WeightView& b) {
  if (a.dtype != b.dtype || a.shape != b.shape) return false;
  size_t n = static_cast<size_t>(shape_numel(a.shape)) * dtype_size(a.dtype);
  return std::memcmp(a.data, b.data, n) == 0;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// A copy of the golden folder to break in a test.
std::string copy_folder(const std::string& name) {
  std::string d = tmp_dir(name);
  fs::copy(kFolder, d, fs::copy_options::recursive);
  return d;
}

}  // namespace

// ---- the conversion table, against docs/reference/sd15-semantics.md §7.2 (SD 1.5 layout) ------------

TEST(CheckpointKeys, Sd15UnetNames) {
  ckpt::LdmLayout sd15;  // 2 ResNets per block, 4 VAE up blocks
  auto name = [&](const std::string& k) {
    auto d = ckpt::ldm_to_diffusers(k, sd15);
    return d ? std::string(ckpt::component_name(d->component)) + ":" + d->name : std::string("-");
  };
  const std::string u = "model.diffusion_model.";
  EXPECT_EQ(name(u + "time_embed.0.weight"), "unet:time_embedding.linear_1.weight");
  EXPECT_EQ(name(u + "time_embed.2.bias"), "unet:time_embedding.linear_2.bias");
  EXPECT_EQ(name(u + "input_blocks.0.0.weight"), "unet:conv_in.weight");
  EXPECT_EQ(name(u + "input_blocks.1.0.in_layers.0.weight"), "unet:down_blocks.0.resnets.0.norm1.weight");
  EXPECT_EQ(name(u + "input_blocks.2.0.in_layers.2.bias"), "unet:down_blocks.0.resnets.1.conv1.bias");
  EXPECT_EQ(name(u + "input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"),
            "unet:down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight");
  EXPECT_EQ(name(u + "input_blocks.3.0.op.weight"), "unet:down_blocks.0.downsamplers.0.conv.weight");
  EXPECT_EQ(name(u + "input_blocks.4.0.skip_connection.weight"), "unet:down_blocks.1.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(name(u + "input_blocks.4.0.emb_layers.1.weight"), "unet:down_blocks.1.resnets.0.time_emb_proj.weight");
  EXPECT_EQ(name(u + "input_blocks.9.0.op.bias"), "unet:down_blocks.2.downsamplers.0.conv.bias");
  EXPECT_EQ(name(u + "input_blocks.11.0.out_layers.3.weight"), "unet:down_blocks.3.resnets.1.conv2.weight");
  EXPECT_EQ(name(u + "middle_block.0.out_layers.0.bias"), "unet:mid_block.resnets.0.norm2.bias");
  EXPECT_EQ(name(u + "middle_block.1.proj_in.weight"), "unet:mid_block.attentions.0.proj_in.weight");
  EXPECT_EQ(name(u + "middle_block.2.in_layers.2.weight"), "unet:mid_block.resnets.1.conv1.weight");
  EXPECT_EQ(name(u + "output_blocks.0.0.skip_connection.bias"), "unet:up_blocks.0.resnets.0.conv_shortcut.bias");
  EXPECT_EQ(name(u + "output_blocks.2.1.conv.weight"), "unet:up_blocks.0.upsamplers.0.conv.weight");
  EXPECT_EQ(name(u + "output_blocks.3.1.norm.weight"), "unet:up_blocks.1.attentions.0.norm.weight");
  EXPECT_EQ(name(u + "output_blocks.5.2.conv.bias"), "unet:up_blocks.1.upsamplers.0.conv.bias");
  EXPECT_EQ(name(u + "output_blocks.8.2.conv.weight"), "unet:up_blocks.2.upsamplers.0.conv.weight");
  EXPECT_EQ(name(u + "output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight"),
            "unet:up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight");
  EXPECT_EQ(name(u + "out.0.weight"), "unet:conv_norm_out.weight");
  EXPECT_EQ(name(u + "out.2.bias"), "unet:conv_out.bias");
  // Not ours: EMA copies, schedule buffers, unknown prefixes.
  EXPECT_EQ(name("model_ema.diffusion_modelinput_blocks00weight"), "-");
  EXPECT_EQ(name("model_ema.decay"), "-");
  EXPECT_EQ(name("alphas_cumprod"), "-");
  EXPECT_EQ(name("lora_unet_down.weight"), "-");
}

TEST(CheckpointKeys, Sd15VaeAndTextNames) {
  ckpt::LdmLayout sd15;
  auto conv = [&](const std::string& k) { return ckpt::ldm_to_diffusers(k, sd15); };
  const std::string v = "first_stage_model.";
  auto d = conv(v + "decoder.up.0.block.0.nin_shortcut.weight");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->component, ckpt::Component::Vae);
  EXPECT_EQ(d->name, "decoder.up_blocks.3.resnets.0.conv_shortcut.weight");
  EXPECT_EQ(conv(v + "decoder.up.3.upsample.conv.bias")->name, "decoder.up_blocks.0.upsamplers.0.conv.bias");
  EXPECT_EQ(conv(v + "decoder.up.1.block.2.norm1.weight")->name, "decoder.up_blocks.2.resnets.2.norm1.weight");
  EXPECT_EQ(conv(v + "decoder.norm_out.bias")->name, "decoder.conv_norm_out.bias");
  EXPECT_EQ(conv(v + "decoder.mid.block_2.conv2.weight")->name, "decoder.mid_block.resnets.1.conv2.weight");
  d = conv(v + "decoder.mid.attn_1.proj_out.weight");
  EXPECT_EQ(d->name, "decoder.mid_block.attentions.0.to_out.0.weight");
  EXPECT_TRUE(d->squeeze_to_linear);
  d = conv(v + "decoder.mid.attn_1.q.bias");
  EXPECT_EQ(d->name, "decoder.mid_block.attentions.0.to_q.bias");
  EXPECT_FALSE(d->squeeze_to_linear);
  EXPECT_EQ(conv(v + "decoder.mid.attn_1.norm.weight")->name, "decoder.mid_block.attentions.0.group_norm.weight");
  EXPECT_EQ(conv(v + "encoder.down.1.downsample.conv.weight")->name, "encoder.down_blocks.1.downsamplers.0.conv.weight");
  EXPECT_EQ(conv(v + "post_quant_conv.weight")->name, "post_quant_conv.weight");
  d = conv("cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight");
  EXPECT_EQ(d->component, ckpt::Component::TextEncoder);
  EXPECT_EQ(d->name, "text_model.encoder.layers.3.mlp.fc1.weight");
  EXPECT_EQ(conv("cond_stage_model.transformer.final_layer_norm.bias")->name, "text_model.final_layer_norm.bias");
  EXPECT_EQ(ckpt::canonical_text_encoder_name("embeddings.token_embedding.weight"),
            "text_model.embeddings.token_embedding.weight");
  EXPECT_EQ(ckpt::canonical_text_encoder_name("text_model.final_layer_norm.weight"),
            "text_model.final_layer_norm.weight");
}

TEST(CheckpointKeys, LegacyVaeAttentionNames) {
  bool legacy = false;
  EXPECT_EQ(ckpt::modern_vae_attention_name("decoder.mid_block.attentions.0.query.weight", &legacy),
            "decoder.mid_block.attentions.0.to_q.weight");
  EXPECT_TRUE(legacy);
  EXPECT_EQ(ckpt::modern_vae_attention_name("encoder.mid_block.attentions.0.proj_attn.bias"),
            "encoder.mid_block.attentions.0.to_out.0.bias");
  EXPECT_EQ(ckpt::modern_vae_attention_name("decoder.mid_block.attentions.0.to_k.weight", &legacy),
            "decoder.mid_block.attentions.0.to_k.weight");
  EXPECT_FALSE(legacy);
  EXPECT_EQ(ckpt::modern_vae_attention_name("decoder.mid_block.resnets.0.key.weight"),
            "decoder.mid_block.resnets.0.key.weight");  // not inside an attention
}

TEST(CheckpointKeys, LayoutFromKeys) {
  std::vector<std::string> keys = {"model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
                                   "model.diffusion_model.input_blocks.3.0.op.weight",
                                   "model.diffusion_model.input_blocks.6.0.op.weight",
                                   "first_stage_model.decoder.up.3.block.0.conv1.weight"};
  ckpt::LdmLayout l = ckpt::detect_ldm_layout(keys);
  EXPECT_EQ(l.unet_layers_per_block, 2);
  EXPECT_EQ(l.vae_up_blocks, 4);
  keys = {"model.diffusion_model.input_blocks.2.0.op.weight", "first_stage_model.decoder.up.1.upsample.conv.weight"};
  l = ckpt::detect_ldm_layout(keys);
  EXPECT_EQ(l.unet_layers_per_block, 1);
  EXPECT_EQ(l.vae_up_blocks, 2);
}

// ---- the golden pair ---------------------------------------------------------------------------

TEST(ModelFiles, OpensTheDiffusersFolder) {
  ModelFiles m = ModelFiles::open(kFolder);
  EXPECT_FALSE(m.is_single_file());
  EXPECT_EQ(m.family(), "SD 1.x");
  EXPECT_EQ(m.config("unet")["_class_name"], "UNet2DConditionModel");
  EXPECT_EQ(m.config("unet")["block_out_channels"], nlohmann::json::array({4, 8, 8}));
  EXPECT_EQ(m.config("scheduler")["_class_name"], "PNDMScheduler");
  EXPECT_EQ(m.config("vae")["_class_name"], "AutoencoderKL");
  EXPECT_EQ(m.tokenizer_dir(), kFolder + "/tokenizer");
  std::vector<std::string> files = m.weight_files();
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0], kFolder + "/unet/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(files[2], kFolder + "/text_encoder/model.safetensors");
  EXPECT_NE(m.describe().find("diffusers folder"), std::string::npos) << m.describe();
  EXPECT_THROW(m.config("safety_checker"), Error);
  EXPECT_THROW(m.weights("tokenizer"), Error);
}

TEST(ModelFiles, OpensTheSingleFile) {
  ModelFiles m = ModelFiles::open(kSingle);
  EXPECT_TRUE(m.is_single_file());
  EXPECT_EQ(m.tokenizer_dir(), "");
  EXPECT_EQ(m.weight_files(), std::vector<std::string>{kSingle});
  // The SD 1.5 configs (docs/reference/sd15-semantics.md §0).
  nlohmann::json unet = m.config("unet");
  EXPECT_EQ(unet["block_out_channels"], nlohmann::json::array({320, 640, 1280, 1280}));
  EXPECT_EQ(unet["attention_head_dim"], 8);
  EXPECT_EQ(unet["cross_attention_dim"], 768);
  EXPECT_EQ(unet["in_channels"], 4);
  EXPECT_EQ(m.config("vae")["scaling_factor"], 0.18215);
  EXPECT_EQ(m.config("text_encoder")["hidden_act"], "quick_gelu");
  EXPECT_EQ(m.config("text_encoder")["eos_token_id"], 2);
  nlohmann::json sched = m.config("scheduler");
  EXPECT_EQ(sched["_class_name"], "PNDMScheduler");
  EXPECT_EQ(sched["beta_schedule"], "scaled_linear");
  EXPECT_EQ(sched["steps_offset"], 1);
  EXPECT_FALSE(sched.contains("timestep_spacing"));
  EXPECT_NE(m.describe().find("single-file SD 1.x checkpoint"), std::string::npos) << m.describe();
}

// Every diffusers tensor of the folder comes out of the single file, same bytes, same shape (the
// VAE attention squeezed to [out, in]); nothing else comes out but the int64 position_ids.
TEST(ModelFiles, SingleFileMatchesFolderByteForByte) {
  ModelFiles folder = ModelFiles::open(kFolder);
  ModelFiles single = ModelFiles::open(kSingle);
  size_t total = 0;
  for (const char* comp : {"unet", "vae", "text_encoder"}) {
    SCOPED_TRACE(comp);
    auto a = folder.weights(comp);
    auto b = single.weights(comp);
    std::vector<std::string> want = a->names(), got = b->names();
    got.erase(std::remove(got.begin(), got.end(), "text_model.embeddings.position_ids"), got.end());
    EXPECT_EQ(got, want);
    for (const std::string& n : want) {
      ASSERT_TRUE(b->has(n)) << n;
      EXPECT_TRUE(same_bytes(a->get(n), b->get(n))) << n;
      ++total;
    }
  }
  EXPECT_EQ(total, 494u + 244u + 36u);  // as diffusers counted them
  auto vae = single.weights("vae");
  EXPECT_EQ(vae->get("decoder.mid_block.attentions.0.to_q.weight").shape, (Shape{8, 8}));
  EXPECT_EQ(vae->get("encoder.mid_block.attentions.0.to_out.0.weight").shape, (Shape{8, 8}));
  // The text encoder's int64 buffer is listed but unreadable.
  auto te = single.weights("text_encoder");
  EXPECT_TRUE(te->has("text_model.embeddings.position_ids"));
  EXPECT_THROW(te->get("text_model.embeddings.position_ids"), InputError);
}

// The folder was written by transformers 5 (CLIPTextModel names without `text_model.`): we present
// the SD 1.x names.
TEST(ModelFiles, TextEncoderNamesAreCanonical) {
  auto te = ModelFiles::open(kFolder).weights("text_encoder");
  EXPECT_TRUE(te->has("text_model.embeddings.token_embedding.weight"));
  EXPECT_TRUE(te->has("text_model.final_layer_norm.bias"));
  EXPECT_FALSE(te->has("embeddings.token_embedding.weight"));
}

// Both spellings of the VAE attention: the legacy one (query/key/value/proj_attn, as diffusers
// <= 0.13 saved it; diffusers reads this file back identical) gives the same tensors.
TEST(ModelFiles, LegacyVaeAttentionNamesAccepted) {
  std::string d = copy_folder("legacy");
  fs::copy_file(kGolden + "/legacy_vae/diffusion_pytorch_model.safetensors",
                d + "/vae/diffusion_pytorch_model.safetensors", fs::copy_options::overwrite_existing);
  auto raw = SafetensorsFile::open(d + "/vae/diffusion_pytorch_model.safetensors");
  ASSERT_TRUE(raw->contains("decoder.mid_block.attentions.0.query.weight"));  // really the old names
  auto legacy = ModelFiles::open(d).weights("vae");
  auto modern = ModelFiles::open(kFolder).weights("vae");
  EXPECT_EQ(legacy->names(), modern->names());
  for (const std::string& n : modern->names()) EXPECT_TRUE(same_bytes(legacy->get(n), modern->get(n))) << n;
}

// EMA copies in the checkpoint (negated on purpose) must not replace the weights.
TEST(ModelFiles, EmaKeysIgnored) {
  auto unet = ModelFiles::open(kSingle).weights("unet");
  for (const std::string& n : unet->names()) EXPECT_EQ(n.find("ema"), std::string::npos) << n;
  auto raw = SafetensorsFile::open(kSingle);
  ASSERT_TRUE(raw->contains("model_ema.diffusion_modelinput_blocks00weight"));
  auto folder_unet = ModelFiles::open(kFolder).weights("unet");
  EXPECT_TRUE(same_bytes(unet->get("conv_in.weight"), folder_unet->get("conv_in.weight")));
}

// ---- folders: variants, shards, errors ------------------------------------------------------------

TEST(ModelFiles, Variants) {
  std::string d = copy_folder("variants");
  // A different tensor set in the fp16 file, so we can tell which one was taken.
  SafetensorsWriter w;
  w.add_f32("only.in.fp16", {1}, {1});
  w.write(d + "/unet/diffusion_pytorch_model.fp16.safetensors");
  EXPECT_FALSE(ModelFiles::open(d).weights("unet")->has("only.in.fp16"));           // plain preferred
  EXPECT_TRUE(ModelFiles::open(d, "fp16").weights("unet")->has("only.in.fp16"));    // asked for
  EXPECT_FALSE(ModelFiles::open(d, "fp16").weights("vae")->has("only.in.fp16"));    // vae: falls back
  EXPECT_NE(ModelFiles::open(d, "fp16").describe().find("unet: diffusion_pytorch_model.fp16.safetensors"),
            std::string::npos);
  fs::remove(d + "/unet/diffusion_pytorch_model.safetensors");
  EXPECT_TRUE(ModelFiles::open(d).weights("unet")->has("only.in.fp16"));  // the only one there
  w.write(d + "/unet/diffusion_pytorch_model.bf16.safetensors");
  EXPECT_NE(error_of([&] { ModelFiles::open(d); }).find("variants bf16, fp16 exist: choose one"), std::string::npos);
  EXPECT_NE(error_of([&] { ModelFiles::open(d, "int8"); })
                .find("missing unet/diffusion_pytorch_model.int8.safetensors (variant \"int8\")"),
            std::string::npos);
}

TEST(ModelFiles, ShardedIndex) {
  std::string d = copy_folder("sharded");
  auto whole = SafetensorsFile::open(kFolder + "/unet/diffusion_pytorch_model.safetensors");
  SafetensorsWriter s1, s2;
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (const auto& kv : whole->entries()) {
    WeightView v = whole->view(kv.first);
    bool first = (i++ % 2) == 0;
    (first ? s1 : s2).add(kv.first, v.dtype, v.shape, v.data);
    index["weight_map"][kv.first] = first ? "diffusion_pytorch_model-00001-of-00002.safetensors"
                                          : "diffusion_pytorch_model-00002-of-00002.safetensors";
  }
  s1.write(d + "/unet/diffusion_pytorch_model-00001-of-00002.safetensors");
  s2.write(d + "/unet/diffusion_pytorch_model-00002-of-00002.safetensors");
  fs::remove(d + "/unet/diffusion_pytorch_model.safetensors");
  write_text(d + "/unet/diffusion_pytorch_model.safetensors.index.json", index.dump());
  ModelFiles m = ModelFiles::open(d);
  auto unet = m.weights("unet");
  auto ref = ModelFiles::open(kFolder).weights("unet");
  EXPECT_EQ(unet->names(), ref->names());
  for (const std::string& n : ref->names()) EXPECT_TRUE(same_bytes(unet->get(n), ref->get(n))) << n;
  EXPECT_EQ(m.weight_files().size(), 4u);  // two shards + vae + text encoder
  EXPECT_NE(m.describe().find("(2 shards)"), std::string::npos) << m.describe();

  // A weight_map entry pointing at the wrong shard.
  std::string first = index["weight_map"].begin().key();
  index["weight_map"][first] = "diffusion_pytorch_model-00002-of-00002.safetensors";
  write_text(d + "/unet/diffusion_pytorch_model.safetensors.index.json", index.dump());
  EXPECT_NE(error_of([&] { ModelFiles::open(d).weights("unet"); }).find("weight_map puts '" + first + "' in"),
            std::string::npos);
  // A shard that is not there.
  index["weight_map"][first] = "missing-shard.safetensors";
  write_text(d + "/unet/diffusion_pytorch_model.safetensors.index.json", index.dump());
  EXPECT_NE(error_of([&] { ModelFiles::open(d); }).find("missing unet/missing-shard.safetensors (listed in unet/"),
            std::string::npos);
  index["weight_map"][first] = "../vae/diffusion_pytorch_model.safetensors";
  write_text(d + "/unet/diffusion_pytorch_model.safetensors.index.json", index.dump());
  EXPECT_NE(error_of([&] { ModelFiles::open(d); }).find("is not a file name in unet/"), std::string::npos);
}

TEST(ModelFiles, FolderErrorsNameThePath) {
  std::string d = copy_folder("errors");
  const std::string where = "model folder " + d + ": ";
  fs::remove(d + "/vae/config.json");
  EXPECT_EQ(error_of([&] { ModelFiles::open(d); }), where + "missing vae/config.json");
  fs::copy_file(kFolder + "/vae/config.json", d + "/vae/config.json");

  write_text(d + "/unet/config.json", "{\"block_out_channels\": [4, 8,");
  EXPECT_NE(error_of([&] { ModelFiles::open(d); }).find(where + "unet/config.json is not valid JSON"), std::string::npos);
  write_text(d + "/unet/config.json", "[1]");
  EXPECT_EQ(error_of([&] { ModelFiles::open(d); }), where + "unet/config.json is a JSON array, expected an object");
  fs::copy_file(kFolder + "/unet/config.json", d + "/unet/config.json", fs::copy_options::overwrite_existing);

  fs::rename(d + "/text_encoder/model.safetensors", d + "/text_encoder/model.bin");
  EXPECT_NE(error_of([&] { ModelFiles::open(d); }).find("text_encoder/model.bin is a PyTorch pickle"), std::string::npos);
  fs::remove(d + "/text_encoder/model.bin");
  EXPECT_EQ(error_of([&] { ModelFiles::open(d); }), where + "missing text_encoder/model.safetensors");
  fs::copy_file(kFolder + "/text_encoder/model.safetensors", d + "/text_encoder/model.safetensors");

  fs::remove(d + "/tokenizer/tokenizer.json");
  EXPECT_NE(error_of([&] { ModelFiles::open(d); }).find(where + "missing tokenizer/vocab.json"), std::string::npos);
  write_text(d + "/tokenizer/vocab.json", "{}");
  write_text(d + "/tokenizer/merges.txt", "#version: 0.2\n");
  EXPECT_NO_THROW(ModelFiles::open(d));

  fs::remove_all(d + "/scheduler");
  EXPECT_EQ(error_of([&] { ModelFiles::open(d); }), where + "missing scheduler/scheduler_config.json");
  fs::remove(d + "/model_index.json");
  EXPECT_EQ(error_of([&] { ModelFiles::open(d); }), where + "missing model_index.json (not a diffusers pipeline folder)");
  EXPECT_NE(error_of([&] { ModelFiles::open(d + "/unet"); }).find("looks like one component's folder"), std::string::npos);
  EXPECT_EQ(error_of([&] { ModelFiles::open(d + "/nope"); }), "model path " + d + "/nope: no such file or folder");
}

// SD 2.x folders load and are named so (by the OpenCLIP text encoder's GELU or the 1024-wide
// cross-attention); an SDXL folder (and an SDXL refiner's: text_encoder_2 alone) needs its
// text_encoder_2/; SD3 / Flux (transformer/) and UNet-less pipelines are refused naming what
// model_index.json lists.
TEST(ModelFiles, FolderFamilies) {
  EXPECT_EQ(ModelFiles::open(kFolder).family(), "SD 1.x");
  std::string d = copy_folder("sd2");
  auto cfg = ModelFiles::open(kFolder).config("unet");
  cfg["cross_attention_dim"] = 1024;
  write_text(d + "/unet/config.json", cfg.dump());
  EXPECT_EQ(ModelFiles::open(d).family(), "SD 2.x");
  std::string g = copy_folder("sd2_gelu");
  auto text = ModelFiles::open(kFolder).config("text_encoder");
  text["hidden_act"] = "gelu";
  write_text(g + "/text_encoder/config.json", text.dump());
  EXPECT_EQ(ModelFiles::open(g).family(), "SD 2.x");

  std::ifstream index_file(kFolder + "/model_index.json");
  const std::string index((std::istreambuf_iterator<char>(index_file)), std::istreambuf_iterator<char>());
  std::string xl = copy_folder("xl");
  auto xl_index = nlohmann::json::parse(index);
  xl_index["_class_name"] = "StableDiffusionXLPipeline";
  xl_index["text_encoder_2"] = {"transformers", "CLIPTextModelWithProjection"};
  write_text(xl + "/model_index.json", xl_index.dump());
  EXPECT_EQ(error_of([&] { ModelFiles::open(xl); }), "model folder " + xl + ": missing text_encoder_2/config.json");
  xl_index["text_encoder"] = {nullptr, nullptr};  // a refiner: text_encoder_2 only
  write_text(xl + "/model_index.json", xl_index.dump());
  EXPECT_EQ(error_of([&] { ModelFiles::open(xl); }), "model folder " + xl + ": missing text_encoder_2/config.json");

  std::string sd3 = copy_folder("sd3");
  auto sd3_index = nlohmann::json::parse(index);
  sd3_index["_class_name"] = "StableDiffusion3Pipeline";
  sd3_index.erase("unet");
  sd3_index["transformer"] = {"diffusers", "SD3Transformer2DModel"};
  write_text(sd3 + "/model_index.json", sd3_index.dump());
  const std::string sd3_error = error_of([&] { ModelFiles::open(sd3); });
  EXPECT_NE(sd3_error.find("model_index.json names StableDiffusion3Pipeline with a transformer/"), std::string::npos)
      << sd3_error;
  EXPECT_NE(sd3_error.find("SD3, Flux and other transformer pipelines are not supported"), std::string::npos);

  std::string other = copy_folder("other");
  auto other_index = nlohmann::json::parse(index);
  other_index["_class_name"] = "KandinskyPipeline";
  other_index.erase("unet");
  write_text(other + "/model_index.json", other_index.dump());
  fs::remove_all(other + "/unet");
  EXPECT_NE(error_of([&] { ModelFiles::open(other); }).find("names KandinskyPipeline without a unet/"),
            std::string::npos);
}

// ---- single files: families and odd checkpoints ---------------------------------------------------

namespace {

// A checkpoint with the tiny golden's tensors plus `extra` (name → shape), or with `drop` removed.
std::string make_checkpoint(const std::string& name, const std::map<std::string, Shape>& extra,
                            const std::string& drop_prefix = "") {
  auto src = SafetensorsFile::open(kSingle);
  SafetensorsWriter w;
  for (const auto& kv : src->entries()) {
    if (!drop_prefix.empty() && kv.first.rfind(drop_prefix, 0) == 0) continue;
    if (extra.count(kv.first)) continue;
    WeightView v = src->view(kv.first);
    w.add(kv.first, v.dtype, v.shape, v.data);
  }
  for (const auto& [n, shape] : extra) w.add_f32(n, shape, std::vector<float>(static_cast<size_t>(shape_numel(shape))));
  std::string path = tmp_dir("ckpt_" + name) + "/" + name + ".safetensors";
  w.write(path);
  return path;
}

}  // namespace

TEST(ModelFiles, SingleFileFamilies) {
  std::string sd2 = make_checkpoint(
      "sd2", {{"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", {4, 1024}}});
  // The family by the keys (tests/unit/checkpoint_xl_test.cpp loads real SD 2.x and SDXL layouts).
  EXPECT_EQ(ModelFiles::open(sd2).family(), "SD 2.x");
  std::string openclip = make_checkpoint("openclip", {{"cond_stage_model.model.token_embedding.weight", {4, 4}}});
  EXPECT_EQ(ModelFiles::open(openclip).family(), "SD 2.x");
  std::string xl = make_checkpoint("xl", {{"conditioner.embedders.1.model.positional_embedding", {4, 4}}});
  EXPECT_EQ(ModelFiles::open(xl).family(), "SDXL");
  std::string refiner = make_checkpoint("refiner", {{"conditioner.embedders.0.model.positional_embedding", {4, 4}}});
  EXPECT_EQ(ModelFiles::open(refiner).family(), "SDXL refiner");  // one OpenCLIP embedder: text_encoder_2 alone
  EXPECT_NE(error_of([&] { ModelFiles::open(kFolder + "/unet/diffusion_pytorch_model.safetensors"); })
                .find("holds one diffusers component"),
            std::string::npos);
  EXPECT_NE(error_of([&] { ModelFiles::open(kGolden + "/python_written.safetensors"); })
                .find("not a Stable Diffusion single-file checkpoint"),
            std::string::npos);
  std::string ckpt = tmp_dir("pickle") + "/model.ckpt";
  write_text(ckpt, "PK");
  EXPECT_NE(error_of([&] { ModelFiles::open(ckpt); }).find("PyTorch pickle checkpoints (.ckpt) are not supported"),
            std::string::npos);
}

TEST(ModelFiles, InpaintingCheckpointGetsNineInputChannels) {
  std::string p = make_checkpoint("inpaint", {{"model.diffusion_model.input_blocks.0.0.weight", {4, 9, 3, 3}}});
  ModelFiles m = ModelFiles::open(p);
  EXPECT_EQ(m.config("unet")["in_channels"], 9);
  EXPECT_EQ(m.weights("unet")->get("conv_in.weight").shape, (Shape{4, 9, 3, 3}));
}

TEST(ModelFiles, CheckpointWithoutVae) {
  std::string p = make_checkpoint("novae", {}, "first_stage_model.");
  ModelFiles m = ModelFiles::open(p);
  EXPECT_NO_THROW(m.weights("unet"));
  EXPECT_EQ(error_of([&] { m.weights("vae"); }), p + ": this checkpoint has no vae weights (first_stage_model.*)");
}
