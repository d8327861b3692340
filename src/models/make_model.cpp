// make-model (see include/sdmpi/make_model.h): the parameter lists of the three networks as the
// diffusers / transformers modules register them, deterministic random values, the presets and the
// in-memory model. The folder writer is make_model_folder.cpp.
//
// The lists here describe the *full* modules (the VAE encoder too), because the folder must load in
// diffusers without missing keys; the model classes (unet.cpp, vae.cpp, clip_text_model.cpp) ask
// for their own subsets by the same names. tests/unit/make_model_test.cpp checks that the two agree
// (every tensor a model asks for exists with the same shape, and nothing else is left over), and
// tools/check_make_model.py checks the folder against diffusers itself.
#include "sdmpi/make_model.h"

#include <algorithm>
#include <cmath>

#include "sdmpi/error.h"

namespace sdmpi {


namespace {

// ---- parameter lists ----------------------------------------------------------------------------

class ParamList {
 public:
  std::vector<ParamSpec> params;

  void linear(const std::string& name, int64_t in, int64_t out, bool bias = true) {
    params.push_back({name + ".weight", {out, in}, ParamInit::Weight, in});
    if (bias) params.push_back({name + ".bias", {out}, ParamInit::Bias, in});
  }
  void conv(const std::string& name, int64_t in, int64_t out, int64_t k) {
    params.push_back({name + ".weight", {out, in, k, k}, ParamInit::Weight, in * k * k});
    params.push_back({name + ".bias", {out}, ParamInit::Bias, in * k * k});
  }
  void norm(const std::string& name, int64_t channels) {
    params.push_back({name + ".weight", {channels}, ParamInit::NormWeight, 1});
    params.push_back({name + ".bias", {channels}, ParamInit::NormBias, 1});
  }
  void embedding(const std::string& name, int64_t rows, int64_t cols) {
    params.push_back({name + ".weight", {rows, cols}, ParamInit::Embedding, 1});
  }

