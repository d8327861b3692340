// AutoencoderKL: its decoder (latents → image, what txt2img runs), its encoder (declared, for
// img2img), and the host postprocess to uint8 RGB.
//
// The graph follows diffusers' AutoencoderKL._decode and vae.py Decoder (docs/reference/sd15-semantics.md §5):
//
//   z = post_quant_conv(z)                                 1x1, when use_post_quant_conv
//   h = decoder.conv_in(z)
//   mid: resnet → single-head spatial attention (GroupNorm eps 1e-6, q/k/v with bias) → resnet
//   up blocks (UpDecoderBlock2D): layers_per_block+1 resnets, nearest x2 + conv between levels
//   img = conv_out(SiLU(conv_norm_out(h)))                 all norms eps 1e-6, no time embedding
//
// Latent scaling is the caller's: the pipeline computes `latents / scaling_factor` as ONE float32
// division (binary_scalar(Div, latents, float(scaling_factor))), as diffusers' current pipelines
// do, then calls decode(). (Older pipelines multiplied by 1/scaling_factor; the bits differ.)
// The encoder and quant_conv are a separate class: the decoder's load ignores their tensors when
// a file has them and does not need them when it has not (fp16 folders, single-file checkpoints
// converted for decoding).
//
// Encoder (diffusers vae.py Encoder with double_z, then quant_conv), declared parameter by parameter:
//   conv_in → down blocks (DownEncoderBlock2D: layers_per_block resnets, a stride-2 conv with
//   diffusers' right/bottom padding between levels) → mid (resnet, attention, resnet) →
//   conv_out(SiLU(conv_norm_out(h))) with 2 * latent_channels outputs → quant_conv (1x1)
// Its output is the parameters of diffusers' DiagonalGaussianDistribution (mean, then log-variance
// along channels); sample_latent_distribution() draws from it as latent_dist.sample(generator) does.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/model_config.h"
#include "sdmpi/param_sink.h"

namespace sdmpi {

// The dtype the VAE computes in, as diffusers decides it: its SDXL pipelines upcast a VAE whose
// config sets force_upcast to float32 when it would run in float16 (the SDXL VAE's activations
// overflow fp16's range); bfloat16 has float32's range and stays; the SD 1.x/2.x pipelines never
// upcast. docs/reference/sdxl-semantics.md, "VAE in fp16".
DType vae_compute_dtype(const VAEConfig& config, bool sdxl_pipeline, DType compute);

class AutoencoderKLDecoder {
 public:
  // Declares post_quant_conv and decoder.* to `params` (see UNet2DConditionModel's constructor).
  AutoencoderKLDecoder(const VAEConfig& config, ParamSink& params);
  ~AutoencoderKLDecoder();
  AutoencoderKLDecoder(AutoencoderKLDecoder&&) noexcept;
  AutoencoderKLDecoder& operator=(AutoencoderKLDecoder&&) noexcept;

  // Builds the decoder from a weight source on `backend` and checks the names; encoder.* and
  // quant_conv.* tensors are allowed and ignored. `dtype`: what it computes in, the backend's
  // compute dtype when unset, F32 for an upcast VAE (vae_compute_dtype()).
  static AutoencoderKLDecoder load(const VAEConfig& config, const WeightSource& source,
                                   Backend& backend, std::optional<DType> dtype = std::nullopt);

  // z [B, h, w, latent_channels] NHWC, already divided by scaling_factor, any float dtype (cast to
  // the decoder's) → image [B, h*8, w*8, out_channels] in the decoder's dtype (roughly in [-1, 1];
  // for SD's 4 levels the factor is 8).
  Tensor decode(Backend& backend, const Tensor& z) const;

  const VAEConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// AutoencoderKL's encoder.* and quant_conv.
class AutoencoderKLEncoder {
 public:
  AutoencoderKLEncoder(const VAEConfig& config, ParamSink& params);
  ~AutoencoderKLEncoder();
  AutoencoderKLEncoder(AutoencoderKLEncoder&&) noexcept;
  AutoencoderKLEncoder& operator=(AutoencoderKLEncoder&&) noexcept;

  // Builds the encoder from a weight source on `backend` and checks the names; decoder.* and
  // post_quant_conv.* tensors are allowed and ignored. `dtype` as for the decoder.
  static AutoencoderKLEncoder load(const VAEConfig& config, const WeightSource& source,
                                   Backend& backend, std::optional<DType> dtype = std::nullopt);

  // image [B, H, W, in_channels] NHWC in [-1, 1] (diffusers' VaeImageProcessor.preprocess), cast to the encoder's dtype →
  // moments [B, H/f, W/f, 2 * latent_channels] (f = 2^(levels-1), 8 for SD): quant_conv(encoder(x)),
  // what AutoencoderKL._encode returns. Channels [0, latent) are the mean, the rest the log-variance.
  Tensor encode(Backend& backend, const Tensor& image) const;

  const VAEConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every parameter of the full AutoencoderKL (encoder, quant_conv, post_quant_conv, decoder): the
// file diffusers expects, as the two classes above declare it.
std::vector<ParamSpec> vae_parameters(const VAEConfig& config);

// DiagonalGaussianDistribution(moments).sample(generator) on host float32, NHWC: with mean and
// logvar the two channel halves of `moments` [.., 2C], logvar = clamp(logvar, -30, 20),
// std = exp(0.5 * logvar), sample = mean + std * noise, each op rounded to float32 as torch rounds
// it (exp correctly rounded; torch's vectorised expf may differ in the last bit). `noise` [.., C] is
// the generator's randn of the mean's shape, already in NHWC order.
std::vector<float> sample_latent_distribution(const std::vector<float>& moments, const std::vector<float>& noise,
                                              int latent_channels);

// diffusers' VaeImageProcessor.postprocess(output_type="pil") on host float32 values: per value
// v, x = clamp(v * 0.5 + 0.5, 0, 1) (torch float32), then numpy's (x * 255).round().astype(uint8)
// (float32 product, round half to even). NaN becomes 0. Layout is kept (NHWC in, NHWC out).
std::vector<uint8_t> image_to_uint8(const std::vector<float>& image);
uint8_t pixel_to_uint8(float v);

}  // namespace sdmpi
