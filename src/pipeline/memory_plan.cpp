// The resource plan (see memory_plan.h): parameter counts from the networks' declarations,
// activation sizes from the image size, batch and the configs' channel widths.
#include "pipeline/memory_plan.h"

#include <optional>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <utility>

#include "sdmpi/clip_text.h"
#include "sdmpi/param_sink.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

namespace sdmpi {

namespace {

// Live tensors of the widest UNet level besides the skips: a transformer block holds its input,
// the norm, q/k/v and the GEGLU projection (8 channels per channel) and its output (4) at once.
constexpr int64_t kUNetWorkingTensors = 16;
// Live tensors of the VAE decoder's widest point: a resnet's input, norm, conv output and
// shortcut, and an upsampler's input and output.
constexpr int64_t kVAEWorkingTensors = 6;
// Code, libraries, the tokenizer, BLAS and thread buffers on the CPU; cuBLASLt and im2col
// workspaces, graph pools and the pools' chunk rounding on a GPU.
constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kCpuRuntimeBytes = 160 * kMiB;
constexpr int64_t kGpuRuntimeBytes = 768 * kMiB;

int64_t half_up(int64_t n) { return (n + 1) / 2; }  // a stride-2, pad-1, 3x3 convolution's output side

// The VAE parameters txt2img loads: the decoder and post_quant_conv (not encoder.*, quant_conv.*).
int64_t vae_decoder_parameters(const VAEConfig& vae) {
  int64_t n = 0;
  for (const ParamSpec& p : vae_parameters(vae))
    if (p.name.rfind("encoder.", 0) != 0 && p.name.rfind("quant_conv.", 0) != 0) n += shape_numel(p.shape);
  return n;
}

int64_t unet_activations(const UNetConfig& unet, int64_t batch, int64_t latent_h, int64_t latent_w) {
  int64_t skips = batch * latent_h * latent_w * unet.block_out_channels[0];  // conv_in's output
  int64_t widest = 0, h = latent_h, w = latent_w;
  for (int l = 0; l < unet.num_blocks(); ++l) {
    const int64_t level = batch * h * w * unet.block_out_channels[static_cast<size_t>(l)];
    widest = std::max(widest, level);
    skips += (unet.layers_per_block[static_cast<size_t>(l)] + 1) * level;  // resnet outputs + the downsampler's
    h = half_up(h);
    w = half_up(w);
  }
  return skips + kUNetWorkingTensors * widest;
}

// The VAE parameters img2img adds: the encoder and quant_conv.
int64_t vae_encoder_parameters(const VAEConfig& vae) {
  int64_t n = 0;
  for (const ParamSpec& p : vae_parameters(vae))
    if (p.name.rfind("encoder.", 0) == 0 || p.name.rfind("quant_conv.", 0) == 0) n += shape_numel(p.shape);
  return n;
}

// One image through the encoder: each down block at its side with the wider of its input's and its
// own channels (the first at full resolution), halving the side after every block but the last.
int64_t vae_encoder_activations(const VAEConfig& vae, int64_t height, int64_t width) {
  int64_t h = height, w = width, in_channels = vae.block_out_channels.front(), widest = h * w * in_channels;
  for (size_t i = 0; i < vae.block_out_channels.size(); ++i) {
    widest = std::max(widest, h * w * std::max<int64_t>(in_channels, vae.block_out_channels[i]));
    if (i + 1 < vae.block_out_channels.size()) {
      h = half_up(h);
      w = half_up(w);
    }
    in_channels = vae.block_out_channels[i];
  }
  return kVAEWorkingTensors * widest;
}

// One image: conv_in and the mid block at the latent size with the top channels, then each up
// block at twice the previous block's side, with its input's channels until its first resnet
// narrows them.
int64_t vae_decoder_activations(const VAEConfig& vae, int64_t latent_h, int64_t latent_w) {
  std::vector<int> channels(vae.block_out_channels.rbegin(), vae.block_out_channels.rend());
  int64_t h = latent_h, w = latent_w, in_channels = channels.front(), widest = h * w * in_channels;
  for (size_t i = 0; i < channels.size(); ++i) {
    widest = std::max(widest, h * w * std::max<int64_t>(in_channels, channels[i]));
    if (i + 1 < channels.size()) {
      h *= 2;
      w *= 2;
      widest = std::max(widest, h * w * channels[i]);  // the upsampler's output
    }
    in_channels = channels[i];
  }
  return kVAEWorkingTensors * widest;
}

}  // namespace

MemoryNeed estimate_memory(const UNetConfig& unet, const VAEConfig& vae, const ClipTextConfig& text,
                           const MemoryRequest& r, const ClipTextConfig* text_2) {
  const int64_t bytes = static_cast<int64_t>(dtype_size(r.dtype));
  const int64_t scale = vae.scale_factor();
  const int64_t latent_h = std::max<int64_t>(1, r.height / scale), latent_w = std::max<int64_t>(1, r.width / scale);
  const int64_t unet_batch = static_cast<int64_t>(std::max(1, r.batch)) * (r.cfg ? 2 : 1);

  // An SDXL VAE under fp16 computes in float32 (vae_compute_dtype): its weights and activations
  // count at 4 bytes.
  const int64_t vae_bytes = static_cast<int64_t>(dtype_size(vae_compute_dtype(vae, /*sdxl_pipeline=*/text_2 != nullptr, r.dtype)));

  MemoryNeed need;
  const int64_t parameters = count_parameters(unet_parameters(unet)) + count_parameters(clip_text_parameters(text)) +
                             (text_2 ? count_parameters(clip_text_parameters(*text_2)) : 0);
  need.weight_bytes = parameters * bytes + vae_decoder_parameters(vae) * vae_bytes;

  int64_t elements = unet_activations(unet, unet_batch, latent_h, latent_w);
  const int64_t vae_elements = vae_decoder_activations(vae, latent_h, latent_w);
  // The text encoder: a few [tokens, max(intermediate, 3 * hidden)] tensors per prompt.
  const ClipTextConfig& widest_text = text_2 && text_2->intermediate_size > text.intermediate_size ? *text_2 : text;
  elements += 4 * unet_batch * widest_text.max_position_embeddings *
              std::max(widest_text.intermediate_size, 3 * widest_text.hidden_size);
  const int64_t pixels = static_cast<int64_t>(r.width) * r.height * 3;
  // Decoded images wait in the VAE's dtype, then as host floats and bytes, for the whole batch.
  need.activation_bytes = elements * bytes + vae_elements * vae_bytes + pixels * std::max(1, r.batch) * (vae_bytes + 4 + 1) +
                          (r.gpu ? kGpuRuntimeBytes : kCpuRuntimeBytes);
  if (r.init_images) {
    // The encoder in the VAE's dtype, and one init image at a time: its pixels as host floats and
    // on the device, then the encoder's working set.
    need.weight_bytes += vae_encoder_parameters(vae) * vae_bytes;
    need.activation_bytes += vae_encoder_activations(vae, r.height, r.width) * vae_bytes + pixels * (4 + vae_bytes);
  }
  need.weight_bytes += r.lora_bytes;
  return need;
}

MemoryNeed estimate_memory(const ModelSource& model, const MemoryRequest& request) {
  const std::string& spec = model.spec();
  std::optional<ClipTextConfig> text_2;
  if (model.has("text_encoder_2")) {
    text_2 = ClipTextConfig::from_json(model.config("text_encoder_2"), spec + " text_encoder_2/config.json");
    text_2->with_projection = true;  // as the SDXL pipeline loads it
  }
  if (text_2 && !model.has("text_encoder"))  // an SDXL refiner: text_encoder_2 is its one text encoder
    return estimate_memory(UNetConfig::from_json(model.config("unet"), spec + " unet/config.json"),
                           VAEConfig::from_json(model.config("vae"), spec + " vae/config.json"), *text_2, request);
  return estimate_memory(UNetConfig::from_json(model.config("unet"), spec + " unet/config.json"),
                         VAEConfig::from_json(model.config("vae"), spec + " vae/config.json"),
                         ClipTextConfig::from_json(model.config("text_encoder"), spec + " text_encoder/config.json"),
                         request, text_2 ? &*text_2 : nullptr);
}

int64_t lora_merge_bytes(const std::vector<const LoraFile*>& set) {
  std::set<std::pair<std::string, std::string>> touched;
  int64_t bytes = 0;
  for (const LoraFile* file : set)
    for (const LoraLayer& layer : file->layers) {
      bytes += (shape_numel(layer.down_shape) + shape_numel(layer.up_shape)) * 4;
      if (!touched.emplace(layer.component, layer.target).second) continue;
      // The target's elements: up's rows times down's elements per rank (read_lora checked the fit).
      bytes += layer.up_shape.at(0) * (shape_numel(layer.down_shape) / std::max<int64_t>(1, layer.rank())) * 4;
    }
  return bytes;
}

std::string format_gib(int64_t bytes) {
  const double gib = static_cast<double>(bytes) / static_cast<double>(int64_t{1} << 30);
  char text[64];
  std::snprintf(text, sizeof text, gib < 10 ? "%.2f GiB" : "%.0f GiB", gib);
  return text;
}

std::string memory_shortfall(const std::string& request, const MemoryNeed& need, int64_t available,
                             const std::string& where) {
  if (available < 0 || need.total() <= available) return "";
  return request + " needs about " + format_gib(need.total()) + " per rank (weights " + format_gib(need.weight_bytes) +
         " + activations " + format_gib(need.activation_bytes) + "); this rank has " + format_gib(available) +
         (where.empty() ? "" : " " + where);
}

}  // namespace sdmpi