  // ResnetBlock2D (temb 0: none).
  void resnet(const std::string& name, int in, int out, int temb) {
    norm(name + ".norm1", in);
    conv(name + ".conv1", in, out, 3);
    if (temb > 0) linear(name + ".time_emb_proj", temb, out);
    norm(name + ".norm2", out);
    conv(name + ".conv2", out, out, 3);
    if (in != out) conv(name + ".conv_shortcut", in, out, 1);
  }
  // Attention (to_q/k/v, to_out.0).
  void attention(const std::string& name, int query_dim, int context_dim, int inner, bool qkv_bias) {
    linear(name + ".to_q", query_dim, inner, qkv_bias);
    linear(name + ".to_k", context_dim, inner, qkv_bias);
    linear(name + ".to_v", context_dim, inner, qkv_bias);
    linear(name + ".to_out.0", inner, query_dim);
  }
  // Transformer2DModel with BasicTransformerBlocks.
  void transformer2d(const std::string& name, int ch, int heads, int layers, int cross, bool use_linear) {
    const int inner = heads * (ch / heads);
    norm(name + ".norm", ch);
    if (use_linear) linear(name + ".proj_in", ch, inner); else conv(name + ".proj_in", ch, inner, 1);
    for (int i = 0; i < layers; ++i) {
      const std::string b = name + ".transformer_blocks." + std::to_string(i);
      norm(b + ".norm1", inner);
      attention(b + ".attn1", inner, inner, inner, false);
      norm(b + ".norm2", inner);
      attention(b + ".attn2", inner, cross, inner, false);
      norm(b + ".norm3", inner);
      linear(b + ".ff.net.0.proj", inner, 8 * inner);
      linear(b + ".ff.net.2", 4 * inner, inner);
    }
    if (use_linear) linear(name + ".proj_out", inner, ch); else conv(name + ".proj_out", inner, ch, 1);
  }
  // The VAE's UNetMidBlock2D: resnet, single-head attention with group_norm, resnet.
  void vae_mid_block(const std::string& name, int ch, bool attention_block) {
    resnet(name + ".resnets.0", ch, ch, 0);
    if (attention_block) {
      norm(name + ".attentions.0.group_norm", ch);
      attention(name + ".attentions.0", ch, ch, ch, true);
    }
    resnet(name + ".resnets.1", ch, ch, 0);
  }
};

template <typename T>
std::vector<T> reversed(std::vector<T> v) {
  std::reverse(v.begin(), v.end());
  return v;
}

// ---- deterministic random values ----------------------------------------------------------------

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t mix64(uint64_t z) {  // splitmix64's output function
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Uniform in [0, 1) with 53 bits, the i-th value of the stream `key`.
double uniform01(uint64_t key, uint64_t i) {
  return static_cast<double>(mix64(key + (i + 1) * kGolden) >> 11) * 0x1.0p-53;
}

std::shared_ptr<MemoryWeightSource> memory_weights(const std::string& description,
                                                   const std::vector<ParamSpec>& params,
                                                   uint64_t seed) {
  auto source = std::make_shared<MemoryWeightSource>(description);
  for (const ParamSpec& p : params) source->add_f32(p.name, p.shape, random_parameter(p, seed));
  return source;
}

}  // namespace

// ---- the parameter lists ------------------------------------------------------------------------

std::vector<ParamSpec> unet_parameters(const UNetConfig& c) {
  c.validate("unet config");
  ParamList p;
  const int n = c.num_blocks();
  const int temb = c.time_embed_dim();
  const int c0 = c.block_out_channels[0];
  p.conv("conv_in", c.in_channels, c0, c.conv_in_kernel);
  p.linear("time_embedding.linear_1", c0, temb);
  p.linear("time_embedding.linear_2", temb, temb);

  int out_ch = c0;
  for (int i = 0; i < n; ++i) {
    const std::string name = "down_blocks." + std::to_string(i);
    const int in_ch = out_ch;
    out_ch = c.block_out_channels[i];
    for (int l = 0; l < c.layers_per_block[i]; ++l) {
      p.resnet(name + ".resnets." + std::to_string(l), l == 0 ? in_ch : out_ch, out_ch, temb);
      if (c.down_block_types[i] == "CrossAttnDownBlock2D")
        p.transformer2d(name + ".attentions." + std::to_string(l), out_ch, c.num_attention_heads[i],
                        c.transformer_layers_per_block[i], c.cross_attention_dim[i],
                        c.use_linear_projection);
    }
    if (i < n - 1) p.conv(name + ".downsamplers.0.conv", out_ch, out_ch, 3);
  }

  const int mid = c.block_out_channels[n - 1];
  p.resnet("mid_block.resnets.0", mid, mid, temb);
  p.transformer2d("mid_block.attentions.0", mid, c.num_attention_heads[n - 1],
                  c.transformer_layers_per_block[n - 1], c.cross_attention_dim[n - 1],
                  c.use_linear_projection);
  p.resnet("mid_block.resnets.1", mid, mid, temb);

  const auto rev_ch = reversed(c.block_out_channels);
  const auto rev_heads = reversed(c.num_attention_heads);
  const auto rev_layers = reversed(c.layers_per_block);
  const auto rev_cross = reversed(c.cross_attention_dim);
  const auto rev_tl = reversed(c.transformer_layers_per_block);
  out_ch = rev_ch[0];
  for (int i = 0; i < n; ++i) {
    const std::string name = "up_blocks." + std::to_string(i);
    const int prev_ch = out_ch;
    out_ch = rev_ch[i];
    const int in_ch = rev_ch[std::min(i + 1, n - 1)];
    const int layers = rev_layers[i] + 1;
    for (int l = 0; l < layers; ++l) {
      const int skip = l == layers - 1 ? in_ch : out_ch;
      p.resnet(name + ".resnets." + std::to_string(l), (l == 0 ? prev_ch : out_ch) + skip, out_ch, temb);
      if (c.up_block_types[i] == "CrossAttnUpBlock2D")
        p.transformer2d(name + ".attentions." + std::to_string(l), out_ch, rev_heads[i], rev_tl[i],
                        rev_cross[i], c.use_linear_projection);
    }
    if (i < n - 1) p.conv(name + ".upsamplers.0.conv", out_ch, out_ch, 3);
  }

  p.norm("conv_norm_out", c0);
  p.conv("conv_out", c0, c.out_channels, c.conv_out_kernel);
  return p.params;
}

std::vector<ParamSpec> vae_parameters(const VAEConfig& c) {
  c.validate("vae config");
  ParamList p;
  const int n = c.num_blocks();
  const auto& ch = c.block_out_channels;

  // encoder (DownEncoderBlock2D levels, double_z)
  p.conv("encoder.conv_in", c.in_channels, ch[0], 3);
  int out_ch = ch[0];
  for (int i = 0; i < n; ++i) {
    const std::string name = "encoder.down_blocks." + std::to_string(i);
    const int in_ch = out_ch;
    out_ch = ch[i];
    for (int l = 0; l < c.layers_per_block; ++l)
      p.resnet(name + ".resnets." + std::to_string(l), l == 0 ? in_ch : out_ch, out_ch, 0);
    if (i < n - 1) p.conv(name + ".downsamplers.0.conv", out_ch, out_ch, 3);
  }
  p.vae_mid_block("encoder.mid_block", ch[n - 1], c.mid_block_add_attention);
  p.norm("encoder.conv_norm_out", ch[n - 1]);
  p.conv("encoder.conv_out", ch[n - 1], 2 * c.latent_channels, 3);
  if (c.use_quant_conv) p.conv("quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
  if (c.use_post_quant_conv) p.conv("post_quant_conv", c.latent_channels, c.latent_channels, 1);

  // decoder (UpDecoderBlock2D levels)
  p.conv("decoder.conv_in", c.latent_channels, ch[n - 1], 3);
  p.vae_mid_block("decoder.mid_block", ch[n - 1], c.mid_block_add_attention);
  out_ch = ch[n - 1];
  for (int i = 0; i < n; ++i) {
    const std::string name = "decoder.up_blocks." + std::to_string(i);
    const int prev_ch = out_ch;
    out_ch = ch[n - 1 - i];
    for (int l = 0; l < c.layers_per_block + 1; ++l)
      p.resnet(name + ".resnets." + std::to_string(l), l == 0 ? prev_ch : out_ch, out_ch, 0);
    if (i < n - 1) p.conv(name + ".upsamplers.0.conv", out_ch, out_ch, 3);
  }
  p.norm("decoder.conv_norm_out", ch[0]);
  p.conv("decoder.conv_out", ch[0], c.out_channels, 3);
  return p.params;
}

std::vector<ParamSpec> clip_text_parameters(const ClipTextConfig& c, const std::string& prefix) {
  c.validate("text_encoder config");
  ParamList p;
  p.embedding(prefix + "embeddings.token_embedding", c.vocab_size, c.hidden_size);
  p.embedding(prefix + "embeddings.position_embedding", c.max_position_embeddings, c.hidden_size);
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string name = prefix + "encoder.layers." + std::to_string(i);
    p.linear(name + ".self_attn.k_proj", c.hidden_size, c.hidden_size);
    p.linear(name + ".self_attn.v_proj", c.hidden_size, c.hidden_size);
    p.linear(name + ".self_attn.q_proj", c.hidden_size, c.hidden_size);
    p.linear(name + ".self_attn.out_proj", c.hidden_size, c.hidden_size);
    p.norm(name + ".layer_norm1", c.hidden_size);
    p.linear(name + ".mlp.fc1", c.hidden_size, c.intermediate_size);
    p.linear(name + ".mlp.fc2", c.intermediate_size, c.hidden_size);
    p.norm(name + ".layer_norm2", c.hidden_size);
  }
  p.norm(prefix + "final_layer_norm", c.hidden_size);
  return p.params;
}

int64_t count_parameters(const std::vector<ParamSpec>& params) {
  int64_t total = 0;
  for (const ParamSpec& p : params) total += shape_numel(p.shape);
  return total;
}

std::vector<float> random_parameter(const ParamSpec& p, uint64_t seed) {
  const int64_t n = shape_numel(p.shape);
  std::vector<float> v(static_cast<size_t>(n));
  const uint64_t key = mix64(seed ^ mix64(fnv1a(p.name)));
  const double bound = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(p.fan_in, 1)));
  float* out = v.data();
  switch (p.init) {
    case ParamInit::Weight:
    case ParamInit::Bias:  // PyTorch's Linear/Conv default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(bound * (2.0 * uniform01(key, i) - 1.0));
      break;
    case ParamInit::NormWeight:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(1.0 + 0.2 * (2.0 * uniform01(key, i) - 1.0));
      break;
    case ParamInit::NormBias:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(0.1 * (2.0 * uniform01(key, i) - 1.0));
      break;
    case ParamInit::Embedding:  // nn.Embedding's default N(0, 1), Box-Muller on two uniforms
#pragma omp parallel for schedule(static) if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) {
        const double u1 = 1.0 - uniform01(key, 2 * static_cast<uint64_t>(i));  // (0, 1]
        const double u2 = uniform01(key, 2 * static_cast<uint64_t>(i) + 1);
        out[i] = static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
      }
      break;
  }
  return v;
}

