// txt2img: prompts and seeds → uint8 RGB images, the way diffusers' StableDiffusionPipeline
// makes them (docs/reference/sd15-semantics.md §6.2), over a batch of compatible work items on one backend.
//
//   prompt ─ tokenizer ─ CLIP ─┐                 (negative prompt too when guidance > 1)
//   seed ─ TorchGenerator ─────┼─ for t: UNet(cat[x, x], t, cat[neg, pos]) → CFG → scheduler step
//                              └─ VAE decode(latents / scaling_factor) → uint8 RGB
//
// Each item has its own generator (seeded with its seed), so its image does not depend on which
// items share its batch. The pipeline never sees MPI or files other than the model's.
//
// One pipeline for every backend (see txt2img.cpp): latents and scheduler arithmetic stay float32
// whatever the compute dtype (the UNet and VAE run in it, with casts at their edges), and each UNet
// call is a Backend::run_graph step keyed by (batch, latent size, CFG on/off), which a CUDA backend
// captures once as a graph and replays; the pipeline's destructor frees its captured graphs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/clip_tokenizer.h"
#include "sdmpi/job.h"
#include "sdmpi/weights.h"

namespace sdmpi {

// A model named on the command line: a diffusers folder, a single-file .safetensors checkpoint,
// or "tiny" (the built-in random-weight model, generated in memory).
class ModelSource {
 public:
  // `weights_in_place`: F32 weight files are computed from in place on the CPU, not copied
  // (ModelFiles::open; --map-weights).
  static ModelSource open(const std::string& spec, const std::string& variant = "", bool weights_in_place = false);
  // A model assembled in memory (tests, tools): configs and weights per component ("unet",
  // "vae", "text_encoder", SDXL's "text_encoder_2"; "scheduler" and "model_index" configs only),
  // with the given tokenizers ("tokenizer", "tokenizer_2"), else the built-in CLIP vocabulary.
  static ModelSource from_memory(const std::string& name, std::map<std::string, nlohmann::json> configs,
                                 std::map<std::string, std::shared_ptr<WeightSource>> weights,
                                 std::map<std::string, ClipTokenizer> tokenizers = {});

  const std::string& spec() const { return spec_; }
  bool builtin() const { return builtin_; }
  // unet, vae, text_encoder, scheduler, SDXL's text_encoder_2; model_index ({} when there is none).
  nlohmann::json config(const std::string& component) const;
  bool has(const std::string& component) const;  // e.g. has("text_encoder_2"): SDXL
  std::shared_ptr<WeightSource> weights(const std::string& component) const;
  // This model with `weights` in place of its own for the components named (a node's shared,
  // already converted weights); configs, tokenizers, name and hash stay this model's.
  ModelSource with_weights(std::map<std::string, std::shared_ptr<WeightSource>> weights) const;
  ClipTokenizer tokenizer(const std::string& which = "tokenizer") const;  // or "tokenizer_2"
  // SHA-256 of the weight files (a single file's is AUTOMATIC1111's model hash), or a name for
  // the built-in model. Reads every weight file: call once, on one rank.
  std::string weights_hash() const;
  std::string name() const;  // short name for metadata ("stable-diffusion-v1-5", "tiny")
  std::string describe() const;
  // "SD 1.x", "SD 2.x" or "SDXL": the folder's or checkpoint's family, else (built-in, in memory) the one
  // its configs make (sd_family in src/io/sd_configs.h).
  std::string family() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
  std::string spec_;
  bool builtin_ = false;
  std::shared_ptr<const std::map<std::string, std::shared_ptr<WeightSource>>> weight_overrides_;
};

ClipTokenizer load_tokenizer(const std::string& model_spec);

// Between denoising steps: (steps done, total). Returning false abandons the batch
// (generate() then throws GenerationCancelled).
using StepCallback_t = std::function<bool(int step, int steps)>;
struct GenerationCancelled : std::exception {
  const char* what() const noexcept override { return "generation cancelled"; }
};

// The sampler a model's scheduler_config.json names (PNDMScheduler → "pndm", ...).
std::string default_sampler(const nlohmann::json& scheduler_config);

class Txt2ImgPipeline {
 public:
  Txt2ImgPipeline(const ModelSource& model, Backend& backend);
  ~Txt2ImgPipeline();

  // Items must share steps, size, guidance, sampler, schedule, eta and clip skip (make_batches).
  // One ImageResult per item, in order: index, width, height and rgb (row-major), or ok == false
  // with why (non-finite values in the latents or the image); the encoded outputs stay empty.
  std::vector<ImageResult> generate(const std::vector<WorkItem>& items, const StepCallback_t& on_step = {});

  // Two stages (an SDXL base and a refiner): items with refiner_start > 0 run this model for that
  // share of the schedule (diffusers' denoising_end, no decode), then `refiner` continues from those
  // latents with denoising_start (no VAE encode, no noise added; the items' generators go on) and its
  // VAE decodes. Not owned; it must outlive its use here. Null: none (such items are refused).
  void set_refiner(Txt2ImgPipeline* refiner);
  // An SDXL refiner (text_encoder_2 only, aesthetic-score conditioning): it runs img2img only.
  bool is_refiner() const;

  // The model's default image size (unet sample_size × VAE scale), e.g. 512 for SD 1.5.
  int default_size() const;
  Backend& backend() { return backend_; }

  // Host wall-clock seconds, each phase ended by a device synchronisation (text: tokenizer and
  // encoder; unet: the whole denoising loop, scheduler included; vae: decode and read-back).
  struct Timings {
    double text = 0, unet = 0, vae = 0, total = 0;  // seconds, accumulated over generate() calls
    int64_t unet_calls = 0, images = 0;
    int64_t unet_graph_calls = 0;  // UNet calls that replayed a captured graph (CUDA)
  };
  const Timings& timings() const;
  // The final latents of the last generate() call, [B, h, w, C] NHWC on the host (tests, debugging).
  const std::vector<float>& last_latents() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Backend& backend_;
};

}  // namespace sdmpi
