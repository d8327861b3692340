// Parsing and writing the UNet, VAE and CLIP text encoder configs (see include/sdmpi/model_config.h).
//
// Three kinds of keys:
//   - keys the network depends on: read, type-checked, defaulted as diffusers/transformers default
//     them;
//   - keys whose non-default values would build a different network than ours (SDXL's added
//     conditioning, class embeddings, other block or activation types, ...): anything but the
//     default is an InputError naming the file, the key and the value;
//   - keys that do not change inference (dropout, initializer ranges, versions, ...): ignored.
#include "sdmpi/model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "io/sd_configs.h"
#include "sdmpi/config_json.h"
#include "sdmpi/error.h"

namespace sdmpi {

using nlohmann::json;

namespace {

constexpr const char* kDiffusersVersion = "0.42.1";     // tools/golden/requirements.txt
constexpr const char* kTransformersVersion = "5.24.0";  // idem

// Reads the keys of one config object; every failure names the source and the key.
class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {
    if (!j.is_object()) throw InputError(source + ": a config must be a JSON object, got " + brief(j));
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    const std::string value = j_.contains(key) ? brief(j_.at(key)) : "(not given: the default)";
    throw InputError(source_ + ": \"" + key + "\" = " + value + ": " + why);
  }

  // Present and not null.
  bool given(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  const json& at(const std::string& key) const { return j_.at(key); }

  int integer(const std::string& key, int fallback, int lo, int hi) const {
    if (!given(key)) return fallback;
    return to_int(key, j_.at(key), lo, hi);
  }

  double number(const std::string& key, double fallback) const {
    if (!given(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_number()) fail(key, "expected a number");
    return v.get<double>();
  }

  bool boolean(const std::string& key, bool fallback) const {
    if (!given(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_boolean()) fail(key, "expected true or false");
    return v.get<bool>();
  }

  std::string string(const std::string& key, const std::string& fallback) const {
    if (!given(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_string()) fail(key, "expected a string");
    return v.get<std::string>();
  }

  std::vector<std::string> strings(const std::string& key, const std::vector<std::string>& fallback) const {
    if (!given(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_array() || v.empty()) fail(key, "expected a non-empty list of strings");
    std::vector<std::string> out;
    for (const json& e : v) {
      if (!e.is_string()) fail(key, "expected a non-empty list of strings");
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  std::vector<int> integers(const std::string& key, const std::vector<int>& fallback, int lo, int hi) const {
    if (!given(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_array() || v.empty()) fail(key, "expected a non-empty list of integers");
    std::vector<int> out;
    for (const json& e : v) out.push_back(to_int(key, e, lo, hi));
    return out;
  }

  // An int for every block, or a list with one entry per block (diffusers accepts both).
  std::vector<int> per_block(const std::string& key, int fallback, size_t blocks, int lo, int hi) const {
    if (!given(key)) return std::vector<int>(blocks, fallback);
    const json& v = j_.at(key);
    if (v.is_array()) {
      if (v.size() != blocks)
        fail(key, "expected one value per block (" + std::to_string(blocks) + "), got " +
                      std::to_string(v.size()));
      std::vector<int> out;
      for (const json& e : v) {
        if (e.is_array()) fail(key, "nested lists (per-layer values, as SDXL uses) are not supported");
        out.push_back(to_int(key, e, lo, hi));
      }
      return out;
    }
    return std::vector<int>(blocks, to_int(key, v, lo, hi));
  }

  // The key must be absent, null or equal to `allowed` (the value that builds our network).
  void require(const std::string& key, const json& allowed, const std::string& why) const {
    if (!j_.contains(key)) return;
    const json& v = j_.at(key);
    if (v.is_null() || v == allowed) return;
    if (allowed.is_number() && v.is_number() && v.get<double>() == allowed.get<double>()) return;
    fail(key, why);
  }
  void require_null(const std::string& key, const std::string& why) const {
    if (given(key)) fail(key, why);
  }

  static std::string brief(const json& v) {
    std::string s = v.dump();
    return s.size() > 80 ? s.substr(0, 77) + "..." : s;
  }

 private:
  int to_int(const std::string& key, const json& v, int lo, int hi) const {
    double d = 0;
    if (v.is_number_integer() || v.is_number_unsigned()) {
      d = static_cast<double>(v.get<int64_t>());
    } else if (v.is_number_float() && std::fabs(v.get<double>()) < 1e15 &&
               v.get<double>() == std::floor(v.get<double>())) {
      d = v.get<double>();  // 64.0: an integer written as a float
    } else {
      fail(key, "expected integers");
    }
    if (d < lo || d > hi) fail(key, "values must lie in " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<int>(d);
  }

  const json& j_;
  const std::string& source_;
};

// Sanity bounds: far beyond any Stable Diffusion (SDXL's widest is 2048 channels, 10 transformer
// layers; CLIP's vocabulary 49,408), yet small enough that a typo'd config is an InputError naming
// the key, not an allocation of terabytes (the resource plan then checks what remains).
constexpr int kMaxChannels = 16384;
constexpr int kMaxLayers = 64;
constexpr int kMaxLatentSide = 1024;        // unet sample_size: 8192 pixels
constexpr int kMaxImageSide = 16384;        // vae sample_size
constexpr int kMaxVocabulary = 1000000;
constexpr int kMaxPositions = 4096;         // text tokens
constexpr int kMaxFeedForward = 4 * kMaxChannels;

[[noreturn]] void invalid(const std::string& source, const std::string& what) {
  throw InputError(source + ": " + what);
}

std::string list_str(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// An int when every block has the same value (as SD files write it), else the list.
json per_block_json(const std::vector<int>& v) {
  for (int x : v)
    if (x != v.front()) return json(v);
  return json(v.front());
}

json integral_or_float(double v) {
  if (std::fabs(v) < 1e15 && v == std::floor(v)) return json(static_cast<int64_t>(v));
  return json(v);
}

void check_activation(const Reader& r, const std::string& key) {
  const std::string act = r.string(key, "silu");
  if (act != "silu" && act != "swish") r.fail(key, "only \"silu\" (alias \"swish\") is supported");
}

}  // namespace

json read_json_file(const std::string& path) { return read_config_json(path); }

// ---- UNet ---------------------------------------------------------------------------------------

UNetConfig UNetConfig::sd15() { return preset("sd15"); }

UNetConfig UNetConfig::preset(const std::string& name) {
  return from_json(sd_config(name, "unet"), "the built-in " + name + " unet config");
}

UNetConfig UNetConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

UNetConfig UNetConfig::from_json(const json& j, const std::string& source) {
  Reader r(j, source);
  UNetConfig c;
  r.require("_class_name", "UNet2DConditionModel", "only UNet2DConditionModel is supported");

  c.in_channels = r.integer("in_channels", c.in_channels, 1, kMaxChannels);
  c.out_channels = r.integer("out_channels", c.out_channels, 1, kMaxChannels);
  if (r.given("sample_size")) {
    // An int, or [h, w] in a few newer configs: the default size only.
    if (r.at("sample_size").is_array()) {
      c.sample_size = r.integers("sample_size", {}, 1, kMaxLatentSide).front();
    } else {
      c.sample_size = r.integer("sample_size", 0, 1, kMaxLatentSide);
    }
  }
  c.center_input_sample = r.boolean("center_input_sample", c.center_input_sample);
  c.flip_sin_to_cos = r.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = r.number("freq_shift", c.freq_shift);

  c.down_block_types = r.strings("down_block_types", c.down_block_types);
  c.up_block_types = r.strings("up_block_types", c.up_block_types);
  for (const std::string& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      r.fail("down_block_types", "block type \"" + t +
                                     "\" is not supported (CrossAttnDownBlock2D, DownBlock2D are)");
  for (const std::string& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      r.fail("up_block_types", "block type \"" + t +
                                   "\" is not supported (UpBlock2D, CrossAttnUpBlock2D are)");
  if (!r.given("mid_block_type") && j.contains("mid_block_type"))
    r.fail("mid_block_type", "a UNet without a mid block is not supported");
  c.mid_block_type = r.string("mid_block_type", c.mid_block_type);
  if (c.mid_block_type != "UNetMidBlock2DCrossAttn")
    r.fail("mid_block_type", "only UNetMidBlock2DCrossAttn is supported");

  c.block_out_channels = r.integers("block_out_channels", c.block_out_channels, 1, kMaxChannels);
  const size_t n = c.block_out_channels.size();
  if (c.down_block_types.size() != n)
    r.fail("block_out_channels", "expected one type per entry: down_block_types has " +
                                     std::to_string(c.down_block_types.size()));
  if (c.up_block_types.size() != n)
    r.fail("up_block_types", "expected one type per entry of block_out_channels (" +
                                 std::to_string(n) + ")");

  c.layers_per_block = r.per_block("layers_per_block", 2, n, 1, kMaxLayers);
  if (r.given("downsample_padding") && r.integer("downsample_padding", 1, 0, 16) != 1)
    r.fail("downsample_padding", "only 1 is supported");
  c.mid_block_scale_factor = r.number("mid_block_scale_factor", c.mid_block_scale_factor);
  if (!(c.mid_block_scale_factor > 0)) r.fail("mid_block_scale_factor", "must be positive");
  check_activation(r, "act_fn");
  if (j.contains("norm_num_groups") && !r.given("norm_num_groups"))
    r.fail("norm_num_groups", "a UNet without group norms is not supported");
  c.norm_num_groups = r.integer("norm_num_groups", c.norm_num_groups, 1, kMaxChannels);
  c.norm_eps = r.number("norm_eps", c.norm_eps);
  if (!(c.norm_eps > 0)) r.fail("norm_eps", "must be positive");
  c.cross_attention_dim = r.per_block("cross_attention_dim", 1280, n, 1, kMaxChannels);
  c.transformer_layers_per_block = r.per_block("transformer_layers_per_block", 1, n, 1, kMaxLayers);
  c.attention_head_dim = r.per_block("attention_head_dim", 8, n, 1, kMaxChannels);
  // §4.1: heads = num_attention_heads or attention_head_dim. (diffusers 0.42 refuses a non-null
  // num_attention_heads outright; its meaning is unambiguous, so we take it.)
  c.num_attention_heads_given = r.given("num_attention_heads");
  c.num_attention_heads = c.num_attention_heads_given
                              ? r.per_block("num_attention_heads", 8, n, 1, kMaxChannels)
                              : c.attention_head_dim;
  c.use_linear_projection = r.boolean("use_linear_projection", c.use_linear_projection);
  c.upcast_attention = r.boolean("upcast_attention", c.upcast_attention);
  c.time_embedding_dim = r.integer("time_embedding_dim", 0, 1, kMaxChannels);
  c.conv_in_kernel = r.integer("conv_in_kernel", c.conv_in_kernel, 1, 15);
  c.conv_out_kernel = r.integer("conv_out_kernel", c.conv_out_kernel, 1, 15);
  if (c.conv_in_kernel % 2 == 0) r.fail("conv_in_kernel", "only odd kernel sizes are supported");
  if (c.conv_out_kernel % 2 == 0) r.fail("conv_out_kernel", "only odd kernel sizes are supported");

  // Everything below would add layers or change blocks that SD 1.x does not have.
  if (r.given("only_cross_attention")) {
    const json& v = r.at("only_cross_attention");
    bool any = v.is_boolean() ? v.get<bool>() : true;
    if (v.is_array()) {
      any = false;
      for (const json& e : v) any = any || !e.is_boolean() || e.get<bool>();
    }
    if (any) r.fail("only_cross_attention", "only false is supported");
  }
  r.require("mid_block_only_cross_attention", false, "only false is supported");
  r.require("dual_cross_attention", false, "only false is supported");
  r.require_null("class_embed_type", "class embeddings are not supported");
  r.require_null("num_class_embeds", "class embeddings are not supported");
  if (r.given("addition_embed_type")) {
    c.addition_embed_type = r.string("addition_embed_type", "");
    if (c.addition_embed_type != "text_time")
      r.fail("addition_embed_type", "only SDXL's \"text_time\" added conditioning is supported");
    c.addition_time_embed_dim = r.integer("addition_time_embed_dim", 0, 2, kMaxChannels);
    c.projection_class_embeddings_input_dim =
        r.integer("projection_class_embeddings_input_dim", 0, 1, kMaxChannels * 8);
    if (c.addition_time_embed_dim % 2 != 0) r.fail("addition_time_embed_dim", "must be even");
    if (c.pooled_text_dim() < 1)
      r.fail("projection_class_embeddings_input_dim",
             "must exceed 6 x addition_time_embed_dim (" + std::to_string(6 * c.addition_time_embed_dim) +
                 "): the rest is the pooled text embedding");
  }
  r.require_null("encoder_hid_dim", "an encoder_hid_proj layer is not supported");
  r.require_null("encoder_hid_dim_type", "an encoder_hid_proj layer is not supported");
  r.require("resnet_time_scale_shift", "default", "only \"default\" is supported");
  r.require("resnet_skip_time_act", false, "only false is supported");
  r.require("time_embedding_type", "positional", "only \"positional\" is supported");
  r.require_null("time_embedding_act_fn", "only null is supported");
  r.require_null("timestep_post_act", "only null is supported");
  c.time_cond_proj_dim = r.integer("time_cond_proj_dim", 0, 1, kMaxChannels);
  r.require("attention_type", "default", "only \"default\" is supported");
  r.require_null("cross_attention_norm", "only null is supported");
  r.require_null("reverse_transformer_layers_per_block", "only null is supported");

  c.validate(source);
  return c;
}

void UNetConfig::validate(const std::string& source) const {
  const size_t n = block_out_channels.size();
  if (n == 0 || n > 8) invalid(source, "block_out_channels must have 1..8 entries, got " + std::to_string(n));
  if (down_block_types.size() != n || up_block_types.size() != n || layers_per_block.size() != n ||
      cross_attention_dim.size() != n || transformer_layers_per_block.size() != n ||
      attention_head_dim.size() != n || num_attention_heads.size() != n)
    invalid(source, "the per-block lists must have one entry per block (" + std::to_string(n) + ")");
  if (in_channels < 1 || out_channels < 1 || time_embed_dim() < 1)
    invalid(source, "in_channels, out_channels and the time embedding size must be positive");
  if (norm_num_groups < 1) invalid(source, "\"norm_num_groups\" must be positive");
  for (size_t i = 0; i < n; ++i) {
    const int ch = block_out_channels[i];
    if (ch < 1 || ch % norm_num_groups != 0)
      invalid(source, "\"block_out_channels\" = " + list_str(block_out_channels) +
                          ": every entry must be a positive multiple of norm_num_groups (" +
                          std::to_string(norm_num_groups) + ")");
    const bool has_attention = down_block_types[i] == "CrossAttnDownBlock2D" ||
                               up_block_types[n - 1 - i] == "CrossAttnUpBlock2D" || i == n - 1;
    if (has_attention && (num_attention_heads[i] < 1 || num_attention_heads[i] > ch))
      invalid(source, std::string(num_attention_heads_given ? "\"num_attention_heads\"" : "\"attention_head_dim\"") +
                          " = " + list_str(num_attention_heads) + ": that many heads (the number of heads, see "
                          "diffusers' naming quirk) do not fit " + std::to_string(ch) + " channels");
    if (layers_per_block[i] < 1 || transformer_layers_per_block[i] < 1 || cross_attention_dim[i] < 1)
      invalid(source, "layers_per_block, transformer_layers_per_block and cross_attention_dim must be positive");
  }
}

json UNetConfig::to_json() const {
  json j;
  j["_class_name"] = "UNet2DConditionModel";
  j["_diffusers_version"] = kDiffusersVersion;
  j["act_fn"] = "silu";
  j["addition_embed_type"] = has_text_time() ? json(addition_embed_type) : json(nullptr);
  j["addition_embed_type_num_heads"] = 64;
  j["addition_time_embed_dim"] = has_text_time() ? json(addition_time_embed_dim) : json(nullptr);
  j["attention_head_dim"] = per_block_json(attention_head_dim);
  j["attention_type"] = "default";
  j["block_out_channels"] = block_out_channels;
  j["center_input_sample"] = center_input_sample;
  j["class_embed_type"] = nullptr;
  j["class_embeddings_concat"] = false;
  j["conv_in_kernel"] = conv_in_kernel;
  j["conv_out_kernel"] = conv_out_kernel;
  j["cross_attention_dim"] = per_block_json(cross_attention_dim);
  j["cross_attention_norm"] = nullptr;
  j["down_block_types"] = down_block_types;
  j["downsample_padding"] = 1;
  j["dropout"] = 0.0;
  j["dual_cross_attention"] = false;
  j["encoder_hid_dim"] = nullptr;
  j["encoder_hid_dim_type"] = nullptr;
  j["flip_sin_to_cos"] = flip_sin_to_cos;
  j["freq_shift"] = integral_or_float(freq_shift);
  j["in_channels"] = in_channels;
  j["layers_per_block"] = per_block_json(layers_per_block);
  j["mid_block_only_cross_attention"] = nullptr;
  j["mid_block_scale_factor"] = integral_or_float(mid_block_scale_factor);
  j["mid_block_type"] = mid_block_type;
  j["norm_eps"] = norm_eps;
  j["norm_num_groups"] = norm_num_groups;
  j["num_attention_heads"] = num_attention_heads_given ? per_block_json(num_attention_heads) : json(nullptr);
  j["num_class_embeds"] = nullptr;
  j["only_cross_attention"] = false;
  j["out_channels"] = out_channels;
  j["projection_class_embeddings_input_dim"] =
      has_text_time() ? json(projection_class_embeddings_input_dim) : json(nullptr);
  j["resnet_out_scale_factor"] = 1.0;
  j["resnet_skip_time_act"] = false;
  j["resnet_time_scale_shift"] = "default";
  j["reverse_transformer_layers_per_block"] = nullptr;
  j["sample_size"] = sample_size > 0 ? json(sample_size) : json(nullptr);
  j["time_cond_proj_dim"] = time_cond_proj_dim > 0 ? json(time_cond_proj_dim) : json(nullptr);
  j["time_embedding_act_fn"] = nullptr;
  j["time_embedding_dim"] = time_embedding_dim > 0 ? json(time_embedding_dim) : json(nullptr);
  j["time_embedding_type"] = "positional";
  j["timestep_post_act"] = nullptr;
  j["transformer_layers_per_block"] = per_block_json(transformer_layers_per_block);
  j["up_block_types"] = up_block_types;
  j["upcast_attention"] = upcast_attention;
  j["use_linear_projection"] = use_linear_projection;
  return j;
}

// ---- VAE ----------------------------------------------------------------------------------------

VAEConfig VAEConfig::sd15() { return preset("sd15"); }

VAEConfig VAEConfig::preset(const std::string& name) {
  return from_json(sd_config(name, "vae"), "the built-in " + name + " vae config");
}

VAEConfig VAEConfig::load(const std::string& path) { return from_json(read_json_file(path), path); }

VAEConfig VAEConfig::from_json(const json& j, const std::string& source) {
  Reader r(j, source);
  VAEConfig c;
  r.require("_class_name", "AutoencoderKL", "only AutoencoderKL is supported");
  c.in_channels = r.integer("in_channels", c.in_channels, 1, kMaxChannels);
  c.out_channels = r.integer("out_channels", c.out_channels, 1, kMaxChannels);
  c.down_block_types = r.strings("down_block_types", c.down_block_types);
  c.up_block_types = r.strings("up_block_types", c.up_block_types);
  for (const std::string& t : c.down_block_types)
    if (t != "DownEncoderBlock2D")
      r.fail("down_block_types", "block type \"" + t + "\" is not supported (DownEncoderBlock2D is)");
  for (const std::string& t : c.up_block_types)
    if (t != "UpDecoderBlock2D")
      r.fail("up_block_types", "block type \"" + t + "\" is not supported (UpDecoderBlock2D is)");
  c.block_out_channels = r.integers("block_out_channels", c.block_out_channels, 1, kMaxChannels);
  const size_t n = c.block_out_channels.size();
  if (c.down_block_types.size() != n)
    r.fail("block_out_channels", "expected one type per entry: down_block_types has " +
                                     std::to_string(c.down_block_types.size()));
  if (c.up_block_types.size() != n)
    r.fail("up_block_types", "expected one type per entry of block_out_channels (" + std::to_string(n) + ")");
  c.layers_per_block = r.integer("layers_per_block", c.layers_per_block, 1, kMaxLayers);
  check_activation(r, "act_fn");
  c.latent_channels = r.integer("latent_channels", c.latent_channels, 1, kMaxChannels);
  c.norm_num_groups = r.integer("norm_num_groups", c.norm_num_groups, 1, kMaxChannels);
  if (r.given("sample_size")) {
    c.sample_size = r.at("sample_size").is_array()
                        ? r.integers("sample_size", {}, 1, kMaxImageSide).front()
                        : r.integer("sample_size", c.sample_size, 1, kMaxImageSide);
  }
  c.scaling_factor = r.number("scaling_factor", c.scaling_factor);
  if (!(c.scaling_factor > 0)) r.fail("scaling_factor", "must be positive");
  // SD3/Flux VAEs shift the latents; the SD pipeline has no such step.
  r.require_null("shift_factor", "latent shifting (SD3/Flux VAEs) is not supported");
  c.force_upcast = r.boolean("force_upcast", c.force_upcast);
  c.use_quant_conv = r.boolean("use_quant_conv", c.use_quant_conv);
  c.use_post_quant_conv = r.boolean("use_post_quant_conv", c.use_post_quant_conv);
  c.mid_block_add_attention = r.boolean("mid_block_add_attention", c.mid_block_add_attention);
  // latents_mean / latents_std: not used by the SD pipeline's decode.
  c.validate(source);
  return c;
}

void VAEConfig::validate(const std::string& source) const {
  const size_t n = block_out_channels.size();
  if (n == 0 || n > 8) invalid(source, "block_out_channels must have 1..8 entries, got " + std::to_string(n));
  if (down_block_types.size() != n || up_block_types.size() != n)
    invalid(source, "down_block_types and up_block_types need one entry per block (" + std::to_string(n) + ")");
  if (in_channels < 1 || out_channels < 1 || latent_channels < 1 || layers_per_block < 1 || norm_num_groups < 1)
    invalid(source, "channel counts, layers_per_block and norm_num_groups must be positive");
  for (int ch : block_out_channels)
    if (ch < 1 || ch % norm_num_groups != 0)
      invalid(source, "\"block_out_channels\" = " + list_str(block_out_channels) +
                          ": every entry must be a positive multiple of norm_num_groups (" +
                          std::to_string(norm_num_groups) + ")");
  if (!(scaling_factor > 0)) invalid(source, "\"scaling_factor\" must be positive");
}

json VAEConfig::to_json() const {
  json j;
  j["_class_name"] = "AutoencoderKL";
  j["_diffusers_version"] = kDiffusersVersion;
  j["act_fn"] = "silu";
  j["block_out_channels"] = block_out_channels;
  j["down_block_types"] = down_block_types;
  j["force_upcast"] = force_upcast;
  j["in_channels"] = in_channels;
  j["latent_channels"] = latent_channels;
  j["latents_mean"] = nullptr;
  j["latents_std"] = nullptr;
  j["layers_per_block"] = layers_per_block;
  j["mid_block_add_attention"] = mid_block_add_attention;
  j["norm_num_groups"] = norm_num_groups;
  j["out_channels"] = out_channels;
  j["sample_size"] = sample_size;
  j["scaling_factor"] = scaling_factor;
  j["shift_factor"] = nullptr;
  j["up_block_types"] = up_block_types;
  j["use_post_quant_conv"] = use_post_quant_conv;
  j["use_quant_conv"] = use_quant_conv;
  return j;
}

// ---- CLIP text encoder --------------------------------------------------------------------------

// SD 1.5's file keeps the pre-2023 bos/eos ids 0 and 2 (only the pooled output, which SD does not
// use, reads eos_token_id).
ClipTextConfig ClipTextConfig::sd15() { return preset("sd15"); }

ClipTextConfig ClipTextConfig::preset(const std::string& name) {
  return from_json(sd_config(name, "text_encoder"), "the built-in " + name + " text_encoder config");
}

ClipTextConfig ClipTextConfig::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

ClipTextConfig ClipTextConfig::from_json(const json& j, const std::string& source) {
  Reader outer(j, source);
  const std::string model_type = outer.string("model_type", "clip_text_model");
  if (model_type == "clip") {
    // A full CLIPConfig: the text tower's config is nested.
    if (!j.contains("text_config") || !j.at("text_config").is_object())
      outer.fail("model_type", "a CLIPConfig needs a \"text_config\" object");
    return from_json(j.at("text_config"), source + " (text_config)");
  }
  if (model_type != "clip_text_model")
    outer.fail("model_type", "only CLIP text encoders (\"clip_text_model\") are supported");
  if (outer.given("architectures")) {
    const auto arch = outer.strings("architectures", {});
    if (arch.empty() || (arch.front() != "CLIPTextModel" && arch.front() != "CLIPTextModelWithProjection"))
      outer.fail("architectures", "only CLIPTextModel and CLIPTextModelWithProjection are supported");
  }
  const Reader& r = outer;
  ClipTextConfig c;
  if (r.given("architectures")) c.with_projection = r.strings("architectures", {}).front() == "CLIPTextModelWithProjection";
  c.vocab_size = r.integer("vocab_size", c.vocab_size, 1, kMaxVocabulary);
  c.hidden_size = r.integer("hidden_size", c.hidden_size, 1, kMaxChannels);
  c.intermediate_size = r.integer("intermediate_size", c.intermediate_size, 1, kMaxFeedForward);
  c.projection_dim = r.integer("projection_dim", c.projection_dim, 1, kMaxChannels);
  c.num_hidden_layers = r.integer("num_hidden_layers", c.num_hidden_layers, 1, kMaxLayers);
  c.num_attention_heads = r.integer("num_attention_heads", c.num_attention_heads, 1, kMaxChannels);
  c.max_position_embeddings = r.integer("max_position_embeddings", c.max_position_embeddings, 1, kMaxPositions);
  c.hidden_act = r.string("hidden_act", c.hidden_act);
  if (c.hidden_act != "quick_gelu" && c.hidden_act != "gelu")
    r.fail("hidden_act", "only \"quick_gelu\" and \"gelu\" are supported");
  c.layer_norm_eps = r.number("layer_norm_eps", c.layer_norm_eps);
  if (!(c.layer_norm_eps > 0)) r.fail("layer_norm_eps", "must be positive");
  c.pad_token_id = r.integer("pad_token_id", c.pad_token_id, 0, kMaxVocabulary);
  c.bos_token_id = r.integer("bos_token_id", c.bos_token_id, 0, kMaxVocabulary);
  c.eos_token_id = r.integer("eos_token_id", c.eos_token_id, 0, kMaxVocabulary);
  if (c.hidden_size % c.num_attention_heads != 0)
    r.fail("num_attention_heads", "must divide hidden_size (" + std::to_string(c.hidden_size) + ")");
  c.validate(source);
  return c;
}

void ClipTextConfig::validate(const std::string& source) const {
  if (vocab_size < 1 || hidden_size < 1 || intermediate_size < 1 || num_hidden_layers < 1 ||
      num_attention_heads < 1 || max_position_embeddings < 1)
    invalid(source, "sizes must be positive");
  if (hidden_size % num_attention_heads != 0)
    invalid(source, "\"num_attention_heads\" = " + std::to_string(num_attention_heads) +
                        ": must divide hidden_size (" + std::to_string(hidden_size) + ")");
  if (hidden_act != "quick_gelu" && hidden_act != "gelu")
    invalid(source, "\"hidden_act\" = \"" + hidden_act + "\": only quick_gelu and gelu are supported");
  if (!(layer_norm_eps > 0)) invalid(source, "\"layer_norm_eps\" must be positive");
}

json ClipTextConfig::to_json() const {
  json j;
  j["architectures"] = json::array({with_projection ? "CLIPTextModelWithProjection" : "CLIPTextModel"});
  j["attention_dropout"] = 0.0;
  j["bos_token_id"] = bos_token_id;
  j["dtype"] = "float32";
  j["eos_token_id"] = eos_token_id;
  j["hidden_act"] = hidden_act;
  j["hidden_size"] = hidden_size;
  j["initializer_factor"] = 1.0;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = intermediate_size;
  j["layer_norm_eps"] = layer_norm_eps;
  j["max_position_embeddings"] = max_position_embeddings;
  j["model_type"] = "clip_text_model";
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["pad_token_id"] = pad_token_id;
  j["projection_dim"] = projection_dim;
  j["transformers_version"] = kTransformersVersion;
  j["vocab_size"] = vocab_size;
  return j;
}

}  // namespace sdmpi
