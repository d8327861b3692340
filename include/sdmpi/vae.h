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
// Its forward pass waits for an asymmetric pad op in the Backend (see blocks::Downsample2D).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/model_config.h"
#include "sdmpi/param_sink.h"

namespace sdmpi {

class AutoencoderKLDecoder {
 public:
  // Declares post_quant_conv and decoder.* to `params` (see UNet2DConditionModel's constructor).
  AutoencoderKLDecoder(const VAEConfig& config, ParamSink& params);
  ~AutoencoderKLDecoder();
  AutoencoderKLDecoder(AutoencoderKLDecoder&&) noexcept;
  AutoencoderKLDecoder& operator=(AutoencoderKLDecoder&&) noexcept;

  // Builds the decoder from a weight source on `backend` and checks the names; encoder.* and
  // quant_conv.* tensors are allowed and ignored.
  static AutoencoderKLDecoder load(const VAEConfig& config, const WeightSource& source,
                                   Backend& backend);

  // z [B, h, w, latent_channels] NHWC, already divided by scaling_factor →
  // image [B, h*8, w*8, out_channels] (roughly in [-1, 1]; for SD's 4 levels the factor is 8).
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
  // post_quant_conv.* tensors are allowed and ignored.
  static AutoencoderKLEncoder load(const VAEConfig& config, const WeightSource& source,
                                   Backend& backend);

  const VAEConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every parameter of the full AutoencoderKL (encoder, quant_conv, post_quant_conv, decoder): the
// file diffusers expects, as the two classes above declare it.
std::vector<ParamSpec> vae_parameters(const VAEConfig& config);

// diffusers' VaeImageProcessor.postprocess(output_type="pil") on host float32 values: per value
// v, x = clamp(v * 0.5 + 0.5, 0, 1) (torch float32), then numpy's (x * 255).round().astype(uint8)
// (float32 product, round half to even). NaN becomes 0. Layout is kept (NHWC in, NHWC out).
std::vector<uint8_t> image_to_uint8(const std::vector<float>& image);
uint8_t pixel_to_uint8(float v);

}  // namespace sdmpi