// ---- presets --------------------------------------------------------------------------------------

ModelPreset model_preset(const std::string& name) {
  ModelPreset p;
  p.name = name;
  if (name == "sd15") {
    p.unet = UNetConfig::sd15();
    p.vae = VAEConfig::sd15();
    p.text_encoder = ClipTextConfig::sd15();
    return p;
  }
  if (name == "tiny") {
    // SD 1.5's four levels, block types, 2 layers per block, conv projections and quirks, at a
    // width that runs a 64x64 image (8x8 latents) in milliseconds.
    p.unet = UNetConfig::sd15();
    p.unet.sample_size = 8;
    p.unet.block_out_channels = {32, 64, 64, 64};
    p.unet.norm_num_groups = 8;
    p.unet.attention_head_dim = {4, 4, 4, 4};  // 4 heads: head dims 8, 16, 16, 16
    p.unet.num_attention_heads = {4, 4, 4, 4};
    p.unet.cross_attention_dim = {32, 32, 32, 32};
    p.vae = VAEConfig::sd15();
    p.vae.block_out_channels = {16, 32, 32, 32};
    p.vae.norm_num_groups = 8;
    p.vae.sample_size = 64;
    p.text_encoder = ClipTextConfig::sd15();  // the real vocabulary, 77 positions, quick_gelu
    p.text_encoder.hidden_size = 32;
    p.text_encoder.intermediate_size = 64;
    p.text_encoder.projection_dim = 32;
    p.text_encoder.num_attention_heads = 4;
    p.text_encoder.num_hidden_layers = 5;
    return p;
  }
  throw InputError("unknown model preset '" + name + "' (tiny or sd15)");
}

InMemoryModel make_model_in_memory(const std::string& preset, uint64_t seed) {
  InMemoryModel m;
  m.configs = model_preset(preset);
  const std::string tag = "built-in " + preset + " model (seed " + std::to_string(seed) + ")";
  m.unet = memory_weights(tag + " unet", unet_parameters(m.configs.unet), seed);
  m.vae = memory_weights(tag + " vae", vae_parameters(m.configs.vae), seed);
  m.text_encoder = memory_weights(tag + " text_encoder", clip_text_parameters(m.configs.text_encoder), seed);
  return m;
}

}  // namespace sdmpi
