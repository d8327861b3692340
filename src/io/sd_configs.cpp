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
  if (!row->based_on) {
    if (!text) throw Error("the " + name + " configs have no component '" + component + "'");
    return nlohmann::json::parse(text);
  }
  nlohmann::json config = sd_config(row->based_on, component);
  if (text) config.merge_patch(nlohmann::json::parse(text));
  return config;
}

}  // namespace sdmpi
