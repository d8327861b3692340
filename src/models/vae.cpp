// AutoencoderKL decoder (see include/sdmpi/vae.h): construction mirrors diffusers' Decoder and
// UNetMidBlock2D / UpDecoderBlock2D, so names and shapes come out the same; eps is 1e-6 throughout,
// hard-coded in diffusers' Decoder whatever the config says.
#include "sdmpi/vae.h"

#include <cmath>
#include <optional>

#include "models/blocks.h"
#include "sdmpi/error.h"

namespace sdmpi {

using namespace blocks;

namespace {

constexpr float kVaeEps = 1e-6f;

struct UpDecoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Upsample2D> upsampler;
};

}  // namespace

struct AutoencoderKLDecoder::Impl {
  VAEConfig config;
  std::optional<Conv2d> post_quant_conv;
  Conv2d conv_in;
  std::vector<ResnetBlock2D> mid_resnets;
  std::optional<SpatialSelfAttention> mid_attention;
  std::vector<UpDecoderBlock2D> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  Impl(const VAEConfig& c, WeightLoader& w)
      : config(c),
        conv_in(w, "decoder.conv_in", c.latent_channels, c.block_out_channels.back(), 3),
        conv_norm_out(w, "decoder.conv_norm_out", c.norm_num_groups, c.block_out_channels[0],
                      kVaeEps),
        conv_out(w, "decoder.conv_out", c.block_out_channels[0], c.out_channels, 3) {
    const int n = c.num_blocks();
    const int groups = c.norm_num_groups;
    if (c.use_post_quant_conv)
      post_quant_conv.emplace(w, "post_quant_conv", c.latent_channels, c.latent_channels, 1);

    // mid: UNetMidBlock2D(attention_head_dim = channels) → one head over all channels
    const int mid_ch = c.block_out_channels.back();
    mid_resnets.emplace_back(w, "decoder.mid_block.resnets.0", mid_ch, mid_ch, 0, groups, kVaeEps);
    if (c.mid_block_add_attention)
      mid_attention.emplace(w, "decoder.mid_block.attentions.0", mid_ch, /*heads=*/1, groups,
                            kVaeEps);
    mid_resnets.emplace_back(w, "decoder.mid_block.resnets.1", mid_ch, mid_ch, 0, groups, kVaeEps);

    // up
    int out_ch = c.block_out_channels[n - 1];
    for (int i = 0; i < n; ++i) {
      const std::string name = "decoder.up_blocks." + std::to_string(i);
      const int prev_ch = out_ch;
      out_ch = c.block_out_channels[n - 1 - i];
      UpDecoderBlock2D& block = up_blocks.emplace_back();
      for (int l = 0; l < c.layers_per_block + 1; ++l)
        block.resnets.emplace_back(w, name + ".resnets." + std::to_string(l),
                                   l == 0 ? prev_ch : out_ch, out_ch, 0, groups, kVaeEps);
      if (i < n - 1) block.upsampler.emplace(w, name + ".upsamplers.0", out_ch);
    }

    // txt2img never encodes.
    w.ignore_prefix("encoder.");
    w.ignore_prefix("quant_conv.");
  }
};

AutoencoderKLDecoder::AutoencoderKLDecoder(const VAEConfig& config, WeightLoader& weights) {
  config.validate("vae config");
  impl_ = std::make_unique<Impl>(config, weights);
}
AutoencoderKLDecoder::~AutoencoderKLDecoder() = default;
AutoencoderKLDecoder::AutoencoderKLDecoder(AutoencoderKLDecoder&&) noexcept = default;
AutoencoderKLDecoder& AutoencoderKLDecoder::operator=(AutoencoderKLDecoder&&) noexcept = default;

const VAEConfig& AutoencoderKLDecoder::config() const { return impl_->config; }

AutoencoderKLDecoder AutoencoderKLDecoder::load(const VAEConfig& config, const WeightSource& source,
                                                 Backend& backend) {
  WeightLoader loader(source, backend, "vae");
  AutoencoderKLDecoder model(config, loader);
  loader.finish();
  return model;
}

Tensor AutoencoderKLDecoder::decode(Backend& b, const Tensor& z) const {
  const Impl& m = *impl_;
  if (z.rank() != 4 || z.dim(3) != m.config.latent_channels)
    throw Error("vae: latents must be [B, h, w, " + std::to_string(m.config.latent_channels) +
                "], got " + shape_str(z.shape()));
  Tensor h = m.post_quant_conv ? (*m.post_quant_conv)(b, z) : z;
  h = m.conv_in(b, h);
  h = m.mid_resnets[0](b, h, nullptr);
  if (m.mid_attention) h = (*m.mid_attention)(b, h);
  h = m.mid_resnets[1](b, h, nullptr);
  for (const UpDecoderBlock2D& block : m.up_blocks) {
    for (const ResnetBlock2D& resnet : block.resnets) h = resnet(b, h, nullptr);
    if (block.upsampler) h = (*block.upsampler)(b, h);
  }
  return m.conv_out(b, m.conv_norm_out(b, h, /*silu=*/true));
}

uint8_t pixel_to_uint8(float v) {
  // torch: (v * 0.5 + 0.5).clamp(0, 1); numpy: (x * 255).round() — each op rounded to float32
  // (this file is built without fp contraction), round() is half-to-even.
  float x = v * 0.5f;
  x = x + 0.5f;
  if (std::isnan(x)) return 0;
  x = x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
  const float scaled = x * 255.0f;
  return static_cast<uint8_t>(std::nearbyint(scaled));  // default rounding mode: to nearest even
}

std::vector<uint8_t> image_to_uint8(const std::vector<float>& image) {
  std::vector<uint8_t> out(image.size());
  for (size_t i = 0; i < image.size(); ++i) out[i] = pixel_to_uint8(image[i]);
  return out;
}

}  // namespace sdmpi
