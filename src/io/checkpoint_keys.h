// Key names of single-file LDM checkpoints → diffusers names, by one table.
//
// An original Stable Diffusion checkpoint (CompVis/LDM layout) keeps the three models under
// `model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE) and
// `cond_stage_model.transformer.*` (CLIP text encoder; SD 2.x: `cond_stage_model.model.*`, an
// OpenCLIP tower; SDXL: `conditioner.embedders.0.transformer.*` and `.1.model.*`, OpenCLIP
// bigG; the SDXL refiner: bigG alone as `conditioner.embedders.0.model.*`), with the LDM module names: input/middle/
// output blocks, `in_layers`/`out_layers` inside ResNets, VAE up blocks numbered in reverse, the
// VAE mid attention as 1×1 convolutions. The table in checkpoint_keys.cpp maps each key prefix to
// its diffusers counterpart (docs/reference/sd15-semantics.md §7.2); the same file holds the renames of
// diffusers' legacy VAE attention names (query/key/value/proj_attn).
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace sdmpi::ckpt {

enum class Component { Unet, Vae, TextEncoder, TextEncoder2 };
const char* component_name(Component c);  // "unet", "vae", "text_encoder", "text_encoder_2"

// What the index arithmetic needs that the keys alone fix: ResNets per UNet down block (SD1.x: 2)
// and the number of VAE decoder up blocks (SD1.x: 4; LDM numbers them in reverse).
struct LdmLayout {
  int unet_layers_per_block = 2;
  int vae_up_blocks = 4;
};
// Reads the layout from the keys of a checkpoint (the first downsampler's input-block index, the
// highest `decoder.up.{k}`); falls back to the SD1.x values for parts that are absent.
LdmLayout detect_ldm_layout(const std::vector<std::string>& keys);

struct DiffusersKey {
  Component component;
  std::string name;            // diffusers name inside the component
  bool squeeze_to_linear = false;  // a VAE attention 1×1 conv weight: present [out, in]
  // OpenCLIP text towers (SD 2.x's cond_stage_model.model.*, SDXL's conditioner.embedders.1.model.*):
  bool split_qkv = false;  // attn.in_proj_weight/bias: `name` holds "{q,k,v}_proj"; q, k, v are thirds along dim 0
  bool transpose = false;  // text_projection [hidden, projection] → a Linear's [projection, hidden]
  int text_layer = -1;     // the encoder layer a text-encoder tensor belongs to (-1: none); a config
                           // with fewer layers drops the rest (SD 2.x: 23 of OpenCLIP ViT-H's 24)
};

// The diffusers name of one checkpoint key, or nullopt for keys diffusers drops too (EMA copies
// `model_ema.*`, schedule buffers like `alphas_cumprod`, anything outside the three prefixes, and
// keys under a prefix that no rule of the table covers).
std::optional<DiffusersKey> ldm_to_diffusers(const std::string& key, const LdmLayout& layout);

// kohya's LoRA module names for a UNet in the LDM layout (SDXL LoRAs are trained on it): the LDM
// module path with '_' for '.', e.g. "input_blocks_4_1_transformer_blocks_0_attn1_to_q" or
// "output_blocks_2_2_conv", → the diffusers module path, also with '_' for '.'
// ("down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", "up_blocks_0_upsamplers_0_conv"),
// by the same UNet rules as ldm_to_diffusers; nullopt when no rule matches.
std::optional<std::string> ldm_unet_module_underscored(const std::string& module, const LdmLayout& layout);

// Legacy diffusers VAE attention names (diffusers ≤ 0.13 saved `…attentions.0.query.weight`,
// `key`, `value`, `proj_attn`) → the current `to_q`, `to_k`, `to_v`, `to_out.0`. Other names come
// back unchanged. `*legacy` (optional) says whether a rename happened.
std::string modern_vae_attention_name(const std::string& name, bool* legacy = nullptr);

// Text encoder names with the `text_model.` level (`text_model.encoder.layers.0...`), which
// SD 1.x files have and transformers >= 5.6 no longer writes (it saves `encoder.layers.0...`):
// both forms → the first. Other names come back unchanged.
std::string canonical_text_encoder_name(const std::string& name);

// True for a VAE attention projection weight (to_q/to_k/to_v/to_out.0 .weight under
// `.attentions.`), whose 1×1-conv forms [out, in, 1, 1] / [out, in, 1] are presented as [out, in].
bool is_vae_attention_projection(const std::string& diffusers_name);

}  // namespace sdmpi::ckpt
