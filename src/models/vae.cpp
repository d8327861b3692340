// AutoencoderKL (see include/sdmpi/vae.h): construction mirrors diffusers' Encoder / Decoder and
// UNetMidBlock2D / DownEncoderBlock2D / UpDecoderBlock2D, so names and shapes come out the same;
// eps is 1e-6 throughout, hard-coded in diffusers' Encoder and Decoder whatever the config says.
#include "sdmpi/vae.h"

#include <algorithm>
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

struct DownEncoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::optional<Downsample2D> downsampler;
};

// UNetMidBlock2D(attention_head_dim = channels): resnet, one head over all channels, resnet.
struct VaeMidBlock {
  std::vector<ResnetBlock2D> resnets;
  std::optional<SpatialSelfAttention> attention;

  VaeMidBlock(ParamSink& w, const std::string& name, int channels, int groups, bool add_attention) {
    resnets.emplace_back(w, name + ".resnets.0", channels, channels, 0, groups, kVaeEps);
    if (add_attention)
      attention.emplace(w, name + ".attentions.0", channels, /*heads=*/1, groups, kVaeEps);
    resnets.emplace_back(w, name + ".resnets.1", channels, channels, 0, groups, kVaeEps);
  }
  Tensor operator()(Backend& b, Tensor h) const {
    h = resnets[0](b, h, nullptr);
    if (attention) h = (*attention)(b, h);
    return resnets[1](b, h, nullptr);
  }
};

}  // namespace

DType vae_compute_dtype(const VAEConfig& config, bool sdxl_pipeline, DType compute) {
  return sdxl_pipeline && config.force_upcast && compute == DType::F16 ? DType::F32 : compute;
}

struct AutoencoderKLDecoder::Impl {
  VAEConfig config;
  std::optional<Conv2d> post_quant_conv;
  Conv2d conv_in;
  VaeMidBlock mid_block;
  std::vector<UpDecoderBlock2D> up_blocks;
  GroupNorm conv_norm_out;
  Conv2d conv_out;

  Impl(const VAEConfig& c, ParamSink& w)
      : config(c),
        conv_in(w, "decoder.conv_in", c.latent_channels, c.block_out_channels.back(), 3),
        mid_block(w, "decoder.mid_block", c.block_out_channels.back(), c.norm_num_groups,
                  c.mid_block_add_attention),
        conv_norm_out(w, "decoder.conv_norm_out", c.norm_num_groups, c.block_out_channels[0],
                      kVaeEps),
        conv_out(w, "decoder.conv_out", c.block_out_channels[0], c.out_channels, 3) {
    const int n = c.num_blocks();
    const int groups = c.norm_num_groups;
    if (c.use_post_quant_conv)
      post_quant_conv.emplace(w, "post_quant_conv", c.latent_channels, c.latent_channels, 1);

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

    // The encoder is AutoencoderKLEncoder's; txt2img never encodes.
    w.ignore_prefix("encoder.");
    w.ignore_prefix("quant_conv.");
  }
};

AutoencoderKLDecoder::AutoencoderKLDecoder(const VAEConfig& config, ParamSink& weights) {
  config.validate("vae config");
  impl_ = std::make_unique<Impl>(config, weights);
}
AutoencoderKLDecoder::~AutoencoderKLDecoder() = default;
AutoencoderKLDecoder::AutoencoderKLDecoder(AutoencoderKLDecoder&&) noexcept = default;
AutoencoderKLDecoder& AutoencoderKLDecoder::operator=(AutoencoderKLDecoder&&) noexcept = default;

const VAEConfig& AutoencoderKLDecoder::config() const { return impl_->config; }

AutoencoderKLDecoder AutoencoderKLDecoder::load(const VAEConfig& config, const WeightSource& source,
                                                 Backend& backend, std::optional<DType> dtype) {
  LoadingSink sink(source, backend, "vae", dtype);
  AutoencoderKLDecoder model(config, sink);
  sink.finish();
  return model;
}

// ---- encoder --------------------------------------------------------------------------------------

struct AutoencoderKLEncoder::Impl {
  VAEConfig config;
  Conv2d conv_in;
  std::vector<DownEncoderBlock2D> down_blocks;
  std::optional<VaeMidBlock> mid_block;
  GroupNorm conv_norm_out;
  Conv2d conv_out;
  std::optional<Conv2d> quant_conv;

