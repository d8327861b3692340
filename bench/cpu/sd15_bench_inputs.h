// The SD 1.x UNet and VAE with the inputs both CPU benchmarks time them on (e2e_cpu_bench,
// op_profile_bench): a CFG batch of 2 latents from torch's generator at seed 0, a constant
// 77-token context, and the first latent alone for the VAE decode.
#pragma once

#include <vector>

#include "sdmpi/backend.h"
#include "sdmpi/model_config.h"
#include "sdmpi/noise.h"
#include "sdmpi/pipeline.h"
#include "sdmpi/unet.h"
#include "sdmpi/vae.h"

namespace sdmpi::bench {

struct Sd15BenchInputs {
  UNet2DConditionModel unet;
  AutoencoderKLDecoder vae;
  Tensor x;    // [2, h, w, C] latents (CFG batch)
  Tensor ctx;  // [2, 77, context width]
  Tensor z;    // [1, h, w, C] for the VAE
};

inline Sd15BenchInputs load_sd15_bench_inputs(const ModelSource& model, Backend& be, int size, int64_t ctx_dim) {
  UNetConfig uc = UNetConfig::from_json(model.config("unet"), "unet");
  VAEConfig vc = VAEConfig::from_json(model.config("vae"), "vae");
  const int64_t h = size / vc.scale_factor(), w = h;
  TorchGenerator g(0);
  std::vector<float> lat = g.randn(static_cast<size_t>(2 * h * w * uc.in_channels));
  std::vector<float> ctx_host(static_cast<size_t>(2 * 77 * ctx_dim), 0.1f);
  return {UNet2DConditionModel::load(uc, *model.weights("unet"), be), AutoencoderKLDecoder::load(vc, *model.weights("vae"), be),
          be.from_host(lat.data(), {2, h, w, uc.in_channels}), be.from_host(ctx_host.data(), {2, 77, ctx_dim}),
          be.from_host(lat.data(), {1, h, w, uc.in_channels})};
}

}  // namespace sdmpi::bench
