// Single-file checkpoints of SDXL, the SDXL refiner and SD 2.x (tools/golden/make_checkpoint_xl_golden.py): each
// tiny random pipeline is stored as a diffusers folder and as an original single file whose keys
// diffusers' own from_single_file loaders read back identical. Opened as a single file, every
// component must hold exactly the folder's tensors, byte for byte: SDXL's label_emb (add_embedding),
// conditioner.embedders.0 (CLIP) and .1 (OpenCLIP: in_proj split into q/k/v, text_projection
// transposed), SD 2.x's cond_stage_model.model.*; the family comes from the keys, the configs from
// the family's row. Text-tower layers beyond the config's (SD 2.x ships 24, uses 23) are dropped.
// The SDXL refiner's file holds its OpenCLIP tower as conditioner.embedders.0.model.*.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "io/checkpoint_keys.h"
#include "sdmpi/error.h"
#include "sdmpi/model_files.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/safetensors.h"

using namespace sdmpi;
namespace fs = std::filesystem;

namespace {

const std::string kGolden = std::string(SDMPI_TEST_DATA) + "/golden/checkpoint/";

void expect_same_tensors(const ModelFiles& single, const ModelFiles& folder, const std::string& component) {
  auto a = single.weights(component), b = folder.weights(component);
  std::vector<std::string> names_a = a->names(), names_b = b->names();
  std::set<std::string> sa(names_a.begin(), names_a.end()), sb(names_b.begin(), names_b.end());
  // The folder's CLIPTextModel carries a position_ids buffer that single files do not need.
  sb.erase("text_model.embeddings.position_ids");
  EXPECT_EQ(sa, sb) << component;
  size_t compared = 0;
  for (const std::string& name : sb) {
    if (!sa.count(name)) continue;
    const WeightView x = a->get(name), y = b->get(name);
    ASSERT_EQ(x.dtype, y.dtype) << component << " " << name;
    ASSERT_EQ(x.shape, y.shape) << component << " " << name;
    const size_t bytes = static_cast<size_t>(shape_numel(x.shape)) * dtype_size(x.dtype);
    EXPECT_EQ(std::memcmp(x.data, y.data, bytes), 0) << component << " " << name << " differs";
    ++compared;
  }
  std::printf("%-15s %zu tensors identical to the folder's\n", component.c_str(), compared);
  EXPECT_GT(compared, 10u);
}

}  // namespace

TEST(CheckpointXl, SdxlSingleFileHoldsTheFoldersTensors) {
  const ModelFiles single = ModelFiles::open(kGolden + "tiny-sdxl.safetensors");
  const ModelFiles folder = ModelFiles::open(kGolden + "tiny-sdxl");
  EXPECT_EQ(single.family(), "SDXL");
  EXPECT_TRUE(single.has("text_encoder_2"));
  EXPECT_EQ(single.config("model_index").value("_class_name", ""), "StableDiffusionXLPipeline");
  EXPECT_EQ(single.config("unet").value("addition_embed_type", ""), "text_time");  // the sdxl row's
  for (const char* c : {"unet", "vae", "text_encoder", "text_encoder_2"}) expect_same_tensors(single, folder, c);
  // No tokenizer in a single file: CLIP's vocabulary, the second one padded with "!" as SDXL's is.
  const ModelSource source = ModelSource::open(kGolden + "tiny-sdxl.safetensors");
  EXPECT_EQ(source.tokenizer().pad_id(), 49407);
  EXPECT_EQ(source.tokenizer("tokenizer_2").pad_id(), 0);
}

// The SDXL refiner's file: conditioner.embedders.0.model.* is its one text tower (OpenCLIP bigG as
// text_encoder_2, no text_encoder), the configs are the sdxl-refiner row's.
TEST(CheckpointXl, SdxlRefinerSingleFileHoldsTheFoldersTensors) {
  const ModelFiles single = ModelFiles::open(kGolden + "tiny-sdxl-refiner.safetensors");
  const ModelFiles folder = ModelFiles::open(kGolden + "tiny-sdxl-refiner");
  EXPECT_EQ(single.family(), "SDXL refiner");
  EXPECT_EQ(folder.family(), "SDXL refiner");
  EXPECT_FALSE(single.has("text_encoder"));
  EXPECT_FALSE(folder.has("text_encoder"));
  EXPECT_EQ(single.config("model_index").value("_class_name", ""), "StableDiffusionXLImg2ImgPipeline");
  EXPECT_TRUE(single.config("model_index").value("requires_aesthetics_score", false));
  EXPECT_EQ(single.config("unet").value("projection_class_embeddings_input_dim", 0), 2560);  // the row's
  for (const char* c : {"unet", "vae", "text_encoder_2"}) expect_same_tensors(single, folder, c);
  EXPECT_THROW(single.weights("text_encoder"), Error);
}

