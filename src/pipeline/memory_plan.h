// The resource plan of a txt2img job: how much memory one rank needs for a model, an image size,
// a batch and a precision, computed from the configs before anything is loaded, so a request that
// cannot fit fails at once with one line instead of reaching an allocation that throws bad_alloc.
//
// The estimate is an upper bound, not a simulation:
//   weights      every parameter the pipeline loads (unet_parameters, the VAE's decoder half of
//                vae_parameters, clip_text_parameters: the networks' own declarations) times the
//                compute dtype's size;
//   activations  the UNet's skip connections (every level's outputs, kept for the up path) plus a
//                working set of kUNetWorkingTensors tensors of its widest level (the transformer's
//                GEGLU projection alone is 8 channels per model channel), for batch × 2 with CFG;
//                the VAE decoder's working set at its widest (resolution × channels) point for one
//                image (txt2img decodes one image at a time) plus the finished images; the text
//                encoder's; an attention score matrix per head where the backend materialises one
//                (neither does: the CPU backend works in ~1 MB row blocks per thread,
//                src/backend/cpu/cpu_attention.cpp, and CUDA runs flash attention); and a fixed
//                runtime allowance (code, BLAS and CUDA workspaces, the tokenizer);
//   img2img      with init images, the VAE encoder's weights (encoder.*, quant_conv.*) and its
//                working set at full resolution for one image (the pipeline encodes one at a time);
//   LoRA         merging a LoRA set (lora_merge_bytes) holds a float32 copy of every weight the set
//                touches for as long as the set's pipeline lives, and the files' tensors in float32
//                while merging; one set is active per rank at a time, so the job's largest counts.
// Not counted: the CPU backend's kept Winograd transforms (src/backend/cpu/cpu_memory.h), which are
// optional and get only half of the headroom this estimate leaves (generate_plan.cpp).
// memory_plan_test checks it against the peak RSS the tiny model reaches at two image sizes: never
// below, and within kEstimateFactor of it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sdmpi/dtype.h"
#include "sdmpi/lora.h"
#include "sdmpi/model_config.h"
#include "sdmpi/pipeline.h"

namespace sdmpi {

struct MemoryRequest {
  int width = 512, height = 512;  // the largest image of the job
  int batch = 1;                  // items per UNet call
  bool cfg = true;                // classifier-free guidance doubles the UNet batch
  DType dtype = DType::F32;       // weights and activations
  bool gpu = false;               // where they live (the runtime allowance differs)
  bool init_images = false;       // img2img: the VAE encoder is loaded and run
  int64_t lora_bytes = 0;         // the job's largest LoRA set, lora_merge_bytes (host memory)
};

struct MemoryNeed {
  int64_t weight_bytes = 0, activation_bytes = 0;
  int64_t total() const { return weight_bytes + activation_bytes; }
};

// How far above a measured peak the estimate may lie (memory_plan_test holds it to this).
inline constexpr double kEstimateFactor = 4.0;

// `text_2`: SDXL's second text encoder (its weights count too), or null.
MemoryNeed estimate_memory(const UNetConfig& unet, const VAEConfig& vae, const ClipTextConfig& text,
                           const MemoryRequest& request, const ClipTextConfig* text_2 = nullptr);
// The same from a model's configs (parsed here: an absurd config value is the config parser's
// InputError, naming the file, key and value).
MemoryNeed estimate_memory(const ModelSource& model, const MemoryRequest& request);

// What merging `set` (the LoRA files of one item, each read against the model) holds besides the
// model: 4 bytes per element of every distinct weight the set touches (LoraMergedWeightSource's
// float32 copies; a weight two files touch is copied once) plus 4 per element of every file's
// down and up tensors (LoraLayer's float32 values, alive while the set is merged). Only the layers'
// shapes are read, so files whose values were dropped after reading count the same.
int64_t lora_merge_bytes(const std::vector<const LoraFile*>& set);

// "1.5 GiB" / "0.02 GiB".
std::string format_gib(int64_t bytes);

// The one error line for a request that does not fit: "<request> needs about N GiB per rank
// (weights X + activations Y); this rank has Z GiB <where>" (empty when it fits or `available` < 0,
// i.e. unknown).
std::string memory_shortfall(const std::string& request, const MemoryNeed& need, int64_t available,
                             const std::string& where);

}  // namespace sdmpi
