// The table of SD configs (see sd_configs.h; docs/reference/sd15-semantics.md §0 for SD 1.5's).
//
// A row is either complete or a JSON merge patch (RFC 7386) over the row it is based on, so a
// preset states only how it differs from its family.
//
// sd15: unet, vae and text_encoder are complete, as diffusers 0.42.1 / transformers 5.24.0 write them
// with save_config()/save_pretrained() for the SD 1.5 values (every constructor argument, the
// defaults included). The scheduler config is deliberately NOT complete: it states only the keys
// the SD 1.5 model repository's scheduler_config.json states. diffusers remembers which keys a
// config left to their defaults and does not pass those on when another scheduler is built from
// it (`from_config`), so e.g. Euler built from this config takes its own `timestep_spacing`
// default ("linspace"), not PNDM's "leading" — the same as a diffusers run on the SD 1.5 folder.
#include "io/sd_configs.h"

#include <map>

#include "sdmpi/error.h"

namespace sdmpi {
namespace {

const char* kSd15Unet = R"json({
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.42.1",
  "act_fn": "silu",
  "addition_embed_type": null,
  "addition_embed_type_num_heads": 64,
  "addition_time_embed_dim": null,
  "attention_head_dim": 8,
  "attention_type": "default",
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "class_embed_type": null,
  "class_embeddings_concat": false,
  "conv_in_kernel": 3,
  "conv_out_kernel": 3,
  "cross_attention_dim": 768,
  "cross_attention_norm": null,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "dropout": 0.0,
  "dual_cross_attention": false,
  "encoder_hid_dim": null,
  "encoder_hid_dim_type": null,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_only_cross_attention": null,
  "mid_block_scale_factor": 1,
  "mid_block_type": "UNetMidBlock2DCrossAttn",
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "num_attention_heads": null,
  "num_class_embeds": null,
  "only_cross_attention": false,
  "out_channels": 4,
  "projection_class_embeddings_input_dim": null,
  "resnet_out_scale_factor": 1.0,
  "resnet_skip_time_act": false,
  "resnet_time_scale_shift": "default",
  "reverse_transformer_layers_per_block": null,
  "sample_size": 64,
  "time_cond_proj_dim": null,
  "time_embedding_act_fn": null,
  "time_embedding_dim": null,
  "time_embedding_type": "positional",
  "timestep_post_act": null,
  "transformer_layers_per_block": 1,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "upcast_attention": false,
  "use_linear_projection": false
})json";

const char* kSd15Vae = R"json({
  "_class_name": "AutoencoderKL",
  "_diffusers_version": "0.42.1",
  "act_fn": "silu",
  "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "force_upcast": true,
  "in_channels": 3,
  "latent_channels": 4,
  "latents_mean": null,
  "latents_std": null,
  "layers_per_block": 2,
  "mid_block_add_attention": true,
  "norm_num_groups": 32,
  "out_channels": 3,
  "sample_size": 512,
  "scaling_factor": 0.18215,
  "shift_factor": null,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
  "use_post_quant_conv": true,
  "use_quant_conv": true
})json";

const char* kSd15TextEncoder = R"json({
  "architectures": ["CLIPTextModel"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "quick_gelu",
  "hidden_size": 768,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 3072,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 12,
  "num_hidden_layers": 12,
  "pad_token_id": 1,
  "projection_dim": 768,
  "transformers_version": "5.24.0",
  "vocab_size": 49408
})json";

const char* kSd15Scheduler = R"json({
  "_class_name": "PNDMScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
})json";

// tiny: SD 1.5's four levels, block types, 2 layers per block, conv projections and quirks, at a
// width that runs a 64x64 image (8x8 latents) in milliseconds; 4 heads everywhere (UNet head dims
// 8, 16, 16, 16); the real CLIP vocabulary, 77 positions and quick_gelu. The built-in `--model
// tiny` and the golden tests' random model.
const char* kTinyUnet = R"json({
  "block_out_channels": [32, 64, 64, 64],
  "norm_num_groups": 8,
  "attention_head_dim": 4,
  "cross_attention_dim": 32,
  "sample_size": 8
})json";

const char* kTinyVae = R"json({
  "block_out_channels": [16, 32, 32, 32],
  "norm_num_groups": 8,
  "sample_size": 64
})json";

