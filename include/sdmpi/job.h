// A job: prompts × images_per_prompt work items, each with its own parameters and seed, and the
// one result type every layer passes on for an item (the pipeline makes it, the cluster layer
// moves it, the app writes it).
//
// Item g = prompt_index * images_per_prompt + k is the item's global index (docs/design.md §3). Its
// seed is the one given for it (a JSONL "seed"), else base_seed + g. Its image depends only on the
// model, these parameters and the seed: never on rank, batch or shard.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sdmpi {

// A LoRA merged into the model for an item (include/sdmpi/lora.h): the file, its scale, and the hash
// of its tensor data (AUTOMATIC1111's LoRA hash, hex; set when the job is planned, recorded in the
// outputs).
struct ItemLora {
  std::string path;
  float scale = 1.0f;
  std::string sha256;
  bool operator==(const ItemLora&) const = default;
};

// Text that is equal for two items exactly when they merge the same LoRAs at the same scales in the
// same order ("" for none): the batching key, and what a worker compares to reuse its pipeline.
std::string lora_set_key(const std::vector<ItemLora>& loras);

struct GenerationParams {
  std::string prompt;
  std::string negative_prompt;
  uint64_t seed = 0;
  int steps = 50;
  float guidance = 7.5f;
  int width = 512;
  int height = 512;
  std::string sampler = "pndm";     // canonical name: pndm ddim euler euler_a dpm++2m lcm
  std::string schedule = "default";  // default | karras
  float eta = 0.0f;                  // DDIM eta
  int clip_skip = 0;                 // 0 = last layer
  // diffusers' guidance_rescale φ (rescale_noise_cfg, for v-prediction models): the CFG output is
  // blended with itself rescaled to the text prediction's std; 0 = plain CFG.
  float guidance_rescale = 0.0f;
  // How the prompts are read: "none" (plain text, as diffusers) or "a1111" (AUTOMATIC1111's
  // (word:1.2) / [word] / BREAK syntax and chunking past 75 tokens: sdmpi/prompt_weighting.h).
  std::string prompt_weighting = "none";
  // SDXL's micro-conditioning (add_time_ids), in pixels, per item; 0 = diffusers' default: the
  // original and the target size are the image's (height, width), the crop's top-left is (0, 0).
  int original_width = 0, original_height = 0;
  int crop_top = 0, crop_left = 0;
  int target_width = 0, target_height = 0;
  // img2img (diffusers' StableDiffusionImg2ImgPipeline) when init_image is set: the init image file
  // (PNG or JPEG; its size is the item's width x height), the SHA-256 of its bytes (hex, set when the
  // job is planned, recorded in the outputs) and the strength in (0, 1]: the share of the schedule
  // that is run, starting from the init image's latents noised to that point.
  std::string init_image;
  std::string init_image_sha256;
  float strength = 0.8f;  // diffusers' default
  // SDXL refiner models (a UNet conditioned on an aesthetic score, model_index.json's
  // requires_aesthetics_score): diffusers' aesthetic_score / negative_aesthetic_score, the last
  // add_time_ids value of the positive and the negative half.
  float aesthetic_score = 6.0f, negative_aesthetic_score = 2.5f;
  // Two stages (--refiner): the share of the schedule the base model runs (diffusers' denoising_end
  // on the base, denoising_start on the refiner, which continues from the base's latents and
  // decodes); 0 = one model, no hand-off.
  float refiner_start = 0.0f;
  // LoRAs merged into the model for this item, in this order (--lora, a JSONL "lora" list, then the
  // prompt's <lora:name:scale> tags); items with different lists never share a batch.
  std::vector<ItemLora> loras;

  // An img2img item: one with an init image, or (read back from an archive, which records no path)
  // with its hash.
  bool img2img() const { return !init_image.empty() || !init_image_sha256.empty(); }
};

// img2img's first scheduler call for `steps` steps at `strength` (diffusers' get_timesteps, every
// sampler's order being 1): t_start = steps - min(int(steps * strength), steps), with strength as
// the decimal the user wrote (a Python float: int(10 * 0.7) = 7, where the float32 0.7f would give 6).
// InputError when strength is outside (0, 1] or leaves no denoising step.
size_t img2img_first_call(int steps, float strength);

// diffusers' discrete_timestep_cutoff for denoising_end / denoising_start = `fraction` (the decimal
// the user wrote, as a Python float): int(round(T - fraction * T)), T = num_train_timesteps. The
// base model runs the calls whose timestep is >= it, the refiner those below it. InputError when
// fraction is outside (0, 1).
int denoising_cutoff(int num_train_timesteps, float fraction);

// The prompt weighting modes GenerationParams::prompt_weighting may hold: "none" and "a1111".
// InputError naming `where` and the value for anything else.
void check_prompt_weighting(const std::string& mode, const std::string& where);

struct WorkItem {
  int64_t index = 0;         // global index g
  int64_t prompt_index = 0;  // line/record of the prompt in the job
  int64_t sample = 0;        // k in [0, images_per_prompt)
  GenerationParams params;
};

// One item's image, or why it failed.
struct ImageResult {
  int64_t index = 0;  // the item's global index
  bool ok = false;
  std::string error;  // why the item failed (ok == false): e.g. NaN/Inf in the latents
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major (may be dropped once encoded below)
  // Outputs already encoded by the generating rank, so rank 0 only writes bytes: the PNG file
  // and the archive row in its stored form (empty when not wanted, and from the pipeline).
  std::vector<uint8_t> png, archive_chunk;
  double seconds = 0;  // generation time of its batch, divided among its items
  int rank = 0;        // the rank that made it
};

}  // namespace sdmpi
