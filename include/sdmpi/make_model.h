// make-model: Stable Diffusion models with random weights, in diffusers' folder layout or in memory.
//
// `sd_mpi make-model --preset tiny|sd15|... --seed S OUT_DIR` writes a folder that both sd_mpi and
// diffusers' StableDiffusionPipeline (StableDiffusionXLPipeline for the SDXL presets, which add
// text_encoder_2/ and tokenizer_2/) .from_pretrained load with no missing or unexpected tensors:
//
//   model_index.json                      StableDiffusionPipeline, no safety checker (written last)
//   unet/config.json + diffusion_pytorch_model.safetensors
//   vae/config.json + diffusion_pytorch_model.safetensors        (encoder included)
//   text_encoder/config.json + model.safetensors                 (text_model.* names, as SD 1.x)
//   tokenizer/                            the built-in SD 1.x CLIP tokenizer
//   scheduler/scheduler_config.json       SD 1.5's PNDM config
//
// Presets are the rows of the one table of SD configs (src/io/sd_configs.cpp): "tiny" is the full
// four-level SD 1.5 layout at small width (a 64x64 image in well under a second on a CPU), with the
// real 49,408-token vocabulary; weights F32. "sd15" has SD 1.5's exact shapes (UNet 859,520,964
// parameters, CLIP ViT-L/14 text tower 123,060,480); weights are written as F16 (about 2.1 GB
// instead of 4.3 GB).
//
// Which tensors exist, with which shapes, is the networks' own declaration (unet_parameters(),
// vae_parameters(), clip_text_parameters(): each model constructed on a ListingSink).
// Values are deterministic in (seed, parameter name), independent of order and thread count:
// value i of a tensor comes from splitmix64 at counter i of a stream keyed by the seed and the
// name's FNV-1a hash. Scales follow PyTorch's default initialisation so activations stay O(1) and
// fp16 does not overflow at SD 1.5 size: Linear/Conv weights and biases U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)), norm scales 1 + U(-0.2, 0.2), norm shifts U(-0.1, 0.1), embeddings N(0, 1). No
// layer is zero (diffusers zero-initialises some output layers in its tests, which would hide
// wiring mistakes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <optional>

#include "sdmpi/clip_text.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/model_config.h"
#include "sdmpi/param_sink.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"
#include "sdmpi/weights.h"

namespace sdmpi {

// The deterministic values of one parameter (float32, row-major in the PyTorch shape).
std::vector<float> random_parameter(const ParamSpec& param, uint64_t seed);

struct ModelPreset {
  std::string name;
  UNetConfig unet;
  VAEConfig vae;
  ClipTextConfig text_encoder;                   // unused when !has_text_encoder
  bool has_text_encoder = true;                  // false: an SDXL refiner (text_encoder_2 only)
  std::optional<ClipTextConfig> text_encoder_2;  // SDXL: CLIPTextModelWithProjection
  nlohmann::json scheduler;    // scheduler_config.json
  nlohmann::json model_index;  // the row's model_index.json keys ({}: none; SDXL: force_zeros_for_empty_prompt)
};
// The preset names ("sd15", "tiny"): the rows of the SD config table.
std::vector<std::string> model_preset_names();
// One of those; InputError naming the preset and the known ones otherwise.
ModelPreset model_preset(const std::string& name);

// A random model held in memory (the built-in `--model tiny`): configs plus one weight source per
// component, under diffusers names, F32.
struct InMemoryModel {
  ModelPreset configs;
  std::shared_ptr<MemoryWeightSource> unet, vae, text_encoder;  // text_encoder: null for a refiner
  std::shared_ptr<MemoryWeightSource> text_encoder_2;  // SDXL presets only
};

// SDXL's tokenizer_2: the built-in CLIP vocabulary with "!" as its pad token, as SDXL's
// tokenizer_2/special_tokens_map.json has it ("!" becomes a special token, so "!!" is two tokens).
ClipTokenizer sdxl_tokenizer_2();
InMemoryModel make_model_in_memory(const std::string& preset, uint64_t seed);

// Writes the folder described above into out_dir (created; it must not exist or be empty).
// model_index.json is written last, so an interrupted run leaves no folder that looks complete.
void make_model(const std::string& preset, uint64_t seed, const std::string& out_dir);

}  // namespace sdmpi