const char* kTinyTextEncoder = R"json({
  "hidden_size": 32,
  "intermediate_size": 64,
  "projection_dim": 32,
  "num_attention_heads": 4,
  "num_hidden_layers": 5
})json";

// sd21: stabilityai/stable-diffusion-2-1 (768 px, v-prediction), as merge patches over sd15: the
// UNet's per-block heads [5, 10, 20, 20] (head dim 64 everywhere; the file calls them
// attention_head_dim, docs/reference/sd15-semantics.md §4.1), linear proj_in/out, 1024-wide
// cross-attention and attention upcast; the OpenCLIP ViT-H text tower as transformers holds it
// (CLIPTextModel, exact GELU, 1024 wide, 16 heads) with its penultimate layer as the last one (the
// folder ships 23 of the 24 layers: SD 2.x conditions on the penultimate layer, then the final
// LayerNorm); the scheduler_config.json of the model repository (DDIM, v_prediction; like sd15's,
// only the keys that file states).
const char* kSd21Unet = R"json({
  "attention_head_dim": [5, 10, 20, 20],
  "cross_attention_dim": 1024,
  "sample_size": 96,
  "upcast_attention": true,
  "use_linear_projection": true
})json";

const char* kSd21Vae = R"json({
  "sample_size": 768
})json";

const char* kSd21TextEncoder = R"json({
  "hidden_act": "gelu",
  "hidden_size": 1024,
  "intermediate_size": 4096,
  "num_attention_heads": 16,
  "num_hidden_layers": 23,
  "projection_dim": 512
})json";

const char* kSd21Scheduler = R"json({
  "_class_name": "DDIMScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "num_train_timesteps": 1000,
  "prediction_type": "v_prediction",
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null
})json";

// tiny-sd2: sd21's structure (linear projections, per-block heads, exact GELU, v-prediction DDIM)
// at tiny's width: head counts 2, 4, 4, 4 (head dims 16) and a 4-layer text tower.
const char* kTinySd2Unet = R"json({
  "block_out_channels": [32, 64, 64, 64],
  "norm_num_groups": 8,
  "attention_head_dim": [2, 4, 4, 4],
  "cross_attention_dim": 32,
  "sample_size": 8
})json";

const char* kTinySd2TextEncoder = R"json({
  "hidden_size": 32,
  "intermediate_size": 64,
  "projection_dim": 32,
  "num_attention_heads": 4,
  "num_hidden_layers": 4
})json";

// sdxl: stabilityai/stable-diffusion-xl-base-1.0 (1024 px), as merge patches over sd15: a
// three-level UNet without attention in its first down block, transformer depth [1, 2, 10] (the
// mid block takes the last), per-block heads [5, 10, 20] (head dim 64), linear projections, a
// 2048-wide context (768 + 1280: both text encoders' penultimate states) and the "text_time" added
// conditioning (pooled 1280 + 6 x 256 micro-conditioning features = 2816); the SDXL VAE (SD's
// shapes, scaling factor 0.13025, force_upcast); text_encoder is SD 1.5's CLIP ViT-L; text_encoder_2
// is OpenCLIP bigG as transformers holds it (CLIPTextModelWithProjection, exact GELU, 32 layers,
// 1280 wide, 20 heads, projection 1280), a complete config; the repository's scheduler_config.json
// (EulerDiscrete, leading spacing) and model_index.json's force_zeros_for_empty_prompt.
const char* kSdxlUnet = R"json({
  "addition_embed_type": "text_time",
  "addition_time_embed_dim": 256,
  "attention_head_dim": [5, 10, 20],
  "block_out_channels": [320, 640, 1280],
  "cross_attention_dim": 2048,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
  "projection_class_embeddings_input_dim": 2816,
  "sample_size": 128,
  "transformer_layers_per_block": [1, 2, 10],
  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
  "use_linear_projection": true
})json";

const char* kSdxlVae = R"json({
  "sample_size": 1024,
  "scaling_factor": 0.13025
})json";

