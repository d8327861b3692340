// The configs of the three networks, read from the config.json files diffusers and transformers
// write (unet/config.json, vae/config.json, text_encoder/config.json).
//
// Each struct holds what our model code needs. Its member defaults are diffusers' / transformers'
// class defaults, which is what a file that leaves a key out gets; preset(name) parses a row of the
// one table of SD configs (src/io/sd_configs.cpp: "sd15", "tiny", ...), sd15() is preset("sd15").
// from_json() checks every key that would change the network: a value we do not
// implement (SDXL's addition_embed_type "text_time", a "scale_shift" resnet, a non-SiLU
// activation, ...) is an InputError naming the file, the key and the value, never a silently
// different network. Keys that do not change inference (dropout, sample_size, ...) are kept or
// ignored. to_json() writes a complete config.json, key for key what the pinned diffusers /
// transformers would write for the same model (make-model uses it).
//
// The per-block lists are resolved the way diffusers resolves them: an int in the file becomes one
// value per down block, and the number of attention heads is
// `num_attention_heads or attention_head_dim` (the naming quirk of docs/reference/sd15-semantics.md §4.1: SD 1.5's
// "attention_head_dim": 8 means 8 heads at every level).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace sdmpi {

// UNet2DConditionModel with the SD 1.x block types (CrossAttnDownBlock2D, DownBlock2D,
// UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D).
struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  int sample_size = 0;  // latent side it was trained at (pipeline default size / 8); 0: null
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  std::vector<std::string> down_block_types{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                            "CrossAttnDownBlock2D", "DownBlock2D"};
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<std::string> up_block_types{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                          "CrossAttnUpBlock2D"};
  std::vector<int> block_out_channels{320, 640, 1280, 1280};
  // Per down block (the file may give one int for all). Up block i has
  // layers_per_block[reversed i] + 1 resnets.
  std::vector<int> layers_per_block{2, 2, 2, 2};
  int downsample_padding = 1;
  double mid_block_scale_factor = 1;
  int norm_num_groups = 32;
  double norm_eps = 1e-5;
  std::vector<int> cross_attention_dim{1280, 1280, 1280, 1280};   // per down block
  std::vector<int> transformer_layers_per_block{1, 1, 1, 1};      // per down block
  std::vector<int> attention_head_dim{8, 8, 8, 8};                // per down block, as in the file
  std::vector<int> num_attention_heads{8, 8, 8, 8};               // per down block: heads (resolved)
  bool num_attention_heads_given = false;  // the file set num_attention_heads (to_json keeps it)
  bool use_linear_projection = false;
  bool upcast_attention = false;  // softmax in fp32; a no-op for float32 compute
  int time_embedding_dim = 0;     // 0: the default 4 * block_out_channels[0]
  int conv_in_kernel = 3;
  int conv_out_kernel = 3;
  // SDXL's added conditioning ("text_time"; "" = none): add_embedding, a TimestepEmbedding from
  // projection_class_embeddings_input_dim (pooled text width + 6 micro-conditioning values ×
  // addition_time_embed_dim Fourier features) to the time embedding, summed into it.
  std::string addition_embed_type;
  // Latent-consistency-distilled UNets (LCM checkpoints): the width of the guidance-scale
  // embedding that TimestepEmbedding.cond_proj adds to the timestep projection; 0 = none.
  int time_cond_proj_dim = 0;
  int addition_time_embed_dim = 0;
  int projection_class_embeddings_input_dim = 0;

  bool has_text_time() const { return addition_embed_type == "text_time"; }
  // The pooled text width add_embedding expects: the input width less the micro-conditioning's
  // (`time_ids` values per item: 6 for SDXL base, 5 for the refiner).
  int pooled_text_dim(int time_ids = kMicroConditioningValues) const {
    return has_text_time() ? projection_class_embeddings_input_dim - time_ids * addition_time_embed_dim : 0;
  }
  // SDXL's add_time_ids: original size (h, w), crop top-left (top, left), target size (h, w). The
  // refiner (model_index.json's requires_aesthetics_score) has 5: the aesthetic score replaces the
  // target size.
  static constexpr int kMicroConditioningValues = 6;
  static constexpr int kRefinerTimeIds = 5;

  int time_embed_dim() const { return time_embedding_dim ? time_embedding_dim : 4 * block_out_channels[0]; }
  int num_blocks() const { return static_cast<int>(block_out_channels.size()); }
  // 2^(number of upsamplers): latent sides that are not multiples of this make diffusers forward
  // the skip sizes to the upsamplers.
  int overall_up_factor() const { return 1 << (num_blocks() - 1); }

  // Stable Diffusion 1.5's unet/config.json.
  static UNetConfig sd15();
  // The unet config of a row of the SD config table; InputError for an unknown name.
  static UNetConfig preset(const std::string& name);
  // `source` names the file in messages ("./sd15/unet/config.json").
  static UNetConfig from_json(const nlohmann::json& j, const std::string& source);
  static UNetConfig load(const std::string& path);
  nlohmann::json to_json() const;
  // Throws InputError(source: key value ...) on an inconsistent config.
  void validate(const std::string& source) const;
};