TEST(CheckpointXl, Sd2SingleFileHoldsTheFoldersTensors) {
  const ModelFiles single = ModelFiles::open(kGolden + "tiny-sd2.safetensors");
  const ModelFiles folder = ModelFiles::open(kGolden + "tiny-sd2");
  EXPECT_EQ(single.family(), "SD 2.x");
  EXPECT_FALSE(single.has("text_encoder_2"));
  EXPECT_EQ(single.config("scheduler").value("prediction_type", ""), "v_prediction");  // as diffusers assumes
  for (const char* c : {"unet", "vae", "text_encoder"}) expect_same_tensors(single, folder, c);
  EXPECT_EQ(ModelSource::open(kGolden + "tiny-sd2.safetensors").tokenizer().pad_id(), 0);  // SD 2.x pads with "!"
}

TEST(CheckpointXl, OpenClipNamesAndDroppedLayers) {
  ckpt::LdmLayout layout;
  auto d = ckpt::ldm_to_diffusers("conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", layout);
  ASSERT_TRUE(d);
  EXPECT_EQ(std::string(ckpt::component_name(d->component)), "text_encoder_2");
  EXPECT_EQ(d->name, "text_model.encoder.layers.31.self_attn.{q,k,v}_proj.weight");
  EXPECT_TRUE(d->split_qkv);
  EXPECT_EQ(d->text_layer, 31);
  d = ckpt::ldm_to_diffusers("conditioner.embedders.1.model.text_projection", layout);
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->transpose);
  EXPECT_EQ(d->name, "text_projection.weight");
  d = ckpt::ldm_to_diffusers("cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.bias", layout);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->name, "text_model.encoder.layers.0.mlp.fc1.bias");
  EXPECT_EQ(std::string(ckpt::component_name(d->component)), "text_encoder");
  EXPECT_FALSE(ckpt::ldm_to_diffusers("cond_stage_model.model.logit_scale", layout));
  EXPECT_FALSE(ckpt::ldm_to_diffusers("cond_stage_model.model.attn_mask", layout));
  d = ckpt::ldm_to_diffusers("model.diffusion_model.label_emb.0.2.weight", layout);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->name, "add_embedding.linear_2.weight");

  // An SD 2.x file with OpenCLIP ViT-H's 24th layer: the sd21 row's text encoder has 23.
  const fs::path dir = fs::path(SDMPI_BINARY_DIR) / "checkpoint_xl_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  SafetensorsWriter w;
  const std::vector<float> one(4, 1.0f);
  w.add_f32("model.diffusion_model.input_blocks.0.0.weight", {1, 1, 2, 2}, one);
  w.add_f32("cond_stage_model.model.transformer.resblocks.0.ln_1.weight", {4}, one);
  w.add_f32("cond_stage_model.model.transformer.resblocks.23.ln_1.weight", {4}, one);
  w.add_f32("cond_stage_model.model.transformer.resblocks.22.attn.in_proj_bias", {3}, {1, 2, 3});
  const std::string path = (dir / "sd2.safetensors").string();
  w.write(path);
  const ModelFiles m = ModelFiles::open(path);
  EXPECT_EQ(m.family(), "SD 2.x");
  auto text = m.weights("text_encoder");
  EXPECT_TRUE(text->has("text_model.encoder.layers.0.layer_norm1.weight"));
  EXPECT_FALSE(text->has("text_model.encoder.layers.23.layer_norm1.weight"));
  const WeightView v = text->get("text_model.encoder.layers.22.self_attn.v_proj.bias");
  EXPECT_EQ(v.shape, (Shape{1}));
  EXPECT_EQ(*static_cast<const float*>(v.data), 3.0f);
  fs::remove_all(dir);
}