const char* kSdxlTextEncoder2 = R"json({
  "architectures": ["CLIPTextModelWithProjection"],
  "attention_dropout": 0.0,
  "bos_token_id": 0,
  "eos_token_id": 2,
  "hidden_act": "gelu",
  "hidden_size": 1280,
  "initializer_factor": 1.0,
  "initializer_range": 0.02,
  "intermediate_size": 5120,
  "layer_norm_eps": 1e-05,
  "max_position_embeddings": 77,
  "model_type": "clip_text_model",
  "num_attention_heads": 20,
  "num_hidden_layers": 32,
  "pad_token_id": 1,
  "projection_dim": 1280,
  "transformers_version": "5.24.0",
  "vocab_size": 49408
})json";

const char* kSdxlScheduler = R"json({
  "_class_name": "EulerDiscreteScheduler",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "clip_sample": false,
  "interpolation_type": "linear",
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "sample_max_value": 1.0,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "timestep_spacing": "leading",
  "trained_betas": null,
  "use_karras_sigmas": false
})json";

const char* kSdxlModelIndex = R"json({
  "force_zeros_for_empty_prompt": true
})json";

// tiny-sdxl: sdxl's structure at the golden test's width (tools/golden/make_sdxl_golden.py): levels
// 32, 32, 64, heads 2, 2, 4, transformer depth 1, 2, 3, a 32 + 48 context, pooled 40 + 6 x 8.
const char* kTinySdxlUnet = R"json({
  "addition_time_embed_dim": 8,
  "attention_head_dim": [2, 2, 4],
  "block_out_channels": [32, 32, 64],
  "cross_attention_dim": 80,
  "norm_num_groups": 8,
  "projection_class_embeddings_input_dim": 88,
  "sample_size": 8,
  "transformer_layers_per_block": [1, 2, 3]
})json";

const char* kTinySdxlTextEncoder2 = R"json({
  "hidden_size": 48,
  "intermediate_size": 96,
  "num_attention_heads": 3,
  "num_hidden_layers": 4,
  "projection_dim": 40
})json";

// sdxl-refiner: stabilityai/stable-diffusion-xl-refiner-1.0 over sdxl: no text_encoder (the
// context is text_encoder_2's 1280-wide penultimate states alone), a four-level UNet 384, 768,
// 1536, 1536 without attention in the first and last levels, transformer depth 4, heads of 64,
// and add_embedding over pooled 1280 + 5 x 256 (original size, crop, aesthetic score) = 2560;
// model_index.json's requires_aesthetics_score true and force_zeros_for_empty_prompt false.
const char* kSdxlRefinerUnet = R"json({
  "attention_head_dim": [6, 12, 24, 24],
  "block_out_channels": [384, 768, 1536, 1536],
  "cross_attention_dim": 1280,
  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "projection_class_embeddings_input_dim": 2560,
  "transformer_layers_per_block": 4,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
})json";

const char* kSdxlRefinerModelIndex = R"json({
  "force_zeros_for_empty_prompt": false,
  "requires_aesthetics_score": true
})json";

// tiny-sdxl-refiner: the refiner's structure at the golden test's width
// (tools/golden/make_sdxl_img2img_golden.py): levels 32, 32, 64, 64, heads 2, 2, 4, 4, depth 2,
// context 48 (tiny-sdxl's text_encoder_2), pooled 40 + 5 x 8.
const char* kTinySdxlRefinerUnet = R"json({
  "addition_time_embed_dim": 8,
  "attention_head_dim": [2, 2, 4, 4],
  "block_out_channels": [32, 32, 64, 64],
  "cross_attention_dim": 48,
  "norm_num_groups": 8,
  "projection_class_embeddings_input_dim": 80,
  "sample_size": 8,
  "transformer_layers_per_block": 2
})json";

// A row's component given as nullptr is absent from it, whatever the row it is based on holds
// (the refiner's text_encoder).
struct Row {
  const char* name;
  const char* based_on;  // nullptr: complete; else each component is a merge patch over that row
  std::vector<std::pair<const char*, const char*>> components;
};