  Impl(const VAEConfig& c, ParamSink& w)
      : config(c), conv_in(w, "encoder.conv_in", c.in_channels, c.block_out_channels[0], 3) {
    const int n = c.num_blocks();
    const int groups = c.norm_num_groups;
    int out_ch = c.block_out_channels[0];
    for (int i = 0; i < n; ++i) {
      const std::string name = "encoder.down_blocks." + std::to_string(i);
      const int in_ch = out_ch;
      out_ch = c.block_out_channels[i];
      DownEncoderBlock2D& block = down_blocks.emplace_back();
      for (int l = 0; l < c.layers_per_block; ++l)
        block.resnets.emplace_back(w, name + ".resnets." + std::to_string(l),
                                   l == 0 ? in_ch : out_ch, out_ch, 0, groups, kVaeEps);
      // diffusers' Encoder: Downsample2D(padding=0), i.e. pad right/bottom by one, then the conv.
      if (i < n - 1) block.downsampler.emplace(w, name + ".downsamplers.0", out_ch, /*padding=*/0);
    }
    const int top = c.block_out_channels.back();
    mid_block.emplace(w, "encoder.mid_block", top, groups, c.mid_block_add_attention);
    conv_norm_out = GroupNorm(w, "encoder.conv_norm_out", groups, top, kVaeEps);
    // double_z: mean and log-variance of the latent distribution.
    conv_out = Conv2d(w, "encoder.conv_out", top, 2 * c.latent_channels, 3);
    if (c.use_quant_conv)
      quant_conv.emplace(w, "quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
    w.ignore_prefix("decoder.");
    w.ignore_prefix("post_quant_conv.");
  }
};

AutoencoderKLEncoder::AutoencoderKLEncoder(const VAEConfig& config, ParamSink& params) {
  config.validate("vae config");
  impl_ = std::make_unique<Impl>(config, params);
}
AutoencoderKLEncoder::~AutoencoderKLEncoder() = default;
AutoencoderKLEncoder::AutoencoderKLEncoder(AutoencoderKLEncoder&&) noexcept = default;
AutoencoderKLEncoder& AutoencoderKLEncoder::operator=(AutoencoderKLEncoder&&) noexcept = default;

const VAEConfig& AutoencoderKLEncoder::config() const { return impl_->config; }

AutoencoderKLEncoder AutoencoderKLEncoder::load(const VAEConfig& config, const WeightSource& source,
                                                 Backend& backend, std::optional<DType> dtype) {
  LoadingSink sink(source, backend, "vae", dtype);
  AutoencoderKLEncoder model(config, sink);
  sink.finish();
  return model;
}

Tensor AutoencoderKLEncoder::encode(Backend& b, const Tensor& image) const {
  const Impl& m = *impl_;
  if (image.rank() != 4 || image.dim(3) != m.config.in_channels)
    throw Error("vae encoder: image must be [B, H, W, " + std::to_string(m.config.in_channels) + "], got " +
                shape_str(image.shape()));
  Tensor h = m.conv_in(b, b.cast(image, m.conv_in.weight.dtype()));  // as decode(): the weights' dtype
  for (const DownEncoderBlock2D& block : m.down_blocks) {
    for (const ResnetBlock2D& resnet : block.resnets) h = resnet(b, h, nullptr);
    if (block.downsampler) h = (*block.downsampler)(b, h);
  }
  h = (*m.mid_block)(b, h);
  h = m.conv_out(b, m.conv_norm_out(b, h, /*silu=*/true));
  return m.quant_conv ? (*m.quant_conv)(b, h) : h;
}

std::vector<float> sample_latent_distribution(const std::vector<float>& moments, const std::vector<float>& noise,
                                              int latent_channels) {
  const size_t c = static_cast<size_t>(latent_channels);
  SDMPI_CHECK(c > 0 && moments.size() % (2 * c) == 0 && noise.size() * 2 == moments.size(),
              "latent distribution: " + std::to_string(moments.size()) + " moments and " +
                  std::to_string(noise.size()) + " noise values for " + std::to_string(c) + " channels");
  std::vector<float> out(noise.size());
  for (size_t pixel = 0; pixel < noise.size() / c; ++pixel) {
    const float* mean = moments.data() + pixel * 2 * c;
    const float* logvar = mean + c;
    for (size_t k = 0; k < c; ++k) {
      const float lv = std::min(std::max(logvar[k], -30.0f), 20.0f);
      const float half = 0.5f * lv;
      const float std_dev = static_cast<float>(std::exp(static_cast<double>(half)));
      const float scaled = std_dev * noise[pixel * c + k];
      out[pixel * c + k] = mean[k] + scaled;
    }
  }
  return out;
}

std::vector<ParamSpec> vae_parameters(const VAEConfig& config) {
  // diffusers' AutoencoderKL registers encoder, decoder, quant_conv, post_quant_conv; the order
  // matters to no one (files are sorted by name), the set is what diffusers loads.
  ListingSink sink;
  AutoencoderKLEncoder encoder(config, sink);
  AutoencoderKLDecoder decoder(config, sink);
  return sink.take();
}

Tensor AutoencoderKLDecoder::decode(Backend& b, const Tensor& z) const {
  const Impl& m = *impl_;
  if (z.rank() != 4 || z.dim(3) != m.config.latent_channels)
    throw Error("vae: latents must be [B, h, w, " + std::to_string(m.config.latent_channels) +
                "], got " + shape_str(z.shape()));
  // In the dtype the weights were loaded in (the compute dtype, or float32 when upcast).
  const Tensor zc = b.cast(z, m.conv_in.weight.dtype());
  Tensor h = m.post_quant_conv ? (*m.post_quant_conv)(b, zc) : zc;
  h = m.conv_in(b, h);
  h = m.mid_block(b, h);
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