// AutoencoderKL (the decoder is what txt2img runs; the encoder's shapes matter for make-model).
struct VAEConfig {
  int in_channels = 3;
  int out_channels = 3;
  std::vector<std::string> down_block_types{"DownEncoderBlock2D"};
  std::vector<std::string> up_block_types{"UpDecoderBlock2D"};
  std::vector<int> block_out_channels{64};
  int layers_per_block = 1;
  int latent_channels = 4;
  int norm_num_groups = 32;
  int sample_size = 32;
  double scaling_factor = 0.18215;
  bool force_upcast = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  int num_blocks() const { return static_cast<int>(block_out_channels.size()); }
  // Pixels per latent side: 2^(levels-1) (= 8 for SD).
  int scale_factor() const { return 1 << (num_blocks() - 1); }

  static VAEConfig sd15();
  static VAEConfig preset(const std::string& name);
  static VAEConfig from_json(const nlohmann::json& j, const std::string& source);
  static VAEConfig load(const std::string& path);
  nlohmann::json to_json() const;
  void validate(const std::string& source) const;
};

// transformers' CLIPTextConfig (CLIPTextModel, the text tower of CLIP).
struct ClipTextConfig {
  int vocab_size = 49408;
  int hidden_size = 512;
  int intermediate_size = 2048;
  int projection_dim = 512;
  int num_hidden_layers = 12;
  int num_attention_heads = 8;
  int max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // or "gelu" (exact erf GELU)
  double layer_norm_eps = 1e-5;
  int pad_token_id = 1;
  int bos_token_id = 49406;
  int eos_token_id = 49407;
  // CLIPTextModelWithProjection (SDXL's text_encoder_2): text_projection [projection_dim, hidden]
  // (no bias) maps the pooled hidden state, at the first eos token, to text_embeds. Set by the
  // file's "architectures".
  bool with_projection = false;

  int head_dim() const { return hidden_size / num_attention_heads; }

  // SD 1.5's text_encoder/config.json (CLIP ViT-L/14 text tower).
  static ClipTextConfig sd15();
  static ClipTextConfig preset(const std::string& name);
  // Accepts a CLIPTextConfig file and a full CLIPConfig (its "text_config" is used).
  static ClipTextConfig from_json(const nlohmann::json& j, const std::string& source);
  static ClipTextConfig load(const std::string& path);
  nlohmann::json to_json() const;
  void validate(const std::string& source) const;
};

// Reads and parses a JSON file; InputError naming the path (and the parser's position) otherwise.
nlohmann::json read_json_file(const std::string& path);

}  // namespace sdmpi
