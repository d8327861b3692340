// img2img inside the one pipeline (txt2img.cpp): what diffusers' StableDiffusionImg2ImgPipeline
// does differently from StableDiffusionPipeline, for a batch whose items all have an init image
// and share a strength (make_batches groups them so). docs/reference/sd15-semantics.md §6.2 is the
// txt2img loop this starts.
//
//   get_timesteps     img2img_first_call (sdmpi/job.h): init_timestep = min(int(steps * strength),
//                     steps) in Python floats, t_start = steps - init_timestep; the loop runs calls t_start * order .. end
//                     (order is 1 for every sampler we have; PNDM's extra call stays at its place)
//                     and the scheduler begins there (set_begin_index).
//   preprocess        the file's 8-bit RGB → float32 x / 255 → 2 * x - 1 (VaeImageProcessor), at
//                     its own size: the item's width and height ARE the image's (the plan sets
//                     them; sides must be multiples of the VAE factor, diffusers would resize).
//   prepare_latents   per item, with its own generator: VAE encode → latent_dist.sample(generator)
//                     (first draw), × scaling_factor, then noise = randn of the latents' shape
//                     (second draw), latents = scheduler.add_noise(init, noise, timesteps[t_start]).
// Stochastic samplers then continue the same generator, as in txt2img.
#pragma once

#include <cstddef>
#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/job.h"
#include "sdmpi/model_config.h"
#include "sdmpi/noise.h"
#include "sdmpi/scheduler.h"
#include "sdmpi/vae.h"

namespace sdmpi {

// The batch's initial latents [B, h, w, C] float32 (see above). Every item must have an init
// image of exactly width x height (InputError naming the file otherwise); generators[b] is item
// b's, advanced by two draws.
Tensor img2img_initial_latents(Backend& backend, const AutoencoderKLEncoder& encoder, const Scheduler& scheduler,
                               size_t first_call, const std::vector<WorkItem>& items,
                               const std::vector<TorchGenerator*>& generators);

}  // namespace sdmpi