const std::vector<Row>& table() {
  static const std::vector<Row> rows = {
      {"sd15", nullptr,
       {{"unet", kSd15Unet}, {"vae", kSd15Vae}, {"text_encoder", kSd15TextEncoder},
        {"scheduler", kSd15Scheduler}}},
      {"tiny", "sd15", {{"unet", kTinyUnet}, {"vae", kTinyVae}, {"text_encoder", kTinyTextEncoder}}},
      {"sd21", "sd15",
       {{"unet", kSd21Unet}, {"vae", kSd21Vae}, {"text_encoder", kSd21TextEncoder}, {"scheduler", kSd21Scheduler}}},
      {"tiny-sd2", "sd21", {{"unet", kTinySd2Unet}, {"vae", kTinyVae}, {"text_encoder", kTinySd2TextEncoder}}},
      {"sdxl", "sd15",
       {{"unet", kSdxlUnet}, {"vae", kSdxlVae}, {"text_encoder_2", kSdxlTextEncoder2}, {"scheduler", kSdxlScheduler},
        {"model_index", kSdxlModelIndex}}},
      {"tiny-sdxl", "sdxl",
       {{"unet", kTinySdxlUnet}, {"vae", kTinyVae}, {"text_encoder", kTinyTextEncoder},
        {"text_encoder_2", kTinySdxlTextEncoder2}}},
      {"sdxl-refiner", "sdxl",
       {{"unet", kSdxlRefinerUnet}, {"text_encoder", nullptr}, {"model_index", kSdxlRefinerModelIndex}}},
      {"tiny-sdxl-refiner", "sdxl-refiner",
       {{"unet", kTinySdxlRefinerUnet}, {"vae", kTinyVae}, {"text_encoder_2", kTinySdxlTextEncoder2}}},
  };
  return rows;
}

const Row* find_row(const std::string& name) {
  for (const Row& r : table())
    if (name == r.name) return &r;
  return nullptr;
}

}  // namespace

std::vector<std::string> sd_config_names() {
  std::vector<std::string> names;
  for (const Row& r : table()) names.emplace_back(r.name);
  return names;
}

nlohmann::json sd_config(const std::string& name, const std::string& component) {
  const Row* row = find_row(name);
  if (!row) {
    std::string known;
    for (const std::string& n : sd_config_names()) known += (known.empty() ? "" : ", ") + n;
    throw InputError("no model configs named '" + name + "' (known: " + known + ")");
  }
  const char* text = nullptr;
  for (const auto& [comp, json_text] : row->components)
    if (component == comp) text = json_text;
  if (!sd_config_has(name, component)) throw Error("the " + name + " configs have no component '" + component + "'");
  if (!row->based_on) {
    if (!text) throw Error("the " + name + " configs have no component '" + component + "'");
    return nlohmann::json::parse(text);
  }
  // A component the base row lacks (SDXL's text_encoder_2 over sd15) is complete in this row.
  nlohmann::json config = sd_config_has(row->based_on, component) ? sd_config(row->based_on, component)
                                                                   : nlohmann::json::object();
  if (!text && config.empty()) throw Error("the " + name + " configs have no component '" + component + "'");
  if (text) config.merge_patch(nlohmann::json::parse(text));
  return config;
}

bool sd_config_has(const std::string& name, const std::string& component) {
  const Row* row = find_row(name);
  if (!row) return false;
  for (const auto& [comp, json_text] : row->components)
    if (component == comp) return json_text != nullptr;
  return row->based_on && sd_config_has(row->based_on, component);
}

std::string sd_family(const nlohmann::json& unet_config, const nlohmann::json& text_encoder_config) {
  const nlohmann::json& text = text_encoder_config.contains("text_config") ? text_encoder_config["text_config"]
                                                                            : text_encoder_config;
  if (unet_config.is_object() && unet_config.value("addition_embed_type", nlohmann::json()) == "text_time")
    return text_encoder_config.is_null() ? "SDXL refiner" : "SDXL";  // the refiner has text_encoder_2 only
  // Compared as JSON: a hidden_act that is not a string is the text encoder config reader's error to
  // name, not a type_error here (model_config_fuzz found one escaping).
  const bool open_clip = text.is_object() && text.contains("hidden_act") && text.at("hidden_act") == "gelu";
  bool wide_context = false;
  if (unet_config.is_object() && unet_config.contains("cross_attention_dim")) {
    const nlohmann::json& cad = unet_config["cross_attention_dim"];
    wide_context = cad.is_number() && cad.get<double>() == 1024;
  }
  return open_clip || wide_context ? "SD 2.x" : "SD 1.x";
}

}  // namespace sdmpi
