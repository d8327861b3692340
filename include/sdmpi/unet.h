// UNet2DConditionModel: the noise-prediction network of Stable Diffusion 1.x.
//
// One model definition for every backend: the constructor declares the parameters (diffusers
// names, PyTorch shapes) to a ParamSink, the forward pass calls ops of sdmpi::Backend only. The graph follows diffusers'
// unet_2d_condition.py (docs/reference/sd15-semantics.md §4):
//
//   emb  = time_embedding(timestep_embedding(t))      sinusoidal part on the host, float32
//                                                     (time_proj; forward_embedded takes it ready)
//   x    = conv_in(sample); skips = [x]
//   down blocks (CrossAttnDownBlock2D / DownBlock2D): resnet [→ transformer] per layer, each output
//        a skip; a stride-2 conv between levels, its output a skip too
//   mid  UNetMidBlock2DCrossAttn: resnet → transformer → resnet
//   up blocks (UpBlock2D / CrossAttnUpBlock2D): per resnet, concat [x, skips.pop()] on channels,
//        resnet [→ transformer]; nearest x2 (or to the next skip's size) + conv between levels
//   out  = conv_out(SiLU(conv_norm_out(x)))
//
// Any size works: when a latent side is not a multiple of 2^(levels-1), each upsampler resizes
// to the spatial size of the skip it meets next, as diffusers' forward_upsample_size does (§4.7).
#pragma once

#include <memory>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/model_config.h"
#include "sdmpi/param_sink.h"

namespace sdmpi {

// SDXL's added conditioning ("text_time"), per batch item: the pooled text embedding [B, pooled]
// (text_encoder_2's text_embeds) and the six micro-conditioning values (add_time_ids: original
// height, width, crop top, left, target height, width), B * 6 floats.
struct AddedConditioning {
  Tensor text_embeds;
  std::vector<float> time_ids;
};

class UNet2DConditionModel {
 public:
  // Declares every parameter the config implies to `params`: a LoadingSink fills the model (its
  // problems surface at finish(), which the caller runs; load() below does it all), a ListingSink
  // lists them (unet_parameters()).
  UNet2DConditionModel(const UNetConfig& config, ParamSink& params);
  ~UNet2DConditionModel();
  UNet2DConditionModel(UNet2DConditionModel&&) noexcept;
  UNet2DConditionModel& operator=(UNet2DConditionModel&&) noexcept;

  // Builds the model from a weight source on `backend` and checks the names (missing, mis-shaped
  // and unexpected tensors are one InputError naming them).
  static UNet2DConditionModel load(const UNetConfig& config, const WeightSource& source,
                                   Backend& backend);

  // sample [B, h, w, in_channels] (NHWC latents, already scaled by the scheduler),
  // timesteps: one per batch item (integer or fractional steps),
  // encoder_hidden_states [B, N, cross_attention_dim] (N = 77 for CLIP).
  // Returns the prediction [B, h, w, out_channels].
  // `added`: SDXL's added conditioning, required exactly when the config has "text_time";
  // `timestep_cond`: [B, time_cond_proj_dim] guidance_scale_embedding(), required exactly when the
  // config has time_cond_proj_dim (LCM UNets).
  Tensor forward(Backend& backend, const Tensor& sample, const std::vector<float>& timesteps,
                 const Tensor& encoder_hidden_states, const AddedConditioning* added = nullptr,
                 const Tensor* timestep_cond = nullptr) const;
  // diffusers' get_aug_embed for "text_time": add_embedding(cat[text_embeds, add_time_proj(time_ids)
  // as [B, 6 * addition_time_embed_dim]]), [B, time_embed_dim]; it is added to the time embedding.
  // It does not depend on the step, so the pipeline computes it once per batch and passes it to
  // forward_embedded as `aug_emb`.
  Tensor added_embedding(Backend& backend, const AddedConditioning& added) const;

  // forward() split in two for CUDA graphs, which replay device work only. time_proj() is the
  // host part: the sinusoidal projection of `timesteps` (timestep_embedding() below, float32 on
  // the host) uploaded as [B, block_out_channels[0]] in the compute dtype. forward_embedded() is
  // everything after it, device ops only, with that projection `t_proj` as an input tensor.
  // forward(b, x, t, ctx) is exactly forward_embedded(b, x, time_proj(b, t), ctx).
  Tensor time_proj(Backend& backend, const std::vector<float>& timesteps) const;
  Tensor forward_embedded(Backend& backend, const Tensor& sample, const Tensor& t_proj,
                          const Tensor& encoder_hidden_states, const Tensor* aug_emb = nullptr,
                          const Tensor* timestep_cond = nullptr) const;

  // The text context enters the UNet only through the cross-attentions' to_k and to_v, which do
  // not depend on the step: cross_attention_kv() computes every attn2's K and V of the context
  // ([B, N, heads * dim_head] each; down, mid, up blocks in order, K then V per transformer block),
  // and the overload below takes them instead of the context. The pipeline computes them once per
  // batch; forward_embedded(b, x, t, ctx) is exactly forward_embedded(b, x, t,
  // cross_attention_kv(b, ctx)), so the bits are the same.
  std::vector<Tensor> cross_attention_kv(Backend& backend, const Tensor& encoder_hidden_states) const;
  Tensor forward_embedded(Backend& backend, const Tensor& sample, const Tensor& t_proj,
                          const std::vector<Tensor>& cross_kv, const Tensor* aug_emb = nullptr,
                          const Tensor* timestep_cond = nullptr) const;

  const UNetConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Every parameter of the UNet the config implies, in declaration order (the model constructed on
// a ListingSink): make-model writes them, inspect counts them.
std::vector<ParamSpec> unet_parameters(const UNetConfig& config);

// diffusers' get_timestep_embedding(t, dim, flip_sin_to_cos, downscale_freq_shift) in float32 on
// the host, op for op as torch runs it: exponent = fl(-ln(10000) * k) / (dim/2 - shift),
// freq = exp(exponent), arg = t * freq, [sin(arg), cos(arg)] (or [cos, sin] when flipped), a zero
// column appended for odd dim. exp/sin/cos are correctly rounded here; torch's vectorised SLEEF
// versions differ from that by at most 1 ulp in a few per cent of the values. Returns [B, dim]
// row-major.
std::vector<float> timestep_embedding(const std::vector<float>& timesteps, int dim,
                                      bool flip_sin_to_cos, double freq_shift);
// diffusers' get_guidance_scale_embedding(w, dim) for LCM UNets (`timestep_cond`, [B, dim]
// row-major, float32 on the host): w * 1000, then [sin, cos] of it times exp(-k * ln(10000) /
// (dim/2 - 1)), a zero column for odd dim. The pipeline passes w = guidance_scale - 1.
std::vector<float> guidance_scale_embedding(const std::vector<float>& w, int dim);

}  // namespace sdmpi
